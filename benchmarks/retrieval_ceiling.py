"""The zero-pass ceiling and each stage's weighted tau per family, on the retrieval benchmark's queries.

    OMP_NUM_THREADS=1 python benchmarks/retrieval_ceiling.py --home /work/zoos/retrieval-r2 [--seeds 9]

Run after ``benchmarks/retrieval.py`` on the same home (it reads the encoder that run left serving, trained on
every family). Capture is black-box, so the most a zero-pass scorer can read of a model is its outputs; this
measures LogME on the real penultimate features (the LogME baseline), on the real logits at the query samples
(the outputs-only ceiling) and on the stored logits near them (stage 2's knowledge LogME), beside the vector
scores and stage 2 itself, over all test-zoo models and within each family. It also scores one fallback for a
family the encoders never saw: knowledge LogME plus a weight times the training-free vector score.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from retrieval import SPACE, queries, training_free
from scipy.stats import weightedtau

from modelkin import Registry
from modelkin.retrieval.baselines import logme_stack
from modelkin.retrieval.features import query_features
from modelkin.retrieval.mixing import zscore
from modelkin.retrieval.proxy import knowledge_logme, nearest_probes
from modelkin.retrieval.runner import features_and_probs, forward_fn, one_thread
from modelkin.zoo.registration import read_ground_truth

FALLBACK_WEIGHTS = (0.25, 0.5)
ROWS = {
    "features": "real penultimate features (the LogME baseline)",
    "logits": "real logits on the query samples (the black-box ceiling)",
    "stored": "stored logits near the query samples (knowledge LogME alone)",
    "learned": "learned vectors (the encoder serving)",
    "training-free": "training-free vectors",
    "stage 2": "stage 2: knowledge LogME + mix x learned (z-scored within the set; mix fitted in training)",
    **{f"fallback {w}": f"knowledge LogME + {w} x training-free (unseen-family fallback, not shipped)"
       for w in FALLBACK_WEIGHTS},
}  # fmt: skip


def logme_each(arrays: list[np.ndarray], y: np.ndarray) -> np.ndarray:
    """LogME of every candidate, batched over candidates of one width."""
    out = np.zeros(len(arrays))
    widths = np.array([a.shape[1] for a in arrays])
    for width in np.unique(widths):
        members = np.flatnonzero(widths == width)
        out[members] = logme_stack(np.stack([arrays[i] for i in members]), y)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--test-zoo", type=Path, default=Path("/work/zoos/full-s1"))
    parser.add_argument("--home", type=Path, default=Path("/work/zoos/retrieval-bench"))
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--seeds", type=int, default=9)
    args = parser.parse_args()
    reg = Registry.open(args.home)
    retrieval = reg.retrieval
    pool = retrieval._latest_pool(SPACE)
    assert pool is not None
    serving = retrieval._serving_for(pool)
    ids = retrieval._refs()
    truth = read_ground_truth(args.test_zoo)
    versions = sorted(reg.list(f"tags.zoo.seed = '{truth['seed']}'"), key=lambda v: v.ref)
    refs = [v.ref for v in versions]
    family = np.array([v.family for v in versions])
    sets = {"all": np.ones(len(refs), bool), **{f: family == f for f in sorted(set(family))}}
    modules = {r: reg.load_module(r) for r in refs}
    stored = retrieval._pool_outputs(pool, [ids[r] for r in refs])
    free, space, free_vectors = training_free(reg, refs)
    feats = retrieval.model_features(pool, [ids[r] for r in refs])
    learned_vectors = retrieval._vectors(serving, [feats[ids[r]] for r in refs])
    mix = np.array([serving.scorer.mix_weight(f) for f in family])
    taus: dict[tuple[int, str, str], list[float]] = defaultdict(list)
    for shots in args.shots:
        for task, x, y in queries(args.test_zoo, truth, shots, args.seeds):
            gt = np.array([truth["tasks"][task]["scores"][v.name]["finetune"] for v in versions])
            real, logits = [], []
            with one_thread(), torch.no_grad():
                for r in refs:
                    real.append(features_and_probs(modules[r], x, r)[0])
                    logits.append(forward_fn(modules[r])(np.ascontiguousarray(x, dtype=np.float32)).astype(np.float64))
            near = nearest_probes(serving.space.encode(x), serving.pool_phi)
            scores = {"features": logme_each(real, y), "logits": logme_each(logits, y),
                      "stored": knowledge_logme([stored[ids[r]] for r in refs], near, y),
                      "learned": learned_vectors @ serving.scorer.query_vector(query_features(x, y, serving.space)),
                      "training-free": free_vectors @ free.query_vector(query_features(x, y, space))}  # fmt: skip
            for name, m in sets.items():
                within = {k: s[m] for k, s in scores.items()}
                within["stage 2"] = zscore(within["stored"]) + mix[m] * zscore(within["learned"])
                for w in FALLBACK_WEIGHTS:
                    within[f"fallback {w}"] = zscore(within["stored"]) + w * zscore(within["training-free"])
                for key, s in within.items():
                    taus[(shots, key, name)].append(float(weightedtau(gt[m], s, rank=None)[0]))
    shots_label = " / ".join(str(s) for s in args.shots)
    print(f"Weighted tau (rank=None), {shots_label} shots, {args.seeds} draws per meta-test task, "
          f"`{args.test_zoo}` models:\n")  # fmt: skip
    print("| what is read | " + " | ".join(f"{n} ({int(m.sum())} models)" for n, m in sets.items()) + " |")
    print("| --- |" + " --- |" * len(sets))
    for key, label in ROWS.items():
        cells = [" / ".join(f"{statistics.mean(taus[(s, key, n)]):.3f}" for s in args.shots) for n in sets]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
