"""
Filesystems this provider adds to :class:`ObjectStoragePath` (see :mod:`.oss`).

``oss://`` is registered through public APIs only: fsspec's ``register_implementation`` and
universal-pathlib's ``upath.registry.register_implementation``. Limitation: universal-pathlib has no public
API to declare how a new protocol's URLs parse (that the netloc is the bucket); it derives that from the
fsspec class registered for the protocol, so registration hands fsspec the class itself, which means
importing s3fs. That is why registration is explicit and lazy rather than done on import: the transfer
operator registers before it parses an ``oss://`` destination, and the provider's filesystem hook
(:func:`.oss.get_fs`) registers when Airflow first opens an ``oss://`` path. Code that builds
``ObjectStoragePath("oss://conn@bucket/key")`` itself calls :func:`register_oss_scheme` first (without it,
universal-pathlib parses ``oss://`` URLs the way ``ossfs`` does, without the bucket as anchor).
"""

from __future__ import annotations

from functools import cache

__all__ = ["register_oss_scheme"]


@cache
def register_oss_scheme() -> None:
    """
    Teach fsspec and universal-pathlib that ``oss://bucket/key`` is S3-like and served by :mod:`.oss`.

    Idempotent. Without s3fs installed, the scheme is registered by name only, so that opening an
    ``oss://`` path says which extra to install.
    """
    from fsspec import register_implementation as register_fs
    from upath.registry import register_implementation as register_path

    register_path("oss", "upath.implementations.cloud.CloudPath", clobber=True)
    try:
        from airflow_provider_dashscope_batch.fs.oss import oss_filesystem_class

        fs_class: type | str = oss_filesystem_class()
    except ImportError:
        fs_class = "airflow_provider_dashscope_batch.fs.oss.OSSFileSystem"
    register_fs("oss", fs_class, clobber=True)
