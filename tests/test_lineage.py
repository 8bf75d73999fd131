"""Lineage from the weights: parent detection, tensor pairing, tree, ancestors, audit, and every bad input.

The models are small synthetic families: a "pretrained" parent (three hidden layers) and children made from it
the way real children are made (fine-tuned, renamed under a task-class prefix with a new head, pruned,
quantised), beside independent models of the same shapes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file
from sqlalchemy import select

from modelkin import Registry
from modelkin.db.engine import write_session
from modelkin.db.schema import LineageSketch
from modelkin.provenance.lineage.pairing import pair_tensors
from modelkin.provenance.lineage.sketch import FORMAT, from_bytes, sketch_model, sketch_tensor, to_bytes

Tensors = dict[str, np.ndarray]


def pretrained(seed: int) -> Tensors:
    rng = np.random.default_rng(seed)
    shapes = {"encoder.0.weight": (64, 48), "encoder.0.bias": (64,), "encoder.1.weight": (64, 64),
              "encoder.1.bias": (64,), "encoder.2.weight": (32, 64), "encoder.2.bias": (32,),
              "head.weight": (10, 32), "head.bias": (10,)}  # fmt: skip
    return {k: (rng.standard_normal(s) / np.sqrt(s[-1])).astype(np.float32) for k, s in shapes.items()}


def finetuned(parent: Tensors, seed: int, step: float = 0.05) -> Tensors:
    """Every tensor moved by ``step`` of its own norm in a random direction."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, w in parent.items():
        d = rng.standard_normal(w.shape).astype(np.float32)
        out[k] = w + step * np.linalg.norm(w) / np.linalg.norm(d) * d
    return out


def pruned(parent: Tensors, sparsity: float = 0.5) -> Tensors:
    out = dict(parent)
    for k, w in parent.items():
        if w.ndim == 2 and not k.startswith("head"):
            out[k] = np.where(np.abs(w) > np.quantile(np.abs(w), sparsity), w, 0).astype(np.float32)
    return out


def quantized(parent: Tensors, bits: int = 8) -> Tensors:
    q = 2 ** (bits - 1) - 1
    out = dict(parent)
    for k, w in parent.items():
        if w.ndim == 2:
            scale = np.abs(w).max(1, keepdims=True) / q
            out[k] = (np.round(w / scale) * scale).astype(np.float32)
    return out


def renamed(parent: Tensors, seed: int) -> Tensors:
    """A task class's copy: every tensor under ``bert.``, the head replaced by a new 3-class classifier."""
    rng = np.random.default_rng(seed)
    out = {f"bert.{k}": v for k, v in finetuned(parent, seed, 0.02).items() if not k.startswith("head")}
    out["classifier.weight"] = rng.standard_normal((3, 32)).astype(np.float32)
    out["classifier.bias"] = np.zeros(3, np.float32)
    return out


def write(path: Path, tensors: Tensors) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def register(cli: Any, path: Path, name: str, *extra: str) -> str:
    result = cli("register", path, "--name", name, *extra, "--json")
    assert result.exit_code == 0, result.stderr
    return str(json.loads(result.stdout)["ref"])


def parent_of(cli: Any, target: str | Path, *extra: str) -> dict[str, Any]:
    result = cli("lineage", "parent", target, "--json", *extra)
    assert result.exit_code == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    assert set(out) == {"query", "parent", "parents", "relation", "confidence", "candidates", "duplicates", "method"}
    return out


@pytest.fixture
def family(registry: Registry, cli: Any, tmp_path: Path) -> dict[str, Tensors]:
    """base, its children, and two unrelated models, registered children-first (order must not matter)."""
    base = pretrained(0)
    models = {
        "ft": finetuned(base, 1),
        "renamed": renamed(base, 2),
        "pruned": pruned(base),
        "int8": quantized(base, 8),
        "base": base,
        "other": pretrained(7),
        "stranger": pretrained(8),
    }
    for name, tensors in models.items():
        register(cli, write(tmp_path / "m" / f"{name}.safetensors", tensors), name)
    return models


@pytest.mark.parametrize(("child", "relation"), [("ft", "finetune"), ("renamed", "finetune"),
                                                 ("pruned", "pruned"), ("int8", "quantized")])  # fmt: skip
def test_children_find_their_parent(family: Any, cli: Any, child: str, relation: str) -> None:
    out = parent_of(cli, child)
    assert out["query"] == f"{child}:1"
    assert out["parent"] == "base:1" and out["parents"] == ["base:1"]
    assert out["relation"] == relation
    top = out["candidates"]
    assert top[0]["ref"] == "base:1" and len(top) <= 3 and out["confidence"] == top[0]["confidence"]
    assert all(c["confidence"] < top[0]["confidence"] for c in top[1:])
    assert out["duplicates"] == []


def test_pruned_and_quantised_children_are_never_parents(family: Any, cli: Any) -> None:
    """The base's children are candidates too (registered before it); the weights say which way the edge goes."""
    out = parent_of(cli, "base", "--k", "6")
    assert {c["ref"] for c in out["candidates"]} >= {"ft:1", "pruned:1", "int8:1"}
    assert not {"pruned:1", "int8:1"} & set(out["parents"])


def test_independent_models_have_no_parent(family: Any, cli: Any) -> None:
    for name in ("other", "stranger"):
        out = parent_of(cli, name)
        assert out["parent"] is None and out["relation"] is None
        assert out["confidence"] > 0.5


def test_an_unregistered_path_is_sketched_without_storing(family: Any, cli: Any, registry: Registry,
                                                          tmp_path: Path) -> None:  # fmt: skip
    path = write(tmp_path / "loose" / "child.safetensors", finetuned(family["base"], 11))
    before = len(registry.list())
    out = parent_of(cli, path)
    assert out["query"] == str(path) and out["parent"] == "base:1"
    assert len(registry.list()) == before


def test_identical_weights_are_duplicates_never_parents(family: Any, cli: Any, tmp_path: Path) -> None:
    register(cli, write(tmp_path / "copy" / "base-copy.safetensors", family["base"]), "base-copy")
    out = parent_of(cli, "base-copy")
    assert out["duplicates"] == ["base:1"] and "base:1" not in out["parents"]
    assert "base:1" not in [c["ref"] for c in out["candidates"]]
    child = parent_of(cli, "ft")
    assert child["parent"] in ("base:1", "base-copy:1")


def test_merges_report_both_parents(registry: Registry, cli: Any, tmp_path: Path) -> None:
    base = pretrained(0)
    a, b = finetuned(base, 1), finetuned(base, 2)
    merged = {k: (0.6 * a[k] + 0.4 * b[k]).astype(np.float32) for k in base}
    for name, tensors in {"base": base, "a": a, "b": b, "soup": merged}.items():
        register(cli, write(tmp_path / f"{name}.safetensors", tensors), name)
    out = parent_of(cli, "soup")
    assert out["relation"] == "merge" and sorted(out["parents"]) == ["a:1", "b:1"] and out["parent"] is None


def test_tree_ancestors_and_show(registry: Registry, cli: Any, tmp_path: Path) -> None:
    """A chain base -> g1 -> g2 and a sibling; the tree is stored as detected lineage and `show` prints it."""
    base = pretrained(0)
    g1 = finetuned(base, 1)
    g2 = finetuned(g1, 2)
    sib = finetuned(base, 3)
    for name, tensors in {"g2": g2, "base": base, "sib": sib, "g1": g1, "other": pretrained(5)}.items():
        register(cli, write(tmp_path / f"{name}.safetensors", tensors), name)
    result = cli("lineage", "tree", "--json")
    assert result.exit_code == 0, result.stderr
    tree = json.loads(result.stdout)
    assert set(tree) == {"edges", "roots"}
    edges = {(e["parent"], e["child"]) for e in tree["edges"]}
    assert edges == {("base:1", "g1:1"), ("g1:1", "g2:1"), ("base:1", "sib:1")}
    assert sorted(tree["roots"]) == ["base:1", "other:1"]
    assert all(set(e) == {"parent", "child", "relation", "confidence"} for e in tree["edges"])
    dot = cli("lineage", "tree", "--dot")
    assert dot.exit_code == 0 and dot.stdout.startswith("digraph") and '"base:1" -> "g1:1"' in dot.stdout
    filtered = json.loads(cli("lineage", "tree", "--json", "--filter", "name LIKE 'g%'").stdout)
    assert {(e["parent"], e["child"]) for e in filtered["edges"]} == {("g1:1", "g2:1")}
    anc = cli("lineage", "ancestors", "g2", "--json")
    assert json.loads(anc.stdout) == {"ref": "g2:1", "ancestors": [{"ref": "g1:1", "generation": 1},
                                                                   {"ref": "base:1", "generation": 2}]}  # fmt: skip
    shown = cli("show", "g2")
    assert "g1:1" in shown.stdout and "detected" in shown.stdout
    assert json.loads(cli("show", "g2", "--json").stdout)["detected_parents"][0]["ref"] == "g1:1"
    human = cli("lineage", "ancestors", "g2")
    assert human.exit_code == 0 and "base:1" in human.stdout


def test_audit_statuses_and_strict(registry: Registry, cli: Any, tmp_path: Path) -> None:
    base = pretrained(0)
    files = {n: write(tmp_path / f"{n}.safetensors", t) for n, t in
             {"base": base, "good": finetuned(base, 1), "liar": finetuned(base, 2), "quiet": finetuned(base, 3),
              "other": pretrained(9), "copy": base}.items()}  # fmt: skip
    register(cli, files["base"], "base")
    register(cli, files["other"], "other")
    register(cli, files["good"], "good", "--parent", "base")
    register(cli, files["liar"], "liar", "--parent", "other")
    register(cli, files["quiet"], "quiet")
    register(cli, files["copy"], "copy", "--parent", "base")
    register(cli, files["good"], "ext", "--parent", "hf:someone/unknown-model")
    result = cli("lineage", "audit", "--json")
    assert result.exit_code == 0, result.stderr
    found = {f["ref"]: f for f in json.loads(result.stdout)["findings"]}
    assert all(set(f) == {"ref", "declared", "detected", "status", "confidence"} for f in found.values())
    assert found["good:1"]["status"] == "confirmed" and found["good:1"]["detected"] == ["base:1"]
    assert found["liar:1"]["status"] == "mismatch" and found["liar:1"]["declared"] == ["other:1"]
    assert found["quiet:1"]["status"] == "undeclared"
    assert found["other:1"]["status"] == "no-parent"
    assert found["copy:1"]["status"] == "duplicate"
    assert found["ext:1"]["status"] == "unverifiable" and found["ext:1"]["confidence"] is None
    strict = cli("lineage", "audit", "--strict", "--json")
    assert strict.exit_code == 1 and json.loads(strict.stdout) == json.loads(result.stdout)
    one = cli("lineage", "audit", "good", "--strict", "--json")
    assert one.exit_code == 0 and [f["status"] for f in json.loads(one.stdout)["findings"]] == ["confirmed"]
    assert "mismatch" in cli("lineage", "audit").stdout


# -- tensor pairing --------------------------------------------------------------------------------------------


def test_pairing_strips_prefixes_and_falls_back_to_content() -> None:
    base = pretrained(0)
    child = {f"model.bert.{k}": v for k, v in base.items() if not k.startswith("head")}
    child["model.bert.encoder.1.weight"] = base["encoder.1.weight"].T.copy()  # transposed (64 x 64 stays square)
    moved = child.pop("model.bert.encoder.2.weight")
    child["model.bert.block.dense.weight"] = moved.T.copy()  # renamed and transposed: content must find it
    child["classifier.weight"] = np.ones((3, 32), np.float32)
    a, b = sketch_model(child.items()), sketch_model(base.items())
    names = {(a.tensors[p.a].name, b.tensors[p.b].name, p.by, p.transposed) for p in pair_tensors(a, b)}
    assert ("model.bert.encoder.0.weight", "encoder.0.weight", "name", False) in names
    assert ("model.bert.block.dense.weight", "encoder.2.weight", "content", True) in names
    assert not any(x == "classifier.weight" for x, *_ in names)
    assert len(names) == len(child) - 1


def test_pairing_never_pairs_unrelated_content_by_shape() -> None:
    a = sketch_model({"x.weight": pretrained(0)["encoder.1.weight"]}.items())
    b = sketch_model({"y.weight": pretrained(1)["encoder.1.weight"]}.items())
    assert pair_tensors(a, b) == []


def test_sketches_round_trip_and_estimate_distances() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((300, 200)).astype(np.float32)
    s, t = sketch_tensor("w", w), sketch_tensor("w", w + 0.1 * rng.standard_normal(w.shape).astype(np.float32))
    assert not s.exact and s.values.shape == (64, 64)
    ratio = np.linalg.norm(s.values - t.values) / np.linalg.norm(s.values)
    assert 0.07 < ratio < 0.13  # the true relative distance is 0.1
    assert np.allclose(sketch_tensor("w", w.T.copy()).values, s.values.T, atol=1e-4)  # transposition is visible
    model = sketch_model({"w": w, "ids": np.arange(5)}.items())
    again = from_bytes(to_bytes(model))
    assert [t.name for t in again.tensors] == ["w"] and np.array_equal(again.tensors[0].values, s.values)


def test_a_memory_mapped_file_sketches_like_its_tensors(tmp_path: Path) -> None:
    """The registration path (a memory-mapped file, digests from registration) gives the in-memory sketch."""
    from modelkin.provenance.lineage.weights import mapped_tensors

    rng = np.random.default_rng(1)
    tensors = {"big.weight": rng.standard_normal((700, 300)).astype(np.float32),
               "long.bias": rng.standard_normal(20000).astype(np.float32),
               "half.weight": rng.standard_normal((40, 30)).astype(np.float16),
               "ids": np.arange(4)}  # fmt: skip
    path = write(tmp_path / "m.safetensors", tensors)
    mapped = sketch_model((n, a) for n, a, _ in mapped_tensors(path))
    direct = sketch_model(sorted(tensors.items()))
    assert [t.name for t in mapped.tensors] == ["big.weight", "half.weight", "long.bias"]
    for a, b in zip(mapped.tensors, direct.tensors, strict=True):
        assert a.digest == b.digest and np.array_equal(a.values, b.values) and a.norm == pytest.approx(b.norm)
    big = direct.tensors[0]
    assert not big.exact and big.values.shape == (64, 64)
    assert big.norm == pytest.approx(float(np.linalg.norm(tensors["big.weight"])), rel=0.05)  # from its block
    again = from_bytes(to_bytes(direct)).tensors
    assert [(t.name, t.values.shape) for t in again] == [(t.name, t.values.shape) for t in direct.tensors]
    for a, b in zip(again, direct.tensors, strict=True):
        assert np.array_equal(a.values, b.values) and a.digest == b.digest


def _as_format_one(data: bytes) -> bytes:
    """A stored sketch rewritten as the previous format would have stored a projected model."""
    blob = dict(np.load(io.BytesIO(data)))
    meta = json.loads(blob["meta"].tobytes())
    meta = {**meta, "format": 1, "tensors": [{**t, "exact": False} for t in meta["tensors"]]}
    blob["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **blob)
    return buf.getvalue()


def test_sketches_of_an_older_format_are_made_again(family: Any, cli: Any, registry: Registry) -> None:
    """A stored sketch of the previous format (whole-matrix projections) is sketched again, not misread."""
    with write_session(registry.engine) as s:
        for row in s.scalars(select(LineageSketch)):
            row.sketch = _as_format_one(row.sketch)
    assert parent_of(cli, "ft")["parent"] == "base:1"
    with registry.engine.connect() as conn:
        stored = list(conn.execute(select(LineageSketch.sketch)).scalars())
    assert {json.loads(np.load(io.BytesIO(b))["meta"].tobytes())["format"] for b in stored} == {FORMAT}


def _near_copy(parent: Tensors, seed: int) -> Tensors:
    """A few tiny optimiser steps away: every weight moved by about 1e-5, none kept."""
    rng = np.random.default_rng(seed)
    return {k: (w + 3e-5 * rng.choice([-1.0, 1.0], w.shape)).astype(np.float32) for k, w in parent.items()}


def test_exact_signatures_tell_the_parent_from_its_near_copy() -> None:
    """Distance cannot separate a parent from its near-copy; what a transform leaves can, whatever the order."""
    from modelkin.provenance.lineage.calibration import ParentModel
    from modelkin.provenance.lineage.compare import compare
    from modelkin.provenance.lineage.decide import decide

    base = pretrained(0)
    copy = _near_copy(base, 1)
    rng = np.random.default_rng(2)
    lora = {k: w + (0.05 * rng.standard_normal((w.shape[0], 2)) @ rng.standard_normal((2, w.shape[1]))
                    ).astype(np.float32) if w.ndim == 2 else w for k, w in base.items()}  # fmt: skip
    models = {"base": base, "copy": copy, "int4": quantized(base, 4), "pruned": pruned(base), "lora": lora}
    sk = {n: sketch_model(t.items()) for n, t in models.items()}
    for child, signature in (("int4", "levels"), ("pruned", "pruned_from"), ("lora", "lowrank_fit")):
        right, near = compare(sk[child], sk["base"]), compare(sk[child], sk["copy"])
        assert getattr(right, signature) > getattr(near, signature), child
        for first in ("base", "copy"):  # the near-copy registered first or last: the same answer
            order = {"base": 0 if first == "base" else 1, "copy": 1 if first == "base" else 0, child: 2}
            v = decide(sk[child], [("copy", sk["copy"]), ("base", sk["base"])], ParentModel.load(), order, 2)
            assert v.candidates[0].key == "base", (child, first)
    again = _near_copy(quantized(base, 8), 3)  # trained a little from a quantised model: it still sits on its grid
    q8 = sketch_model(quantized(base, 8).items())
    assert compare(sketch_model(again.items()), q8).snap > 0.5 > -0.5 > compare(q8, sketch_model(again.items())).snap


def test_a_merged_child_is_never_its_parents_parent() -> None:
    """A soup of the query and its sibling sits closer to the query than its parent, and is its child."""
    from modelkin.provenance.lineage.calibration import ParentModel
    from modelkin.provenance.lineage.decide import decide

    base = pretrained(0)
    a, b = finetuned(base, 1), finetuned(base, 2)
    soup = {k: (0.6 * a[k] + 0.4 * b[k]).astype(np.float32) for k in a}
    sk = {n: sketch_model(t.items()) for n, t in {"base": base, "a": a, "b": b, "soup": soup}.items()}
    v = decide(sk["a"], [(n, sk[n]) for n in ("soup", "b", "base")], ParentModel.load())
    assert "soup" not in {c.key for c in v.candidates} and v.candidates[0].key == "base"
    merge = decide(sk["soup"], [(n, sk[n]) for n in ("a", "b", "base")], ParentModel.load())
    assert merge.relation == "merge" and set(merge.parents) == {"a", "b"}


def _orders(keys: list[str], query: str) -> list[dict[str, int]]:
    """Registration orders with the candidates first-to-last and last-to-first, the query last."""
    return [{k: i for i, k in enumerate([*ks, query])} for ks in (keys, keys[::-1])]


def test_reheaded_twins_are_ordered_by_the_head_the_family_kept() -> None:
    """A head-only child shares its original's whole trunk bit for bit: the pair alone cannot be ordered, but the
    original's head is the one its fine-tuned children kept, so it is the parent whatever the registration order."""
    from modelkin.provenance.lineage.calibration import ParentModel
    from modelkin.provenance.lineage.decide import decide

    base = pretrained(0)
    fresh = pretrained(7)  # a head initialised and trained afresh: unrelated to base's
    headonly = {**base, "head.weight": fresh["head.weight"], "head.bias": fresh["head.bias"]}
    newhead = {**finetuned(base, 3), "head.weight": pretrained(8)["head.weight"]}
    models = {"base": base, "headonly": headonly, "a": finetuned(base, 1), "b": finetuned(base, 2), "q": newhead}
    sk = {n: sketch_model(t.items()) for n, t in models.items()}
    model = ParentModel.load()
    for query, keys in (("q", ["headonly", "base", "a", "b"]), ("headonly", ["base", "a", "b"])):
        for order in _orders(keys, query):
            v = decide(sk[query], [(k, sk[k]) for k in keys], model, order, order[query])
            assert v.candidates[0].key == "base", (query, order)
    for order in _orders(["headonly", "a", "b"], "base"):  # the original never takes its re-headed child as parent
        v = decide(sk["base"], [(k, sk[k]) for k in ("headonly", "a", "b")], model, order, order["base"])
        assert "headonly" not in {c.key for c in v.candidates}


def test_near_copies_are_ordered_by_the_family() -> None:
    """A near-copy is a few steps down the loss its original's other children went further down: the original is
    the end the family is farther from, whatever the registration order, and the original's own verdict drops it."""
    from modelkin.provenance.lineage.calibration import ParentModel
    from modelkin.provenance.lineage.decide import decide

    base = pretrained(0)
    rng = np.random.default_rng(5)
    downhill = {k: rng.standard_normal(w.shape).astype(np.float32) for k, w in base.items()}  # a shared descent

    def trained(seed: int, steps: float) -> Tensors:
        noise = np.random.default_rng(seed)
        return {k: (w + steps * (np.sign(downhill[k]) + noise.standard_normal(w.shape))).astype(np.float32)
                for k, w in base.items()}  # fmt: skip

    copy = {k: (w + 3e-5 * np.sign(downhill[k])).astype(np.float32) for k, w in base.items()}
    models = {"base": base, "copy": copy, **{f"sib{i}": trained(i, 2e-3) for i in range(4)}}
    sk = {n: sketch_model(t.items()) for n, t in models.items()}
    model = ParentModel.load()
    keys = ["copy", "base", "sib1", "sib2", "sib3"]
    for order in _orders(keys, "sib0"):
        v = decide(sk["sib0"], [(k, sk[k]) for k in keys], model, order, order["sib0"])
        assert v.candidates[0].key == "base", order
    others = ["copy", "sib0", "sib1", "sib2", "sib3"]
    for order in _orders(others, "base"):
        v = decide(sk["base"], [(k, sk[k]) for k in others], model, order, order["base"])
        assert "copy" not in {c.key for c in v.candidates}, order


def test_a_near_copy_without_family_is_ordered_by_its_norm() -> None:
    """With no trained relative among the candidates, the heavier of two near-copies is the copy (its few steps,
    like training, pushed the weights outward): the original is its parent whatever the registration order."""
    from modelkin.provenance.lineage.calibration import ParentModel
    from modelkin.provenance.lineage.decide import decide

    base = pretrained(0)
    rng = np.random.default_rng(4)
    copy = {k: (w + 3e-5 * np.sign(w) * rng.choice([-1.0, 1.0], w.shape, p=[0.3, 0.7])).astype(np.float32)
            for k, w in base.items()}  # fmt: skip
    sk = {n: sketch_model(t.items()) for n, t in {"base": base, "copy": copy, "other": pretrained(9)}.items()}
    model = ParentModel.load()
    for order in ({"base": 0, "other": 1, "copy": 2}, {"copy": 0, "other": 1, "base": 2}):
        v = decide(sk["copy"], [(k, sk[k]) for k in ("base", "other")], model, order, order["copy"])
        assert v.parents == ("base",), order
        v = decide(sk["base"], [(k, sk[k]) for k in ("copy", "other")], model, order, order["base"])
        assert "copy" not in {c.key for c in v.candidates}, order


def test_the_arborescence_is_networkx_minimum_one() -> None:
    """The tree's own Edmonds (networkx's copies the graph at every contraction) on random graphs with a root
    edge into every node: the same parents as networkx's minimum spanning arborescence."""
    import networkx as nx

    from modelkin.provenance.lineage.arborescence import minimum_arborescence

    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 30, 80):
        weights = {("root", v): float(rng.uniform(5, 10)) for v in range(n)}
        for u, v in rng.integers(0, n, (6 * n, 2)):
            if u != v:
                weights[int(u), int(v)] = float(rng.uniform(0, 8))
        graph = nx.DiGraph()
        graph.add_weighted_edges_from((u, v, w) for (u, v), w in weights.items())
        tree = nx.minimum_spanning_arborescence(graph)
        want = {v: next(iter(tree.predecessors(v))) for v in range(n)}
        assert minimum_arborescence("root", ((u, v, w) for (u, v), w in weights.items())) == want, n


# -- bad input -------------------------------------------------------------------------------------------------


def test_a_single_registered_model_has_no_parent(registry: Registry, cli: Any, tmp_path: Path) -> None:
    register(cli, write(tmp_path / "one.safetensors", pretrained(0)), "one")
    out = parent_of(cli, "one")
    assert out["parent"] is None and out["candidates"] == [] and out["confidence"] == 1.0
    tree = json.loads(cli("lineage", "tree", "--json").stdout)
    assert tree == {"edges": [], "roots": ["one:1"]}
    assert json.loads(cli("lineage", "ancestors", "one", "--json").stdout)["ancestors"] == []


def test_models_with_no_shared_tensors(registry: Registry, cli: Any, tmp_path: Path) -> None:
    register(cli, write(tmp_path / "a.safetensors", pretrained(0)), "a")
    rng = np.random.default_rng(3)
    register(cli, write(tmp_path / "b.safetensors", {"w": rng.standard_normal((7, 5)).astype(np.float32)}), "b")
    out = parent_of(cli, "b")
    assert out["parent"] is None and out["candidates"] == []


def test_nan_weights(registry: Registry, cli: Any, tmp_path: Path) -> None:
    base = pretrained(0)
    register(cli, write(tmp_path / "base.safetensors", base), "base")
    broken = finetuned(base, 1)
    broken["encoder.1.weight"][0, 0] = np.nan
    out = parent_of(cli, write(tmp_path / "partly-nan.safetensors", broken))  # the finite tensors still tell
    assert out["parent"] == "base:1"
    all_nan = {k: np.full_like(v, np.inf) for k, v in base.items()}
    path = write(tmp_path / "nan.safetensors", all_nan)
    result = cli("lineage", "parent", path)
    assert result.exit_code == 1 and "NaN or infinite" in result.stderr and "Traceback" not in result.stderr
    reg = cli("register", path, "--name", "nan", "--json")
    assert reg.exit_code == 0  # registration never fails on lineage; the sketch is skipped with a reason
    again = cli("lineage", "parent", "nan")
    assert again.exit_code == 1 and "no finite floating-point weights" in again.stderr
    audit = json.loads(cli("lineage", "audit", "nan", "--json").stdout)
    assert audit["findings"][0]["status"] == "unverifiable"


def test_declared_cycles_do_not_loop(registry: Registry, cli: Any, tmp_path: Path) -> None:
    base = pretrained(0)
    register(cli, write(tmp_path / "a.safetensors", base), "a")
    register(cli, write(tmp_path / "b.safetensors", quantized(base, 4)), "b", "--parent", "a")
    assert cli("tag", "a", "x=1").exit_code == 0
    registry.declare_parents("a:1", ["b:1"])  # a claims to descend from its own child
    found = {f["ref"]: f["status"] for f in json.loads(cli("lineage", "audit", "--json").stdout)["findings"]}
    assert found == {"a:1": "mismatch", "b:1": "confirmed"}
    assert json.loads(cli("lineage", "ancestors", "a", "--json").stdout)["ancestors"] == []


@pytest.mark.parametrize("make", ["text", "empty-dir", "int-only", "missing"])
def test_a_path_that_is_not_a_model(registry: Registry, cli: Any, tmp_path: Path, make: str) -> None:
    register(cli, write(tmp_path / "base.safetensors", pretrained(0)), "base")
    target = tmp_path / "bad"
    if make == "text":
        target = tmp_path / "notes.safetensors"
        target.write_text("not a model")
    elif make == "empty-dir":
        target.mkdir()
    elif make == "int-only":
        target = write(tmp_path / "ints.safetensors", {"ids": np.arange(10)})
    else:
        target = tmp_path / "missing.safetensors"
    result = cli("lineage", "parent", target, "--json")
    assert result.exit_code == 1 and result.stdout == ""
    assert "Error:" in result.stderr and "Traceback" not in result.stderr


def test_usage_errors(registry: Registry, cli: Any, tmp_path: Path) -> None:
    register(cli, write(tmp_path / "base.safetensors", pretrained(0)), "base")
    assert cli("lineage", "tree", "--json", "--dot").exit_code == 2
    assert cli("lineage", "parent", "base", "--k", "0").exit_code == 2
    assert cli("lineage", "parent", "no-such-model").exit_code == 1
    assert cli("lineage", "ancestors", "bad ref!").exit_code == 2
    assert cli("lineage", "tree", "--filter", "nonsense ===").exit_code == 2
    assert cli("lineage", "audit", "nope:3").exit_code == 1


def test_a_mismatch_reports_its_confidence_on_the_calibrated_scale() -> None:
    from modelkin.provenance.lineage.audit import judge
    from modelkin.provenance.lineage.decide import Candidate, Verdict

    comparison: Any = None  # judge reads only keys and probabilities
    cands = (Candidate("a", 2.0, 0.7, comparison, 0.6), Candidate("b", 0.5, 0.2, comparison, 0.3))
    verdict = Verdict(("a",), "finetune", 0.6, 0.1, cands, ())
    assert judge(["a"], verdict, lambda p: p / 2) == ("confirmed", 0.6)
    status, confidence = judge(["b"], verdict, lambda p: p / 2)
    assert status == "mismatch" and confidence == pytest.approx(0.4)  # the map applied to 1 - P(b)
    assert judge(["b"], verdict)[1] == pytest.approx(0.8)  # identity when no map is given


def test_the_confidence_map_is_monotone_and_survives_a_round_trip() -> None:
    """Reported confidence: an isotonic map of the raw verdict probability, fitted on verdicts and stored."""
    from modelkin.provenance.lineage.calibration import ParentModel, fit_confidence

    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 1, 400)
    right = rng.uniform(0, 1, 400) < 0.3 + 0.5 * raw  # raw probabilities that overstate how often they are right
    model = ParentModel((0.0,) * 8, 0.0, (0.0,) * 5, confidence_map=fit_confidence(raw, right))
    shown = [model.confidence(p) for p in np.linspace(0, 1, 11)]
    assert shown == sorted(shown) and 0.4 < shown[5] < 0.7 and shown[-1] < 0.95  # how often it is right, not raw
    again = ParentModel.from_json(json.loads(json.dumps(model.to_json())))
    assert [again.confidence(p) for p in np.linspace(0, 1, 11)] == shown
    assert fit_confidence([0.2, 0.9], [True, True]) == ()  # nothing to learn: the raw numbers stand


def test_a_dense_model_a_low_rank_step_from_a_sparse_one_grew_from_it() -> None:
    """A LoRA merged into a pruned model fills its zeros with a low-rank update: the sparse one is the parent,
    though its zeros sit on the dense one's smallest weights as a pruning mask would."""
    from modelkin.provenance.lineage.compare import compare

    sparse = pruned(pretrained(0), 0.7)
    rng = np.random.default_rng(4)
    dense = {k: w + (0.01 * rng.standard_normal((w.shape[0], 2)) @ rng.standard_normal((2, w.shape[1]))
                     ).astype(np.float32) if w.ndim == 2 else w for k, w in sparse.items()}  # fmt: skip
    child, parent = sketch_model(dense.items()), sketch_model(sparse.items())
    assert compare(child, parent).pruned_from > 0 > compare(parent, child).pruned_from
    assert compare(child, parent).lowrank_fit > 0.5


def test_a_merge_of_two_near_copies_keeps_both_parents() -> None:
    """An average of two near-copies is a near-copy of each: they are its parents, not its copied children."""
    from modelkin.provenance.lineage.calibration import ParentModel
    from modelkin.provenance.lineage.decide import decide

    base = pretrained(0)
    a, b = _near_copy(base, 1), _near_copy(base, 2)
    soup = {k: (0.4 * a[k] + 0.6 * b[k]).astype(np.float32) for k in a}
    sk = {n: sketch_model(t.items()) for n, t in {"base": base, "a": a, "b": b, "soup": soup}.items()}
    for order in ({"soup": 0, "a": 1, "b": 2}, {"a": 0, "b": 1, "soup": 2}):  # registered before or after them
        v = decide(sk["soup"], [(n, sk[n]) for n in ("a", "b")], ParentModel.load(), order, order["soup"])
        assert v.relation == "merge" and set(v.parents) == {"a", "b"}, order


def test_a_dense_model_regrown_from_a_sparse_one_grew_from_it() -> None:
    """Trained without its mask, a pruned model's zeros grow by about as much as its other weights move, far less
    than the weights a pruning removes: the sparse one is the parent, and a pruned copy is still the child."""
    from modelkin.provenance.lineage.compare import compare

    base = pretrained(0)
    sparse = pruned(base, 0.7)
    rng = np.random.default_rng(6)
    regrown = {k: (w + 0.01 * rng.standard_normal(w.shape) / np.sqrt(w.shape[-1])).astype(np.float32)
               for k, w in sparse.items()}  # fmt: skip
    grown, parent = sketch_model(regrown.items()), sketch_model(sparse.items())
    assert compare(grown, parent).pruned_from > 0 > compare(parent, grown).pruned_from
    retrained = {k: np.where(w != 0, w + 0.01 * rng.standard_normal(w.shape) / np.sqrt(w.shape[-1]), 0.0)
                 .astype(np.float32) for k, w in sparse.items()}  # fmt: skip
    dense, child = sketch_model(base.items()), sketch_model(retrained.items())
    assert compare(child, dense).pruned_from > 0 > compare(dense, child).pruned_from


def test_the_precise_comparison_never_cuts_a_tie() -> None:
    """Look-alikes at one coarse distance enter the precise comparison together (up to half the budget more)."""
    from modelkin.provenance.lineage.index import tie_cut

    found = [("a", 0.1), ("b", 0.1), ("c", 0.2), ("d", 0.2), ("e", 0.2004), ("f", 0.3)]
    assert tie_cut(found, 3) == 5 and tie_cut(found, 2) == 2 and tie_cut(found, 5) == 5
    assert tie_cut([("a", 0.2)] * 10, 4) == 6 and tie_cut(found[:2], 5) == 2


def test_a_crowd_of_correlated_siblings_does_not_hide_their_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Siblings that drifted the same way sit nearer each other than the parent; the shortlist still reaches it."""
    from modelkin.provenance.lineage import index as index_module
    from modelkin.provenance.lineage.calibration import ParentModel
    from modelkin.provenance.lineage.decide import decide
    from modelkin.provenance.lineage.index import CandidateIndex, Entry

    rng = np.random.default_rng(3)
    base = {f"layer{i}.weight": rng.standard_normal((32, 32)).astype(np.float32) for i in range(3)}
    # one shared drift that grows the norm, as fine-tuning does, and a smaller one of each sibling's own
    drift = {k: 0.03 * w + 0.03 * rng.standard_normal(w.shape) for k, w in base.items()}
    models = {"base": base}
    for s in range(40):
        models[f"sib-{s}"] = {k: (w + drift[k] + 0.025 * rng.standard_normal(w.shape)).astype(np.float32)
                              for k, w in base.items()}  # fmt: skip
    sk = {n: sketch_model(w.items()) for n, w in models.items()}
    index = CandidateIndex([Entry.of(n, s) for n, s in sk.items()])
    query = "sib-0"
    with monkeypatch.context() as nearest_only:
        nearest_only.setattr(index_module, "UPSTREAM", 0)
        assert "base" not in index.shortlist(sk[query], 24, 64, exclude={query})[0]  # nearest alone misses it
    near, far = index.shortlist(sk[query], 24, 64, exclude={query})
    assert "base" in near and not set(near) & set(far) and query not in near + far
    verdict = decide(sk[query], [(k, sk[k]) for k in near], ParentModel.load())
    assert verdict.parents == ("base",)
