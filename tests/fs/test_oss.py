"""The ``oss://`` ObjectStoragePath scheme: registration, endpoint/credential resolution, a round trip."""

from __future__ import annotations

import json
import subprocess
import sys

import fsspec
import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_dashscope_batch.fs import oss, register_oss_scheme
from tests.fs.oss_helpers import ACCESS_KEY


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


def _strict_conn(monkeypatch, endpoint: str, conn_id: str, **extra: object) -> str:
    """The alibaba provider's ``oss`` connection as its OSSHook reads it, plus the endpoint."""
    fields = {"auth_type": "AK", "access_key_id": ACCESS_KEY[0], "access_key_secret": ACCESS_KEY[1]}
    fields.update(region="cn-hangzhou", endpoint_url=endpoint, **extra)
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "oss", "extra": fields}))
    return conn_id


def test_alibaba_oss_connection_round_trips_on_a_server_enforcing_oss_rules(
    strict_oss, s3_bucket, monkeypatch
):
    conn_id = _strict_conn(monkeypatch, strict_oss.endpoint, "oss_strict")
    register_oss_scheme()
    path = ObjectStoragePath(f"oss://{conn_id}@results-bucket/dir/big.bin")
    payload = b"0123456789abcdef" * (6 * 1024 * 1024 // 16)

    with path.open("wb", block_size=5 * 1024 * 1024) as f:  # two parts: a multipart upload, signed too
        f.write(payload)

    assert s3_bucket.get_object(Bucket="results-bucket", Key="dir/big.bin")["Body"].read() == payload
    assert path.read_bytes() == payload
    assert [p.name for p in path.parent.iterdir()] == ["big.bin"]
    assert strict_oss.refused == []


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        ({"addressing_style": "path"}, "SecondLevelDomainForbidden"),
        ({"signature_version": "s3v4"}, "InvalidArgument"),
        ({"access_key_secret": "wrong-secret"}, "SignatureDoesNotMatch"),
    ],
)
def test_the_server_refuses_what_oss_refuses(strict_oss, s3_bucket, monkeypatch, change, refused):
    """The strict server can fail: path-style, V4 and wrongly signed requests are refused."""
    s3_bucket.put_object(Bucket="results-bucket", Key="there.txt", Body=b"x")
    conn_id = _strict_conn(monkeypatch, strict_oss.endpoint, "oss_refused", **change)
    fs = oss.get_fs(conn_id)

    with pytest.raises(OSError, match=r"Forbidden|Bad Request|InvalidArgument|SecondLevel|Signature"):
        fs.cat_file("results-bucket/there.txt")
    assert set(strict_oss.refused) == {refused}


def test_auth_types_the_alibaba_provider_does_not_know_are_refused(monkeypatch):
    extra = {"auth_type": "STS", "access_key_id": "a", "access_key_secret": "b", "region": "cn-hangzhou"}
    monkeypatch.setenv("AIRFLOW_CONN_OSS_STS", json.dumps({"conn_type": "oss", "extra": extra}))
    with pytest.raises(ValueError, match="auth_type 'STS' is not supported"):
        oss.get_fs("oss_sts")


def test_an_existing_oss_filesystem_is_not_replaced():
    """Another library's ``oss`` (here a stand-in for ossfs) keeps fsspec; the provider's paths still work."""
    code = (
        "import json, os\n"
        "import fsspec\n"
        "from fsspec.spec import AbstractFileSystem\n"
        "class Other(AbstractFileSystem):\n"
        "    protocol = 'oss'\n"
        "fsspec.register_implementation('oss', Other)\n"
        "os.environ['AIRFLOW_CONN_OSS_HZ'] = json.dumps(\n"
        "    {'conn_type': 'oss', 'extra': {'auth_type': 'AK', 'access_key_id': 'id-1',\n"
        "     'access_key_secret': 'secret-1', 'region': 'cn-hangzhou'}})\n"
        "from airflow.providers.common.compat.sdk import ObjectStoragePath\n"
        "from airflow_provider_dashscope_batch.fs import oss, register_oss_scheme\n"
        "assert register_oss_scheme() is False\n"
        "assert fsspec.get_filesystem_class('oss') is Other\n"
        "path = ObjectStoragePath('oss://oss_hz@my-bucket/a/b.txt')\n"
        "assert isinstance(path.fs, oss.OSSFileSystem), type(path.fs)\n"
        "assert path.key == 'a/b.txt', path.key\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
