"""A job as its requests by ``custom_id``, finished over rounds: which are answered, what to send next."""
