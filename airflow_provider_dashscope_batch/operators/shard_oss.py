"""
Shards staged to OSS: written to a folder of a bucket and batched from ``oss:<region>:<bucket>/<key>`` ids.

The sharded operator's ``stage_to``: instead of an upload to the file store (its quota, its upload calls),
each shard is written to an OSS folder and its batch created from the object's resource identifier
(:mod:`airflow_provider_dashscope_batch.client.oss_input`; the batch guide documents it for
cn-beijing only, so other regions are refused before anything is staged).
The object's name carries the shard's upload token (job, position, SHA-256), so a retry that finds it
with the shard's size re-uses it instead of writing it again. Staged objects are the user's: never deleted.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import AirflowFailException, ObjectStoragePath

from airflow_provider_dashscope_batch.client import tokenized_filename
from airflow_provider_dashscope_batch.client.oss_input import parse_oss_input
from airflow_provider_dashscope_batch.fs import register_oss_scheme
from airflow_provider_dashscope_batch.operators.upload import as_path

if TYPE_CHECKING:
    import logging

__all__ = ["OSS_INPUT_REGION", "OssStaging"]

#: The only region the batch guide (使用OSS文件创建 Batch 任务) documents OSS inputs for.
OSS_INPUT_REGION = "cn-beijing"


@dataclass(frozen=True)
class OssStaging:
    """
    Where a sharded job stages its shards in OSS, and the region its batches read them in.

    :param folder: The folder the shards are written to.
    :param bucket: The bucket ``folder`` lies in.
    :param prefix: ``folder``'s key in the bucket (no trailing ``/``; may be empty).
    :param region: The connection's region, which is the bucket's.
    """

    folder: Path | ObjectStoragePath
    bucket: str
    prefix: str
    region: str

    @classmethod
    def of(cls, stage_to: str | os.PathLike[str] | ObjectStoragePath, region: str) -> OssStaging:
        """
        Read ``stage_to``: its bucket is the URL's (``oss://``, ``s3://``, ...), or for a local path or
        ``file://`` URL the first component of its absolute path (a folder standing in for OSS).

        :raises AirflowFailException: outside cn-beijing, or when no OSS bucket name can be read.
        """
        if region != OSS_INPUT_REGION:
            raise AirflowFailException(
                f"stage_to={str(stage_to)!r}, but the batch guide documents OSS inputs for "
                f"{OSS_INPUT_REGION} only and this connection's region is {region}. Nothing was staged or "
                "created. Use a cn-beijing connection, or leave stage_to unset to upload the shards."
            )
        if str(stage_to).startswith("oss://"):
            register_oss_scheme()  # so that the netloc parses as the bucket
        folder = as_path(stage_to)
        if isinstance(folder, ObjectStoragePath) and folder.protocol not in ("file", "local"):
            # its path is <bucket>/<key> (its .bucket keeps the conn id on Airflow 3.0)
            bucket, _, key = folder.path.lstrip("/").partition("/")
        else:  # on Airflow 3.0 an ObjectStoragePath is a Path too: test for it first
            folder = Path(folder.path) if isinstance(folder, ObjectStoragePath) else folder
            bucket, _, key = folder.resolve().as_posix().lstrip("/").partition("/")
        staging = cls(folder, bucket, key.strip("/"), region)
        if parse_oss_input(staging.object_id("probe.jsonl")) is None:
            raise AirflowFailException(
                f"stage_to={str(stage_to)!r} names no OSS bucket: its first component {bucket!r} is not a "
                "bucket name (3..63 characters of a-z, 0-9 and -). Give a folder in a bucket, e.g. "
                "'oss://my-bucket/batch-inputs'."
            )
        return staging

    def object_id(self, name: str) -> str:
        """The ``oss:<region>:<bucket>/<key>`` id of the object ``name`` in the folder."""
        key = f"{self.prefix}/{name}" if self.prefix else name
        return f"oss:{self.region}:{self.bucket}/{key}"

    def stage(self, path: Path, token: str, log: logging.Logger) -> str:
        """Write ``path`` to the folder under its token-carrying name unless already there; its OSS id."""
        name = tokenized_filename(path.name, token)
        target = self.folder / name
        size = path.stat().st_size
        if target.exists() and target.stat().st_size == size:
            log.info("Re-using %s staged by an earlier try", target)
            return self.object_id(name)
        if not isinstance(target, ObjectStoragePath):  # a local folder; buckets have no folders to make
            target.parent.mkdir(parents=True, exist_ok=True)
        with path.open("rb") as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
        log.info("Staged %s as %s", path.name, target)
        return self.object_id(name)
