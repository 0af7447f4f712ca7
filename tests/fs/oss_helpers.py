"""What the strict OSS stand-in and the OSS tests share: the access key it accepts."""

ACCESS_KEY = ("LTAI-strict", "strict-secret")
