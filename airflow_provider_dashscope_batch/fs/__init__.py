"""
Filesystems this provider adds to :class:`ObjectStoragePath` (see :mod:`.oss`).

``oss://`` is registered through public APIs only (fsspec's ``register_implementation`` and
universal-pathlib's ``upath.registry.register_implementation``) and never replaces another library's
``oss`` (see :func:`register_oss_scheme`). Limitation: universal-pathlib has no public API to declare how
a new protocol's URLs parse (that the netloc is the bucket); it derives that from the fsspec class
registered for the protocol, so registration hands fsspec the class itself, which means importing s3fs.
That is why registration is explicit and lazy rather than done on import: the transfer operator
registers before it parses an ``oss://`` destination, and the provider's filesystem hook
(:func:`.oss.get_fs`) registers when Airflow first opens an ``oss://`` path. Code that builds
``ObjectStoragePath("oss://conn@bucket/key")`` itself calls :func:`register_oss_scheme` first (without it,
universal-pathlib parses ``oss://`` URLs the way ``ossfs`` does, without the bucket as anchor).
"""

from __future__ import annotations

import contextlib
import importlib.util
from functools import cache

__all__ = ["register_oss_scheme"]

_OURS = "airflow_provider_dashscope_batch.fs.oss"


def _claimed_elsewhere() -> bool:
    """Whether fsspec's ``oss`` already means another usable filesystem (e.g. an installed ``ossfs``)."""
    from fsspec.registry import known_implementations, registry

    current = registry.get("oss")
    if current is not None:
        return current.__module__ != _OURS
    spec = str(known_implementations.get("oss", {}).get("class", ""))
    if not spec or spec.startswith(_OURS):
        return False
    # fsspec's own entry names ``ossfs``: it only counts if ossfs can be imported
    return importlib.util.find_spec(spec.partition(".")[0]) is not None


@cache
def register_oss_scheme() -> bool:
    """
    Teach fsspec and universal-pathlib that ``oss://bucket/key`` is S3-like and served by :mod:`.oss`.

    Nothing another library registered is replaced: where fsspec's ``oss`` already resolves to a usable
    filesystem (an installed ``ossfs``, or one registered in this process), fsspec is left alone and
    only the ``ObjectStoragePath`` paths of this provider use :mod:`.oss` (Airflow opens them through the
    provider's :func:`.oss.get_fs`); otherwise fsspec's built-in ``oss`` entry, which names ``ossfs``
    and cannot be imported, is replaced. A UPath class registered for ``oss`` is kept too.

    Idempotent. Without s3fs installed, the scheme is registered by name only, so that opening an
    ``oss://`` path says which extra to install.

    :return: True if fsspec's ``oss`` is now this provider's filesystem, False if another one keeps it.
    """
    from fsspec import register_implementation as register_fs
    from upath.registry import register_implementation as register_path

    with contextlib.suppress(ValueError):  # another UPath class for oss: keep it
        register_path("oss", "upath.implementations.cloud.CloudPath")
    if _claimed_elsewhere():
        return False
    try:
        from airflow_provider_dashscope_batch.fs.oss import oss_filesystem_class

        fs_class: type | str = oss_filesystem_class()
    except ImportError:
        fs_class = f"{_OURS}.OSSFileSystem"
    register_fs("oss", fs_class, clobber=True)  # only fsspec's unusable ossfs entry is in the way
    return True
