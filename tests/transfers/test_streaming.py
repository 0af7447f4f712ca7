"""Worker threads under the results transfer: chunks in order, errors raised in the caller, cancel."""

from __future__ import annotations

import hashlib
import threading

import pytest

from airflow_provider_dashscope_batch.transfers.streaming import BackgroundWorker, BackgroundWriter


def _alive(name: str) -> bool:
    return any(t.name == name for t in threading.enumerate())


def test_chunks_are_handled_in_order_in_the_worker_thread():
    seen: list[tuple[bytes, str]] = []
    worker = BackgroundWorker(lambda chunk: seen.append((chunk, threading.current_thread().name)), "t-order")

    for i in range(50):  # more than the queue holds: put blocks until the worker catches up
        worker.put(b"%d" % i)
    worker.finish()

    assert seen == [(b"%d" % i, "t-order") for i in range(50)]
    assert not _alive("t-order")


def test_an_error_of_the_handler_is_raised_by_finish_and_later_chunks_are_dropped():
    handled: list[bytes] = []

    def handle(chunk: bytes) -> None:
        if chunk == b"bad":
            raise ValueError("bad chunk")
        handled.append(chunk)

    worker = BackgroundWorker(handle, "t-finish")
    worker.put(b"good")
    worker.put(b"bad")
    worker.put(b"after")

    with pytest.raises(ValueError, match="bad chunk"):
        worker.finish()
    assert handled == [b"good"]
    assert not _alive("t-finish")


def test_an_error_of_the_handler_is_raised_by_a_later_put():
    failed = threading.Event()

    def handle(chunk: bytes) -> None:
        failed.set()
        raise ValueError("bad chunk")

    worker = BackgroundWorker(handle, "t-put")
    worker.put(b"bad")
    failed.wait()

    def put_until_it_raises() -> None:  # the error is recorded right after the raise
        while True:
            worker.put(b"more")

    with pytest.raises(ValueError, match="bad chunk"):
        put_until_it_raises()
    worker.cancel()
    assert not _alive("t-put")


def test_cancel_drops_what_is_queued_and_ends_the_thread():
    started, release = threading.Event(), threading.Event()
    handled: list[bytes] = []

    def handle(chunk: bytes) -> None:
        started.set()
        release.wait()
        handled.append(chunk)

    worker = BackgroundWorker(handle, "t-cancel")
    worker.put(b"first")
    started.wait()
    worker.put(b"queued-1")
    worker.put(b"queued-2")
    canceller = threading.Thread(target=worker.cancel)
    canceller.start()
    while canceller.is_alive() and not worker._cancelled:  # cancel() has flagged before it joins
        canceller.join(0.01)
    release.set()
    canceller.join()

    assert handled == [b"first"]
    assert not _alive("t-cancel")
    worker.cancel()  # a second cancel is a no-op


def test_the_writer_hashes_and_writes_in_its_thread(tmp_path):
    path = tmp_path / "out"
    with path.open("wb") as handle:
        writer = BackgroundWriter(handle)
        for chunk in (b"a" * 10, b"b" * 20):
            writer.write(chunk)
        writer.finish()

    assert path.read_bytes() == b"a" * 10 + b"b" * 20
    assert writer.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
