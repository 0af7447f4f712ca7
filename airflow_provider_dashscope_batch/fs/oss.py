"""
``oss://`` for :class:`ObjectStoragePath`: Alibaba Cloud OSS through its S3-compatible API (s3fs).

Airflow finds :func:`get_fs` through the provider's ``filesystems`` metadata, so
``ObjectStoragePath("oss://my_conn@bucket/key")`` works wherever this provider is installed (with ``s3fs``,
e.g. the ``s3`` extra; ``ossfs`` is not needed) once
:func:`~airflow_provider_dashscope_batch.fs.register_oss_scheme` has run (see
:mod:`airflow_provider_dashscope_batch.fs`).

The connection (any type; an ``aws`` connection or the alibaba provider's ``oss`` connection both fit;
the latter as its ``OSSHook`` reads it: extra ``auth_type`` ``AK`` -- the only kind it knows, any other
is refused -- with ``access_key_id``, ``access_key_secret`` and ``region``):

* AccessKey ID: ``login``, or extra ``access_key_id`` / ``aws_access_key_id``;
* AccessKey secret: ``password``, or extra ``access_key_secret`` / ``aws_secret_access_key``;
* STS token (optional): extra ``security_token`` / ``aws_session_token``;
* extra ``region`` / ``region_name``: the bucket's region id, e.g. ``cn-hangzhou``;
* extra ``endpoint_url`` (optional): overrides the endpoint derived from the region,
  ``https://s3.oss-<region>.aliyuncs.com`` (``https://s3.oss-<region>-internal.aliyuncs.com`` with extra
  ``internal: true``, from inside Alibaba Cloud);
* extra ``addressing_style`` (default ``virtual``: OSS only serves virtual-hosted-style requests) and
  ``signature_version`` (default ``s3``, i.e. V2 signing: botocore's V4 signer forces chunked uploads, which
  OSS rejects, as Alibaba's "Use AWS SDKs to access OSS" page notes).

Without a ``conn_id`` the ``oss_default`` connection is used. ``storage_options`` are merged into the
botocore ``config_kwargs``.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_dashscope_batch.fs import register_oss_scheme

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

schemes = ["oss"]

DEFAULT_CONN_ID = "oss_default"


def oss_endpoint(region: str, *, internal: bool = False) -> str:
    """
    Return the S3-compatible OSS endpoint of a region.

    :param region: Region id, e.g. ``cn-hangzhou`` (an ``oss-`` prefix is accepted).
    :param internal: Use the endpoint reachable from inside Alibaba Cloud (no traffic fee).
    """
    region = region.removeprefix("oss-")
    return f"https://s3.oss-{region}{'-internal' if internal else ''}.aliyuncs.com"


@cache
def oss_filesystem_class() -> type[AbstractFileSystem]:
    """
    Return ``OSSFileSystem``, an s3fs filesystem whose protocol is ``oss``.

    :raises ImportError: if s3fs is not installed.
    """
    try:
        from s3fs import S3FileSystem
    except ImportError as exc:
        raise ImportError(
            "The oss:// scheme needs s3fs: pip install 'airflow-provider-dashscope-batch[s3]'"
        ) from exc

    class OSSFileSystem(S3FileSystem):
        """s3fs speaking to Alibaba Cloud OSS; only the protocol name differs."""

        protocol = ("oss",)

    OSSFileSystem.__module__ = __name__
    return OSSFileSystem


def __getattr__(name: str) -> Any:
    # ``OSSFileSystem`` is built on first use so that importing this module never needs s3fs.
    if name == "OSSFileSystem":
        return oss_filesystem_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _first(extra: dict[str, Any], *names: str) -> Any:
    for name in names:
        if extra.get(name) not in (None, ""):
            return extra[name]
    return None


def _as_bool(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def get_fs(conn_id: str | None, storage_options: dict[str, Any] | None = None) -> AbstractFileSystem:
    """
    Return an s3fs filesystem talking to OSS with the credentials of an Airflow connection.

    :param conn_id: Connection holding the AccessKey pair and region (``oss_default`` if ``None``).
    :param storage_options: Extra botocore ``config_kwargs``.
    """
    fs_class = oss_filesystem_class()
    register_oss_scheme()  # later oss:// paths in this process parse as S3-like
    conn = BaseHook.get_connection(conn_id or DEFAULT_CONN_ID)
    extra = conn.extra_dejson
    auth_type = _first(extra, "auth_type")
    if auth_type is not None and str(auth_type).upper() != "AK":
        raise ValueError(
            f"Connection {conn.conn_id!r}: auth_type {auth_type!r} is not supported for the oss:// scheme; "
            "use 'AK' with access_key_id and access_key_secret (as the alibaba provider's OSSHook does)"
        )
    region = _first(extra, "region", "region_name")
    endpoint = _first(extra, "endpoint_url", "endpoint")
    if endpoint is None:
        if region is None:
            raise ValueError(
                f"Connection {conn.conn_id!r}: set extra 'region' (e.g. cn-hangzhou) or 'endpoint_url' "
                "for the oss:// scheme"
            )
        endpoint = oss_endpoint(region, internal=_as_bool(extra.get("internal", False)))
    elif "://" not in endpoint:
        endpoint = f"https://{endpoint}"

    config_kwargs: dict[str, Any] = {
        "signature_version": _first(extra, "signature_version") or "s3",
        "s3": {"addressing_style": _first(extra, "addressing_style") or "virtual"},
        # newer botocore adds CRC checksums (aws-chunked bodies) that S3-compatible stores may reject
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
    }
    config_kwargs.update(storage_options or {})
    key = conn.login or _first(extra, "access_key_id", "aws_access_key_id")
    secret = conn.password or _first(extra, "access_key_secret", "aws_secret_access_key")
    return fs_class(
        key=key,
        secret=secret,
        token=_first(extra, "security_token", "aws_session_token"),
        anon=not (key and secret),
        endpoint_url=endpoint,
        client_kwargs={"region_name": region.removeprefix("oss-") if region else "us-east-1"},
        config_kwargs=config_kwargs,
    )
