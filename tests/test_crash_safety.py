"""What already held under attack stays tested (issue 10): kill -9 mid-registration leaves no visible half
version, and concurrent registering processes lose nothing, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_weights
from safetensors.numpy import save_file

from modelkin import Registry

KILL_DELAYS = (0.3, 0.8, 1.2, 1.6, 2.0, 2.5, 3.5)  # before, during and after the copy of a 64 MB model


def _register(path: Path, name: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "modelkin", "register", str(path), "--name", name, "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_kill_9_during_register_leaves_no_half_version(backend: str, tmp_path: Path) -> None:
    reg = Registry.init()
    big = tmp_path / "big.safetensors"
    rng = np.random.default_rng(0)
    save_file({f"layer.{i}": rng.standard_normal((1024, 1024)).astype(np.float32) for i in range(16)}, str(big))
    env = dict(os.environ)
    for i, delay in enumerate(KILL_DELAYS):
        proc = _register(big if i % 2 == 0 else make_weights(tmp_path / f"s{i}.safetensors", seed=i), "victim", env)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        for v in reg.list(include_yanked=True):  # whatever is visible is whole
            assert reg.verify(v.ref).ok, v.ref
            assert len(reg.manifest(v.ref)["files"]) == len(v.files) == 1
    done = _register(big, "victim", env)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    assert reg.verify(json.loads(out)["ref"]).ok
    reg.close()


def test_concurrent_registering_processes_lose_nothing(backend: str, tmp_path: Path) -> None:
    Registry.init().close()
    files = [make_weights(tmp_path / f"w{i}.safetensors", seed=200 + i) for i in range(6)]
    procs = [_register(f, "shared", dict(os.environ)) for f in files]
    outcomes = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert [code for code, _, _ in outcomes] == [0] * 6, [err for _, _, err in outcomes]
    with Registry.open() as reg:
        versions = reg.list()
        assert sorted(v.version for v in versions) == [1, 2, 3, 4, 5, 6]
        assert {v.digest for v in versions} == {json.loads(out)["digest"] for _, out, _ in outcomes}
        assert all(reg.verify(v.ref).ok for v in versions)


@pytest.mark.parametrize("allow", [False, True])
def test_malicious_pickle_never_runs_through_the_cli(tmp_path: Path, allow: bool) -> None:
    import torch
    from fuzzing.cases import Evil

    Registry.init().close()
    marker = tmp_path / "code-ran"
    torch.save({"w": torch.ones(2), "x": Evil(str(marker))}, tmp_path / "evil.bin")
    args = [sys.executable, "-m", "modelkin", "register", str(tmp_path / "evil.bin")] + (["--allow-pickle"] * allow)
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr and not marker.exists(), result.stderr
