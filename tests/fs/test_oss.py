"""The ``oss://`` ObjectStoragePath scheme: registration, endpoint/credential resolution, a round trip."""

from __future__ import annotations

import json
import subprocess
import sys

import fsspec
import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_dashscope_batch.fs import oss, register_oss_scheme


@pytest.fixture
def oss_conn(monkeypatch: pytest.MonkeyPatch) -> str:
    conn = {"conn_type": "aws", "login": "LTAI-id", "password": "oss-secret"}
    conn["extra"] = {"region": "cn-hangzhou"}
    monkeypatch.setenv("AIRFLOW_CONN_OSS_HZ", json.dumps(conn))
    return "oss_hz"


def test_provider_registers_the_oss_scheme():
    try:
        from airflow.sdk.io.fs import _register_filesystems
    except ImportError:  # Airflow 3.0
        from airflow.io import _register_filesystems

    assert _register_filesystems()["oss"] is oss.get_fs


def test_registration_hands_fsspec_the_filesystem_class():
    register_oss_scheme()

    assert fsspec.get_filesystem_class("oss") is oss.OSSFileSystem


def test_importing_the_provider_filesystem_or_the_transfer_does_not_import_s3fs():
    # registration imports s3fs, so it is explicit and lazy; DAG parsing and Airflow's filesystem
    # discovery stay as cheap as before
    code = (
        "import sys\n"
        "import airflow_provider_dashscope_batch.fs.oss\n"
        "import airflow_provider_dashscope_batch.transfers.results_to_object_storage\n"
        "assert 's3fs' not in sys.modules, 's3fs imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_path_resolves_to_oss_filesystem_with_region_endpoint(oss_conn):
    register_oss_scheme()
    path = ObjectStoragePath(f"oss://{oss_conn}@my-bucket/results/batch_1/output.jsonl")

    assert (path.protocol, path.key) == ("oss", "results/batch_1/output.jsonl")
    # Airflow 3.0's ObjectStoragePath keeps the connection id in ``bucket`` (for every scheme, s3 too)
    assert path.bucket in ("my-bucket", f"{oss_conn}@my-bucket")
    fs = path.fs
    assert isinstance(fs, oss.OSSFileSystem)
    assert fs.endpoint_url == "https://s3.oss-cn-hangzhou.aliyuncs.com"
    assert fs.key == "LTAI-id"
    assert fs.config_kwargs["s3"] == {"addressing_style": "virtual"}
    assert fs.config_kwargs["signature_version"] == "s3"
    assert str(path.parent / "errors.jsonl") == f"oss://{oss_conn}@my-bucket/results/batch_1/errors.jsonl"


def test_alibaba_style_connection_and_internal_endpoint(monkeypatch):
    extra = {"access_key_id": "id2", "access_key_secret": "s2", "region": "oss-cn-beijing", "internal": True}
    monkeypatch.setenv("AIRFLOW_CONN_OSS_ALI", json.dumps({"conn_type": "oss", "extra": extra}))

    fs = oss.get_fs("oss_ali")

    assert fs.endpoint_url == "https://s3.oss-cn-beijing-internal.aliyuncs.com"
    assert (fs.key, fs.secret) == ("id2", "s2")


def test_missing_region_is_a_clear_error(monkeypatch):
    conn = {"conn_type": "aws", "login": "a", "password": "b"}
    monkeypatch.setenv("AIRFLOW_CONN_OSS_BAD", json.dumps(conn))
    with pytest.raises(ValueError, match="set extra 'region'"):
        oss.get_fs("oss_bad")


def test_round_trip_against_s3_compatible_server(moto_endpoint, s3_bucket, monkeypatch):
    # moto stands in for OSS's S3-compatible endpoint; an IP endpoint makes botocore use path-style.
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"region": "cn-hangzhou", "endpoint_url": moto_endpoint},
    }
    monkeypatch.setenv("AIRFLOW_CONN_OSS_MOTO", json.dumps(conn))
    register_oss_scheme()
    path = ObjectStoragePath("oss://oss_moto@results-bucket/dir/hello.txt")

    with path.open("wb") as f:
        f.write(b"hello oss\n")

    assert s3_bucket.get_object(Bucket="results-bucket", Key="dir/hello.txt")["Body"].read() == b"hello oss\n"
    assert path.read_bytes() == b"hello oss\n"
    assert [p.name for p in path.parent.iterdir()] == ["hello.txt"]
