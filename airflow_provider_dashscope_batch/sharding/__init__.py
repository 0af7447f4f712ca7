"""Run any number of requests as one job: split into shards within the service's limits, batch, merge."""
