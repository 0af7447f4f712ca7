"""
Batch inputs read from OSS instead of an uploaded file: the two forms ``input_file_id`` may take.

The newest batch guide (zh, 使用OSS文件创建 Batch 任务) accepts as ``input_file_id`` an OSS object URL
that is public-read or pre-signed (``https://<bucket>.oss-<region>.aliyuncs.com/<path>?Expires=...``) or,
recommended, the resource identifier ``oss:<region>:<bucket>/<path>``; no upload, no file-store quota.
The batch echoes the URL or identifier as its ``input_file_id``. The guide states this for Beijing; the
emulator refuses it elsewhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["OssInput", "parse_oss_input"]

_IDENTIFIER = re.compile(
    r"oss:(?P<region>[a-z0-9-]+):(?P<bucket>[a-z0-9][a-z0-9-]{1,61}[a-z0-9])/(?P<key>.+)"
)
_HOST = re.compile(
    r"(?P<bucket>[a-z0-9][a-z0-9-]{1,61}[a-z0-9])\.oss-(?P<region>[a-z0-9-]+?)(?:-internal)?\.aliyuncs\.com"
)


@dataclass(frozen=True)
class OssInput:
    """
    An OSS object given as a batch's ``input_file_id``.

    :param region: The bucket's region (``cn-beijing``).
    :param bucket: The bucket.
    :param key: The object's path in the bucket.
    :param url: Whether it was given as an http(s) URL (else the ``oss:`` identifier).
    """

    region: str
    bucket: str
    key: str
    url: bool


def parse_oss_input(value: str) -> OssInput | None:
    """The OSS object ``value`` names, ``None`` when it is an uploaded file's id (or anything else)."""
    found = _IDENTIFIER.fullmatch(value)
    if found is not None:
        return OssInput(found["region"], found["bucket"], found["key"], url=False)
    if not value.startswith(("https://", "http://")):
        return None
    parts = urlsplit(value)
    host = _HOST.fullmatch(parts.hostname or "")
    key = parts.path.lstrip("/")
    if host is None or not key:
        return None
    return OssInput(host["region"], host["bucket"], key, url=True)
