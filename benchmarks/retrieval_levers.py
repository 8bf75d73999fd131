"""The hybrid's two levers, replayed offline on one zoo: which 5 models the rerank runs, and how it picks among them.

    OMP_NUM_THREADS=1 python benchmarks/retrieval_levers.py --home HOME --zoo /work/zoos/full-s0 \
        [--seeds 4] [--cache levers-s0.npz]

Run on the *train* zoo only (seed 0), on a home holding that zoo's models, captured on a probe pool without
that zoo's query inputs (``benchmarks/retrieval.py``'s home drops only the test zoo's, so a replay there would
let the search read seed-0 query samples) and serving an encoder trained on its meta-train tasks: it scores
the zoo's meta-test tasks (tasks the encoders never saw), so anything chosen here is chosen without the test
zoo. Per query it caches, for every model of the zoo, the
stage-2 score of ``Registry.retrieval.search`` and LogME and kNN on the real features; then it replays the
rerank with other settings: the diversity strength of the pick, a penalty per model of the same family already
picked, a per-model transfer prior added to the pick (predicted from a model's parameter count, head width and
output entropy on the probe pool, fitted by ridge on the zoo's meta-train ground truth, cross-fitted over models
so that no model's prior saw its own scores), and the weights of the choice among the 5. Each setting is chosen
by leave-one-task-out (chosen on every task but one, scored on that one), which is the figure to compare with
the current rule's, paired per task with its standard error over tasks.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any

import numpy as np
from retrieval import SPACE, queries

from modelkin import Registry
from modelkin.retrieval import baselines
from modelkin.retrieval.mixing import zscore
from modelkin.retrieval.rerank import DIVERSITY, KNN_WEIGHT, STAGE_WEIGHT, WINDOW, combine
from modelkin.retrieval.runner import features_and_probs, one_thread
from modelkin.zoo.registration import read_ground_truth

DIVERSITIES = (0.0, 0.5, 1.0, 2.0, 4.0)
FAMILY_PENALTIES = (0.0, 0.5, 1.0)  # stage-2 z-score given up per model of the same family already picked
PRIOR_WEIGHTS = (0.0, 0.25, 0.5, 1.0)
KNN_WEIGHTS = (0.0, 0.25, 0.5, 1.0)
STAGE_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)


def build_cache(args: argparse.Namespace) -> dict[str, Any]:
    """Every per-query and per-model array the replay needs (runs every model on every query once)."""
    reg = Registry.open(args.home)
    retrieval = reg.retrieval
    pool = retrieval._latest_pool(SPACE)
    assert pool is not None
    truth = read_ground_truth(args.zoo)
    versions = sorted(reg.list(f"tags.zoo.seed = '{truth['seed']}'"), key=lambda v: v.ref)
    refs = [v.ref for v in versions]
    ids = retrieval._refs()
    outputs = retrieval._pool_outputs(pool, [ids[r] for r in refs])
    logits = [outputs[ids[r]].astype(np.float64) for r in refs]
    probs = [np.exp(z - z.max(1, keepdims=True)) for z in logits]
    probs = [p / p.sum(1, keepdims=True) for p in probs]
    entropy = np.array([float(-(p * np.log(np.clip(p, 1e-12, None))).sum(1).mean()) for p in probs])
    width = np.array([z.shape[1] for z in logits], dtype=np.float64)
    describe = np.stack([np.log10([v.parameters for v in versions]), width, entropy, entropy / np.log(width),
                         [v.family == "cnn" for v in versions]], axis=1).astype(np.float64)  # fmt: skip
    preds = np.stack([z.argmax(1) for z in logits]).astype(np.int16)
    train_truth = np.full((len(refs), 0), np.nan)
    columns = []
    for task in truth["tasks"].values():
        if task["split"] == "meta-train":
            col = np.full(len(refs), np.nan)
            for i, v in enumerate(versions):
                if v.name in task["scores"]:
                    col[i] = task["scores"][v.name][args.target]
            columns.append(col)
    train_truth = np.stack(columns, axis=1)
    modules = {r: reg.load_module(r) for r in refs}
    rows: dict[str, list[Any]] = {k: [] for k in ("task", "shots", "gt", "stage", "vector", "logme", "knn", "served")}
    base = f"tags.zoo.seed = '{truth['seed']}'"
    for shots in args.shots:
        for task, x, y in queries(args.zoo, truth, shots, args.seeds):
            result = retrieval.search(x, y, k=len(refs), filter=base)
            stage = {r["ref"]: r["score"] for r in result.results}
            plain = retrieval.search(x, y, k=len(refs), filter=base, shortlist=0)
            vector = {r["ref"]: r["score"] for r in plain.results}
            with one_thread():
                feats = [features_and_probs(modules[r], x, r)[0] for r in refs]
            rows["task"].append(task)
            rows["shots"].append(shots)
            rows["gt"].append([truth["tasks"][task]["scores"][v.name][args.target] for v in versions])
            rows["stage"].append([stage[r] for r in refs])
            rows["vector"].append([vector[r] for r in refs])
            rows["served"].append(refs.index(retrieval.search(x, y, k=1, filter=base, rerank=5).results[0]["ref"]))
            rows["logme"].append([baselines.logme(f, y) for f in feats])
            rows["knn"].append([baselines.knn(f, y) for f in feats])
        print(f"cached {shots} shots", flush=True)
    return {**{k: np.array(v) for k, v in rows.items()}, "describe": describe, "preds": preds,
            "train_truth": train_truth, "families": np.array([v.family for v in versions])}  # fmt: skip


def predicted_prior(describe: np.ndarray, train_truth: np.ndarray, folds: int = 2, ridge: float = 1.0) -> np.ndarray:
    """Each model's mean z-scored meta-train transfer score, predicted by ridge from its description, cross-fitted
    over models (round robin folds): the prior of a model never comes from its own scores."""
    mu, sd = np.nanmean(train_truth, axis=0), np.nanstd(train_truth, axis=0)
    target = np.nanmean((train_truth - mu) / np.where(sd > 0, sd, 1.0), axis=1)
    feats = np.column_stack([(describe - describe.mean(0)) / np.where(describe.std(0) > 0, describe.std(0), 1.0),
                             np.ones(len(describe))])  # fmt: skip
    out = np.zeros(len(describe))
    scored = np.isfinite(target)
    for f in range(folds):
        test = np.arange(len(describe)) % folds == f
        fit = ~test & scored
        a = feats[fit]
        w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ target[fit])
        out[test] = feats[test] @ w
    return out


def pick(stage: np.ndarray, prior: np.ndarray, preds: np.ndarray, families: np.ndarray, setting: tuple[float, ...],
         n: int = 5) -> np.ndarray:  # fmt: skip
    """The rerank's pick (as ``rerank.pick``), with a prior added to the z-scored stage-2 score and a penalty per
    model of the same family already picked; ``setting`` is (diversity, family penalty, prior weight)."""
    diversity, family_penalty, prior_weight = setting
    order = np.argsort(-stage, kind="stable")[:WINDOW]
    value0 = zscore(stage)[order] + prior_weight * zscore(prior)[order]
    closest = np.zeros(len(order))
    same = np.zeros(len(order))
    chosen: list[int] = []
    for _ in range(n):
        value = value0 - diversity * closest - family_penalty * same
        value[chosen] = -np.inf
        best = int(np.argmax(value))
        chosen.append(best)
        closest = np.maximum(closest, (preds[order] == preds[order[best]]).mean(1))
        same += families[order] == families[order[best]]
    return order[chosen]


def replay(cache: dict[str, Any], prior: np.ndarray) -> dict[tuple[float, ...], np.ndarray]:
    """Regret@1 of every query under every setting (diversity, family penalty, prior weight, kNN weight, stage
    weight)."""
    out: dict[tuple[float, ...], np.ndarray] = {}
    nq = len(cache["task"])
    for setting in itertools.product(DIVERSITIES, FAMILY_PENALTIES, PRIOR_WEIGHTS):
        picks = [pick(cache["stage"][q], prior, cache["preds"], cache["families"], setting) for q in range(nq)]
        for kw, sw in itertools.product(KNN_WEIGHTS, STAGE_WEIGHTS):
            regret = np.zeros(nq)
            for q, ran in enumerate(picks):
                gt = cache["gt"][q]
                score = combine(cache["logme"][q][ran], cache["knn"][q][ran], cache["stage"][q][ran], kw, sw)
                regret[q] = gt.max() - gt[ran[int(np.argmax(score))]]
            out[(*setting, kw, sw)] = regret
    return out


def recall_report(cache: dict[str, Any]) -> list[str]:
    """Where the true best model sits in stage 2 and in the vector order when the current pick misses it."""
    lines = []
    for shots in sorted(set(cache["shots"].tolist())):
        queries_n, missed, vector_rank, in_family = 0, [], [], []
        for q in np.flatnonzero(cache["shots"] == shots):
            gt, stage, vector = cache["gt"][q], cache["stage"][q], cache["vector"][q]
            best = int(np.argmax(gt))
            ran = pick(stage, np.zeros(len(gt)), cache["preds"], cache["families"], (DIVERSITY, 0.0, 0.0))
            queries_n += 1
            if best not in ran:
                missed.append(int((stage > stage[best]).sum()) + 1)
                vector_rank.append(int((vector > vector[best]).sum()) + 1)
                in_family.append(bool((cache["families"][ran] == cache["families"][best]).any()))
        m = np.array(missed)
        lines.append(f"{shots} shots: best among the 5 in {1 - len(m) / queries_n:.0%} of {queries_n}; when missed, "
                     f"its stage-2 rank: median {np.median(m):.0f}, within 10 {np.mean(m <= 10):.0%}, beyond the "
                     f"window of {WINDOW} {np.mean(m > WINDOW):.0%}; its vector rank: median "
                     f"{np.median(vector_rank):.0f}; a model of its family among the 5: "
                     f"{np.mean(in_family):.0%}")  # fmt: skip
    return lines


def loto(
    regrets: dict[tuple[float, ...], np.ndarray],
    tasks: np.ndarray,
    keys: list[tuple[float, ...]],
    current: tuple[float, ...],
) -> str:
    """Mean regret when the setting is chosen on every task but one and scored on that one, and its paired
    difference from the current rule with the standard error over tasks (the figure a lever must beat)."""
    per_task = []
    for t in sorted(set(tasks.tolist())):
        held = tasks == t
        best = min(keys, key=lambda k: (regrets[k][~held].mean(), k))
        per_task.append((float(regrets[best][held].mean()), float(regrets[current][held].mean())))
    diff = np.array([a - b for a, b in per_task])
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    return f"{np.mean([a for a, _ in per_task]):.4f} ({diff.mean():+.4f} ± {se:.4f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--zoo", type=Path, default=Path("/work/zoos/full-s0"))
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--target", default="finetune")
    parser.add_argument("--cache", type=Path, default=None, help="reuse (or write) the per-query arrays here")
    args = parser.parse_args()
    if args.cache and args.cache.is_file():
        cache = dict(np.load(args.cache, allow_pickle=False))
    else:
        cache = build_cache(args)
        if args.cache:
            np.savez(args.cache, **cache)
    print("\n".join(recall_report(cache)))
    served = np.array([gt.max() - gt[i] for gt, i in zip(cache["gt"], cache["served"], strict=True)])
    prior = predicted_prior(cache["describe"], cache["train_truth"])
    mu = np.nanmean(cache["train_truth"], axis=0)
    sd = np.nanstd(cache["train_truth"], axis=0)
    static = np.nan_to_num(np.nanmean((cache["train_truth"] - mu) / sd, axis=1))
    print(f"predicted prior vs the models' own meta-train prior: corr {np.corrcoef(prior, static)[0, 1]:.2f}")
    current = (DIVERSITY, 0.0, 0.0, KNN_WEIGHT, STAGE_WEIGHT)
    for label, p in (("predicted prior", prior), ("own meta-train prior (in-sample, an upper bound)", static)):
        regrets = replay(cache, p)
        print(f"\n{label}:")
        print("| shots | current rule | best in-sample (setting) | LOTO: diversity only | LOTO: family only | "
              "LOTO: prior only | LOTO: choice weights only | LOTO: all |")  # fmt: skip
        print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
        for shots in [*sorted(set(cache["shots"].tolist())), "all"]:
            m = cache["shots"] == shots if shots != "all" else np.ones(len(cache["shots"]), dtype=bool)
            sub = {k: v[m] for k, v in regrets.items()}
            tasks = cache["task"][m]
            best = min(sub, key=lambda k: (sub[k].mean(), k))
            keys = list(sub)
            only = [[k for k in keys if all(k[j] == current[j] for j in range(len(k)) if j not in free)]
                    for free in ((0,), (1,), (2,), (3, 4))]  # fmt: skip
            assert np.allclose(sub[current], served[m]), "the replay of the current rule differs from search"
            print(f"| {shots} | {sub[current].mean():.4f} | {sub[best].mean():.4f} {best} | "
                  + " | ".join(loto(sub, tasks, ks, current) for ks in only)
                  + f" | {loto(sub, tasks, keys, current)} |")  # fmt: skip


if __name__ == "__main__":
    main()
