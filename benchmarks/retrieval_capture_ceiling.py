"""Can a forward-only capture carry more than the logits? The ceiling of each candidate capture, on the train zoo.

    OMP_NUM_THREADS=1 python benchmarks/retrieval_capture_ceiling.py --home HOME --zoo /work/zoos/full-s0 \
        [--seeds 3] [--out benchmarks/results/retrieval-capture-ceiling.md]

A zero-pass search can only know of a model what its capture stored, and capture is black-box: outputs on
inputs it chose. Today it keeps the logits, and LogME on the real logits at the query samples (what a perfect
nearest-probe proxy of stored logits could show) stays well below LogME on penultimate features (the LogME
baseline). This measures, per candidate, LogME on [logits + the candidate's outputs] computed by running the real
models at the query samples: an upper bound of what storing that candidate on every probe could give. Candidates,
each a fixed function of the input (no random state beyond constant seeds), so capture would stay deterministic:

- ``jacobian``: finite differences z(x + h·d_k) − z(x) along ``DIRECTIONS`` fixed random unit directions
  (a sketch of the local Jacobian, which sees the trunk's geometry through the head);
- ``interpolation``: z((x + r_j) / 2) towards ``REFERENCES`` fixed probes r_j of the pool;
- ``scales``: z(s·x) for the input scales ``SCALES``.

Each also appears reduced to its top ``REDUCED`` principal components on the query: stacking blocks multiplies
the dimensions, and LogME's evidence charges every dimension a 5-shot query cannot support.

Each extra block is rescaled to the logits block's root-mean-square on the query, so that LogME's one prior
weighs the blocks alike. ``HOME`` holds the zoo's models (registered by name; only ``load_module`` is used) and
its benchmark probe pool (for the references and the cost figures). Every task of the zoo is scored (meta-train
tasks on their 52 scored models, meta-test on all 260), on fresh support draws (100+) of 5, 10 and 20 shots per
class; the differences to logits alone carry their standard error over tasks. Run on seed 0 only: anything
chosen from this table is chosen without the test zoo.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
from retrieval import SPACE, queries
from retrieval_ceiling import logme_each
from scipy.stats import weightedtau

from modelkin import Registry
from modelkin.retrieval.capture import BISECTION_STEPS, MAX_CLASSES
from modelkin.retrieval.proxy import nearest_probes
from modelkin.retrieval.runner import one_thread
from modelkin.zoo.registration import read_ground_truth

DIRECTIONS = 8
STEP = 0.5  # the finite-difference step, in input norm (probes are 8x8 images in [0, 1], norm about 4.3)
REFERENCES = 8
SCALES = (0.5, 0.75, 1.25, 1.5)
SEED = 20261202
REDUCED = 20  # principal components kept in the reduced rows (more dimensions than samples cost LogME evidence)
CANDIDATES = ("jacobian", "interpolation", "scales", "all")
ROWS = ("features", "logits", "logits centred", *CANDIDATES, *(f"{c} reduced" for c in CANDIDATES))
LABELS = {
    "features": "penultimate features (the LogME baseline; not black-box)",
    "logits": "logits alone (today's capture)",
    "logits centred": "logits alone, centred on the query (the control for the reduced rows, which are centred)",
    "jacobian": f"logits + Jacobian sketch ({DIRECTIONS} directions, step {STEP})",
    "interpolation": f"logits + outputs halfway to {REFERENCES} fixed probes",
    "scales": f"logits + outputs at input scales {', '.join(map(str, SCALES))}",
    "all": "logits + all three",
    **{f"{c} reduced": f"the same as {c}, its top {REDUCED} principal components on the query" for c in CANDIDATES},
}


def perturbations(pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed directions (K, D) and reference probes (J, D): constants of the candidate capture."""
    rng = np.random.default_rng(SEED)
    d = rng.standard_normal((DIRECTIONS, pool.shape[1]))
    refs = pool[np.sort(rng.choice(len(pool), REFERENCES, replace=False))]
    return (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32), refs.astype(np.float32)


def variant_inputs(x: np.ndarray, directions: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Every input a candidate capture runs for the samples ``x``: (V, n, D), ``x`` itself first."""
    variants = [x, *(x + STEP * d for d in directions), *((x + r) / 2.0 for r in refs), *(s * x for s in SCALES)]
    return np.stack(variants).astype(np.float32)


def outputs(module: torch.nn.Module, variants: np.ndarray) -> np.ndarray:
    """The module's logits on every variant, (V, n, C), in batched forwards on one thread."""
    flat = variants.reshape(-1, variants.shape[-1])
    with one_thread(), torch.no_grad():
        z = [module(torch.from_numpy(np.ascontiguousarray(flat[i : i + 8192]))).double().numpy()
             for i in range(0, len(flat), 8192)]  # fmt: skip
    return np.concatenate(z).reshape(*variants.shape[:2], -1)


def candidate_rows(parts: np.ndarray) -> dict[str, np.ndarray]:
    """The feature matrix each row hands LogME, from the outputs on every variant (``variant_inputs``' order)."""
    logits, n = parts[0], parts.shape[1]
    k, j = DIRECTIONS, REFERENCES
    blocks = {
        "jacobian": (parts[1 : 1 + k] - logits).transpose(1, 0, 2).reshape(n, -1),
        "interpolation": parts[1 + k : 1 + k + j].transpose(1, 0, 2).reshape(n, -1),
        "scales": parts[1 + k + j :].transpose(1, 0, 2).reshape(n, -1),
    }
    rms = np.sqrt(np.mean(logits**2)) + 1e-12
    blocks = {name: b * rms / (np.sqrt(np.mean(b**2)) + 1e-12) for name, b in blocks.items()}
    out = {"logits": logits, "logits centred": logits - logits.mean(axis=0)}
    out |= {name: np.concatenate([logits, b], axis=1) for name, b in blocks.items()}
    out["all"] = np.concatenate([logits, *blocks.values()], axis=1)
    out |= {f"{c} reduced": _principal(out[c], REDUCED) for c in CANDIDATES}
    return out


def _principal(f: np.ndarray, r: int) -> np.ndarray:
    """The top ``r`` principal component scores of ``f`` (centred), so that every model offers LogME as many."""
    centred = f - f.mean(axis=0)
    u, sigma, _ = np.linalg.svd(centred, full_matrices=False)
    return np.asarray(u[:, :r] * sigma[:r])


def cost_rows(reg: Registry, refs: list[str], pool: np.ndarray) -> list[str]:
    """Capture cost per model today and with each candidate: inputs run, pool outputs stored (float16 logits and
    probabilities today, float16 outputs per extra input), seconds on one model of each family (one thread)."""
    n = len(pool)
    extra = {"jacobian": DIRECTIONS, "interpolation": REFERENCES, "scales": len(SCALES)}
    extra["all"] = sum(extra.values())
    by_family: dict[str, str] = {}
    for r in refs:
        by_family.setdefault(reg.get(r).family or "?", r)
    rows = []
    for family, r in sorted(by_family.items()):
        module = reg.load_module(r)
        with one_thread(), torch.no_grad():
            start = time.perf_counter()
            width = int(module(torch.from_numpy(pool)).shape[1])
            base = time.perf_counter() - start
        classes = min(width, MAX_CLASSES)
        today = n + classes + classes * (classes - 1) * (BISECTION_STEPS + 2)
        for name, k in {"logits": 0, **extra}.items():
            inputs, stored = today + n * k, n * width * 2 * (2 + k)
            rows.append(f"| {family} ({width} outputs) | {name} | {inputs:,} | {stored / 1e6:.2f} MB | "
                        f"{base * inputs / n:.2f} s |")  # fmt: skip
    return rows


def leave_one_task_out(rows: list[str], taus: dict[tuple[int, str, str], dict[str, list[float]]],
                       shots: list[int]) -> str:  # fmt: skip
    """The zero-pass figure of choosing a stored row without the task it ranks: per task, the row with the best
    mean tau over the other tasks scores it; paired with stored logits (today's stage 2) on the same task."""
    cells, chosen = [], Counter()
    for s in shots:
        per = {r: {t: statistics.mean(v) for t, v in taus[(s, r, "all")].items()} for r in rows}
        diff = []
        for t in per["stored logits"]:
            best = max(rows, key=lambda r: statistics.mean(v for u, v in per[r].items() if u != t))
            chosen[best] += 1
            diff.append(per[best][t] - per["stored logits"][t])
        cells.append(f"{statistics.mean(diff):+.3f} ± {statistics.stdev(diff) / len(diff) ** 0.5:.3f}")
    picks = ", ".join(f"{r.removeprefix('stored ')} {n}x" for r, n in chosen.most_common())
    return (f"Zero-pass, leave one task out (the stored row chosen on the other tasks scores each task), Δ stored "
            f"logits: {' / '.join(cells)} (chosen: {picks}).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--zoo", type=Path, default=Path("/work/zoos/full-s0"))
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--stored", action="store_true",
                        help="also score each candidate as a zero-pass search could: run it on every probe of the "
                             "pool once, then read the query samples' nearest probes' outputs")  # fmt: skip
    args = parser.parse_args()
    reg = Registry.open(args.home)
    truth = read_ground_truth(args.zoo)
    versions = sorted(reg.list(f"tags.zoo.seed = '{truth['seed']}'"), key=lambda v: v.ref)
    by_name = {v.name: v for v in versions}
    modules = {v.name: reg.load_module(v.ref) for v in versions}
    serving = reg.retrieval._serving_for(reg.retrieval._latest_pool(SPACE))
    pool = reg.retrieval._pool_inputs(serving.pool).astype(np.float32)
    directions, refs_x = perturbations(pool)
    started = time.perf_counter()
    stored = {m: outputs(modules[m], variant_inputs(pool, directions, refs_x)).astype(np.float16)
              for m in (modules if args.stored else ())}  # fmt: skip
    if args.stored:
        print(f"pool outputs of {len(stored)} models at {time.perf_counter() - started:.0f} s", flush=True)
    rows = [*ROWS, *(f"stored {r}" for r in ROWS[1:] if args.stored)]
    # taus[(shots, row, group)][task] = per-draw weighted taus
    taus: dict[tuple[int, str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for shots in args.shots:
        for split in ("meta-train", "meta-test"):
            for task, x, y in queries(args.zoo, truth, shots, args.seeds, split=split):
                names = sorted(truth["tasks"][task]["scores"])
                gt = np.array([truth["tasks"][task]["scores"][m]["finetune"] for m in names])
                family = np.array([by_name[m].family for m in names])
                feats = []
                for m in names:
                    with one_thread(), torch.no_grad():
                        trunk = modules[m].trunk(torch.from_numpy(x)).double().numpy()
                    real = outputs(modules[m], variant_inputs(x, directions, refs_x))
                    feats.append({"features": trunk, **candidate_rows(real)})
                if args.stored:
                    near, w = nearest_probes(serving.space.encode(x), serving.pool_phi)
                    for m, f in zip(names, feats, strict=True):
                        proxy = (stored[m][:, near].astype(np.float64) * w[None, :, :, None]).sum(axis=2)
                        f |= {f"stored {k}": v for k, v in candidate_rows(proxy).items()}
                groups = {"all": np.ones(len(names), bool)}
                if split == "meta-test":
                    groups |= {f: family == f for f in sorted(set(family))}
                for row in rows:
                    score = logme_each([f[row] for f in feats], y)
                    for group, m in groups.items():
                        taus[(shots, row, group)][task].append(float(weightedtau(gt[m], score[m], rank=None)[0]))
        print(f"{shots} shots done at {time.perf_counter() - started:.0f} s", flush=True)
    lines = [f"`OMP_NUM_THREADS=1 python benchmarks/retrieval_capture_ceiling.py --home {args.home} --zoo {args.zoo} "
             f"--seeds {args.seeds}{' --stored' if args.stored else ''}` ({time.perf_counter() - started:.0f} s)\n",
             f"Weighted tau (rank=None) of LogME on what each capture could show, at the real query samples, "
             f"{' / '.join(map(str, args.shots))} shots, {args.seeds} draws per task. `all tasks`: the zoo's "
             f"{len(truth['tasks'])} tasks (per-task mean over draws, then over tasks); `Δ logits`: the paired "
             "difference to logits alone ± its standard error over tasks; family columns: meta-test tasks, "
             "ranking within the family.\n"]  # fmt: skip
    families = sorted({g for (_, _, g) in taus if g != "all"})
    lines.append("| what is read | all tasks | Δ logits | " + " | ".join(f"within {f}" for f in families) + " |")
    lines.append("| --- | --- | --- |" + " --- |" * len(families))
    for row in rows:
        cells, deltas, fams = [], [], []
        for s in args.shots:
            per = {t: statistics.mean(v) for t, v in taus[(s, row, "all")].items()}
            reference = "stored logits" if row.startswith("stored") else "logits"
            base = {t: statistics.mean(v) for t, v in taus[(s, reference, "all")].items()}
            diff = [per[t] - base[t] for t in per]
            cells.append(f"{statistics.mean(per.values()):.3f}")
            deltas.append(f"{statistics.mean(diff):+.3f} ± {statistics.stdev(diff) / len(diff) ** 0.5:.3f}")
        for f in families:
            fams.append(" / ".join(
                f"{statistics.mean(statistics.mean(v) for v in taus[(s, row, f)].values()):.3f}" for s in args.shots))
        label = LABELS.get(row) or f"stored near the query: {LABELS[row.removeprefix('stored ')]}"
        lines.append(f"| {label} | {' / '.join(cells)} | {' / '.join(deltas)} | {' | '.join(fams)} |")
    if args.stored:
        lines += ["", leave_one_task_out([r for r in rows if r.startswith("stored")], taus, args.shots)]
    lines += ["", "Capture cost per model (pool of "
              f"{len(pool):,} probes; today's capture also runs the class anchors and the bisection; seconds: one "
              "forward over the pool on one thread, scaled by the inputs):\n",
              "| model | capture | forward inputs | outputs stored | time |", "| --- | --- | --- | --- | --- |"]
    lines += cost_rows(reg, [v.ref for v in versions], pool)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
