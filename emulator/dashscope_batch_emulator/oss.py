"""
OSS inputs as the batch guide (zh, 使用OSS文件创建 Batch 任务) describes them, read by the emulator.

A batch may name its input as ``oss:<region>:<bucket>/<path>`` or as the object's http(s) URL
(``https://<bucket>.oss-<region>.aliyuncs.com/<path>``, public-read or pre-signed). The emulator maps the
bucket and path onto a local folder (``EmulatorConfig.oss_root``) standing in for OSS.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def oss_object(input_file_id: str) -> tuple[str, str] | None:
    """``(bucket, path)`` of an OSS input, or ``None`` for anything else (an uploaded file's id)."""
    if input_file_id.startswith("oss:"):
        _, _, rest = input_file_id[4:].partition(":")
        bucket, _, path = rest.partition("/")
        return (bucket, path) if bucket and path else None
    if not input_file_id.startswith(("https://", "http://")):
        return None
    url = urlsplit(input_file_id)
    host = url.hostname or ""
    bucket, _, domain = host.partition(".")
    path = url.path.lstrip("/")
    if not (domain.startswith("oss-") and domain.endswith(".aliyuncs.com") and bucket and path):
        return None
    return bucket, path
