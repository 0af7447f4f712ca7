"""The Files endpoints: upload (recovered by its upload token), retrieve, list, delete, content."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator  # noqa: F401 (see below)
from typing import TYPE_CHECKING

import httpx

from airflow_provider_dashscope_batch.client._flow import Flow, Listing
from airflow_provider_dashscope_batch.client._pagination import collect_flow, paginate_flow, search_flow
from airflow_provider_dashscope_batch.client._params import (
    CLOCK_SKEW,
    FILTER_SLACK,
    MAX_FILE_PAGE_SIZE,
    TimeFilter,
    check_page_size,
    quote_segment,
    time_filters,
)
from airflow_provider_dashscope_batch.client._request import call_flow, request_flow
from airflow_provider_dashscope_batch.client._uploads import FileInput, UploadHandle, UploadSource
from airflow_provider_dashscope_batch.client.types import FileDeleted, FileObject, FilePage

if TYPE_CHECKING:
    from airflow_provider_dashscope_batch.client._core import ClientCore

log = logging.getLogger("airflow_provider_dashscope_batch.client")
# AsyncIterator and Iterator: the clients' listing methods are typed ``Iterator[...]`` (``AsyncIterator``)
# in the globals of the flow they wrap (this module), where typing.get_type_hints resolves them.


def upload_file_flow(
    core: ClientCore,
    file: FileInput,
    *,
    filename: str | None = None,
    purpose: str = "batch",
    upload_token: str | None = None,
) -> Flow[FileObject]:
    """
    Upload a file, streamed from a path or a binary stream (``POST /files``).

    The file is stored under ``filename`` with the upload's token before the extension
    (``requests.jsonl`` -> ``requests.<token>.jsonl``), which identifies it after an ambiguous failure.
    A path or seekable stream is re-sent after a transient failure, but only once the file list,
    searched for that name during the recovery window, shows that the failed attempt did not store
    it; a non-seekable stream is sent once (and only recovered). Copies that the service stored late
    are deleted after a successful re-send.

    :param file: Path or binary stream (e.g. an ``ObjectStoragePath.open("rb")`` handle).
    :param filename: Name to upload under; defaults to the path's or stream's name.
    :param purpose: File purpose (``batch`` for batch input).
    :param upload_token: Identity of this logical upload (8..64 of ``[A-Za-z0-9_-]``); a fresh one
        when ``None``. Reuse one only to make separate calls the same upload.
    """
    source = UploadSource(file, filename, upload_token)
    with source.open() as handle:
        return (yield from _upload_flow(core, handle, purpose))


def _upload_flow(core: ClientCore, handle: UploadHandle, purpose: str) -> Flow[FileObject]:
    """
    Upload ``handle`` as multipart ``file`` + ``purpose``.

    ``handle.filename`` carries the upload's token. After an ambiguous failure the file list is
    searched for the file with exactly that name (its size and creation time must agree) before the
    upload is re-sent; after a successful re-send, other files with that name are deleted.
    """
    started = core.now()

    def build() -> httpx.Request:
        return core.build_request(
            "POST", "/files", files={"file": (handle.filename, handle.stream)}, data={"purpose": purpose}
        )

    def ours(f: FileObject) -> bool:
        return (
            f.filename == handle.filename
            and (handle.size is None or f.bytes == handle.size)
            and (f.created_at or 0) >= (started - CLOCK_SKEW).timestamp()
        )

    def listing() -> Listing[FileObject]:
        return list_files_flow(core, purpose=purpose, create_after=started - FILTER_SLACK)

    def recover() -> Flow[FileObject | None]:
        return (yield from search_flow(listing(), ours))

    def cleanup(kept: FileObject) -> Flow[None]:
        for copy in (yield from collect_flow(listing(), lambda f: ours(f) and f.id != kept.id)):
            log.warning(
                "DashScope upload %s: deleting file %s, a late copy of file %s",
                handle.filename,
                copy.id,
                kept.id,
            )
            yield from delete_file_flow(core, copy.id)

    return (
        yield from request_flow(
            core,
            build,
            lambda r: core.parse(r, FileObject),
            idempotent=False,
            replayable=handle.replayable,
            recover=recover,
            cleanup=cleanup,
        )
    )


def retrieve_file_flow(core: ClientCore, file_id: str) -> Flow[FileObject]:
    """
    Get a file's metadata (``GET /files/{id}``).

    :param file_id: The file id.
    """
    return call_flow(core, "GET", f"/files/{quote_segment(file_id)}", FileObject)


def delete_file_flow(core: ClientCore, file_id: str) -> Flow[FileDeleted]:
    """
    Delete a file (``DELETE /files/{id}``; a retry after a lost response may see 404).

    :param file_id: The file id.
    """
    return call_flow(core, "DELETE", f"/files/{quote_segment(file_id)}", FileDeleted)


def list_files_flow(
    core: ClientCore,
    *,
    purpose: str | None = None,
    create_after: TimeFilter | None = None,
    create_before: TimeFilter | None = None,
    page_size: int | None = None,
) -> Listing[FileObject]:
    """
    Iterate over files (``GET /files``), fetching further pages as needed.

    :param purpose: Only files of this purpose (``batch``, ``batch_output``).
    :param create_after: Only files created after this time (datetime or service-format string).
    :param create_before: Only files created before this time.
    :param page_size: Files per request (1..2000).
    """
    check_page_size(page_size, MAX_FILE_PAGE_SIZE)
    params = {"purpose": purpose, **time_filters(create_after, create_before), "limit": page_size}
    return paginate_flow(core, "/files", params, FilePage)


def content_flow(core: ClientCore, file_id: str) -> Flow[httpx.Response]:
    """``GET /files/{id}/content``, streamed: returns the open response (the caller closes it)."""
    return request_flow(
        core,
        lambda: core.build_request("GET", f"/files/{quote_segment(file_id)}/content"),
        lambda r: r,
        stream=True,
    )
