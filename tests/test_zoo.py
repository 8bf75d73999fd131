"""The reference zoo: its file contract, determinism, and a ground truth that holds up when checked."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from modelkin.registry.architectures import build_module, spec_from_safetensors_metadata
from modelkin.zoo import GROUND_TRUTH, SIZES, ZooError, build_zoo
from modelkin.zoo.__main__ import main
from modelkin.zoo.plan import make_plan
from modelkin.zoo.recipes import apply
from modelkin.zoo.tasks import DIGIT_DOMAINS, Task, ZooData, num_classes
from modelkin.zoo.training import accuracy, deterministic

SEED = 0


@pytest.fixture(scope="module")
def zoos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny zoo built twice with one seed: from Python, and meanwhile by the CLI in another process."""
    root = tmp_path_factory.mktemp("zoo")
    cli = subprocess.Popen(
        [sys.executable, "-m", "modelkin.zoo", "build", str(root / "cli"), "--size", "tiny", "--seed", str(SEED)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    summary = build_zoo(root / "python", "tiny", SEED)
    stdout, stderr = cli.communicate(timeout=300)
    assert cli.returncode == 0, stderr
    assert json.loads(stdout) == {**summary, "path": str(root / "cli"), "seconds": json.loads(stdout)["seconds"]}
    assert "model 1/" in stderr  # progress lines go to stderr
    return root / "python", root / "cli"


@pytest.fixture(scope="module")
def zoo(zoos: tuple[Path, Path]) -> Path:
    return zoos[0]


@pytest.fixture(scope="module")
def truth(zoo: Path) -> dict[str, Any]:
    return json.loads((zoo / GROUND_TRUTH).read_text())


@pytest.fixture(scope="module")
def data(truth: dict[str, Any]) -> ZooData:
    return ZooData(truth["seed"], SIZES[truth["size"]].synthetic_domains)


def _digests(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _body(spec: dict[str, Any]) -> str:
    """An architecture without its head size: models that share every tensor shape but the head's."""
    return json.dumps({k: v for k, v in spec.items() if k != "num_classes"}, sort_keys=True)


def _weights(zoo: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(zoo / "models" / f"{name}.safetensors"))


def test_same_seed_gives_the_same_bytes(zoos: tuple[Path, Path]) -> None:
    python, cli = _digests(zoos[0]), _digests(zoos[1])
    assert python == cli
    assert len(python) > 20


def test_model_files_carry_their_architecture(zoo: Path, truth: dict[str, Any]) -> None:
    assert sorted(p.stem for p in (zoo / "models").glob("*.safetensors")) == sorted(truth["models"])
    for name, model in truth["models"].items():
        assert re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name)
        with safe_open(str(zoo / "models" / f"{name}.safetensors"), "pt") as f:
            assert spec_from_safetensors_metadata(f.metadata()) == model["architecture"]
        assert model["input_space"] == model["architecture"]["input_space"] == "digits-64"


def test_probe_and_task_files_have_the_promised_arrays(zoo: Path, truth: dict[str, Any]) -> None:
    probes = np.load(zoo / "probes" / "digits-64.npz")
    assert list(probes) == ["x"] and probes["x"].dtype == np.float32 and probes["x"].shape[1] == 64
    assert 0.0 <= probes["x"].min() and probes["x"].max() <= 1.0
    assert sorted(p.stem for p in (zoo / "tasks").glob("*.npz")) == sorted(truth["tasks"])
    for name, task in truth["tasks"].items():
        arrays = np.load(zoo / "tasks" / f"{name}.npz")
        assert sorted(arrays) == ["x", "y"]
        x, y = arrays["x"], arrays["y"]
        assert x.dtype == np.float32 and x.shape == (len(y), 64) and y.dtype == np.int64
        assert Counter(y.tolist()) == {c: truth["transfer"]["shots"] for c in range(len(task["classes"]))}


def test_tree_has_the_promised_shape(truth: dict[str, Any]) -> None:
    models = truth["models"]
    roots = {n: m for n, m in models.items() if not m["parents"]}
    assert all(m["relation"] is None and m["generation"] == 0 for m in roots.values())
    assert len({_body(m["architecture"]) for m in roots.values()}) >= 3  # two MLP widths and the CNN
    same_data = Counter((json.dumps(m["architecture"]), json.dumps(m["task"])) for m in roots.values())
    assert max(same_data.values()) >= 2  # roots that differ only by seed
    assert any(m["task"]["domain"].startswith("synthetic") for m in roots.values())
    for m in models.values():
        if m["parents"]:
            assert m["generation"] == 1 + max(models[p]["generation"] for p in m["parents"])
            assert len(m["parents"]) == (2 if m["relation"] == "merge" else 1)
    assert max(m["generation"] for m in models.values()) >= 4
    assert {m["relation"] for m in models.values()} == {
        None,
        "finetune",
        "adapter",
        "merge",
        "quantized",
        "pruned",
        "distilled",
    }
    assert max(Counter(p for m in models.values() for p in m["parents"]).values()) >= 8  # a sibling-heavy hub
    edges = {(e["parent"], e["child"], e["relation"], e["generation"]) for e in truth["edges"]}
    assert edges == {(p, c, m["relation"], m["generation"]) for c, m in models.items() for p in m["parents"]}


def test_transfer_ground_truth_is_complete_and_held_out(truth: dict[str, Any]) -> None:
    tasks = truth["tasks"]
    train = [t for t in tasks.values() if t["split"] == "meta-train"]
    test = [t for t in tasks.values() if t["split"] == "meta-test"]
    assert train and test
    assert {tuple(t["classes"]) for t in test}.isdisjoint(tuple(t["classes"]) for t in train)
    heldout = set(truth["heldout_domains"])
    assert heldout <= set(DIGIT_DOMAINS) and heldout.isdisjoint(t["domain"] for t in train)
    assert any(t["domain"] in heldout for t in test)
    for task in test:
        assert set(task["scores"]) == set(truth["models"])
    for task in train:
        assert 0 < len(task["scores"]) < len(truth["models"])
    for task in tasks.values():
        for score in task["scores"].values():
            assert set(score) == {"linear_probe", "finetune"}
            assert all(0.0 <= v <= 1.0 for v in score.values())


def test_probe_pool_is_disjoint_from_all_task_data(zoo: Path, truth: dict[str, Any], data: ZooData) -> None:
    seen: set[bytes] = set()
    for domain in data.domains:
        every_class = Task(domain, tuple(range(num_classes(domain))))
        for split in (*data.source(every_class), *data.query(every_class, shots=1)):
            seen.update(row.tobytes() for row in split[0])
    for name in truth["tasks"]:
        seen.update(row.tobytes() for row in np.load(zoo / "tasks" / f"{name}.npz")["x"])
    probes = np.load(zoo / "probes" / "digits-64.npz")["x"]
    assert not seen & {row.tobytes() for row in probes}
    assert len({row.tobytes() for row in probes}) == len(probes)


def test_every_child_is_its_recipe_applied_to_its_parents(zoo: Path, truth: dict[str, Any], data: ZooData) -> None:
    """Re-running each recorded recipe on the recorded parents' saved weights gives the child, bit for bit."""
    models = truth["models"]
    with deterministic():
        for name, model in models.items():
            parents = [(models[p]["architecture"], _weights(zoo, p)) for p in model["parents"]]
            spec, weights = apply(model["recipe"], parents, data)
            assert spec == model["architecture"]
            expected = _weights(zoo, name)
            assert weights.keys() == expected.keys()
            assert all(torch.equal(weights[k], expected[k]) for k in expected), name


def test_reproduction_fails_from_the_wrong_parent(zoo: Path, truth: dict[str, Any], data: ZooData) -> None:
    """The check above can fail: the same recipe applied to a sibling does not give the child."""
    models = truth["models"]
    name, child = next((n, m) for n, m in models.items() if m["relation"] == "finetune" and not m["recipe"]["freeze"])
    (parent,) = child["parents"]
    sibling = next(
        n for n, m in models.items() if n not in (name, parent) and m["architecture"] == models[parent]["architecture"]
    )
    with deterministic():
        _, weights = apply(child["recipe"], [(models[sibling]["architecture"], _weights(zoo, sibling))], data)
    expected = _weights(zoo, name)
    assert not any(torch.equal(weights[k], expected[k]) for k in expected if k.startswith("trunk."))


def test_relations_leave_their_marks_in_the_weights(zoo: Path, truth: dict[str, Any]) -> None:
    """Each relation label is true of the weights: sparsity, quantisation grids, low-rank updates, frozen layers."""
    seen: Counter[str] = Counter()
    for name, model in truth["models"].items():
        recipe, child = model["recipe"], _weights(zoo, name)
        parent = _weights(zoo, model["parents"][0]) if model["parents"] else {}
        matrices = {k: w for k, w in child.items() if w.dim() >= 2}
        if model["relation"] == "pruned":
            for k, w in matrices.items():
                if k.startswith("trunk."):
                    assert float((w == 0).float().mean()) >= recipe["sparsity"] - 0.01, (name, k)
        elif model["relation"] == "quantized":
            for k, w in matrices.items():
                assert max(len(row.unique()) for row in w.flatten(1)) <= 2 ** recipe["bits"], (name, k)
        elif model["relation"] == "adapter" and not recipe["new_head"]:
            for k, w in matrices.items():
                delta = (w - parent[k]).flatten(1).double()
                assert int(torch.linalg.matrix_rank(delta, rtol=1e-4)) <= recipe["rank"], (name, k)
        elif model["relation"] == "finetune":
            for k in child:
                if k.startswith(tuple(recipe["freeze"])):
                    assert torch.equal(child[k], parent[k]), (name, k)
        else:
            continue
        seen[model["relation"]] += 1
    assert set(seen) == {"pruned", "quantized", "adapter", "finetune"}


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Median over shared tensors of ||a - b|| / ||b||: the weight-space signal lineage methods rely on."""
    shared = [k for k in a if k in b and a[k].shape == b[k].shape]
    return float(np.median([float((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-12)) for k in shared]))


def test_children_are_nearer_their_parents_than_unrelated_models(zoo: Path, truth: dict[str, Any]) -> None:
    """Independently of the recipes: every weight-derived child sits closer to each recorded parent than to any
    model of its architecture from another family tree."""
    models = truth["models"]
    weights = {name: _weights(zoo, name) for name in models}
    shape = {name: _body(m["architecture"]) for name, m in models.items()}
    checked = 0
    for name, model in models.items():
        if model["relation"] in (None, "distilled"):
            continue
        strangers = [n for n in models if shape[n] == shape[name] and models[n]["root"] != model["root"]]
        nearest_stranger = min(_distance(weights[name], weights[n]) for n in strangers)
        for parent in model["parents"]:
            assert _distance(weights[name], weights[parent]) < nearest_stranger, (name, parent)
        checked += 1
    assert checked >= 10


def test_saved_models_reproduce_their_recorded_accuracy(zoo: Path, truth: dict[str, Any], data: ZooData) -> None:
    """Architecture round trip: spec from the file's metadata -> build_module -> strict load -> same predictions."""
    for name, model in truth["models"].items():
        with safe_open(str(zoo / "models" / f"{name}.safetensors"), "pt") as f:
            spec = spec_from_safetensors_metadata(f.metadata())
        assert spec is not None
        module = build_module(spec)
        module.load_state_dict(_weights(zoo, name), strict=True)
        _, (x, y) = data.source(Task.from_json(model["task"]))
        assert accuracy(module.eval(), x, y) == pytest.approx(model["accuracy"], abs=1e-6), name


def test_a_finished_build_is_reused_and_never_overwritten(zoo: Path) -> None:
    again = build_zoo(zoo, "tiny", SEED)
    assert again["cached"] and again["seconds"] < 5
    with pytest.raises(ZooError, match="already holds a zoo"):
        build_zoo(zoo, "tiny", SEED + 1)


def test_refuses_a_directory_that_holds_something_else(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ZooError, match="not empty"):
        build_zoo(tmp_path, "tiny", SEED)


@pytest.mark.parametrize(("size", "seed"), [("huge", 0), ("tiny", -1), ("tiny", True)])
def test_build_zoo_rejects_bad_arguments(tmp_path: Path, size: str, seed: int) -> None:
    with pytest.raises(ZooError):
        build_zoo(tmp_path, size, seed)


@pytest.mark.parametrize("argv", [["build", "OUT", "--size", "huge"], ["build", "OUT", "--seed", "x"], ["build"]])
def test_cli_usage_errors_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err


def test_another_seed_gives_another_zoo() -> None:
    """Quality is claimed on a zoo of another seed than the one methods were tuned on, so seeds must matter."""
    a, b = make_plan("tiny", SEED), make_plan("tiny", SEED + 1)
    assert [m.recipe.get("seed") for m in a.models] != [m.recipe.get("seed") for m in b.models]
    assert set(a.tasks) != set(b.tasks)
    assert not np.array_equal(ZooData(SEED, 1).probes(), ZooData(SEED + 1, 1).probes())


def test_importing_the_package_does_not_import_torch() -> None:
    """Reading a built zoo (register-zoo) must not pay for torch; building imports it on first use."""
    code = "import sys, modelkin.zoo, modelkin.zoo.registration; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
