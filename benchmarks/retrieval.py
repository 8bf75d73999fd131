"""Retrieval quality versus cost: modelkin's retrievers beside LogME, LEEP, NCE, kNN, a static prior and random.

    OMP_NUM_THREADS=1 python benchmarks/retrieval.py --train-zoo /work/zoos/full-s0 --test-zoo /work/zoos/full-s1 \
        --home /work/zoos/retrieval-bench [--shots 5 10 20] [--seeds 9] [--restricted-seeds 3] [--scale 1000000]
    OMP_NUM_THREADS=1 python benchmarks/retrieval.py --scale-only 256    # the scale part alone (its timings)

Both zoos are registered once into one registry (``--home``, reused on later runs), and every model is captured
on one probe pool (one pool per input space, as in any registry) that covers the domains of every registered
model: both zoos' probe pools together (``--pool-zoos``), less every input that is also a test query sample (the
digits domains transform the same images in every seed, so the train zoo's probes include test query images).
The encoders are trained on the train zoo's meta-train tasks only; evaluation uses the test zoo's meta-test tasks
and only its models (another seed: models never seen in training), through ``Registry.retrieval.search`` with a
filter on the zoo's seed tag.
Query support sets are fresh draws of 5/10/20 samples per class from each task's query pool (draws the ground
truth never used), over several seeds. Ground truth is the zoo's ``finetune`` score (``--target``).

Every estimator baseline runs every candidate on the support set (modules preloaded; the load time is reported
apart). The static prior ranks each test model by its mean z-scored transfer score over the test zoo's own
meta-train tasks it was scored on (it never looks at the target task). Leave-one-family-out: the encoders are
retrained with one family's models removed from training, and every method is scored among that family's
models only. A second table ranks, for each of the test zoo's meta-train tasks (``--restricted-seeds`` draws
each; no test-zoo task trains anything), only the models that task was scored on (a sample of the zoo's models),
by every method, the search through a ``name IN (...)`` filter; then the hybrid is paired against each baseline
over both tables' tasks together. The scale part indexes synthetic vectors (a Gaussian mixture, L2-normalised,
of the dimension the learned scorer serves) and measures latency and recall@10 against exact search.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import weightedtau

from modelkin import Registry
from modelkin.registry import indexers
from modelkin.retrieval import baselines
from modelkin.retrieval.features import query_features
from modelkin.retrieval.runner import features_and_probs, one_thread
from modelkin.retrieval.scorers import TrainingFree
from modelkin.zoo.plan import SIZES
from modelkin.zoo.registration import read_ground_truth, register_zoo
from modelkin.zoo.tasks import DIGIT_DOMAINS, Task, ZooData

SPACE = "digits-64"
ESTIMATORS = ("logme", "leep", "nce", "knn")
FREE, LEARNED = "training-free vectors", "learned vectors"
SEARCH, HYBRID = "modelkin search (learned + knowledge LogME)", "hybrid (search + rerank of 5)"
METHODS = ("LogME", "LEEP", "NCE", f"kNN (k={baselines.KNN_K})", "static prior", FREE, LEARNED, SEARCH, HYBRID,
           "random")  # fmt: skip
SERVED = ((LEARNED, 0, 0), (SEARCH, None, 0), (HYBRID, None, 5))  # label, shortlist (None: default), rerank


def probe_pool(zoos: list[Path], test_zoo: Path, out: Path) -> Path:
    """The zoos' probe pools in one file, without any input that is also one of the test zoo's query samples
    (the digits domains transform the same images in every seed, so another seed's probes can be query images)."""
    truth = read_ground_truth(test_zoo)
    data = ZooData(int(truth["seed"]), SIZES[truth["size"]].synthetic_domains)
    queries = set()
    for domain in data.domains:
        source = "digits" if domain in DIGIT_DOMAINS else domain
        queries |= {row.tobytes() for row in data._samples(domain, data._pools[source]["query"])}
    pools = [np.load(z / "probes" / f"{SPACE}.npz")["x"].astype(np.float32) for z in zoos]
    x = np.concatenate(pools)
    keep = np.array([row.tobytes() not in queries for row in x])
    print(f"probe pool: {keep.sum()} of {len(x)} probes kept ({(~keep).sum()} are test query inputs)", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, x=x[keep])
    return out


def prepare(home: Path, train_zoo: Path, test_zoo: Path, pool_zoos: list[Path]) -> Registry:
    """Register both zoos and the pool of ``pool_zoos``' probes once; later runs reuse the registry."""
    reg = Registry.init(home)
    for zoo in (train_zoo, test_zoo):
        seed = str(read_ground_truth(zoo)["seed"])
        if not reg.list(f"tags.zoo.seed = '{seed}'"):
            t0 = time.perf_counter()
            register_zoo(reg, zoo)
            print(f"registered {zoo} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    t0 = time.perf_counter()
    pool = probe_pool(pool_zoos, test_zoo, home / "bench-probes" / f"{SPACE}.npz")
    summary = reg.retrieval.add_probes(SPACE, pool)
    if summary["created"] or summary["captured"]:
        print(f"captured {summary['captured']} models in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    reg.retrieval.rebuild(capture=True)
    return reg


def queries(zoo: Path, truth: dict[str, Any], shots: int, seeds: int, split: str = "meta-test"
            ) -> list[tuple[str, np.ndarray, np.ndarray]]:  # fmt: skip
    """Fresh support sets (draws 100+) of the zoo's tasks of ``split``."""
    data = ZooData(int(truth["seed"]), SIZES[truth["size"]].synthetic_domains)
    out = []
    for name, task in sorted(truth["tasks"].items()):
        if task["split"] != split:
            continue
        for s in range(seeds):
            (x, y), _ = data.query(Task.from_json(task), shots, draw=100 + s)
            out.append((name, x, y))
    return out


def static_prior(truth: dict[str, Any], target: str, leave_out: str | None = None) -> dict[str, float]:
    """Each model's mean z-scored score over the meta-train tasks it was scored on (0 for none), but never
    over ``leave_out`` (the task being ranked, when that is a meta-train task)."""
    sums: dict[str, list[float]] = defaultdict(list)
    for name, task in truth["tasks"].items():
        if task["split"] != "meta-train" or name == leave_out:
            continue
        s = {m: v[target] for m, v in task["scores"].items()}
        mu, sd = statistics.mean(s.values()), statistics.pstdev(s.values()) or 1.0
        for m, v in s.items():
            sums[m].append((v - mu) / sd)
    return {m: statistics.mean(sums[m]) if sums[m] else 0.0 for m in truth["models"]}


def training_free(reg: Registry, refs: list[str]) -> tuple[TrainingFree, Any, np.ndarray]:
    """The training-free scorer a registry serves before any training, its φ, and its vectors of ``refs``.

    Computed from the stored knowledge with the pure scorer, since a reused home already serves a trained
    encoder; a fresh registry's index holds exactly these vectors and ranks by the same inner products.
    """
    retrieval = reg.retrieval
    pool = retrieval._latest_pool(SPACE)
    assert pool is not None
    space = retrieval._serving_for(pool).space
    free = TrainingFree(space.components.shape[0], len(space.landmarks), space.bandwidth)
    ids = retrieval._refs()
    feats = retrieval.model_features(pool, [ids[r] for r in refs])
    return free, space, np.stack([free.model_vector(feats[ids[r]]) for r in refs])


def metrics(gt: np.ndarray, score: np.ndarray) -> dict[str, float]:
    order = np.argsort(-score, kind="stable")
    best = gt.max()
    return {
        "tau_true": float(weightedtau(gt, score, rank=None)[0]),
        "tau_default": float(weightedtau(gt, score)[0]),
        "top1": float(gt[order[0]] == best),
        "top3": float(best in gt[order[:3]]),
        "regret": float(best - gt[order[0]]),
    }


def search_scores(reg: Registry, x: np.ndarray, y: np.ndarray, refs: list[str], filter: str,
                  shortlist: int | None = None, rerank: int = 0
                  ) -> tuple[np.ndarray, str, int, np.ndarray]:  # fmt: skip
    """Scores for every candidate from the real search (full ranking: k = all), as -rank so reranks count, and
    which candidates the rerank ran."""
    extra = {} if shortlist is None else {"shortlist": shortlist}
    result = reg.retrieval.search(x, y, k=len(refs), filter=filter, rerank=rerank, **extra)
    rank = {r["ref"]: r["rank"] for r in result.results}
    ran = {r["ref"] for r in result.results if r["scored_by"] == "rerank"}
    assert len(rank) == len(refs), (len(rank), len(refs))
    return (np.array([-rank[r] for r in refs], dtype=np.float64), result.scorer, result.forward_passes,
            np.array([r in ran for r in refs]))  # fmt: skip


def paired(a: list[float], b: list[float], tasks: list[str]) -> tuple[float, float, float]:
    """Mean of a - b over queries, its standard error over queries, and over tasks (each task's mean difference
    one observation): draws of one task share its models' true scores, so the task-level error is the honest one."""
    d = np.array(a) - np.array(b)
    by_task = [float(d[[i for i, t in enumerate(tasks) if t == task]].mean()) for task in sorted(set(tasks))]
    return (float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))),
            float(np.std(by_task, ddof=1) / math.sqrt(len(by_task))))  # fmt: skip


def paired_lines(rows: dict[tuple[int, str], list[dict[str, float]]], shots: int, tasks: list[str]) -> list[str]:
    """Hybrid minus each estimator baseline on regret@1, and search minus LogME on tau, paired per query."""
    lines = ["| paired per query | mean difference | SE over queries | SE over tasks | resolved (2 task SEs) |",
             "| --- | ---: | ---: | ---: | --- |"]  # fmt: skip
    pairs = [(HYBRID, label, "regret") for label in METHODS[:4]] + [(SEARCH, "LogME", "tau_true")]
    for mine, theirs, key in pairs:
        mean, se_q, se_t = paired([m[key] for m in rows[(shots, mine)]], [m[key] for m in rows[(shots, theirs)]],
                                  tasks)  # fmt: skip
        better = mean < 0 if key == "regret" else mean > 0
        verdict = ("yes: " + ("better" if better else "worse")) if abs(mean) > 2 * se_t else "no"
        what = "regret@1" if key == "regret" else "weighted tau, rank=None"
        lines.append(f"| {what}: {mine.split(' (')[0]} - {theirs} | {mean:+.4f} | {se_q:.4f} | {se_t:.4f} | "
                     f"{verdict} |")  # fmt: skip
    return lines


@dataclass
class Tally:
    """One table's figures: per-query metrics by (shots, method), LOFO taus, latencies, passes, the hybrid's
    recall of the truly best model, and each query's task (the unit of the paired standard errors)."""

    rows: dict[tuple[int, str], list[dict[str, float]]] = field(default_factory=lambda: defaultdict(list))
    lofo: dict[tuple[int, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    cost: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    passes: dict[str, int] = field(default_factory=dict)
    recall: dict[int, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    scorers: dict[str, str] = field(default_factory=dict)
    tasks: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))


def estimator_scores(modules: dict[str, Any], refs: list[str], x: np.ndarray, y: np.ndarray, tally: Tally
                     ) -> dict[str, np.ndarray]:  # fmt: skip
    """LogME, LEEP, NCE and kNN of every candidate on the support set, each timed with the forward passes."""
    t0 = time.perf_counter()
    with one_thread():
        outputs = {r: features_and_probs(modules[r], x, r) for r in refs}
    forward_ms = (time.perf_counter() - t0) * 1000
    scored = {}
    for est, label in zip(ESTIMATORS, METHODS[:4], strict=True):
        t0 = time.perf_counter()
        use_f = baselines.USES_FEATURES[est]
        scored[label] = np.array([baselines.ESTIMATORS[est](outputs[r][0 if use_f else 1], y) for r in refs])
        tally.cost[label].append(forward_ms + (time.perf_counter() - t0) * 1000)
        tally.passes[label] = len(refs)
    return scored


def served_rows(reg: Registry, x: np.ndarray, y: np.ndarray, refs: list[str], filter: str, gt: np.ndarray,
                shots: int, tally: Tally) -> None:  # fmt: skip
    """The learned, search and hybrid rows of one query, and how the hybrid's regret splits: the best model not
    run, or the wrong one of those run."""
    for label, shortlist, n in SERVED:
        t0 = time.perf_counter()
        s, tally.scorers[label], tally.passes[label], ran = search_scores(reg, x, y, refs, filter, shortlist, n)
        tally.cost[label].append((time.perf_counter() - t0) * 1000)
        tally.rows[(shots, label)].append(metrics(gt, s))
        if n:
            tally.recall[shots].append((float(gt.max() in gt[ran]), float(gt.max() - gt[ran].max())))


def progress(message: str) -> None:
    """One timestamped line on stderr, so that a long run can be timed part by part."""
    print(f"{time.strftime('%H:%M:%S', time.gmtime())} {message}", file=sys.stderr, flush=True)


def evaluate(reg: Registry, args: argparse.Namespace) -> tuple[Tally, Tally, dict[str, Any]]:
    """The main table (meta-test tasks, every test model, with LOFO) and the restricted one (the test zoo's
    meta-train tasks, each among the models it was scored on)."""
    truth = read_ground_truth(args.test_zoo)
    seed = str(truth["seed"])
    versions = reg.list(f"tags.zoo.seed = '{seed}'")
    refs = sorted(v.ref for v in versions)
    name_of = {v.ref: v.name for v in versions}
    family = {v.ref: v.family for v in versions}
    held = [r for r in refs if family[r] == args.lofo_family]
    t0 = time.perf_counter()
    modules = {r: reg.load_module(r) for r in refs}
    load_ms = (time.perf_counter() - t0) / len(refs) * 1000
    prior = static_prior(truth, args.target)
    rng = np.random.default_rng(0)
    main = Tally()
    base = f"tags.zoo.seed = '{seed}'"
    per_shot = {shots: queries(args.test_zoo, truth, shots, args.seeds) for shots in args.shots}
    free, space, free_vectors = training_free(reg, refs)

    def gt_of(task: str, among: list[str]) -> np.ndarray:
        return np.array([truth["tasks"][task]["scores"][name_of[r]][args.target] for r in among])

    # 1. the estimators, the static prior, random and the training-free scorer (the registry before training)
    for shots, qs in per_shot.items():
        for task, x, y in qs:
            gt, gt_held = gt_of(task, refs), gt_of(task, held)
            scored = estimator_scores(modules, refs, x, y, main)
            scored["static prior"] = np.array([prior[name_of[r]] for r in refs])
            scored["random"] = rng.standard_normal(len(refs))
            main.passes["static prior"] = main.passes["random"] = 0
            t0 = time.perf_counter()
            scored[FREE] = free_vectors @ free.query_vector(query_features(x, y, space))
            main.cost[FREE].append((time.perf_counter() - t0) * 1000)
            main.passes[FREE] = 0
            for label, s in scored.items():
                main.rows[(shots, label)].append(metrics(gt, s))
                held_s = s[[refs.index(r) for r in held]]
                main.lofo[(shots, label)].append(float(weightedtau(gt_held, held_s, rank=None)[0]))
            main.tasks[shots].append(task)
        progress(f"estimators, {shots} shots: {len(qs)} queries")
    # 2. learned and hybrid, trained on the train zoo's meta-train tasks, then with one family held out
    t0 = time.perf_counter()
    report = reg.retrieval.train([args.train_zoo], target=args.target, epochs=args.epochs)["encoders"][0]
    train_s = time.perf_counter() - t0
    progress(f"trained in {train_s:.0f} s")
    for shots, qs in per_shot.items():
        for task, x, y in qs:
            served_rows(reg, x, y, refs, base, gt_of(task, refs), shots, main)
        progress(f"search and hybrid, {shots} shots")
    # 3. the restricted table, on the encoder trained on every family
    restricted = Tally()
    for shots in args.shots:
        for task, x, y in queries(args.test_zoo, truth, shots, args.restricted_seeds, split="meta-train"):
            among = [r for r in refs if name_of[r] in truth["tasks"][task]["scores"]]
            gt, where = gt_of(task, among), [refs.index(r) for r in among]
            scored = estimator_scores(modules, among, x, y, restricted)
            left_out = static_prior(truth, args.target, leave_out=task)
            scored["static prior"] = np.array([left_out[name_of[r]] for r in among])
            scored["random"] = rng.standard_normal(len(among))
            t0 = time.perf_counter()
            scored[FREE] = free_vectors[where] @ free.query_vector(query_features(x, y, space))
            restricted.cost[FREE].append((time.perf_counter() - t0) * 1000)
            restricted.passes["static prior"] = restricted.passes["random"] = restricted.passes[FREE] = 0
            for label, s in scored.items():
                restricted.rows[(shots, label)].append(metrics(gt, s))
            names = ", ".join(f"'{name_of[r]}'" for r in among)
            served_rows(reg, x, y, among, f"{base} AND name IN ({names})", gt, shots, restricted)
            restricted.tasks[shots].append(task)
        progress(f"restricted table, {shots} shots")
    # 4. leave one family out of training
    reg.retrieval.train([args.train_zoo], target=args.target, epochs=args.epochs,
                        exclude_families=[args.lofo_family])  # fmt: skip
    held_filter = f"{base} AND family = '{args.lofo_family}'"
    for shots, qs in per_shot.items():
        for task, x, y in qs:
            for label, shortlist, n in SERVED:
                s, _, _, _ = search_scores(reg, x, y, held, held_filter, shortlist, n)
                main.lofo[(shots, label)].append(float(weightedtau(gt_of(task, held), s, rank=None)[0]))
    progress("leave one family out")
    # leave the registry serving the encoder trained on every family
    reg.retrieval.train([args.train_zoo], target=args.target, epochs=args.epochs)
    summary = {"candidates": len(refs), "held_out": len(held), "load_ms": load_ms, "train_s": train_s,
               "train_report": report}  # fmt: skip
    return main, restricted, summary


def table_lines(tally: Tally, shots: int, lofo_family: str | None) -> list[str]:
    """One shot count's quality-versus-cost table, the hybrid's regret split and the paired comparisons."""
    lofo = f" LOFO ({lofo_family}) weighted tau, rank=None |" if lofo_family else ""
    lines = ["| method | weighted tau, rank=None | weighted tau, default | top-1 hit | top-3 hit | regret@1 "
             f"| forward passes / query | latency ms / query |{lofo}",
             "| --- |" + " ---: |" * (8 if lofo_family else 7)]  # fmt: skip
    for label in METHODS:
        ms = tally.rows[(shots, label)]
        mean = {k: statistics.mean(m[k] for m in ms) for k in ms[0]}
        lat = f"{statistics.mean(tally.cost[label]):.1f}" if tally.cost.get(label) else "0"
        cell = f" {statistics.mean(tally.lofo[(shots, label)]):.3f} |" if lofo_family else ""
        lines.append(f"| {label} | {mean['tau_true']:.3f} | {mean['tau_default']:.3f} | {mean['top1']:.2f} | "
                     f"{mean['top3']:.2f} | {mean['regret']:.4f} | {tally.passes[label]} | {lat} |{cell}")  # fmt: skip
    hit, oracle = (statistics.mean(v) for v in zip(*tally.recall[shots], strict=True))
    hybrid = statistics.mean(m["regret"] for m in tally.rows[(shots, HYBRID)])
    return lines + ["", f"Hybrid: the truly best model was among the 5 it ran in {hit:.0%} of queries; picking the "
                        f"best of those 5 every time would give regret@1 {oracle:.4f} (the best model left out of "
                        f"the 5), so choosing among the 5 costs the other {hybrid - oracle:.4f} of its "
                        f"{hybrid:.4f}.", "", *paired_lines(tally.rows, shots, tally.tasks[shots]), ""]  # fmt: skip


def quality_lines(main: Tally, restricted: Tally, args: argparse.Namespace) -> list[str]:
    """Both tables for every shot count, and the hybrid paired against each baseline over all their tasks."""
    lines = []
    for shots in args.shots:
        n = len(main.tasks[shots])
        lines += [f"### {shots} support samples per class ({n} queries: {n // args.seeds} meta-test tasks x "
                  f"{args.seeds} draws)", "", *table_lines(main, shots, args.lofo_family)]  # fmt: skip
    lines += ["## Second table: the test zoo's meta-train tasks, each among the models it was scored on", "",
              "The test zoo scores each of its meta-train tasks on a sample of its models only (52 of 260), so "
              "these tasks rank those models only: every method, the hybrid's 5 included, is restricted to them "
              "(the search by a `name IN (...)` filter inside the vector search). No test-zoo task trained "
              "anything (training used the train zoo's meta-train tasks); the static prior of a task leaves that "
              "task out. Regret here is over a 52-model set, so its scale is not the first table's.", ""]  # fmt: skip
    for shots in args.shots:
        n = len(restricted.tasks[shots])
        lines += [f"### {shots} support samples per class, restricted ({n} queries: {n // args.restricted_seeds} "
                  f"tasks x {args.restricted_seeds} draws)", "", *table_lines(restricted, shots, None)]  # fmt: skip
    lines += ["## Both tables' tasks together", "",
              "Each task one observation (its mean paired difference over draws), the first table's and the "
              "second's together.", ""]  # fmt: skip
    for shots in args.shots:
        rows = {(shots, label): main.rows[(shots, label)] + restricted.rows[(shots, label)] for label in METHODS}
        tasks = main.tasks[shots] + restricted.tasks[shots]
        lines += [f"### {shots} support samples per class ({len(set(tasks))} tasks, {len(tasks)} queries)", "",
                  *paired_lines(rows, shots, tasks), ""]  # fmt: skip
    return lines


def capture_cost(reg: Registry, per_family: int) -> list[str]:
    """Capture time per model next to the time to load that model once, by family (medians)."""
    from modelkin.retrieval.capture import capture
    from modelkin.retrieval.runner import forward_fn

    pool = reg.retrieval._pool_inputs(reg.retrieval._latest_pool(SPACE))  # type: ignore[arg-type]
    by_family: dict[str, list[str]] = defaultdict(list)
    for v in reg.list():
        if len(by_family[v.family or "?"]) < per_family:
            by_family[v.family or "?"].append(v.ref)
    lines = ["| family | models timed | load once, ms (median) | capture, ms (median) | forward calls | ratio |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for fam, refs in sorted(by_family.items()):
        loads, caps, calls = [], [], []
        for r in refs:
            t0 = time.perf_counter()
            module = reg.load_module(r)
            loads.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            with one_thread():
                k = capture(forward_fn(module), pool, r)
            caps.append((time.perf_counter() - t0) * 1000)
            calls.append(k.forward_calls)
        lo, ca = statistics.median(loads), statistics.median(caps)
        lines.append(f"| {fam} | {len(refs)} | {lo:.1f} | {ca:.1f} | {statistics.median(calls):.0f} | "
                     f"{ca / lo:.1f}x |")  # fmt: skip
    return lines + ["", f"Probe pool: {len(pool)} inputs x {pool.shape[1]} features; capture runs one thread."]


def scale(n: int, dim: int, queries_n: int, selectivity: float) -> list[str]:
    """Synthetic vectors: build time, memory, p50 latency (1 and 2 threads), recall@10 vs exact search."""
    import faiss

    from modelkin.retrieval.index import build

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2000, dim)).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        v = centres[rng.integers(0, len(centres), m)] + 0.5 * rng.standard_normal((m, dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    vectors = np.concatenate([draw(100_000) for _ in range(math.ceil(n / 100_000))])[:n]
    ids = np.arange(n, dtype=np.int64)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    faiss.omp_set_num_threads(2)
    t0 = time.perf_counter()
    index = build(ids, vectors)
    build_s = time.perf_counter() - t0
    index_mb = len(index.to_bytes()) / 1e6
    rss_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    exact = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    exact.add_with_ids(vectors, ids)
    qs = draw(queries_n)
    selected = np.sort(rng.choice(n, max(1, int(n * selectivity)), replace=False)).astype(np.int64)
    lines = [f"{n:,} synthetic vectors of dimension {dim} (the learned scorer's), index `{index.kind}`; built in "
             f"{build_s:.1f} s on 2 threads; serialised index {index_mb:.0f} MB; peak RSS growth during build "
             f"{rss_mb:.0f} MB (vectors alone: {vectors.nbytes / 1e6:.0f} MB).", "",
             "| query | threads | p50 latency ms | p95 latency ms | recall@10 vs exact | target |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    for label, allowed in (("no filter", None), (f"filter matching {selectivity:.1%} ({len(selected):,})", selected)):
        params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(selected)) if allowed is not None else None  # type: ignore[call-arg]
        truth = [exact.search(q[None], 10, params=params)[1][0] for q in qs]
        for threads in (1, 2):
            faiss.omp_set_num_threads(threads)
            lat, recall = [], []
            for q, t in zip(qs, truth, strict=True):
                t0 = time.perf_counter()
                found, _ = index.search(q, 10, allowed)
                lat.append((time.perf_counter() - t0) * 1000)
                recall.append(len(set(found.tolist()) & set(t.tolist())) / len(t))
            p50, p95 = float(np.percentile(lat, 50)), float(np.percentile(lat, 95))
            ok = "met" if p50 < 20 and statistics.mean(recall) >= 0.95 else "missed"
            lines.append(f"| {label} | {threads} | {p50:.2f} | {p95:.2f} | {statistics.mean(recall):.3f} | "
                         f"p50 < 20 ms and recall >= 0.95: {ok} |")  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-zoo", type=Path, default=Path("/work/zoos/full-s0"))
    parser.add_argument("--test-zoo", type=Path, default=Path("/work/zoos/full-s1"))
    parser.add_argument("--home", type=Path, default=Path("/work/zoos/retrieval-bench"))
    parser.add_argument("--pool-zoos", type=Path, nargs="+", default=None,
                        help="the zoos whose probe pools the registry serves together, less any test query input "
                             "(default: the train and the test zoo)")  # fmt: skip
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--seeds", type=int, default=9, help="support-set draws per meta-test task")
    parser.add_argument("--restricted-seeds", type=int, default=3,
                        help="support-set draws per task of the second table (test-zoo meta-train tasks)")  # fmt: skip
    parser.add_argument("--target", default="finetune", choices=["finetune", "linear_probe"])
    parser.add_argument("--lofo-family", default="cnn")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--scale", type=int, default=1_000_000, help="synthetic vectors (0 skips the scale part)")
    parser.add_argument("--capture-models", type=int, default=10, help="models timed per family")
    parser.add_argument("--scale-only", type=int, default=0, metavar="DIM",
                        help="run only the scale part on vectors of dimension DIM and print its table (for a "
                             "timing on a quiet machine; the learned scorer serves 256)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "retrieval.md")
    args = parser.parse_args()
    if args.scale_only:
        print("\n".join(scale(args.scale, args.scale_only, 200, 0.001)))
        return
    started = time.perf_counter()
    args.pool_zoos = args.pool_zoos or [args.train_zoo, args.test_zoo]
    reg = prepare(args.home, args.train_zoo, args.test_zoo, args.pool_zoos)
    main_tally, restricted, summary = evaluate(reg, args)
    quality = quality_lines(main_tally, restricted, args)
    capture_lines = capture_cost(reg, args.capture_models)
    progress("capture cost")
    dim = reg.retrieval.status()["spaces"][0]
    learned_dim = reg.retrieval._serving_for(reg.retrieval._latest_pool(SPACE)).scorer.dim  # type: ignore[arg-type]
    scale_lines = scale(args.scale, learned_dim, 200, 0.001) if args.scale else ["(skipped)"]
    command = "OMP_NUM_THREADS=1 python benchmarks/retrieval.py " + " ".join(sys.argv[1:])
    states = indexers.states(reg.engine, "retrieval")
    text = "\n".join([
        "# Retrieval: which model to start from", "",
        f"Command: `{command}` ({platform.machine()}, {os.cpu_count()} CPUs shared with other jobs; "
        f"{time.perf_counter() - started:.0f} s in all).", "",
        f"Train: `{args.train_zoo}` meta-train tasks; test: `{args.test_zoo}` meta-test tasks, ranking its "
        f"{summary['candidates']} models (another seed, none seen in training). Ground truth: the zoo's "
        f"`{args.target}` accuracy. Both weighted Kendall tau conventions of `scipy.stats.weightedtau` are given: "
        "`rank=None` weighs pairs by the true ranking (the top models count most); the default averages the "
        "weighting by both orders. top-k hit: the truly best model is among the first k; regret@1: best true "
        "accuracy minus the true accuracy of the model ranked first (accuracy points, 0 to 1). LOFO: the "
        f"encoders retrained without any `{args.lofo_family}` model, every method scored among the "
        f"{summary['held_out']} `{args.lofo_family}` models of the test zoo only (the baselines do not train, so "
        "their LOFO figure is just their score on that subset).", "",
        f"Estimator latency includes running all {summary['candidates']} preloaded candidates on the support set "
        f"(one thread); loading a model from the registry costs another {summary['load_ms']:.1f} ms each. "
        "modelkin rows are `Registry.retrieval.search` end to end (query encoding, the filter, faiss, the "
        "rerank's model loads), except the training-free row: the registry under test already serves a trained "
        "encoder, so that row is the pure training-free scorer (query encoding and inner products with the "
        "vectors a fresh registry would index, computed once). "
        f"Training took {summary['train_s']:.0f} s ({summary['train_report']['tasks']} "
        f"tasks, {summary['train_report']['models']} models, {args.epochs} epochs). Indexed versions: "
        f"{sum(1 for s in states.values() if s[0] == 'done')}.", "",
        "## Quality versus cost", "", *quality,
        "## Capture cost per model", "", *capture_lines, "",
        "## Scale (synthetic vectors)", "", *scale_lines, "",
        f"Serving: {dim['scorer']} scorer, encoder {dim['encoder']}, {dim['indexed']} vectors in a `{dim['index']}` "
        "index.", "",
    ])  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(json.dumps({"seconds": round(time.perf_counter() - started)}), file=sys.stderr)


if __name__ == "__main__":
    main()
