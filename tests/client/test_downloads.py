"""Download destinations: a path is renamed into place when complete, a partial one removed."""

from __future__ import annotations

import io

from airflow_provider_dashscope_batch.client._downloads import Destination


def test_destination_renames_a_complete_download_and_removes_a_partial_one(tmp_path):
    done = Destination(tmp_path / "done.jsonl")
    done.open()
    done.write(b"abc")
    assert done.commit() == 3
    done.discard()  # after commit: nothing to remove
    assert [p.name for p in tmp_path.iterdir()] == ["done.jsonl"]
    partial = Destination(tmp_path / "partial.jsonl")
    partial.open()
    partial.write(b"ab")
    partial.discard()
    assert [p.name for p in tmp_path.iterdir()] == ["done.jsonl"]
    stream = io.BytesIO()
    to_stream = Destination(stream)
    to_stream.open()
    to_stream.write(b"xyz")
    to_stream.discard()  # a stream is the caller's: neither closed nor emptied
    assert (to_stream.commit(), stream.getvalue()) == (3, b"xyz")
