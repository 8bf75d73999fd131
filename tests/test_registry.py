"""The Registry API: registration, identity, lookup, tags, aliases, yank, diff, log, gc, stores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from modelkin import ModelNotFound, Registry
from modelkin.db.engine import read_session
from modelkin.errors import AmbiguousRef, InvalidName, InvalidRef, RegistryNotFound
from modelkin.refs import ModelRef
from modelkin.registry.registry import resolve
from tests.conftest import make_weights


def _blob_count(reg: Registry) -> int:
    return sum(1 for _ in reg.store.iter_blobs())


def test_register_file_records_manifest_identity(registry: Registry, weights: Path) -> None:
    result = registry.register(weights, name="digits-mlp", tags={"task": "digits"})
    v = result.version
    assert result.created and v.ref == "digits-mlp:1" and v.version == 1
    assert v.digest.startswith("sha256:") and len(v.digest) == 71
    assert v.parameters == 16 * 8 + 16 + 4 * 16 + 4 and v.tensors == 4
    assert [f.path for f in v.files] == ["model.safetensors"]
    assert v.files[0].sha256 == _sha(weights) and v.bytes == weights.stat().st_size
    assert v.tags == {"task": "digits"}
    manifest = registry.manifest(v.ref)
    assert manifest["parameters"] == v.parameters
    assert {t["name"] for t in manifest["tensors"]} == set(load_file(str(weights)))
    # the digest names the manifest's bytes exactly
    blob = registry.store.read_verified(v.digest[7:])
    assert json.loads(blob) == manifest


def test_same_bytes_same_name_returns_existing_version(registry: Registry, weights: Path) -> None:
    first = registry.register(weights, name="m").version
    again = registry.register(weights, name="m")
    assert not again.created and again.version.ref == first.ref
    assert [v.ref for v in registry.list()] == ["m:1"]


def test_same_bytes_other_name_shares_blobs(registry: Registry, weights: Path) -> None:
    a = registry.register(weights, name="a").version
    blobs = _blob_count(registry)
    b = registry.register(weights, name="b").version
    assert b.ref == "b:1" and b.digest == a.digest
    assert _blob_count(registry) == blobs  # nothing stored twice


def test_new_bytes_make_the_next_version(registry: Registry, tmp_path: Path) -> None:
    registry.register(make_weights(tmp_path / "1.safetensors", seed=1), name="m")
    v2 = registry.register(make_weights(tmp_path / "2.safetensors", seed=2), name="m").version
    assert v2.ref == "m:2"
    assert registry.get("m").ref == "m:2"
    assert registry.get("m:1").version == 1


def test_declared_parents_registered_and_external(registry: Registry, tmp_path: Path) -> None:
    registry.register(make_weights(tmp_path / "p.safetensors", seed=1), name="parent")
    registry.register(make_weights(tmp_path / "q.safetensors", seed=3), name="other")
    child = registry.register(
        make_weights(tmp_path / "c.safetensors", seed=2), name="child", parents=["parent", "hf:org/base"]
    ).version
    assert child.declared_parents == ("parent:1", "hf:org/base")
    assert child.relation == "merge"  # two parents and no relation given
    bare = registry.register(make_weights(tmp_path / "d.safetensors", seed=4), name="d", parents=["org/unknown"])
    assert bare.version.declared_parents == ("hf:org/unknown",) and bare.version.relation == "finetune"
    blobs = _blob_count(registry)
    with pytest.raises(ModelNotFound):
        registry.register(make_weights(tmp_path / "e.safetensors", seed=5), name="e", parents=["nosuch"])
    assert _blob_count(registry) == blobs  # refused before anything was copied
    with pytest.raises(InvalidName):
        registry.register(make_weights(tmp_path / "f.safetensors", seed=6), name="f", relation="cousin")


def test_register_module_and_state_dict(registry: Registry) -> None:
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    v = registry.register(module, name="seq").version
    state = registry.load_state_dict(v.ref)
    assert set(state) == set(module.state_dict())
    for k, t in module.state_dict().items():
        assert torch.equal(state[k], t)
    again = registry.register(module.state_dict(), name="seq")
    assert not again.created  # same tensors, same bytes, same version
    with pytest.raises(InvalidName, match="needs a name"):
        registry.register(module)  # a module has no file name to default to


def test_lookup_errors(registry: Registry, weights: Path) -> None:
    registry.register(weights, name="digits-mlp")
    with pytest.raises(ModelNotFound, match="no model named 'digits-mpl'") as info:
        registry.get("digits-mpl")
    assert "digits-mlp" in (info.value.hint or "")
    with pytest.raises(ModelNotFound, match="does not exist"):
        registry.get("digits-mlp:7")
    with pytest.raises(ModelNotFound):
        registry.get("digits-mlp@prod")
    with pytest.raises(ModelNotFound):
        registry.get("sha256:" + "0" * 12)


def test_digest_prefix_lookup_and_ambiguity(registry: Registry, tmp_path: Path) -> None:
    versions = [registry.register(make_weights(tmp_path / f"{i}.safetensors", seed=i), name=f"m{i}").version
                for i in range(20)]  # fmt: skip
    assert registry.get(f"sha256:{versions[0].digest[7:19]}").ref == versions[0].ref
    with pytest.raises(InvalidRef):
        registry.get("sha256:" + versions[0].digest[7:10])  # under 12 digits is refused by the grammar
    # 20 digests over 16 possible first digits: two share one, so that one-digit prefix is ambiguous
    firsts = [v.digest[7] for v in versions]
    shared = next(c for c in firsts if firsts.count(c) > 1)
    with read_session(registry.engine) as s, pytest.raises(AmbiguousRef, match="matches several versions"):
        resolve(s, ModelRef(None, digest_prefix=shared))


def test_aliases_tags_and_yank(registry: Registry, tmp_path: Path) -> None:
    registry.register(make_weights(tmp_path / "1.safetensors", seed=1), name="m")
    registry.register(make_weights(tmp_path / "2.safetensors", seed=2), name="m")
    v, before = registry.set_alias("m:1", "prod")
    assert before is None and v.aliases == ("prod",)
    assert registry.get("m@prod").ref == "m:1"
    _, before = registry.set_alias("m:2", "prod")
    assert before == "m:1" and registry.get("m@prod").ref == "m:2"
    assert registry.remove_alias("m", "prod") == "m:2"
    tagged = registry.tag("m:2", {"acc": "0.9", "task": "digits"})
    assert tagged.tags == {"acc": "0.9", "task": "digits"}
    assert registry.tag("m:2", {}, remove=["acc"]).tags == {"task": "digits"}
    registry.yank("m:2", reason="bad eval")
    assert registry.get("m").ref == "m:1"  # latest not yanked
    assert registry.get("m:2").yanked  # still reachable explicitly
    assert [v.ref for v in registry.list()] == ["m:1"]
    assert [v.ref for v in registry.list(include_yanked=True)] == ["m:1", "m:2"]
    registry.yank("m:1")
    with pytest.raises(ModelNotFound, match="yanked"):
        registry.get("m")
    registry.yank("m:2", undo=True)
    assert registry.get("m").ref == "m:2"
    kinds = [e.kind for e in registry.log()]
    assert kinds == ["db-upgrade", "register", "register", "alias", "alias", "unalias", "tag", "tag", "yank",
                     "yank", "unyank"]  # fmt: skip
    assert [e.kind for e in registry.log("m:1")] == ["register", "alias", "yank"]


def test_list_filter_sort_limit(registry: Registry, tmp_path: Path) -> None:
    big = {"extra": np.ones((100, 100), dtype=np.float32)}
    registry.register(make_weights(tmp_path / "a.safetensors", seed=1), name="bert-small", tags={"task": "digits"})
    registry.register(
        make_weights(tmp_path / "b.safetensors", seed=2, extra=big), name="bert-big", tags={"task": "digits"}
    )
    registry.register(make_weights(tmp_path / "c.safetensors", seed=3), name="other", tags={"task": "text"})
    got = registry.list("name LIKE 'bert%' AND tags.task = 'digits' AND parameters > 1e4")
    assert [v.ref for v in got] == ["bert-big:1"]
    assert [v.ref for v in registry.list(sort="-parameters", limit=1)] == ["bert-big:1"]
    assert [v.ref for v in registry.list(sort="name")] == ["bert-big:1", "bert-small:1", "other:1"]
    with pytest.raises(InvalidName):
        registry.list(sort="colour")


def test_diff_reports_each_tensor(registry: Registry, tmp_path: Path) -> None:
    base = make_weights(tmp_path / "a.safetensors", seed=1)
    tensors = load_file(str(base))
    tensors["head.weight"] = tensors["head.weight"] * 1.1
    tensors["trunk.0.bias"] = np.zeros(32, dtype=np.float32)
    del tensors["head.bias"]
    tensors["new.weight"] = np.ones(3, dtype=np.float32)
    from safetensors.numpy import save_file

    save_file(tensors, str(tmp_path / "b.safetensors"))
    registry.register(base, name="a")
    registry.register(tmp_path / "b.safetensors", name="b")
    d = {t.name: t for t in registry.diff("a", "b").tensors}
    assert d["trunk.0.weight"].status == "same"
    assert d["head.weight"].status == "changed"
    assert d["head.weight"].relative_distance == pytest.approx(0.1, rel=1e-5)
    assert d["trunk.0.bias"].status == "shape-changed"
    assert d["head.bias"].status == "only-in-a"
    assert d["new.weight"].status == "only-in-b"


def test_open_requires_init(tmp_path: Path) -> None:
    with pytest.raises(RegistryNotFound, match="no registry"):
        Registry.open(tmp_path / "nowhere")


def test_init_is_idempotent(tmp_path: Path, weights: Path) -> None:
    Registry.init(tmp_path / "r").register(weights, name="m")
    reg = Registry.init(tmp_path / "r")
    assert [v.ref for v in reg.list()] == ["m:1"]


@pytest.mark.parametrize("kind", ["memory", "s3"])
def test_fsspec_store_round_trip(tmp_path: Path, weights: Path, kind: str, request: pytest.FixtureRequest) -> None:
    """A team store behind an fsspec URL works like the local one: memory://, and S3 on a real S3 API server."""
    url = f"s3://{request.getfixturevalue('bucket')}/objects" if kind == "s3" else "memory://modelkin-test-store"
    reg = Registry.init(tmp_path / "r", store=url)
    v = reg.register(weights, name="m").version
    assert reg.store.location == url
    assert reg.verify("m").ok
    state = reg.load_state_dict("m")
    assert torch.equal(state["head.weight"], torch.from_numpy(load_file(str(weights))["head.weight"]))
    out = reg.export(v.ref, tmp_path / "out")
    assert _sha(out / "model.safetensors") == v.files[0].sha256


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_concurrent_writers_get_distinct_versions(registry: Registry, tmp_path: Path) -> None:
    """Threads with their own connections race for the next version number; every one lands, none twice."""
    from concurrent.futures import ThreadPoolExecutor

    files = [make_weights(tmp_path / f"c{i}.safetensors", seed=50 + i) for i in range(6)]

    def register(path: Path) -> str:
        with Registry.open() as own:  # same MODELKIN_HOME / MODELKIN_DATABASE_URL as the fixture
            return own.register(path, name="raced", tags={"src": path.stem}).version.ref

    with ThreadPoolExecutor(max_workers=6) as pool:
        refs = list(pool.map(register, files))
    assert sorted(refs) == [f"raced:{n}" for n in range(1, 7)]
    versions = registry.list()
    assert sorted(v.version for v in versions) == list(range(1, 7))
    assert {v.tags["src"] for v in versions} == {f.stem for f in files}
    assert [e.kind for e in registry.log()].count("register") == 6


@pytest.mark.parametrize(
    ("metadata", "kept", "warning"),
    [
        ("{not json", False, "ignored the architecture"),
        ('{"family": "mlp"}', False, "ignored the architecture"),  # parameters missing
        ('{"family": "plugin-not-here", "width": 3}', True, "kept the architecture"),
    ],
)
def test_architecture_in_metadata_never_fails_registration(
    registry: Registry, tmp_path: Path, metadata: str, kept: bool, warning: str
) -> None:
    from safetensors.numpy import save_file

    from modelkin.registry.architectures import ARCH_METADATA_KEY, UnknownArchitecture

    path = tmp_path / "m.safetensors"
    save_file({"w": np.ones(3, np.float32)}, str(path), metadata={ARCH_METADATA_KEY: metadata})
    result = registry.register(path, name="m")
    assert result.created and len(result.warnings) == 1 and result.warnings[0].startswith(warning)
    assert (result.version.architecture is not None) is kept
    if kept:
        with pytest.raises(UnknownArchitecture, match="plugin-not-here"):
            registry.load_module("m")


def test_diff_compares_shape_and_dtype_before_bytes(registry: Registry, tmp_path: Path, cli: Any) -> None:
    from safetensors.numpy import save_file

    base = {"w": np.arange(8, dtype=np.float32), "m": np.zeros((2, 4), np.float32), "z": np.zeros(3, np.float32),
            "c": np.array([1 + 1j, 2 - 1j], np.complex64)}  # fmt: skip
    other = {"w": np.arange(8, dtype=np.float32).view(np.int32), "m": np.zeros((4, 2), np.float32),
             "z": np.ones(3, np.float32), "c": np.array([1 + 2j, 2 - 1j], np.complex64)}  # fmt: skip
    save_file(base, str(tmp_path / "a.safetensors"))
    save_file(other, str(tmp_path / "b.safetensors"))
    registry.register(tmp_path / "a.safetensors", name="a")
    registry.register(tmp_path / "b.safetensors", name="b")
    d = {t.name: t for t in registry.diff("a", "b").tensors}
    assert d["w"].status == "dtype-changed"  # identical bytes, another dtype
    assert d["m"].status == "shape-changed"  # identical bytes, another shape
    assert d["z"].status == "changed" and d["z"].relative_distance is None  # undefined: the base was all zeros
    assert d["c"].relative_distance == pytest.approx(1 / float(np.linalg.norm(base["c"])), rel=1e-6)
    result = cli("diff", "a", "b", "--json")
    assert result.exit_code == 0 and "Infinity" not in result.stdout and "NaN" not in result.stdout
    json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_given_architecture_must_fit_the_weights(registry: Registry, weights: Path, cli: Any, tmp_path: Path) -> None:
    from modelkin.registry.architectures import InvalidArchitecture

    fits = {"family": "mlp", "in_features": 8, "hidden": [16], "num_classes": 4, "input_space": "digits-64"}
    assert registry.register(weights, name="ok", architecture=fits).version.architecture == fits
    with pytest.raises(InvalidArchitecture, match=r"head.weight is \[4, 16\], the architecture needs \[11, 16\]"):
        registry.register(weights, name="bad", architecture={**fits, "num_classes": 11})
    with pytest.raises(InvalidArchitecture, match="missing trunk.2.weight"):
        registry.register(weights, name="bad", architecture={**fits, "hidden": [16, 16]})
    assert [v.name for v in registry.list()] == ["ok"]
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({**fits, "num_classes": 11}))
    result = cli("register", weights, "--name", "bad", "--arch", arch)
    assert result.exit_code == 1 and "does not fit the weights" in result.stderr


def test_load_module_reports_a_mismatch_clearly(registry: Registry, tmp_path: Path) -> None:
    """A spec that arrived in metadata (kept as declared) but does not fit: a ModelkinError, not torch's."""
    from safetensors.numpy import load_file, save_file

    from modelkin.registry.architectures import ARCH_METADATA_KEY, InvalidArchitecture

    spec = {"family": "mlp", "in_features": 8, "hidden": [16], "num_classes": 11, "input_space": "digits-64"}
    path = make_weights(tmp_path / "w.safetensors")
    save_file(load_file(str(path)), str(path), metadata={ARCH_METADATA_KEY: json.dumps(spec)})
    registry.register(path, name="m")
    with pytest.raises(InvalidArchitecture, match="does not fit its weights"):
        registry.load_module("m")
