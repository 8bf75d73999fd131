"""Retrieval: capture at registration, the index and its rebuild, search with filters, training, bad input."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from modelkin import Registry
from modelkin.registry import indexers
from modelkin.retrieval import index as vindex
from modelkin.retrieval import knowledge as kstore
from modelkin.retrieval.capture import capture
from modelkin.retrieval.runner import forward_fn
from modelkin.zoo.registration import register_zoo

SPACE = "digits-64"


@pytest.fixture(scope="session")
def captured_home(tiny_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with the tiny zoo registered and captured on its probe pool, built once and copied per test."""
    home = tmp_path_factory.mktemp("retrieval") / "home"
    with Registry.init(home) as reg:
        register_zoo(reg, tiny_zoo)
        summary = reg.retrieval.add_probes(SPACE, tiny_zoo / "probes" / f"{SPACE}.npz")
        assert summary["captured"] == 24 and summary["failed"] == []
    return home


@pytest.fixture
def home(captured_home: Path, tmp_path: Path) -> Path:
    """This test's MODELKIN_HOME, holding a copy of the captured tiny-zoo registry."""
    target = tmp_path / "home"
    shutil.copytree(captured_home, target)
    return target


@pytest.fixture
def reg(home: Path) -> Any:
    r = Registry.open(home)
    yield r
    r.close()


def _task(zoo: Path, split: str) -> tuple[str, dict[str, Any]]:
    truth = json.loads((zoo / "ground_truth.json").read_text())
    name = sorted(n for n, t in truth["tasks"].items() if t["split"] == split)[0]
    return name, truth["tasks"][name]


def _data(zoo: Path, split: str = "meta-test") -> Path:
    return zoo / "tasks" / f"{_task(zoo, split)[0]}.npz"


def _xy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as d:
        return d["x"], d["y"]


def _write(path: Path, x: Any, y: Any) -> Path:
    np.savez(path, x=np.asarray(x), y=np.asarray(y))
    return path


# -- capture ------------------------------------------------------------------------------------------------


def test_capture_is_deterministic_and_tells_models_apart(reg: Any, tiny_zoo: Path) -> None:
    pool = np.load(tiny_zoo / "probes" / f"{SPACE}.npz")["x"]
    first = [kstore.to_bytes(capture(forward_fn(reg.load_module(r)), pool), "p") for r in ("cnn-005:1", "mlp-s-011:1")]
    again = kstore.to_bytes(capture(forward_fn(reg.load_module("cnn-005:1")), pool), "p")
    assert first[0] == again  # byte for byte
    assert first[0] != first[1]
    k = kstore.from_bytes(first[0])
    assert k.anchors.shape[1] == 64 and len(k.pairs) == len(k.classes) * (len(k.classes) - 1)
    assert k.pool_probs.shape[0] == len(pool) and 0 < k.boundary_t.min() and k.boundary_t.max() <= 1
    logits = forward_fn(reg.load_module("cnn-005:1"))(pool.astype(np.float32))
    assert np.allclose(k.pool_logits, logits, rtol=1e-2, atol=1e-2)  # the raw outputs, kept at float16
    # the blob stored at registration is the same capture
    vid = indexers.version_id(reg.engine, reg.get("cnn-005:1"))
    from sqlalchemy import select

    from modelkin.db.schema import KnowledgeRow

    with reg.engine.connect() as conn:
        digest = conn.execute(select(KnowledgeRow.digest).where(KnowledgeRow.version_id == vid)).scalar_one()
    stored = kstore.from_bytes(reg.store.read_verified(digest))
    assert np.array_equal(stored.anchors, k.anchors) and np.array_equal(stored.pool_probs, k.pool_probs)


def test_a_format_1_knowledge_blob_still_loads_with_log_probabilities_for_logits(reg: Any, tiny_zoo: Path) -> None:
    from safetensors.numpy import save

    pool = np.load(tiny_zoo / "probes" / f"{SPACE}.npz")["x"]
    k = capture(forward_fn(reg.load_module("cnn-005:1")), pool)
    arrays = {name: v for name, v in k.arrays().items() if name != "pool_logits"}
    meta = {kstore.META_KEY: json.dumps({"format": kstore.FORMAT_1, "pool": "p", "forward_calls": 3})}
    old = kstore.from_bytes(bytes(save(arrays, metadata=meta)))
    assert old.forward_calls == 3 and np.array_equal(old.pool_probs, k.pool_probs)
    expected = np.log(np.clip(k.pool_probs.astype(np.float64), 1e-6, None))
    assert np.allclose(old.pool_logits, expected, atol=1e-2)


def test_models_registered_before_a_pool_are_captured_when_it_arrives(tiny_zoo: Path, tmp_path: Path) -> None:
    with Registry.init(tmp_path / "fresh") as reg:
        register_zoo(reg, tiny_zoo)
        status = reg.retrieval.status()
        assert status["counts"]["skipped"] == 24 and "no probe pool" in status["versions"][0]["detail"]
        reg.retrieval.add_probes(SPACE, tiny_zoo / "probes" / f"{SPACE}.npz")
        status = reg.retrieval.status()
        assert status["counts"]["done"] == 24 and status["spaces"][0]["indexed"] == 24


# -- index: rebuild and filters -----------------------------------------------------------------------------


def test_rebuild_recomputes_the_same_index_without_running_models(reg: Any, home: Path, tiny_zoo: Path,
                                                                  monkeypatch: Any) -> None:  # fmt: skip
    x, y = _xy(_data(tiny_zoo))
    before = reg.retrieval.search(x, y, k=30).results

    def refuse(ref: str) -> None:
        raise AssertionError(f"rebuild ran {ref}")

    monkeypatch.setattr(reg, "load_module", refuse)
    assert reg.retrieval.rebuild()["indexed"] == 24
    assert reg.retrieval.search(x, y, k=30).results == before
    (home / "retrieval" / f"{SPACE}.faiss").unlink()  # a lost index is rebuilt from the blobs on the next search
    assert reg.retrieval.search(x, y, k=30).results == before
    assert len(before) == 24


def test_a_filter_matching_few_of_many_returns_exactly_those() -> None:
    rng = np.random.default_rng(0)
    n, d = 10_000, 32
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    ids = np.arange(1, n + 1, dtype=np.int64) * 7
    query = vectors[0] * 10
    wanted = ids[[5000, 7000, 9999]]  # far from the query: post-filtering a short list would lose them
    for index in (vindex.build(ids, vectors), vindex.build(ids, vectors, dim=d)):
        found, _ = index.search(query, 10, wanted)
        assert sorted(found.tolist()) == sorted(wanted.tolist())
        top, _ = index.search(query, 1)
        assert top.tolist() == [ids[0]]


def test_a_filter_is_exact_on_the_ivf_index_too(monkeypatch: Any) -> None:
    monkeypatch.setattr(vindex, "IVF_THRESHOLD", 1000)
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((5000, 16)).astype(np.float32)
    ids = np.arange(5000, dtype=np.int64)
    index = vindex.build(ids, vectors)
    assert index.kind == "ivf"
    wanted = np.array([3, 1234, 4999])
    found, scores = index.search(vectors[10], 10, wanted)
    assert sorted(found.tolist()) == wanted.tolist()
    exact = vectors[wanted] @ vectors[10]
    assert np.allclose(sorted(scores), sorted(exact), atol=1e-4)
    index2 = vindex.VectorIndex.from_bytes(index.to_bytes())
    assert np.array_equal(index2.ids(), ids)


def test_search_filters_inside_the_vector_search(reg: Any, tiny_zoo: Path) -> None:
    x, y = _xy(_data(tiny_zoo))
    cnns = {v.ref for v in reg.list("family = 'cnn'")}
    results = reg.retrieval.search(x, y, k=100, filter="family = 'cnn'").results
    assert {r["ref"] for r in results} == cnns and [r["rank"] for r in results] == list(range(1, len(cnns) + 1))
    vectors = reg.retrieval.search(x, y, k=100, filter="family = 'cnn'", shortlist=0)
    assert vectors.scorer == "training-free" and {r["ref"] for r in vectors.results} == cnns
    scores = [r["score"] for r in vectors.results]
    assert scores == sorted(scores, reverse=True) and {r["scored_by"] for r in vectors.results} == {"training-free"}
    one = reg.retrieval.search(x, y, k=5, filter="name = 'mlp-s-000'").results
    assert [r["ref"] for r in one] == ["mlp-s-000:1"]
    assert reg.retrieval.search(x, y, k=5, filter="name = 'nothing'").results == []
    nothing = reg.retrieval.search(x, y, k=5, filter="name = 'nothing'", rerank=3)
    assert (nothing.results, nothing.forward_passes) == ([], 0)
    reg.yank("cnn-005:1", "broken")  # a yanked version is never offered
    assert "cnn-005:1" not in [r["ref"] for r in reg.retrieval.search(x, y, k=100).results]


def test_registering_a_model_adds_it_to_the_index_without_a_rebuild(reg: Any, tiny_zoo: Path, tmp_path: Path,
                                                                     monkeypatch: Any) -> None:  # fmt: skip
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    x, y = _xy(_data(tiny_zoo))
    assert reg.retrieval.status()["spaces"][0]["indexed"] == 24  # the index file exists and is current
    rebuilds: list[Any] = []
    original = reg.retrieval._rebuild_pool
    monkeypatch.setattr(reg.retrieval, "_rebuild_pool", lambda pool: rebuilds.append(pool) or original(pool))
    source = tiny_zoo / "models" / "mlp-s-000.safetensors"
    with safe_open(str(source), "pt") as st:
        metadata = st.metadata()
    for n in range(2):
        copy = tmp_path / f"copy{n}.safetensors"
        save_file({k: v + 0.01 * (n + 1) for k, v in load_file(str(source)).items()}, str(copy), metadata=metadata)
        reg.register(copy, name=f"late-{n}")
    assert rebuilds == []
    refs = {r["ref"] for r in reg.retrieval.search(x, y, k=100).results}
    assert {"late-0:1", "late-1:1"} <= refs and len(refs) == 26 and rebuilds == []


def test_the_second_stage_adds_the_vector_score_at_the_trained_weight(reg: Any, tiny_zoo: Path) -> None:
    from modelkin.retrieval.mixing import mix

    x, y = _xy(_data(tiny_zoo))
    reg.retrieval.train([tiny_zoo], epochs=5)
    alone = {r["ref"]: r["score"] for r in reg.retrieval.search(x, y, k=100).results}
    vectors = {r["ref"]: r["score"] for r in reg.retrieval.search(x, y, k=100, shortlist=0).results}
    pool = reg.retrieval._latest_pool(SPACE)
    reg.retrieval._serving_for(pool).scorer.config["knowledge_mix"] = 0.5  # as if fitted
    mixed = reg.retrieval.search(x, y, k=100).results
    refs = sorted(alone)
    expected = dict(zip(refs, mix(np.array([alone[r] for r in refs]), np.array([vectors[r] for r in refs]), 0.5),
                        strict=True))  # fmt: skip
    assert {r["ref"] for r in mixed} == set(refs)
    assert all(abs(r["score"] - expected[r["ref"]]) < 1e-4 for r in mixed)  # scores are rounded to 6 places
    assert [r["score"] for r in mixed] == sorted((r["score"] for r in mixed), reverse=True)


# -- the CLI contract ----------------------------------------------------------------------------------------


def test_cli_search_json_contract(cli: Callable[..., Any], home: Path, tiny_zoo: Path, tmp_path: Path) -> None:
    data = _data(tiny_zoo)
    result = cli("search", "--data", data, "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert list(out) == ["results", "scorer", "forward_passes", "elapsed_ms"]
    assert out["scorer"] == "training-free+knowledge-logme" and out["forward_passes"] == 0
    assert len(out["results"]) == 5
    assert all({"ref", "score", "rank"} <= set(r) for r in out["results"])
    scores = [r["score"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True)
    reranked = json.loads(cli("search", "--data", data, "--rerank", "3", "--k", "2", "--json").stdout)
    assert reranked["forward_passes"] == 3 and len(reranked["results"]) == 2
    assert reranked["scorer"] == "training-free+knowledge-logme+rerank"
    assert {r["scored_by"] for r in reranked["results"]} == {"rerank"}
    everything = json.loads(cli("search", "--data", data, "--k", "1000", "--json").stdout)
    assert len(everything["results"]) == 24  # k beyond the candidates returns all of them
    x, y = _xy(data)
    csv = tmp_path / "task.csv"
    np.savetxt(csv, np.column_stack([x, y]), delimiter=",")
    from_csv = json.loads(cli("search", "--data", csv, "--json").stdout)
    assert [r["ref"] for r in from_csv["results"]] == [r["ref"] for r in out["results"]]
    table = cli("search", "--data", data)
    assert table.exit_code == 0 and out["results"][0]["ref"] in table.stdout


def test_cli_probes_and_index_status(cli: Callable[..., Any], home: Path, tiny_zoo: Path) -> None:
    pools = json.loads(cli("probes", "list", "--json").stdout)["pools"]
    assert [(p["space"], p["version"]) for p in pools] == [(SPACE, 1)]
    again = json.loads(cli("probes", "add", SPACE, tiny_zoo / "probes" / f"{SPACE}.npz", "--json").stdout)
    assert again["created"] is False and again["version"] == 1
    status = json.loads(cli("index", "status", "--json").stdout)
    assert status["spaces"][0]["scorer"] == "training-free" and status["spaces"][0]["encoder"] is None
    assert status["counts"]["done"] == 24
    rebuilt = json.loads(cli("index", "rebuild", "--json").stdout)
    assert rebuilt["indexed"] == 24 and rebuilt["captured"] == 0
    assert cli("index", "status").exit_code == 0 and cli("probes", "list").exit_code == 0


# -- a plugin family ----------------------------------------------------------------------------------------


def test_a_plugin_family_is_captured_and_searchable(reg: Any, tiny_zoo: Path, tmp_path: Path,
                                                    monkeypatch: Any) -> None:  # fmt: skip
    from tests.test_architectures import install_example_plugin

    install_example_plugin(tmp_path, monkeypatch)
    monkeypatch.setattr(sys, "modules", dict(sys.modules))  # forget the plugin's module afterwards
    spec = {"family": "example-logreg", "in_features": 64, "num_classes": 3, "input_space": SPACE}
    from modelkin.registry.architectures import build_module

    torch.manual_seed(0)
    module = build_module(spec)
    registration = reg.register(module, name="logreg", architecture=spec)
    assert registration.warnings == ()
    vid = indexers.version_id(reg.engine, registration.version)
    assert indexers.states(reg.engine, "retrieval")[vid] == ("done", None)
    x, y = _xy(_data(tiny_zoo))
    refs = [r["ref"] for r in reg.retrieval.search(x, y, k=100).results]
    assert "logreg:1" in refs and len(refs) == 25
    reranked = reg.retrieval.search(x, y, k=1, rerank=1, filter="family = 'example-logreg'")
    assert [r["ref"] for r in reranked.results] == ["logreg:1"] and reranked.forward_passes == 1


# -- training and serving -----------------------------------------------------------------------------------


def test_train_from_a_registered_zoo_then_serve_new_models_without_retraining(
    cli: Callable[..., Any], home: Path, tiny_zoo: Path, tmp_path: Path
) -> None:
    trained = cli("retrieval", "train", "--zoo", tiny_zoo, "--json")
    assert trained.exit_code == 0, trained.stderr
    report = json.loads(trained.stdout)["encoders"][0]
    assert report["encoder"] == 1 and report["tasks"] == 2 and report["indexed"] == 24
    assert report["knowledge_mix"] == 0.0 and report["knowledge_mix_fit"] == {}  # 2 tasks: too few to cross-fit
    assert report["unseen_family_mix"] == 0.0 and report["unseen_family_mix_fit"] == {}
    assert report["families"] == ["cnn", "mlp"]
    status = json.loads(cli("index", "status", "--json").stdout)["spaces"][0]
    assert (status["scorer"], status["encoder"]) == ("learned", 1)
    data = _data(tiny_zoo)
    out = json.loads(cli("search", "--data", data, "--json").stdout)
    assert out["scorer"] == "learned+knowledge-logme" and out["forward_passes"] == 0
    # a model registered after training gets a vector from the trained encoder, without retraining
    source = tiny_zoo / "models" / "cnn-005.safetensors"
    copy = tmp_path / "copy.safetensors"
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(source), "pt") as st:
        metadata = st.metadata()
    tensors = {k: v + 0.001 for k, v in load_file(str(source)).items()}
    save_file(tensors, str(copy), metadata=metadata)
    assert cli("register", copy, "--name", "late").exit_code == 0
    status = json.loads(cli("index", "status", "--json").stdout)["spaces"][0]
    assert (status["encoder"], status["indexed"]) == (1, 25)
    refs = [r["ref"] for r in json.loads(cli("search", "--data", data, "--k", "100", "--json").stdout)["results"]]
    assert "late:1" in refs


def test_training_twice_stores_the_same_encoder_bytes_and_another_seed_does_not(reg: Any, tiny_zoo: Path) -> None:
    """Benchmarks retrain in every run: their figures only compare if training is bit-reproducible."""
    pool = reg.retrieval._latest_pool(SPACE)
    scorers = []
    for seed in (0, 0, 1):
        reg.retrieval.train([tiny_zoo], seed=seed, epochs=5)
        scorers.append(reg.retrieval._serving_for(pool).scorer)
    assert scorers[0].to_bytes() == scorers[1].to_bytes()
    assert any(not np.array_equal(w, scorers[2].state[k]) for k, w in scorers[0].state.items())  # the seed matters


def test_train_from_logged_scores_and_a_jsonl_file(cli: Callable[..., Any], home: Path, tiny_zoo: Path,
                                                   tmp_path: Path) -> None:  # fmt: skip
    name, task = _task(tiny_zoo, "meta-train")
    data = tiny_zoo / "tasks" / f"{name}.npz"
    models = sorted(task["scores"])
    for m in models[:3]:
        logged = cli("retrieval", "log-score", m, "--data", data, "--score", task["scores"][m]["finetune"], "--json")
        assert logged.exit_code == 0, logged.stderr
        assert json.loads(logged.stdout)["ref"] == f"{m}:1"
    lines = [json.dumps({"ref": m, "data": str(data), "score": task["scores"][m]["finetune"]}) for m in models[3:]]
    scores = tmp_path / "scores.jsonl"
    scores.write_text("\n".join(lines) + "\n")
    report = json.loads(cli("retrieval", "train", "--scores", scores, "--json").stdout)["encoders"][0]
    assert report["tasks"] == 2 and report["models"] == len(models)  # the file's task and the logged one


# -- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "y", "fragment"),
    [
        (np.zeros((6, 10)), [0, 0, 0, 1, 1, 1], "has 10 features per sample"),
        (np.full((6, 64), np.nan), [0, 0, 0, 1, 1, 1], "NaN or inf"),
        (np.full((6, 64), np.inf), [0, 0, 0, 1, 1, 1], "NaN or inf"),
        (np.zeros((6, 64)), [0] * 6, "has one class"),
        (np.zeros((5, 64)), [0, 0, 0, 1, 2], "at least 2 samples"),
        (np.zeros((6, 64)), [0.5, 0, 0, 1, 1, 1], "must be integers"),
        (np.zeros((6, 64)), ["a", "a", "a", "b", "b", "b"], "must be integers"),
        (np.zeros(64), [0], "2-D array"),
        (np.zeros((6, 64)), [0, 1], "one per sample"),
    ],
)
def test_bad_query_data_is_one_sentence(cli: Callable[..., Any], home: Path, tmp_path: Path, x: Any, y: Any,
                                        fragment: str) -> None:  # fmt: skip
    result = cli("search", "--data", _write(tmp_path / "q.npz", x, y), "--json")
    assert result.exit_code == 1 and result.stdout == ""
    assert fragment in result.stderr and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("Error:")]) == 1


def test_bad_files_and_flags(cli: Callable[..., Any], home: Path, tmp_path: Path, tiny_zoo: Path) -> None:
    missing = cli("search", "--data", tmp_path / "nope.npz")
    assert missing.exit_code == 1 and "does not exist" in missing.stderr
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert "not a readable .npz" in cli("search", "--data", tmp_path / "junk.npz").stderr
    np.savez(tmp_path / "nox.npz", y=np.zeros(3))
    assert "no array 'x'" in cli("search", "--data", tmp_path / "nox.npz").stderr
    assert cli("search", "--data", _data(tiny_zoo), "--k", "0").exit_code == 2
    assert cli("search", "--data", _data(tiny_zoo), "--rerank", "-1").exit_code == 2
    bad_filter = cli("search", "--data", _data(tiny_zoo), "--filter", "colour = 'red'")
    assert bad_filter.exit_code == 2
    assert cli("probes", "add", SPACE, tmp_path / "nope.npz").exit_code == 1
    for bad in ("bad space", "../escape", ".hidden", "a/b"):
        refused = cli("probes", "add", bad, tiny_zoo / "probes" / f"{SPACE}.npz")
        assert refused.exit_code == 1 and "not a valid input space name" in refused.stderr
    assert not (home.parent / "escape.faiss").exists()
    assert cli("retrieval", "log-score", "nobody", "--data", _data(tiny_zoo), "--score", "0.5").exit_code == 1
    nan_score = cli("retrieval", "log-score", "cnn-005", "--data", _data(tiny_zoo), "--score", "nan")
    assert nan_score.exit_code == 1 and "finite" in nan_score.stderr
    scores = tmp_path / "s.jsonl"
    scores.write_text("{not json\n")
    assert "line 1" in cli("retrieval", "train", "--scores", scores).stderr


def test_empty_registry_and_no_index(cli: Callable[..., Any], tmp_path: Path, tiny_zoo: Path) -> None:
    assert cli("init").exit_code == 0
    data = _data(tiny_zoo)
    empty = cli("search", "--data", data)
    assert empty.exit_code == 1 and "no probe pool is registered" in empty.stderr
    assert cli("probes", "add", SPACE, tiny_zoo / "probes" / f"{SPACE}.npz").exit_code == 0
    none = cli("search", "--data", data, "--json")
    assert none.exit_code == 1 and "is indexed yet" in none.stderr and none.stdout == ""
    nothing = cli("retrieval", "train", "--zoo", tiny_zoo)
    assert nothing.exit_code == 1 and "register it first" in nothing.stderr


def test_a_model_without_a_pool_for_its_space_is_skipped_with_the_reason(reg: Any, tiny_zoo: Path) -> None:
    spec = {"family": "mlp", "in_features": 12, "hidden": [4], "num_classes": 3, "input_space": "sensors-12"}
    from modelkin.registry.architectures import build_module

    registration = reg.register(build_module(spec), name="sensor", architecture=spec)
    vid = indexers.version_id(reg.engine, registration.version)
    state, detail = indexers.states(reg.engine, "retrieval")[vid]
    assert state == "skipped" and "no probe pool for input space 'sensors-12'" in detail


class _Broken(torch.nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.head = torch.nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "raise":
            raise RuntimeError("kaboom")
        if self.how == "interrupt":
            raise KeyboardInterrupt
        return self.head(x) * float("nan")


@pytest.mark.parametrize(("how", "fragment"), [("raise", "raised RuntimeError: kaboom"), ("nan", "NaN or inf")])
def test_a_model_whose_forward_fails_is_marked_failed_and_left_out(reg: Any, tiny_zoo: Path, monkeypatch: Any,
                                                                   how: str, fragment: str) -> None:  # fmt: skip
    original = reg.load_module
    monkeypatch.setattr(reg, "load_module", lambda ref: _Broken(how) if ref.startswith("broken") else original(ref))
    spec = {"family": "mlp", "in_features": 64, "hidden": [], "num_classes": 3, "input_space": SPACE}
    from modelkin.registry.architectures import build_module

    registration = reg.register(build_module(spec), name="broken", architecture=spec)
    assert registration.created and any(fragment in w for w in registration.warnings)
    vid = indexers.version_id(reg.engine, registration.version)
    assert indexers.states(reg.engine, "retrieval")[vid][0] == "failed"
    x, y = _xy(_data(tiny_zoo))
    refs = [r["ref"] for r in reg.retrieval.search(x, y, k=100).results]
    assert "broken:1" not in refs and len(refs) == 24
    # a rerank that meets it skips it with a warning naming it
    result = reg.retrieval.search(x, y, k=5, rerank=2, filter="name = 'broken' OR name = 'cnn-005'")
    assert [r["ref"] for r in result.results] == ["cnn-005:1"]


def test_a_crash_mid_capture_leaves_no_half_indexed_model(reg: Any, tiny_zoo: Path, monkeypatch: Any) -> None:
    original = reg.load_module
    monkeypatch.setattr(reg, "load_module", lambda r: _Broken("interrupt") if r.startswith("late") else original(r))
    spec = {"family": "mlp", "in_features": 64, "hidden": [8], "num_classes": 3, "input_space": SPACE}
    from modelkin.registry.architectures import build_module

    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        reg.register(build_module(spec), name="late", architecture=spec)
    vid = indexers.version_id(reg.engine, reg.get("late:1"))
    assert indexers.states(reg.engine, "retrieval")[vid] == ("pending", None)
    x, y = _xy(_data(tiny_zoo))
    assert "late:1" not in [r["ref"] for r in reg.retrieval.search(x, y, k=100).results]
    monkeypatch.setattr(reg, "load_module", original)
    summary = reg.retrieval.rebuild(capture=True)
    assert summary["captured"] == 1 and summary["indexed"] == 25
    assert "late:1" in [r["ref"] for r in reg.retrieval.search(x, y, k=100).results]


def test_an_interrupted_probes_add_resumes_when_the_pool_is_added_again(tiny_zoo: Path, tmp_path: Path,
                                                                       monkeypatch: Any) -> None:  # fmt: skip
    pool = tiny_zoo / "probes" / f"{SPACE}.npz"
    with Registry.init(tmp_path / "home") as reg:
        for name in ("cnn-005", "mlp-s-011", "mlp-l-003"):
            reg.register(tiny_zoo / "models" / f"{name}.safetensors", name=name)
        original = reg.load_module
        monkeypatch.setattr(reg, "load_module", lambda r: _Broken("interrupt") if r == "mlp-l-003:1" else original(r))
        seen: list[tuple[str, int]] = []
        with pytest.raises(KeyboardInterrupt):
            reg.retrieval.add_probes(SPACE, pool, on_model=lambda ref, total: seen.append((ref, total)))
        assert seen == [("cnn-005:1", 3), ("mlp-s-011:1", 3)]  # mlp-l-003 was interrupted, the rest captured
        assert reg.retrieval.status()["counts"]["done"] == 2
        monkeypatch.setattr(reg, "load_module", original)
        again = reg.retrieval.add_probes(SPACE, pool)
        assert (again["created"], again["version"], again["captured"]) == (False, 1, 1)
        assert reg.retrieval.status()["counts"]["done"] == 3
        assert reg.retrieval.add_probes(SPACE, pool)["captured"] == 0  # nothing left to resume


def test_search_on_postgresql_and_sqlite(registry: Registry, tiny_zoo: Path) -> None:
    for name in ("cnn-005", "mlp-s-011", "mlp-l-003"):
        registry.register(tiny_zoo / "models" / f"{name}.safetensors", name=name)
    registry.retrieval.add_probes(SPACE, tiny_zoo / "probes" / f"{SPACE}.npz")
    x, y = _xy(_data(tiny_zoo))
    results = registry.retrieval.search(x, y, k=5).results
    assert sorted(r["ref"] for r in results) == ["cnn-005:1", "mlp-l-003:1", "mlp-s-011:1"]


def test_a_family_left_out_of_training_is_ranked_by_knowledge_alone(reg: Any, tiny_zoo: Path, tmp_path: Path) -> None:
    from modelkin.retrieval.mixing import WEIGHTS, zscore

    truth = json.loads((tiny_zoo / "ground_truth.json").read_text())
    lines = [json.dumps({"ref": f"{model}:1", "data": str(tiny_zoo / "tasks" / f"{name}.npz"), "score": s["finetune"]})
             for name, task in sorted(truth["tasks"].items()) for model, s in task["scores"].items()]  # fmt: skip
    scores = tmp_path / "scores.jsonl"
    scores.write_text("\n".join(lines))
    x, y = _xy(_data(tiny_zoo))
    cnn = "family = 'cnn'"
    before = reg.retrieval.search(x, y, k=100, filter=cnn).results  # knowledge LogME alone
    report = reg.retrieval.train(scores=scores, epochs=20)["encoders"][0]
    assert report["tasks"] >= 4 and report["families"] == ["cnn", "mlp"]
    assert report["unseen_family_mix"] in WEIGHTS and set(report["unseen_family_mix_fit"]) == {str(w) for w in WEIGHTS}
    report = reg.retrieval.train(scores=scores, epochs=20, exclude_families=["cnn"])["encoders"][0]
    assert report["families"] == ["mlp"] and (report["unseen_family_mix"], report["unseen_family_mix_fit"]) == (0.0, {})
    assert report["knowledge_mix"] > 0  # seen families would mix in the learned score
    after = reg.retrieval.search(x, y, k=100, filter=cnn)
    assert after.scorer == "learned+knowledge-logme" and [r["ref"] for r in after.results] == [r["ref"] for r in before]
    # scores are reported to 6 decimals; z-scoring close raw scores magnifies that rounding (std here ~0.015)
    assert np.allclose([r["score"] for r in after.results], zscore(np.array([r["score"] for r in before])), atol=1e-4)
