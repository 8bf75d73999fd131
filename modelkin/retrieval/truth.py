"""Where training tasks come from: a registered reference zoo, a JSONL file of scores, or logged scores.

Every source becomes ``Task(x, y, scores)`` with scores keyed by version id. Zoo models are matched to
registered versions by the sha256 of their weights file (the registry stores each file's digest), so a zoo
must be registered before it can teach; its meta-train tasks are used, never its meta-test ones.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load as load_arrays

from modelkin.errors import InvalidQueryData, ModelkinError, RetrievalUnavailable
from modelkin.registry.store import sha256_file
from modelkin.retrieval.features import check_query
from modelkin.retrieval.files import read_query
from modelkin.zoo.registration import read_ground_truth

VIEWS = 8


@dataclass(frozen=True)
class Task:
    x: np.ndarray
    y: np.ndarray
    scores: dict[int, float]  # version id -> transfer score


def zoo_tasks(zoo: Path, by_digest: Mapping[str, int], target: str, splits: Sequence[str] = ("meta-train",),
              exclude: Sequence[str] = ()) -> list[Task]:  # fmt: skip
    """The zoo's tasks of ``splits`` with ``target`` scores ("finetune" or "linear_probe") of registered models."""
    truth = read_ground_truth(zoo)
    vids = {}
    for name in truth["models"]:
        path = zoo / "models" / f"{name}.safetensors"
        if path.is_file() and (vid := by_digest.get(sha256_file(path))) is not None:
            vids[name] = vid
    if not vids:
        raise RetrievalUnavailable(f"no model of the zoo {zoo} is registered here.",
                                   hint=f"register it first: `modelkin register-zoo {zoo}`")  # fmt: skip
    tasks = []
    for name, task in sorted(truth.get("tasks", {}).items()):
        if task.get("split") not in splits or name in exclude:
            continue
        x, y = check_query(*read_query(zoo / "tasks" / f"{name}.npz"))
        scores = {vids[m]: float(s[target]) for m, s in task["scores"].items() if m in vids}
        if len(scores) >= 2:
            tasks.append(Task(x, y, scores))
    return tasks


def jsonl_tasks(path: Path, vid_of: Callable[[str], int | None]) -> list[Task]:
    """Lines ``{"ref": REF, "data": FILE, "score": S}``; lines sharing a data file make one task."""
    if not path.is_file():
        raise InvalidQueryData(f"{path} does not exist or is not a file.")
    grouped: dict[Path, dict[int, float]] = defaultdict(dict)
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ref, data, score = row["ref"], row["data"], float(row["score"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise InvalidQueryData(f'{path} line {n} is not {{"ref": ..., "data": ..., "score": ...}}.') from None
        if not np.isfinite(score):
            raise InvalidQueryData(f"{path} line {n} has a score that is not a finite number.")
        try:
            vid = vid_of(str(ref))
        except ModelkinError as exc:
            raise InvalidQueryData(f"{path} line {n}: {exc}") from None
        data_path = Path(data) if Path(data).is_absolute() else path.parent / data
        if vid is not None:
            grouped[data_path][vid] = score
    out = []
    for data_path, scores in grouped.items():
        x, y = check_query(*read_query(data_path))
        out.append(Task(x, y, scores))
    return out


def logged_tasks(rows: Sequence[tuple[str, int, float]], read: Callable[[str], bytes]) -> list[Task]:
    """Logged scores grouped by the task data they were measured on (the newest score per version wins)."""
    grouped: dict[str, dict[int, float]] = defaultdict(dict)
    for digest, vid, score in rows:
        grouped[digest][vid] = score
    out = []
    for digest, scores in grouped.items():
        arrays = load_arrays(read(digest))
        out.append(Task(arrays["x"], arrays["y"], scores))
    return out


def views(x: np.ndarray, y: np.ndarray, seed: int, count: int = VIEWS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The full support set, then seeded random subsets keeping at least 2 samples of every class."""
    yield x, y
    rng = np.random.default_rng([seed, len(y)])
    for _ in range(count - 1):
        keep = []
        for c in np.unique(y):
            members = np.flatnonzero(y == c)
            size = int(rng.integers(min(2, len(members)), len(members) + 1))
            keep.append(rng.choice(members, size, replace=False))
        idx = np.sort(np.concatenate(keep))
        yield x[idx], y[idx]
