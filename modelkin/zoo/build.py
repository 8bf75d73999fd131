"""Build a reference zoo into a directory: the file layout is a contract that outside scripts rely on.

::

    OUT/models/<name>.safetensors   weights; the architecture spec under the "modelkin.architecture" metadata key
    OUT/probes/digits-64.npz        array x: unlabelled probe inputs, disjoint from all training and test data
    OUT/tasks/<task>.npz            arrays x (float32, n x 64), y (int64 class indices): a query task's samples
    OUT/ground_truth.json           models, edges, tasks with transfer scores, and the recipes behind them

A build is deterministic for (size, seed): the same files, byte for byte. A directory that already holds a
complete build of the same size, seed and format is returned at once, so benchmarks can keep one per seed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import save_file

from modelkin.errors import ModelkinError
from modelkin.registry.architectures import spec_to_safetensors_metadata
from modelkin.zoo.plan import SIZES, Plan, make_plan
from modelkin.zoo.recipes import Spec, apply, load
from modelkin.zoo.tasks import INPUT_SPACE, INPUT_SPACE_DESCRIPTION, ZooData
from modelkin.zoo.training import Weights, accuracy, deterministic
from modelkin.zoo.transfer import FINETUNE, LINEAR_PROBE, transfer_scores

FORMAT_VERSION = 1
GROUND_TRUTH = "ground_truth.json"
_IN_PROGRESS = ".zoo-build-in-progress"
_LAYOUT = ("models", "probes", "tasks")


class ZooError(ModelkinError, ValueError):
    """A zoo cannot be built as asked (unknown size, bad seed, or an output directory that holds other things)."""


def build_zoo(out: Path | str, size: str = "tiny", seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Build the zoo of ``size`` for ``seed`` into ``out`` (or find it there already) and summarise it.

    The summary has ``path``, ``size``, ``seed``, counts of ``models``, ``tasks`` and ``edges``, ``seconds``
    taken and whether the build was ``cached``.
    """
    if size not in SIZES:
        raise ZooError(f"unknown zoo size {size!r}", hint=f"choose one of: {', '.join(SIZES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ZooError(f"the zoo seed must be a non-negative integer, got {seed!r}")
    out = Path(out)
    start = time.perf_counter()
    truth = _existing_build(out, size, seed)
    cached = truth is not None
    if truth is None:
        _prepare(out, size, seed)
        with deterministic():
            truth = _build(out, make_plan(size, seed), _Progress(progress))
        _write_json(out / GROUND_TRUTH, truth)
        (out / _IN_PROGRESS).unlink()
    return {
        "path": str(out),
        "size": size,
        "seed": seed,
        "models": len(truth["models"]),
        "tasks": len(truth["tasks"]),
        "edges": len(truth["edges"]),
        "seconds": round(time.perf_counter() - start, 3),
        "cached": cached,
    }


def _existing_build(out: Path, size: str, seed: int) -> dict[str, Any] | None:
    """The ground truth of a complete build of (size, seed) in ``out``; None if there is none to reuse."""
    path = out / GROUND_TRUTH
    if not path.is_file() or (out / _IN_PROGRESS).exists():
        return None
    truth: dict[str, Any] = json.loads(path.read_text())
    if (truth.get("format_version"), truth.get("size"), truth.get("seed")) != (FORMAT_VERSION, size, seed):
        raise ZooError(
            f"{out} already holds a zoo of size {truth.get('size')!r}, seed {truth.get('seed')!r} "
            f"(format {truth.get('format_version')!r})",
            hint="build into another directory, or delete this one first",
        )
    files = [out / "models" / f"{name}.safetensors" for name in truth["models"]]
    files += [out / "tasks" / f"{name}.npz" for name in truth["tasks"]]
    files.append(out / "probes" / f"{INPUT_SPACE}.npz")
    return truth if all(f.is_file() for f in files) else None


def _prepare(out: Path, size: str, seed: int) -> None:
    """Start from an empty layout; only a directory that is empty or holds an earlier zoo build is reused."""
    if out.exists() and any(out.iterdir()):
        ours = (out / _IN_PROGRESS).exists() or (out / GROUND_TRUTH).exists()
        if not ours:
            raise ZooError(f"{out} is not empty and holds no zoo", hint="build into a new or empty directory")
        for name in _LAYOUT:
            shutil.rmtree(out / name, ignore_errors=True)
        (out / GROUND_TRUTH).unlink(missing_ok=True)
    for name in _LAYOUT:
        (out / name).mkdir(parents=True, exist_ok=True)
    (out / _IN_PROGRESS).write_text(json.dumps({"size": size, "seed": seed}))


class _Progress:
    """One line per step on stderr, only when asked."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"[{time.perf_counter() - self.start:7.1f}s] {message}", file=sys.stderr, flush=True)


def _build(out: Path, plan: Plan, progress: _Progress) -> dict[str, Any]:
    """Write every file but the ground truth, and return the ground truth."""
    cfg = plan.config
    data = ZooData(plan.seed, cfg.synthetic_domains)
    probes = data.probes()
    np.savez(out / "probes" / f"{INPUT_SPACE}.npz", x=probes)
    weights, models = _build_models(out, plan, data, progress)
    tasks = _score_tasks(out, plan, data, weights, progress)
    edges = [
        {"parent": parent, "child": child, "relation": m["relation"], "generation": m["generation"]}
        for child, m in models.items()
        for parent in m["parents"]
    ]
    return {
        "format_version": FORMAT_VERSION,
        "size": plan.size,
        "seed": plan.seed,
        "input_space": INPUT_SPACE,
        "input_space_description": INPUT_SPACE_DESCRIPTION,
        "heldout_domains": list(plan.heldout_domains),
        "probes": {INPUT_SPACE: {"file": f"probes/{INPUT_SPACE}.npz", "samples": len(probes)}},
        "transfer": {
            "linear_probe": LINEAR_PROBE,
            "finetune": FINETUNE,
            "draws": cfg.transfer_draws,
            "shots": cfg.shots,
            "protocol": (
                "each score is the mean over draws of a random support set of `shots` samples per class (draw 0 "
                "is the task file) from the task's query pool, measured on the rest of that pool, seen by no model"
            ),
        },
        "models": models,
        "edges": edges,
        "tasks": tasks,
    }


def _build_models(
    out: Path, plan: Plan, data: ZooData, progress: _Progress
) -> tuple[dict[str, tuple[Spec, Weights]], dict[str, Any]]:
    """Train every model in plan order (parents first), save it, and describe it for the ground truth."""
    weights: dict[str, tuple[Spec, Weights]] = {}
    models: dict[str, Any] = {}
    for i, m in enumerate(plan.models, 1):
        parents = [plan.models[p].name for p in m.parents]
        spec, state = apply(m.recipe, [weights[p] for p in parents], data)
        weights[m.name] = (spec, state)
        save_file(state, str(out / "models" / f"{m.name}.safetensors"), metadata=spec_to_safetensors_metadata(spec))
        _, evaluation = data.source(m.task)
        models[m.name] = {
            "parents": parents,
            "relation": m.relation,
            "generation": m.generation,
            "architecture": spec,
            "input_space": INPUT_SPACE,
            "variant": m.variant,
            "root": plan.models[m.root].name,
            "task": m.task.to_json(),
            "accuracy": round(accuracy(load(spec, state), *evaluation), 6),
            "recipe": m.recipe,
        }
        progress(f"model {i}/{len(plan.models)} {m.name} ({m.variant or m.recipe['op']})")
    return weights, models


def _score_tasks(
    out: Path, plan: Plan, data: ZooData, weights: dict[str, tuple[Spec, Weights]], progress: _Progress
) -> dict[str, Any]:
    """Write each query task's file and measure its transfer scores."""
    cfg = plan.config
    tasks: dict[str, Any] = {}
    for i, (name, (task, split)) in enumerate(sorted(plan.tasks.items()), 1):
        draws = [data.query(task, cfg.shots, draw) for draw in range(cfg.transfer_draws)]
        (x, y), evaluation = draws[0]
        np.savez(out / "tasks" / f"{name}.npz", x=x, y=y)
        scores = {model: transfer_scores(*weights[model], draws) for model in plan.scored_models(name)}
        tasks[name] = {
            "split": split,
            **task.to_json(),
            "support_samples": len(y),
            "eval_samples": len(evaluation[1]),
            "scores": scores,
        }
        progress(f"task {i}/{len(plan.tasks)} {name} ({split}, {len(scores)} models scored)")
    return tasks


def _write_json(path: Path, obj: Any) -> None:
    """Written whole then renamed into place, so a reader never sees half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
