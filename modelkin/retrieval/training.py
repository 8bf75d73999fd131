"""Training the alignment encoders (see :class:`modelkin.retrieval.scorers.Learned`) from ground-truth scores.

Each training task is a few augmented views of its support set (random subsets of each class) with the
transfer scores of the models measured on it. The loss is listwise (ListNet: cross-entropy between the softmax of
the task's standardised scores and the softmax of predicted scores) plus a hard-negative hinge (the truly best
model must beat the highest-scoring clearly-worse model by a margin). Training is seeded and single-threaded, so
it is reproducible; inference has no random state at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from modelkin.retrieval.features import MODEL_GLOBALS, QUERY_GLOBALS, ModelFeatures, QueryFeatures
from modelkin.retrieval.scorers import Learned, TrainingFree

if TYPE_CHECKING:
    from collections.abc import Sequence

TARGET_TEMPERATURE = 0.25
HINGE_MARGIN = 0.5
HINGE_GAP = 0.02  # a negative is a model whose true score is this much below the best one's


@dataclass(frozen=True)
class TaskExample:
    views: list[QueryFeatures]  # augmented support sets of one task
    models: np.ndarray  # indices into the training models
    scores: np.ndarray  # their ground-truth transfer scores on the task


def _mlp(i: int, h: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, h))


class _Net(nn.Module):
    def __init__(self, dims: int, landmarks: int, hidden: int, out: int) -> None:
        super().__init__()
        half, cat = hidden // 2, hidden + hidden // 2 + hidden // 2 + 16
        self.anchor, self.bound = _mlp(dims + 2, hidden), _mlp(dims + 2, half)
        self.mland, self.mglob = nn.Linear(landmarks, half), nn.Linear(MODEL_GLOBALS, 16)
        self.mout = nn.Linear(cat, out)
        self.proto, self.mid = _mlp(dims, hidden), _mlp(dims, half)
        self.qland, self.qglob = nn.Linear(landmarks, half), nn.Linear(QUERY_GLOBALS, 16)
        self.qout = nn.Linear(cat, out)
        self.log_w, self.log_v = nn.Parameter(torch.tensor(-2.0)), nn.Parameter(torch.tensor(2.0))

    def models(self, a: Tensor, am: Tensor, b: Tensor, bm: Tensor, land: Tensor, glob: Tensor) -> Tensor:
        h = torch.cat([_pool(self.anchor(a), am), _pool(self.bound(b), bm), self.mland(land), self.mglob(glob)], 1)
        return nn.functional.normalize(self.mout(torch.relu(h)), dim=1)

    def queries(self, p: Tensor, pm: Tensor, mid: Tensor, mm: Tensor, land: Tensor, glob: Tensor) -> Tensor:
        h = torch.cat([_pool(self.proto(p), pm), _pool(self.mid(mid), mm), self.qland(land), self.qglob(glob)], 1)
        return nn.functional.normalize(self.qout(torch.relu(h)), dim=1)


def _pool(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over the rows a mask keeps: a set encoder, blind to the order of classes."""
    return (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)


def build_net(config: dict[str, Any]) -> _Net:
    return _Net(int(config["dims"]), int(config["landmarks"]), int(config["hidden"]), int(config["out"]))


def net_from_state(config: dict[str, Any], state: dict[str, np.ndarray]) -> _Net:
    """The encoders of ``config`` holding the stored weights, in inference mode."""
    net = build_net(config)
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return net.eval()


def _padded(rows: Sequence[np.ndarray], scale: np.ndarray) -> tuple[Tensor, Tensor]:
    width = max(len(r) for r in rows)
    out = np.zeros((len(rows), max(width, 1), rows[0].shape[1]), np.float32)
    mask = np.zeros((len(rows), max(width, 1)), np.float32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r / scale
        mask[i, : len(r)] = 1
    return torch.from_numpy(out), torch.from_numpy(mask)


def _model_inputs(free: TrainingFree, ms: Sequence[ModelFeatures]) -> tuple[Tensor, ...]:
    scale = np.ones(free.dims + 2)
    scale[: free.dims] = free.bandwidth
    a, am = _padded([m.anchors for m in ms], scale)
    b, bm = _padded([m.boundary for m in ms], scale)
    land = torch.tensor(np.stack([m.landmarks for m in ms]), dtype=torch.float32)
    glob = torch.tensor(np.stack([m.globals for m in ms]), dtype=torch.float32)
    free_vecs = torch.tensor(np.stack([free.model_vector(m) for m in ms]))
    return a, am, b, bm, land, glob, free_vecs


def _query_inputs(free: TrainingFree, qs: Sequence[QueryFeatures]) -> tuple[Tensor, ...]:
    scale = np.full(free.dims, free.bandwidth)
    p, pm = _padded([q.prototypes for q in qs], scale)
    mid, mm = _padded([q.midpoints for q in qs], scale)
    land = torch.tensor(np.stack([q.landmarks for q in qs]) * len(qs[0].landmarks), dtype=torch.float32)
    glob = torch.tensor(np.stack([q.globals for q in qs]), dtype=torch.float32)
    free_vecs = torch.tensor(np.stack([free.query_vector(q) for q in qs]))
    return p, pm, mid, mm, land, glob, free_vecs


def _model_side(net: _Net, inputs: tuple[Tensor, ...]) -> Tensor:
    *parts, free_vecs = inputs
    emb = net.models(*parts)
    w, v = net.log_w.exp().sqrt(), net.log_v.exp().sqrt()
    return torch.cat([w * emb, v * free_vecs], 1)


def _query_side(net: _Net, inputs: tuple[Tensor, ...]) -> Tensor:
    *parts, free_vecs = inputs
    emb = net.queries(*parts)
    w, v = net.log_w.exp().sqrt(), net.log_v.exp().sqrt()
    return torch.cat([w * emb, v * free_vecs], 1)


def model_vectors(learned: Learned, ms: Sequence[ModelFeatures]) -> np.ndarray:
    with torch.no_grad():
        return _model_side(learned.net, _model_inputs(learned.free, ms)).numpy().astype(np.float32)  # type: ignore[arg-type]


def query_vectors(learned: Learned, qs: Sequence[QueryFeatures]) -> np.ndarray:
    with torch.no_grad():
        return _query_side(learned.net, _query_inputs(learned.free, qs)).numpy().astype(np.float32)  # type: ignore[arg-type]


def train(
    free: TrainingFree,
    models: Sequence[ModelFeatures],
    tasks: Sequence[TaskExample],
    *,
    epochs: int = 100,
    seed: int = 0,
    hidden: int = 64,
    out: int = 128,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
) -> tuple[Learned, dict[str, Any]]:
    """Fit the encoders; returns the scorer and a summary (losses, sizes) for the record."""
    config = {"dims": free.dims, "landmarks": free.landmarks, "hidden": hidden, "out": out, "epochs": epochs,
              "seed": seed, "lr": lr, "weight_decay": weight_decay}  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        net = build_net(config)
        minputs = _model_inputs(free, models)
        views = [_query_inputs(free, t.views) for t in tasks]
        targets = [_target(t.scores) for t in tasks]
        rng = np.random.default_rng(seed)
        opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
        losses = []
        for _ in range(epochs):
            opt.zero_grad()
            mvec = _model_side(net, minputs)
            loss = torch.zeros(())
            for t, v, target in zip(tasks, views, targets, strict=True):
                pick = int(rng.integers(len(t.views)))
                q = _query_side(net, tuple(x[pick : pick + 1] for x in v))[0]
                s = mvec[torch.from_numpy(t.models)] @ q
                loss = loss + _listnet(s, target) + _hinge(s, t.scores)
            loss = loss / len(tasks)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    summary = {"tasks": len(tasks), "models": len(models), "epochs": epochs, "first_loss": round(losses[0], 4),
               "final_loss": round(losses[-1], 4)}  # fmt: skip
    state = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    return Learned(state, free, config, net.eval()), summary


def _target(scores: np.ndarray) -> Tensor:
    z = (scores - scores.mean()) / (scores.std() + 1e-9)
    return torch.softmax(torch.tensor(z / TARGET_TEMPERATURE, dtype=torch.float32), 0)


def _listnet(s: Tensor, target: Tensor) -> Tensor:
    return -(target * torch.log_softmax(s, 0)).sum()


def _hinge(s: Tensor, scores: np.ndarray) -> Tensor:
    best = int(np.argmax(scores))
    negatives = torch.from_numpy(scores < scores[best] - HINGE_GAP)
    if not bool(negatives.any()):
        return torch.zeros(())
    return torch.relu(HINGE_MARGIN + s[negatives].max() - s[best])
