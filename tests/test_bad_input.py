"""Every bad input the foundation issue names: a clear one-line error, a non-zero exit, nothing lost."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from modelkin import IntegrityError, InvalidModelFile, Registry, UnsafeFormat, UnsafePath
from tests.conftest import make_weights, stored_bytes, tamper


def _assert_clean_failure(result: Any, code: int = 1) -> str:
    """One sentence on stderr, nothing on stdout, no traceback."""
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr and result.stderr.startswith("Error: ")
    return str(result.stderr)


def _header(doc: dict[str, Any]) -> bytes:
    raw = json.dumps(doc).encode()
    return struct.pack("<Q", len(raw)) + raw


def _bad_files(tmp: Path, good: Path) -> dict[str, Path]:
    data = good.read_bytes()
    out = {
        "truncated-data": data[: len(data) - 10],
        "truncated-header": data[:20],
        "tiny": data[:5],
        "empty": b"",
        "garbage": os.urandom(4096),
        "absurd-header-size": struct.pack("<Q", 2**62) + data[8:],
        "header-past-end": struct.pack("<Q", len(data)) + data[8:],
        "not-json": struct.pack("<Q", 8) + b"{nope!!}",
        "offsets-past-end": _header({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1 << 40]}}) + b"\0" * 16,
        "shape-mismatch": _header({"w": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}}) + b"\0" * 16,
        "overlap": _header(
            {
                "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
            }
        )
        + b"\0" * 16,  # fmt: skip
        "hole": _header({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}) + b"\0" * 16,
        "unknown-dtype": _header({"a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}) + b"\0" * 8,
        "negative-shape": _header({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}) + b"\0" * 8,
        "astronomic-shape": _header({"a": {"dtype": "F32", "shape": [10**200, 10**200], "data_offsets": [0, 8]}})
        + b"\0" * 8,
        "huge-integer": struct.pack("<Q", 5030) + b'{"a": ' + b"9" * 5000 + b"}" + b" " * 24,
        "deep-nesting": struct.pack("<Q", 100000) + b"[" * 100000,
        "metadata-not-a-map": _header({"__metadata__": [], "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})
        + b"\0" * 8,
    }
    paths = {}
    for name, content in out.items():
        p = tmp / f"{name}.safetensors"
        p.write_bytes(content)
        paths[name] = p
    return paths


def test_corrupt_safetensors_are_refused(registry: Registry, weights: Path, tmp_path: Path, cli: Any) -> None:
    for name, path in _bad_files(tmp_path, weights).items():
        with pytest.raises(InvalidModelFile, match="not a valid safetensors file"):
            registry.register(path, name="m")
        err = _assert_clean_failure(cli("register", path, "--name", "m", "--json"))
        assert str(path) in err, name  # the message names the user's file, not the name it would be stored as
    assert registry.list(include_yanked=True) == []
    assert registry.log()[-1].kind == "db-upgrade"  # nothing registered


def test_pickle_refused_without_flag_and_safe_with_it(registry: Registry, tmp_path: Path, cli: Any) -> None:
    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(2)}
    ckpt = tmp_path / "model.pt"
    torch.save({"state_dict": state, "epoch": 3}, ckpt)
    with pytest.raises(UnsafeFormat, match="pickle"):
        registry.register(ckpt, name="m")
    err = _assert_clean_failure(cli("register", ckpt, "--name", "m"))
    assert "--allow-pickle" in err
    v = registry.register(ckpt, name="m", allow_pickle=True).version
    assert [f.path for f in v.files] == ["model.safetensors"]
    renamed = tmp_path / "other-name.pt"
    renamed.write_bytes(ckpt.read_bytes())
    assert registry.register(renamed, name="m", allow_pickle=True).version.digest == v.digest  # name-independent
    loaded = registry.load_state_dict(v.ref)
    assert torch.equal(loaded["w"], state["w"]) and torch.equal(loaded["b"], state["b"])


class _Exploit:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {os.environ['MODELKIN_EXPLOIT_MARK']}",))


def test_malicious_pickle_never_runs(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mark = tmp_path / "pwned"
    monkeypatch.setenv("MODELKIN_EXPLOIT_MARK", str(mark))
    evil = tmp_path / "evil.bin"
    torch.save({"w": torch.ones(2), "x": _Exploit()}, evil)
    with pytest.raises(InvalidModelFile, match="could not be loaded safely") as info:
        registry.register(evil, name="evil", allow_pickle=True)
    assert "weights_only=False" not in str(info.value) + str(info.value.hint)  # never advise the unsafe load
    assert not mark.exists()
    assert registry.list() == []


def _hf_dir(root: Path, shards: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text("{}")
    make_weights(root / "model-00001-of-00001.safetensors")
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": shards}))
    return root


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/../../outside.safetensors"])
def test_sharded_index_that_escapes_is_refused(registry: Registry, tmp_path: Path, shard: str, cli: Any) -> None:
    make_weights(tmp_path / "outside.safetensors")  # a real file outside the model directory
    model = _hf_dir(tmp_path / "model", {"head.weight": shard})
    with pytest.raises(UnsafePath, match="escapes the model directory"):
        registry.register(model, name="m")
    _assert_clean_failure(cli("register", model, "--name", "m"))
    assert registry.list() == []


def test_sharded_index_must_match_its_shards(registry: Registry, tmp_path: Path) -> None:
    ok = _hf_dir(tmp_path / "ok", {k: "model-00001-of-00001.safetensors" for k in
                                   ["trunk.0.weight", "trunk.0.bias", "head.weight", "head.bias"]})  # fmt: skip
    assert registry.register(ok, name="ok").version.tensors == 4
    missing = _hf_dir(tmp_path / "missing", {"head.weight": "model-00002-of-00002.safetensors"})
    with pytest.raises(InvalidModelFile, match="not in the model directory"):
        registry.register(missing, name="m")
    wrong = _hf_dir(tmp_path / "wrong", {"not.there": "model-00001-of-00001.safetensors"})
    with pytest.raises(InvalidModelFile, match="does not hold it"):
        registry.register(wrong, name="m")


def test_symlink_out_of_the_directory_is_refused(registry: Registry, tmp_path: Path, cli: Any) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    model = tmp_path / "model"
    model.mkdir()
    make_weights(model / "model.safetensors")
    (model / "tokenizer.json").symlink_to(secret)
    with pytest.raises(UnsafePath, match="outside the model directory"):
        registry.register(model, name="m")
    _assert_clean_failure(cli("register", model, "--name", "m"))
    (model / "tokenizer.json").unlink()
    (model / "notes.txt").write_text("inside")
    (model / "link.txt").symlink_to(model / "notes.txt")  # a link that stays inside is fine
    assert registry.register(model, name="m").created


@pytest.mark.parametrize("ref", ["bad ref!", "m:0", "m:x", "sha256:12", "m@", "m:99999999999999999999", "m:3000000000"])
def test_malformed_ref_is_a_usage_error(registry: Registry, weights: Path, cli: Any, ref: str) -> None:
    registry.register(weights, name="m")
    err = _assert_clean_failure(cli("show", ref, "--json"), code=2)
    assert "not a valid" in err


@pytest.mark.parametrize("ref", ["nosuch", "m:9", "m@prod", "sha256:000000000000"])
def test_unknown_ref_exits_1(registry: Registry, weights: Path, cli: Any, ref: str) -> None:
    registry.register(weights, name="m")
    _assert_clean_failure(cli("show", ref, "--json"))


SMALL_MLP = {"family": "mlp", "in_features": 8, "hidden": [16], "num_classes": 4, "input_space": "digits-64"}


def _weights_digest(registry: Registry, ref: str) -> str:
    return registry.get(ref).files[0].sha256


@pytest.mark.parametrize("where", ["first", "header", "data", "last"])
def test_altered_blob_is_detected_by_verify_and_every_load(
    registry: Registry, store: str, weights: Path, cli: Any, where: str, tmp_path: Path
) -> None:
    v = registry.register(weights, name="m", architecture=SMALL_MLP).version
    digest = _weights_digest(registry, v.ref)
    data = bytearray(stored_bytes(registry, digest))
    header_len = struct.unpack("<Q", bytes(data[:8]))[0]
    pos = {"first": 0, "header": 8 + header_len // 2, "data": 8 + header_len + 10, "last": len(data) - 1}[where]
    data[pos] ^= 0x01
    tamper(registry, digest, bytes(data))

    report = registry.verify(v.ref)
    assert not report.ok and [(p.path, p.kind) for p in report.problems] == [("model.safetensors", "changed")]
    result = cli("verify", "m", "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["problems"] == [
        {"path": "model.safetensors", "kind": "changed"}
    ]
    other = registry.register(make_weights(tmp_path / "other.safetensors", seed=9), name="other").version
    loaders = {
        "load_state_dict": lambda: registry.load_state_dict(v.ref),
        "load_module": lambda: registry.load_module(v.ref),
        "diff": lambda: registry.diff(v.ref, other.ref),
        "export": lambda: registry.export(v.ref, tmp_path / "export"),
    }
    for load in loaders.values():
        with pytest.raises(IntegrityError, match="altered on disk"):
            load()
    assert not (tmp_path / "export").exists()  # a failed export leaves no folder behind
    _assert_clean_failure(cli("export", "m", tmp_path / "export2"))


def test_registering_the_same_bytes_again_repairs_a_damaged_blob(
    registry: Registry, weights: Path, tmp_path: Path
) -> None:
    v = registry.register(weights, name="m").version
    digest = _weights_digest(registry, v.ref)
    tamper(registry, digest, b"\0" + stored_bytes(registry, digest)[1:])
    assert not registry.verify(v.ref).ok
    assert not registry.register(weights, name="m").created  # same bytes, same version...
    assert registry.verify(v.ref).ok  # ...and the damaged blob was replaced by the good copy
    tamper(registry, digest, b"\0" + stored_bytes(registry, digest)[1:])
    other = registry.register(weights, name="other").version  # a new version never builds on a damaged blob
    assert registry.verify(other.ref).ok and registry.verify(v.ref).ok


def test_registering_again_repairs_a_truncated_or_missing_blob_on_every_store(
    registry: Registry, store: str, weights: Path
) -> None:
    """A remote blob is never rewritten, except when its size shows it is not what its name says."""
    v = registry.register(weights, name="m").version
    digest = _weights_digest(registry, v.ref)
    good = stored_bytes(registry, digest)
    for damage in (good[:-100], None):
        tamper(registry, digest, damage)
        assert not registry.verify(v.ref).ok
        assert not registry.register(weights, name="m").created
        assert registry.verify(v.ref).ok and stored_bytes(registry, digest) == good


def test_missing_blob_and_altered_manifest(registry: Registry, store: str, weights: Path, cli: Any) -> None:
    v = registry.register(weights, name="m").version
    tamper(registry, _weights_digest(registry, v.ref), None)
    assert [(p.path, p.kind) for p in registry.verify(v.ref).problems] == [("model.safetensors", "missing")]
    with pytest.raises(IntegrityError, match="missing"):
        registry.load_state_dict(v.ref)
    manifest = v.digest.removeprefix("sha256:")
    tamper(registry, manifest, stored_bytes(registry, manifest).replace(b'"format_version":1', b'"format_version":2'))
    assert [(p.path, p.kind) for p in registry.verify(v.ref).problems][0] == ("(manifest)", "changed")
    assert cli("verify", "m").exit_code == 1


def test_failure_mid_register_leaves_no_version_and_gc_collects(
    registry: Registry, store: str, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modelkin.registry.registry as reg_module

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full while writing tensor rows")

    monkeypatch.setattr(reg_module, "insert_tensors", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        registry.register(weights, name="m", tags={"a": "b"}, parents=["hf:org/base"])
    assert registry.list(include_yanked=True) == []
    assert [e.kind for e in registry.log()] == ["db-upgrade"]
    orphans = list(registry.store.iter_blobs())
    assert len(orphans) == 2  # the weights and the manifest, written before the transaction
    assert registry.gc(grace_seconds=3600).blobs_removed == 0  # too young: a registration may be running
    report = registry.gc(grace_seconds=0)
    assert report.blobs_removed == 2 and report.bytes_freed == sum(b.size for b in orphans)
    assert list(registry.store.iter_blobs()) == []
    monkeypatch.undo()
    assert registry.register(weights, name="m").version.ref == "m:1"  # works afterwards


def test_gc_keeps_referenced_blobs(registry: Registry, store: str, weights: Path) -> None:
    v = registry.register(weights, name="m").version
    assert registry.gc(grace_seconds=0).blobs_removed == 0
    assert registry.verify(v.ref).ok


def test_registry_never_touches_source_files(registry: Registry, tmp_path: Path, minilm_dir: Path) -> None:
    src = tmp_path / "model"
    make_weights(src / "model.safetensors")
    (src / "config.json").write_text("{}")
    before = {p: (p.stat().st_mtime_ns, p.stat().st_nlink, p.read_bytes()) for p in src.rglob("*")}
    v = registry.register(src, name="m").version
    after = {p: (p.stat().st_mtime_ns, p.stat().st_nlink, p.read_bytes()) for p in src.rglob("*")}
    assert before == after  # nothing written, linked or added
    for f in v.files:
        blob = registry.store.root / f.sha256[:2] / f.sha256[2:]  # type: ignore[attr-defined]
        assert blob.stat().st_ino != (src / f.path).stat().st_ino and blob.stat().st_nlink == 1


def test_concurrent_registrations_on_sqlite(tmp_path: Path) -> None:
    """Four processes register into one SQLite registry at once: all succeed (writers queue for the lock)."""
    home = tmp_path / "shared-home"
    Registry.init(home).close()
    files = [make_weights(tmp_path / f"w{i}.safetensors", seed=100 + i) for i in range(4)]
    env = {**os.environ, "MODELKIN_HOME": str(home)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "modelkin", "register", str(f), "--name", "shared", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for f in files
    ]
    outcomes = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert [code for code, _, _ in outcomes] == [0, 0, 0, 0], [err for _, _, err in outcomes]
    ok = [json.loads(out) for _, out, _ in outcomes]
    reg = Registry.open(home)
    versions = reg.list(include_yanked=True)
    assert sorted(v.version for v in versions) == [1, 2, 3, 4]
    assert {v.digest for v in versions} == {o["digest"] for o in ok}
    with reg.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    for v in versions:
        assert reg.verify(v.ref).ok


def test_registering_a_directory_without_weights(registry: Registry, tmp_path: Path, cli: Any) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    err = _assert_clean_failure(cli("register", tmp_path / "empty", "--name", "m"))
    assert "holds no weights" in err
    err = _assert_clean_failure(cli("register", tmp_path / "nope.safetensors", "--name", "m"))
    assert "does not exist" in err
    (tmp_path / "notes.txt").write_text("x")
    assert "not a weights file" in _assert_clean_failure(cli("register", tmp_path / "notes.txt", "--name", "m"))


def test_zero_size_and_scalar_tensors_are_fine(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "odd.safetensors"
    save_file({"empty": np.zeros((0, 3), np.float32), "scalar": np.array(2.0, np.float64)}, str(path))
    v = registry.register(path, name="odd").version
    assert v.parameters == 1 and v.tensors == 2
    state = registry.load_state_dict(v.ref)
    assert state["empty"].shape == (0, 3) and float(state["scalar"]) == 2.0
