"""The blob store over the local directory and a real S3 API server: contract, one upload per blob, conditional
writes, parts, no implicit bucket, and ``init`` / ``store check`` saying what is wrong without leaking a secret."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_weights
from s3server import S3Server, free_port, wait_for_port

from modelkin import Registry
from modelkin.config import Settings
from modelkin.errors import IntegrityError
from modelkin.registry.s3 import S3Store
from modelkin.registry.store import BlobStore, open_store

MiB = 2**20


@pytest.fixture
def blob_store(store: str, tmp_path: Path) -> BlobStore:
    settings = Settings.resolve()
    return open_store(settings.store, settings.staging)


def _bucket_of(url: str) -> str:
    return url.removeprefix("s3://").split("/", 1)[0]


def test_blob_store_contract(blob_store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(1000)
    digest = blob_store.put_bytes(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert blob_store.exists(digest) and not blob_store.exists("0" * 64)
    assert blob_store.read_verified(digest) == data
    assert blob_store.hash_blob(digest) == digest and blob_store.hash_blob("0" * 64) is None
    assert [b.digest for b in blob_store.iter_blobs()] == [digest]
    assert blob_store.put_bytes(data) == digest  # the same bytes again: still one blob
    assert [b.size for b in blob_store.iter_blobs()] == [1000]
    with blob_store.local_path(digest) as path:
        assert path.read_bytes() == data
    with blob_store.written_path(digest) as path:  # what registration-time indexers read
        assert path.read_bytes() == data
    blob_store.copy_verified(digest, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == data
    blob_store.delete(digest)
    assert not blob_store.exists(digest)
    with pytest.raises(IntegrityError, match="missing"):
        blob_store.read_verified(digest)
    with pytest.raises(IntegrityError, match="missing"), blob_store.written_path(digest):
        pass
    assert not list(Settings.resolve().staging.glob("*"))  # staging files go with the write that made them


def test_one_upload_per_blob_straight_to_its_key(
    registry: Registry, s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Server-side count: each blob is written once, with no copy, no delete and no temporary key."""
    monkeypatch.setenv("MODELKIN_STORE", f"s3://{bucket}/objects")
    reg = Registry.open()
    src = tmp_path / "m"
    make_weights(src / "model.safetensors", seed=3)
    (src / "config.json").write_text('{"hidden": 16}')
    v = reg.register(src, name="m").version
    blobs = {f.sha256 for f in v.files} | {v.digest.removeprefix("sha256:")}
    writes = s3_server.writes_per_key(bucket)
    assert sorted(writes) == sorted(f"objects/{d[:2]}/{d[2:]}" for d in blobs)
    assert set(writes.values()) == {1}
    assert s3_server.count(bucket, "copy", "delete", ok_only=False) == 0
    assert not [r for r in s3_server.requests(bucket) if "/." in "/" + r.key]  # never a temporary object
    before = len(s3_server.requests(bucket))
    assert not reg.register(src, name="m").created
    again = s3_server.requests(bucket)[before:]
    assert not [r for r in again if r.kind in ("part", "copy", "delete") or (r.kind == "write" and r.status != 412)]
    assert reg.verify("m").ok
    reg.close()


@pytest.mark.parametrize("size", [5000, 6 * MiB])
def test_a_racing_writer_of_the_same_digest_never_overwrites(
    s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, size: int
) -> None:
    """Both writers saw no blob; the second one's conditional write is refused by the server, not applied."""
    monkeypatch.setenv("MODELKIN_S3_PART_SIZE", str(5 * MiB))  # 6 MiB: looked up before it is sent
    store = open_store(f"s3://{bucket}/objects", tmp_path / "staging")
    assert isinstance(store, S3Store)
    data = os.urandom(size)
    digest = store.put_bytes(data)
    if size >= store.part_size:  # a large blob is looked up first: this lookup ran before the first upload ended
        real_stat, lookups = S3Store._stat, iter([None])
        monkeypatch.setattr(S3Store, "_stat", lambda self, key: next(lookups, real_stat(self, key)))
    assert store.put_bytes(data) == digest
    key = f"objects/{digest[:2]}/{digest[2:]}"
    assert s3_server.writes_per_key(bucket)[key] == 1
    assert [r.status for r in s3_server.requests(bucket) if r.kind == "write"] == [200, 412]
    assert store.read_verified(digest) == data


def test_large_blob_goes_up_in_parts_once(
    s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODELKIN_S3_PART_SIZE", str(5 * MiB))
    store = open_store(f"s3://{bucket}/objects", tmp_path / "staging")
    data = os.urandom(12 * MiB)
    digest = store.put_bytes(data)
    assert s3_server.count(bucket, "create-upload") == 1
    assert s3_server.count(bucket, "part") == 3
    assert s3_server.writes_per_key(bucket) == {f"objects/{digest[:2]}/{digest[2:]}": 1}
    assert store.hash_blob(digest) == digest
    # a second writer of the same big blob uploads nothing
    parts = s3_server.count(bucket, "part")
    store.put_bytes(data)
    assert s3_server.count(bucket, "part") == parts


def _last_modified(s3_server: S3Server, bucket: str, digest: str) -> float:
    head = s3_server.client().head_object(Bucket=bucket, Key=f"objects/{digest[:2]}/{digest[2:]}")
    return float(head["LastModified"].timestamp())


@pytest.mark.parametrize("size", [5000, 12 * MiB])
def test_reusing_an_old_unreferenced_blob_protects_it_from_gc(
    registry: Registry, s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """The S3 gc race: a writer reusing an orphan blob must not lose it to a gc that still sees it as old.

    S3 cannot set an object's age, so reuse of an old blob copies it onto itself inside the service (by ranges
    above the single-copy limit; "old" and the limit are lowered here). gc with a grace below its age keeps it.
    """
    monkeypatch.setattr("modelkin.registry.s3.REFRESH_AFTER", 1.0)
    monkeypatch.setenv("MODELKIN_STORE", f"s3://{bucket}/objects")
    monkeypatch.setenv("MODELKIN_S3_PART_SIZE", str(5 * MiB))
    monkeypatch.setattr("modelkin.registry.s3.COPY_LIMIT", 6 * MiB)
    monkeypatch.setattr("modelkin.registry.s3.COPY_PART", 5 * MiB)
    reg = Registry.open()
    data = os.urandom(size)
    digest = reg.store.put_bytes(data)  # an orphan: stored, referenced by no version (a crashed registration)
    first = _last_modified(s3_server, bucket, digest)
    time.sleep(2.1)  # S3 dates objects to the second
    parts = s3_server.count(bucket, "part")
    assert reg.store.put_bytes(data) == digest  # a new registration reuses it
    assert s3_server.count(bucket, "part") == parts  # no bytes sent again
    assert _last_modified(s3_server, bucket, digest) > first
    if size > 6 * MiB:  # the upload, then the copy by ranges completing
        assert (s3_server.count(bucket, "write"), s3_server.count(bucket, "part-copy")) == (2, 3)
    else:
        assert s3_server.count(bucket, "copy") == 1
    report = reg.gc(grace_seconds=2.0)  # older than 2 s before the reuse: would have been deleted
    assert report.blobs_removed == 0 and reg.store.read_verified(digest) == data
    reg.close()


def test_gc_asks_a_blobs_age_again_before_deleting_it(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """A blob listed as old but refreshed since the listing (a writer reusing it) stays; a stale one goes."""
    fresh = registry.store.put_bytes(b"reused while gc was listing")
    stale = registry.store.put_bytes(b"really unreferenced")
    listed = list(registry.store.iter_blobs())
    monkeypatch.setattr(registry.store, "iter_blobs", lambda: iter(dataclasses.replace(b, mtime=0.0) for b in listed))
    real_mtime = registry.store.mtime
    monkeypatch.setattr(registry.store, "mtime", lambda d: real_mtime(d) if d == fresh else 0.0)
    report = registry.gc(grace_seconds=3600)
    assert (report.blobs_removed, report.kept_recent) == (1, 1)
    assert registry.store.exists(fresh) and not registry.store.exists(stale)


def test_an_interrupted_multipart_upload_is_invisible_and_gc_aborts_it(
    registry: Registry, s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch, cli: Any
) -> None:
    monkeypatch.setenv("MODELKIN_STORE", f"s3://{bucket}/objects")
    client = s3_server.client()
    digest = hashlib.sha256(b"never finished").hexdigest()
    key = f"objects/{digest[:2]}/{digest[2:]}"
    up = client.create_multipart_upload(Bucket=bucket, Key=key)
    client.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=1, Body=b"x" * (5 * MiB))
    reg = Registry.open()
    assert not reg.store.exists(digest) and list(reg.store.iter_blobs()) == []
    result = cli("gc", "--grace", "0", "--dry-run", "--json")
    assert result.exit_code == 0, (result.stderr, result.exception)
    dry = json.loads(result.stdout)
    assert (dry["multipart_aborted"], dry["leftovers_removed"], dry["leftover_bytes"]) == (1, 1, 5 * MiB)
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads")  # dry run: still there
    result = cli("gc", "--grace", "0")
    assert result.exit_code == 0 and "1 multipart uploads" in result.stdout
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    reg.close()


# -- no implicit bucket; init and store check say what is wrong -------------------------------------------------


def test_a_missing_bucket_is_never_created(s3_server: S3Server, bucket: str, cli: Any, weights: Path) -> None:
    env = {"MODELKIN_STORE": "s3://no-such-bucket/objects"}
    result = cli("init", env=env)
    assert result.exit_code == 1
    assert "the bucket 'no-such-bucket' does not exist" in result.stderr and "registry ready" not in result.stdout
    assert cli("init", env={"MODELKIN_STORE": f"s3://{bucket}/objects"}).exit_code == 0
    result = cli("register", weights, "--name", "m", env=env)  # a typo after init: clear, and nothing created
    assert result.exit_code == 1 and "'no-such-bucket' does not exist" in result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    buckets = [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    assert "no-such-bucket" not in buckets
    assert cli("list", "--json", env=env).stdout.strip() == "[]"  # no version without its blobs


def test_store_check_reports_ok(bucket: str, cli: Any) -> None:
    result = cli("store", "check", "--json", env={"MODELKIN_STORE": f"s3://{bucket}/objects"})
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"store": f"s3://{bucket}/objects", "ok": True, "problem": None,
                                         "message": None, "hint": None}  # fmt: skip
    local = cli("store", "check")
    assert local.exit_code == 0 and "store ok" in local.stdout


SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY-SECRET"
TOKEN = "FwoGZXIvYXdzE-SESSION-TOKEN-1234"
PASSWORD = "hunter2-endpoint-password"


@pytest.fixture(scope="module")
def locked_server() -> Iterator[tuple[str, dict[str, str]]]:
    """A second moto server, with authentication on, and credentials of a user who may do nothing."""
    import boto3

    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}  # bucket, user, key: then every request is checked
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port)
        admin = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "AKIAADMIN0000000000",
                 "aws_secret_access_key": "admin"}  # fmt: skip
        boto3.client("s3", **admin).create_bucket(Bucket="locked")
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        yield endpoint, {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    finally:
        proc.kill()
        proc.wait()


def _case(name: str, s3_server: S3Server, bucket: str, locked: tuple[str, dict[str, str]]) -> dict[str, str | None]:
    ok_env: dict[str, str | None] = {
        "AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_MAX_ATTEMPTS": "1",
        "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN, "MODELKIN_STORE": f"s3://{bucket}/o",
    }  # fmt: skip
    if name == "unreachable":  # a password in the endpoint URL must not show in the message
        return {**ok_env, "AWS_ENDPOINT_URL": f"http://admin:{PASSWORD}@127.0.0.1:{free_port()}"}
    if name == "missing_bucket":
        return {**ok_env, "MODELKIN_STORE": "s3://no-such-bucket/o"}
    if name == "missing_credentials":
        return {**ok_env, "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None}
    if name == "access_denied":
        return {**ok_env, "AWS_ENDPOINT_URL": locked[0], "AWS_SESSION_TOKEN": None, "MODELKIN_STORE": "s3://locked/o",
                **locked[1]}  # fmt: skip
    assert name == "bad_credentials"
    return {**ok_env, "AWS_ENDPOINT_URL": locked[0], "AWS_SESSION_TOKEN": None, "MODELKIN_STORE": "s3://locked/o"}


@pytest.mark.parametrize(
    ("case", "sentence"),
    [
        ("unreachable", "cannot reach the S3 endpoint http://127.0.0.1:"),
        ("missing_bucket", "the bucket 'no-such-bucket' does not exist"),
        ("missing_credentials", "no AWS credentials were found"),
        ("access_denied", "access to the bucket 'locked' was denied"),
        ("bad_credentials", "rejected the AWS credentials (InvalidAccessKeyId)"),
    ],
)
def test_init_and_store_check_say_what_is_wrong_without_secrets(
    case: str, sentence: str, s3_server: S3Server, bucket: str, locked_server: Any, cli: Any, weights: Path
) -> None:
    env = _case(case, s3_server, bucket, locked_server)
    secrets = [SECRET, TOKEN, PASSWORD, str(env["AWS_SECRET_ACCESS_KEY"])] if env["AWS_SECRET_ACCESS_KEY"] else [TOKEN]
    check = cli("store", "check", "--json", env=env)
    assert check.exit_code == 1
    verdict = json.loads(check.stdout)
    assert (verdict["ok"], verdict["problem"]) == (False, case) and sentence in verdict["message"]
    human = cli("store", "check", env=env)
    init = cli("init", env=env)
    assert human.exit_code == init.exit_code == 1
    assert sentence in human.stderr and sentence in init.stderr and "registry ready" not in init.stdout
    for result in (check, human, init):
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr
        for secret in secrets:
            assert secret not in result.stdout + result.stderr


def test_register_after_the_store_breaks_is_one_clear_error(
    s3_server: S3Server, bucket: str, cli: Any, weights: Path
) -> None:
    assert cli("init", env={"MODELKIN_STORE": f"s3://{bucket}/o"}).exit_code == 0
    env = {"MODELKIN_STORE": f"s3://{bucket}/o", "AWS_MAX_ATTEMPTS": "1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}  # fmt: skip
    result = cli("register", weights, "--name", "m", env=env)
    assert result.exit_code == 1 and "cannot reach the S3 endpoint" in result.stderr
    assert "internal error" not in result.stderr
    assert not list(Settings.resolve().staging.glob("*"))  # nothing staged is left behind


def test_user_information_in_the_endpoint_is_never_sent_or_shown(
    s3_server: S3Server, bucket: str, cli: Any, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint.replace("http://", f"http://admin:{PASSWORD}@"))
    monkeypatch.setenv("MODELKIN_STORE", f"s3://{bucket}/o")
    results = [cli("init"), cli("register", weights, "--name", "m"), cli("verify", "m"), cli("store", "check")]
    assert [r.exit_code for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
    assert all(PASSWORD not in r.stdout + r.stderr for r in results)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("s3://AKIA:topsecret@bucket/objects", "holds credentials"),
        ("s3:///objects", "names no bucket"),
    ],
)
def test_bad_store_urls(cli: Any, s3_env: S3Server, url: str, fragment: str) -> None:
    result = cli("store", "check", env={"MODELKIN_STORE": url})
    assert result.exit_code == 1 and fragment in result.stderr and "topsecret" not in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_part_size_is_a_clear_error(cli: Any, bucket: str) -> None:
    result = cli("store", "check", env={"MODELKIN_STORE": f"s3://{bucket}/o", "MODELKIN_S3_PART_SIZE": "1000"})
    assert result.exit_code == 1 and "MODELKIN_S3_PART_SIZE='1000' is not a part size S3 accepts" in result.stderr


def test_a_store_at_the_bucket_root_and_a_neighbour_prefix(
    s3_server: S3Server, bucket: str, cli: Any, weights: Path
) -> None:
    """``s3://bucket`` works, and gc of one prefix never touches another registry's uploads in the same bucket."""
    client = s3_server.client()
    other = client.create_multipart_upload(Bucket=bucket, Key="objects-of-another-team/ab/cd")
    env = {"MODELKIN_STORE": f"s3://{bucket}/objects"}
    assert cli("init", env=env).exit_code == 0
    assert cli("gc", "--grace", "0", env=env).exit_code == 0
    assert [u["UploadId"] for u in client.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [other["UploadId"]]
    root = {"MODELKIN_STORE": f"s3://{bucket}", "MODELKIN_HOME": str(Path(os.environ["MODELKIN_HOME"]) / "r2")}
    assert cli("store", "check", env=root).exit_code == 0 and cli("init", env=root).exit_code == 0
    assert cli("register", weights, "--name", "m", env=root).exit_code == 0
    assert cli("verify", "m", env=root).exit_code == 0
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert all(not k.startswith("/") and not k.rsplit("/", 1)[-1].startswith(".") for k in keys)
