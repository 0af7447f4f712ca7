"""Filesystems this provider adds to :class:`ObjectStoragePath` (see :mod:`.oss`)."""

from __future__ import annotations

from functools import cache

__all__ = ["register_oss_scheme"]


@cache
def register_oss_scheme() -> None:
    """
    Teach fsspec and universal-pathlib that ``oss://bucket/key`` is S3-like and served by :mod:`.oss`.

    Cheap (s3fs is not imported) and idempotent. Without it, parsing an ``oss://`` URL tries to import
    ``ossfs``. Airflow imports :mod:`.oss` (which calls this) when it loads the provider filesystems, and
    importing the transfer operator calls it too; code that builds ``ObjectStoragePath("oss://...")``
    before either should call this function first.
    """
    from fsspec.registry import register_implementation as register_fs
    from upath._flavour import WrappedFileSystemFlavour
    from upath._flavour_sources import S3FileSystemFlavour, flavour_registry
    from upath.registry import register_implementation as register_path

    register_fs("oss", "airflow_provider_dashscope_batch.fs.oss.OSSFileSystem", clobber=True)
    register_path("oss", "upath.implementations.cloud.S3Path", clobber=True)
    # universal-pathlib parses URLs with per-protocol "flavours"; its stock ``oss`` flavour mirrors ossfs
    # (a path without bucket anchor), so parse oss:// exactly like s3:// instead.
    flavour_registry.pop("oss", None)
    type("OSSFileSystemFlavour", (S3FileSystemFlavour,), {"protocol": ("oss",), "__module__": __name__})
    for option in ("netloc_is_anchor", "supports_empty_parts"):
        WrappedFileSystemFlavour.protocol_config[option].add("oss")
    WrappedFileSystemFlavour.from_protocol.cache_clear()
