"""What crashes leave behind, on every store: gc removes it once its writer is gone; kill -9 never leaves a half
blob or a version without its blobs; many processes registering at once lose and duplicate nothing."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import PG_URL, make_weights
from s3server import S3Server
from safetensors.numpy import save_file

from modelkin import Registry
from modelkin.config import Settings
from modelkin.registry.staging import host_tag, writer_name
from modelkin.registry.store import LocalStore

MiB = 2**20
WRITERS = Path(__file__).with_name("writers.py")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _name(prefix: str, pid: int, host: str | None = None) -> str:
    return f"{prefix}-{host or host_tag()}-{pid}-{os.urandom(8).hex()}"


def test_gc_removes_leftovers_whose_writer_is_gone(
    registry: Registry, store: str, s3_server: S3Server, cli: Any, weights: Path
) -> None:
    v = registry.register(weights, name="m").version
    dead = _dead_pid()
    staging = Settings.resolve().staging
    staging.mkdir(exist_ok=True)
    (staging / f"{_name('blob', dead)}.part").write_bytes(b"x" * 1000)  # a crashed upload's staging file
    crashed = staging / f"{_name('register', dead)}-abc123"  # a crashed registration's folder
    crashed.mkdir()
    (crashed / "converted-0.safetensors").write_bytes(b"y" * 500)
    live = staging / writer_name("blob", ".part")  # this process: a live writer, kept whatever its age
    foreign = staging / f"{_name('blob', dead, 'other-host')}.part"  # another host's: only its age can tell
    for path in (live, foreign):
        path.write_bytes(b"z" * 10)
    if isinstance(registry.store, LocalStore):
        (registry.store.root / _name(".incoming", dead)).write_bytes(b"t" * 300)
        own = registry.store.root / writer_name(".incoming")
        own.write_bytes(b"live")
        grace, kept, staged = [], [live, foreign, own], 2
    else:  # an older release's temporary object: nobody can say who wrote it, so it goes after the grace period
        s3_server.client().put_object(Bucket=store[5:].split("/")[0], Key="objects/.incoming-" + "ab" * 16,
                                      Body=b"t" * 300)  # fmt: skip
        grace, kept, staged = ["--grace", "0"], [live], 3  # with no grace, the foreign file's age lets it go
    dry = json.loads(cli("gc", *grace, "--dry-run", "--json").stdout)
    removed_bytes = 1500 + 300 + (10 if grace else 0)
    assert (dry["staging_removed"], dry["temporary_removed"], dry["multipart_aborted"]) == (staged, 1, 0)
    assert dry["leftovers_removed"] == staged + 1 and dry["leftover_bytes"] == removed_bytes
    assert dry["blobs_removed"] == 0 and dry["bytes_freed"] == removed_bytes
    assert len(list(staging.iterdir())) == 4  # a dry run removes nothing
    result = cli("gc", *grace)
    assert result.exit_code == 0 and f"removed {staged + 1} leftovers of interrupted writes" in result.stdout
    assert sorted(staging.iterdir()) == sorted(p for p in kept if p.parent == staging)
    assert all(p.exists() for p in kept)
    assert list(registry.store.leftovers(time.time())) == []  # the live writer's file is no leftover
    assert registry.verify(v.ref).ok


def test_register_leaves_no_staging_on_any_exit_path(
    registry: Registry, store: str, weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Any
) -> None:
    import modelkin.registry.registry as reg_module

    system_tmp = tmp_path / "system-tmp"  # this process's own temp dir: other processes on the machine use /tmp
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    staging = Settings.resolve().staging
    registry.register(weights, name="ok")  # success
    assert list(staging.iterdir()) == []
    pickle = tmp_path / "model.pt"
    import torch

    torch.save({"w": torch.ones(3)}, pickle)
    registry.register(pickle, name="converted", allow_pickle=True)  # a conversion staged in the folder
    assert list(staging.iterdir()) == []

    seen: list[list[str]] = []

    def interrupted(done: int, total: int) -> None:
        seen.append([p.name for p in (*staging.iterdir(), *system_tmp.iterdir())])  # where the work happens
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # Ctrl-C mid-copy
        registry.register(make_weights(tmp_path / "b.safetensors", seed=5), name="b", progress=interrupted)
    # the registration's folder (and a remote store's staged blob) are in HOME/staging, none in the system temp
    expected = ["register"] if store == "local" else ["blob", "register"]
    assert sorted(name.split("-")[0] for name in seen[0]) == expected
    assert list(staging.iterdir()) == []
    monkeypatch.setattr(reg_module, "insert_tensors", lambda *a: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(RuntimeError):  # a failure after every blob is stored
        registry.register(make_weights(tmp_path / "c.safetensors", seed=6), name="c")
    assert list(staging.iterdir()) == []
    assert cli("register", tmp_path / "missing.safetensors").exit_code == 1  # bad input
    assert list(staging.iterdir()) == []
    assert list(system_tmp.glob("modelkin-register-*")) == []  # nothing in the system temp


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the database plays no part: spare the suite's time
def test_sigterm_mid_registration_removes_the_staging_folder(registry: Registry, store: str, tmp_path: Path) -> None:
    (tmp_path / "big").mkdir()
    model = _big_model(tmp_path / "big", 7, 24)
    staging = Settings.resolve().staging
    proc = subprocess.Popen([sys.executable, "-m", "modelkin", "register", model, "--name", "big"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    for _ in range(600):  # until the registration has staged something
        if staging.is_dir() and any(staging.iterdir()):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) in (0, 128 + signal.SIGTERM)  # finished first, or stopped by the signal
    assert list(staging.iterdir()) == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_signal_right_after_the_staging_folder_appears_still_removes_it(
    registry: Registry, weights: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM's SystemExit raised at the first instant it can be, the moment the folder exists (as a loaded
    machine makes likely: the test above sends it as soon as the folder appears)."""
    staging = Settings.resolve().staging
    real_mkdir = os.mkdir

    def mkdir_then_signal(path: Any, *args: Any, **kwargs: Any) -> None:
        real_mkdir(path, *args, **kwargs)
        if Path(path).parent == staging:
            raise SystemExit(128 + signal.SIGTERM)

    monkeypatch.setattr(os, "mkdir", mkdir_then_signal)
    assert cli("register", weights, "--name", "m").exit_code == 128 + signal.SIGTERM
    assert list(staging.iterdir()) == []


def _big_model(folder: Path, seed: int, mib: int) -> Path:
    """A two-shard model of about ``mib`` MiB, distinct for each seed."""
    rng = np.random.default_rng(seed)
    n = mib * MiB // 8  # float32 elements per shard
    for i in range(2):
        save_file({f"layer{i}.weight": rng.standard_normal(n, dtype=np.float32)}, str(folder / f"part-{i}.safetensors"))
    (folder / "config.json").write_text(json.dumps({"seed": seed}))
    return folder


def _bucket_state(reg: Registry, s3: S3Server | None, bucket: str | None) -> dict[str, Any]:
    """Blobs visible in the store (each re-hashed), plus what is unfinished."""
    blobs = {b.digest: reg.store.hash_blob(b.digest) for b in reg.store.iter_blobs()}
    uploads = s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) if s3 and bucket else []
    return {"blobs": blobs, "uploads": len(uploads)}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # PostgreSQL + S3 writers: the many-writers test
def test_kill_9_during_registration_leaves_nothing_half_done(
    registry: Registry, store: str, s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Any
) -> None:
    """A few kill -9 at random points of a registration (the benchmark does at least 20)."""
    monkeypatch.setenv("MODELKIN_S3_PART_SIZE", str(5 * MiB))  # 12 MiB shards go up in parts
    bucket = store[5:].split("/")[0] if store.startswith("s3://") else None
    rng = random.Random(12)
    models = [_big_model(Path(tempfile.mkdtemp(dir=tmp_path)), seed, 12) for seed in range(5)]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "modelkin", "register", models[0], "--name", "big"], check=True)
    full = time.perf_counter() - start
    for model in models[1:]:
        proc = subprocess.Popen([sys.executable, "-m", "modelkin", "register", model, "--name", "big"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(rng.uniform(0.3, 1.0) * full)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = _bucket_state(registry, s3_server, bucket)
        assert all(actual == digest for digest, actual in state["blobs"].items())  # no half blob under a name
        for version in registry.list(include_yanked=True):
            assert registry.verify(version.ref).ok  # no version without its blobs
    assert cli("gc", "--grace", "0").exit_code == 0
    referenced = {f.sha256 for v in registry.list(include_yanked=True) for f in v.files}
    referenced |= {v.digest.removeprefix("sha256:") for v in registry.list(include_yanked=True)}
    state = _bucket_state(registry, s3_server, bucket)
    assert set(state["blobs"]) == referenced and state["uploads"] == 0
    assert list(registry.store.leftovers(time.time() + 1)) == []
    assert list(Settings.resolve().staging.iterdir()) == []


@pytest.mark.skipif(not PG_URL, reason="the many-writers test needs MODELKIN_TEST_DATABASE_URL (PostgreSQL)")
def test_many_writers_into_one_database_and_one_bucket(
    s3_server: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Processes register new and shared models at once: 0 lost, 0 duplicated, all verify, no blob rewritten."""
    from conftest import _reset_postgres

    assert PG_URL is not None
    _reset_postgres(PG_URL)
    monkeypatch.setenv("MODELKIN_DATABASE_URL", PG_URL)
    monkeypatch.setenv("MODELKIN_STORE", f"s3://{bucket}/objects")
    Registry.init().close()
    shared = make_weights(tmp_path / "shared.safetensors", seed=1)
    plans = []
    for p in range(3):
        own = [make_weights(tmp_path / f"own-{p}-{i}.safetensors", seed=100 + 10 * p + i) for i in range(2)]
        plan = [(shared, "shared"), (shared, f"alias-{p}"), (own[0], "common"), (own[1], f"own-{p}")]
        rng = random.Random(p)
        rng.shuffle(plan)
        path = tmp_path / f"plan-{p}.json"
        path.write_text(json.dumps([[str(a), b] for a, b in plan]))
        plans.append(path)
    # each writer has its own home (staging), as separate machines would
    procs = [
        subprocess.Popen(
            [sys.executable, str(WRITERS), str(plan)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "MODELKIN_HOME": str(tmp_path / f"home-{i}")},
        )  # fmt: skip
        for i, plan in enumerate(plans)
    ]
    outcomes = [(proc.wait(timeout=300), *proc.communicate()) for proc in procs]
    assert [code for code, _, _ in outcomes] == [0, 0, 0], [err for _, _, err in outcomes]
    results = [json.loads(line) for _, out, _ in outcomes for line in out.splitlines()]
    assert len(results) == 12
    reg = Registry.open()
    versions = reg.list(include_yanked=True)
    expected = {("shared", 1), ("common", 1), ("common", 2), ("common", 3)}
    expected |= {(f"alias-{p}", 1) for p in range(3)} | {(f"own-{p}", 1) for p in range(3)}
    assert {(v.name, v.version) for v in versions} == expected  # nothing lost, nothing twice
    assert len({(v.name, v.digest) for v in versions}) == len(versions)
    assert sum(r["created"] for r in results) == len(versions)  # every other registration found its version
    assert all(reg.verify(v.ref).ok for v in versions)
    writes = s3_server.writes_per_key(bucket)
    stored = {b.digest for b in reg.store.iter_blobs()}
    assert set(writes.values()) == {1} and len(writes) == len(stored)  # every blob written exactly once
    assert s3_server.count(bucket, "copy", "delete", ok_only=False) == 0
    statuses = Counter(r.status for r in s3_server.requests(bucket, blobs_only=True) if r.kind == "write")
    assert set(statuses) <= {200, 412} and statuses[200] == len(stored)  # a racing writer was refused, not applied
    reg.close()
