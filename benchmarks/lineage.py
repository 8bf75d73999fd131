"""Lineage: parent detection, ancestry and tree recovery on a zoo registered blind, beside the named baselines.

    python benchmarks/lineage.py --calibrate /work/zoos/full-s0 --zoo /work/zoos/full-s1 \
        [--scale 10000] [--out benchmarks/results/lineage.md]
    python benchmarks/lineage.py --timing-only --zoo /work/zoos/full-s1   # the timing rows alone

1. Calibration (seed-0 zoo): modelkin's parent model (a conditional logit over candidates and "no parent",
   modelkin/provenance/lineage/fitted.json) is fitted on every model of the calibration zoo; the baselines'
   free choices (their no-parent thresholds, MoTHer's kurtosis sign) are fitted on the same zoo.
2. Evaluation (seed-1 zoo), once per registration order (shuffled, topological): the zoo is registered blind
   (no declared parents) into a fresh registry, so modelkin's numbers come from the real path (registration
   indexer, `registry.lineage.parent`, `.tree`). Baselines read the same weights; they ignore registration
   order, so their two columns agree.
3. Scale: 10,000 models in-process (real fine-tuned siblings plus perturbed copies), sketches inserted through
   modelkin's own storage path (not full registrations): parent query time and accuracy, tree time on 1,000,
   indexing cost per model against reading its weights once, CLI start-up.

Distilled students are freshly initialised and trained on their teacher's outputs: nothing of the teacher is in
their weights, so weight-space lineage counts them as roots. They are left out of every accuracy below and
reported on their own row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch
from safetensors.numpy import load_file
from sklearn.metrics import roc_auc_score

from modelkin import Registry
from modelkin.provenance.lineage import storage
from modelkin.provenance.lineage.calibration import (
    EDGE,
    ParentModel,
    Query,
    expected_calibration_error,
    fit,
    fit_confidence,
)
from modelkin.provenance.lineage.compare import compare, merge_children
from modelkin.provenance.lineage.decide import decide, near_copy
from modelkin.provenance.lineage.facade import MERGE_POOL, SEARCH
from modelkin.provenance.lineage.index import CandidateIndex, Entry
from modelkin.provenance.lineage.neural import neural_lineage_scores
from modelkin.provenance.lineage.sketch import ModelSketch, sketch_model
from modelkin.provenance.lineage.tree import Forest, ancestors
from modelkin.registry.architectures import build_module
from modelkin.zoo.registration import register_zoo, registration_order

ORDERS = ("shuffled", "topological")
PROBES = 128


class Zoo:
    """A built zoo's ground truth and weights, with the lineage facts the metrics need."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.truth = json.loads((directory / "ground_truth.json").read_text())
        self.models: dict[str, Any] = self.truth["models"]
        self.names = sorted(self.models)
        self.weights = {n: load_file(str(directory / "models" / f"{n}.safetensors")) for n in self.names}

    def parents(self, n: str) -> tuple[str, ...]:
        """Weight-space parents: none for a distilled student (its weights are its own)."""
        m = self.models[n]
        return () if m["relation"] == "distilled" else tuple(sorted(m["parents"]))

    def distilled(self, n: str) -> bool:
        return self.models[n]["relation"] == "distilled"

    def kind(self, n: str) -> str:
        m = self.models[n]
        if m["variant"] == "quantize-4":
            return "int4"
        return m["relation"] or "root"

    def root(self, n: str) -> str:
        """The weight-space root a model descends from (a distilled student is its own)."""
        while self.parents(n):
            n = self.parents(n)[0]
        return n

    def true_ancestors(self, n: str) -> dict[str, int]:
        out, frontier, g = {}, [n], 0
        while frontier:
            g += 1
            nxt = []
            for v in frontier:
                for p in self.parents(v):
                    if p not in out:
                        out[p] = g
                        nxt.append(p)
            frontier = nxt
        return out

    def module(self, n: str) -> torch.nn.Module:
        m = build_module(self.models[n]["architecture"])
        m.load_state_dict({k: torch.from_numpy(v) for k, v in self.weights[n].items()})
        return m.eval()

    def probes(self) -> torch.Tensor:
        x = np.load(self.dir / "probes" / "digits-64.npz")["x"][:PROBES]
        return torch.from_numpy(x).float()


# -- modelkin on the pure layer (calibration, restricted candidate sets) ---------------------------------------


def sketches_of(zoo: Zoo) -> dict[str, ModelSketch]:
    return {n: sketch_model(zoo.weights[n].items()) for n in zoo.names}


def calibrate(zoo: Zoo, command: str) -> ParentModel:
    """Fit the parent model on every model of the calibration zoo (candidates as a registry would find them)."""
    sk = sketches_of(zoo)
    index = CandidateIndex([Entry.of(n, sk[n]) for n in zoo.names])
    queries = []
    for n in zoo.names:
        if len(zoo.parents(n)) > 1 or zoo.distilled(n):
            continue  # merges are found by the two-parent fit; distilled students carry no weight-space lineage
        near, _ = index.shortlist(sk[n], SEARCH, 2 * SEARCH, exclude={n})
        comps = [(k, compare(sk[n], sk[k])) for k in near]
        # a near-copy child is set aside by decide's near-copy rule (family, norm, order), not by the model
        live = [
            (k, c) for k, c in comps if not c.identical and c.shared > 0 and not (near_copy(c) and n in zoo.parents(k))
        ]
        # the query's exact merged children are set aside by decide() before the model sees them
        whole = [(k, c) for k, c in live if c.coverage >= 0.99]
        merged = {whole[i][0] for i in merge_children(sk[n], [sk[k] for k, _ in whole], [c.pairs for _, c in whole])}
        live = [(k, c) for k, c in live if k not in merged]
        keys = [k for k, _ in live]
        want = zoo.parents(n)
        if not live or (want and want[0] not in keys):
            continue
        queries.append(Query(np.array([c.features for _, c in live]), keys.index(want[0]) if want else -1))
    # direction is fitted on single-parent edges: a merge is recognised by the two-parent fit instead
    edges = [compare(sk[c], sk[p]).features[len(EDGE) :] for c in zoo.names if len(zoo.parents(c)) == 1
             for p in zoo.parents(c)]  # fmt: skip
    provenance = {"zoo": zoo.dir.name, "size": zoo.truth["size"], "seed": zoo.truth["seed"],
                  "queries": len(queries), "edges": len(edges), "command": command}  # fmt: skip
    model = fit(queries, np.array(edges), provenance)
    # the reported confidence: an isotonic map of the verdicts a registry of this zoo gives, in shuffled order
    order = {n: i for i, n in enumerate(registration_order(zoo.models, "shuffled", 0))}
    raw, right = [], []
    for n in zoo.names:
        if zoo.distilled(n):
            continue
        near, far = index.shortlist(sk[n], SEARCH, MERGE_POOL, exclude={n})
        v = decide(sk[n], [(k, sk[k]) for k in near], model, order, order[n], pool=[(k, sk[k]) for k in far])
        raw.append(v.confidence)
        right.append(tuple(sorted(v.parents)) == zoo.parents(n))
    return replace(model, confidence_map=fit_confidence(raw, right))


# -- baselines ---------------------------------------------------------------------------------------------------


def shared_names(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
    """Tensors with the same name and shape, when they hold at least half of each model's parameters (else none:
    two architectures that happen to share a bias are not comparable)."""
    names = [k for k in a if k in b and a[k].shape == b[k].shape and np.issubdtype(a[k].dtype, np.floating)]
    shared = sum(a[k].size for k in names)
    if shared < 0.5 * sum(v.size for v in a.values()) or shared < 0.5 * sum(v.size for v in b.values()):
        return []
    return names


def l2_distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    names = shared_names(a, b)
    if not names:
        return float("inf")
    return float(np.sqrt(sum(float(np.sum((a[k].astype(np.float64) - b[k]) ** 2)) for k in names)))


def mother_distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """MoTHer-style: the largest normalised per-tensor difference over shared tensors."""
    names = [k for k in shared_names(a, b) if a[k].size >= 64] or shared_names(a, b)
    if not names:
        return float("inf")
    return max(float(np.linalg.norm(a[k] - b[k]) / (np.linalg.norm(b[k]) + 1e-12)) for k in names)


def kurtosis(w: dict[str, np.ndarray]) -> float:
    x = np.concatenate([v.reshape(-1) for k, v in w.items() if v.ndim >= 2]).astype(np.float64)
    x = x - x.mean()
    return float(np.mean(x**4) / np.mean(x**2) ** 2 - 3)


class Baselines:
    """Pairwise scores of every baseline over the zoo's models (same-architecture pairs where required)."""

    def __init__(self, zoo: Zoo, with_neural: bool = True) -> None:
        self.zoo = zoo
        names = zoo.names
        self.l2: dict[tuple[str, str], float] = {}
        self.mother: dict[tuple[str, str], float] = {}
        self.nl: dict[tuple[str, str], float] = {}  # (parent, child) -> S without correction
        self.nlc: dict[tuple[str, str], float] = {}  # with the first-order correction
        self.kurt = {n: kurtosis(zoo.weights[n]) for n in names}
        for a in names:
            for b in names:
                if a < b and shared_names(zoo.weights[a], zoo.weights[b]):
                    self.l2[(a, b)] = self.l2[(b, a)] = l2_distance(zoo.weights[a], zoo.weights[b])
                    self.mother[(a, b)] = mother_distance(zoo.weights[a], zoo.weights[b])
                    self.mother[(b, a)] = mother_distance(zoo.weights[b], zoo.weights[a])
        if with_neural:
            probes = zoo.probes()
            modules = {n: zoo.module(n) for n in names}
            trunk = {n: json.dumps({k: v for k, v in zoo.models[n]["architecture"].items() if k != "num_classes"},
                                   sort_keys=True) for n in names}  # fmt: skip
            for p in names:
                for c in names:
                    if p != c and trunk[p] == trunk[c]:
                        self.nl[(p, c)], self.nlc[(p, c)] = neural_lineage_scores(modules[p], modules[c], probes)

    def scorers(self, kurt_sign: float) -> dict[str, Callable[[str, str], float]]:
        """name -> cost(parent, child): lower is a likelier edge (inf: not comparable)."""
        inf = float("inf")

        def mother(p: str, c: str) -> float:
            d = self.mother.get((c, p), inf)
            wrong_way = kurt_sign * (self.kurt[c] - self.kurt[p]) < 0  # the calibrated direction prior
            return d + (1e3 if wrong_way else 0.0)

        return {
            "plain L2": lambda p, c: self.l2.get((p, c), inf),
            "MoTHer-style": mother,
            "Neural Lineage (no correction)": lambda p, c: -self.nl.get((p, c), -inf),
            "Neural Lineage": lambda p, c: -self.nlc.get((p, c), -inf),
        }


def fit_kurtosis_sign(zoo: Zoo, base: Baselines) -> float:
    """+1 if children are usually more kurtotic than their parents on the calibration zoo, else -1."""
    votes = [np.sign(base.kurt[c] - base.kurt[p]) for c in zoo.names for p in zoo.parents(c)]
    return 1.0 if np.mean(votes) >= 0 else -1.0


def fit_root_cost(zoo: Zoo, cost: Callable[[str, str], float]) -> float:
    """The no-parent threshold on the best candidate's cost that classifies the calibration zoo best."""
    best = {n: min((cost(p, n) for p in zoo.names if p != n), default=float("inf")) for n in zoo.names}
    finite = sorted({b for b in best.values() if np.isfinite(b)})
    if not finite:
        return float("inf")
    cuts = [(x + y) / 2 for x, y in zip(finite, finite[1:], strict=False)] + [finite[-1] + 1]

    def accuracy(t: float) -> float:
        return float(np.mean([(best[n] > t) == (not zoo.parents(n)) for n in zoo.names]))

    return max(cuts, key=accuracy)


def baseline_forest(names: Sequence[str], cost: Callable[[str, str], float], root_cost: float) -> Forest:
    from modelkin.provenance.lineage.tree import TreeEdge

    g = nx.DiGraph()
    g.add_nodes_from(names)
    for c in names:
        g.add_edge("ROOT", c, weight=root_cost)
        for p in names:
            if p != c and np.isfinite(w := cost(p, c)):
                g.add_edge(p, c, weight=w)
    tree = nx.minimum_spanning_arborescence(g, attr="weight")
    edges, roots = [], []
    for c in names:
        (p,) = list(tree.predecessors(c))
        if p == "ROOT":
            roots.append(c)
        else:
            edges.append(TreeEdge(p, c, None, 1.0))
    return Forest(tuple(edges), tuple(roots))


# -- metrics -----------------------------------------------------------------------------------------------------


def pct(x: float) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"


def restricted_sets(zoo: Zoo) -> dict[str, list[tuple[str, list[str]]]]:
    """(child, candidates) for the two restricted settings of the issue's first target."""
    out: dict[str, list[tuple[str, list[str]]]] = {"independent": [], "siblings": []}
    children: dict[str, list[str]] = defaultdict(list)
    for n in zoo.names:
        for p in zoo.parents(n):
            children[p].append(n)
    for n in zoo.names:
        ps = zoo.parents(n)
        if len(ps) != 1:
            continue
        (p,) = ps
        others = [m for m in zoo.names if zoo.root(m) != zoo.root(n)]
        out["independent"].append((n, [p, *others]))
        sibs = [s for s in children[p] if s != n]
        if sibs:
            out["siblings"].append((n, [p, *sibs]))
    out.update(generation_sets(zoo))
    return out


def generation_sets(zoo: Zoo) -> dict[str, list[tuple[str, list[str]]]]:
    """Neural Lineage's cross-generation protocol: a descendant and, as candidates, its ancestor at gap g with
    every other model of that ancestor's generation (none of the descendant's own ancestors); only descendants
    with a single ancestor at that gap (no merge on the way)."""
    by_generation: dict[int, list[str]] = defaultdict(list)
    for n in zoo.names:
        by_generation[int(zoo.models[n]["generation"])].append(n)
    out: dict[str, list[tuple[str, list[str]]]] = {f"lineage{g}": [] for g in (1, 2, 3)}
    for n in zoo.names:
        ancestors = zoo.true_ancestors(n)
        for g in (1, 2, 3):
            at = [a for a, gap in ancestors.items() if gap == g]
            if len(at) != 1:
                continue
            (a,) = at
            rivals = [m for m in by_generation[int(zoo.models[a]["generation"])] if m != n and m not in ancestors]
            out[f"lineage{g}"].append((n, [a, *rivals]))
    return out


def tree_metrics(zoo: Zoo, forest: Forest) -> dict[str, float]:
    rec = {(e.parent, e.child) for e in forest.edges}
    true = {(p, c) for c in zoo.names for p in zoo.parents(c)}
    out = {"edges": len(rec & true) / len(true)}
    roots = {n for n in zoo.names if not zoo.parents(n)}
    out["roots"] = len(roots & set(forest.roots)) / len(roots)
    for gap in (1, 2, 3):
        pairs = [(n, a) for n in zoo.names for a, g in zoo.true_ancestors(n).items() if g == gap]
        found = {n: dict(ancestors(forest, n)) for n in zoo.names}
        out[f"gap{gap}"] = float(np.mean([found[n].get(a) == gap for n, a in pairs])) if pairs else float("nan")
    return out


def evaluate_modelkin(zoo: Zoo, order: str, model: ParentModel) -> dict[str, Any]:
    """Register the zoo blind in ``order`` and measure modelkin through the registry."""
    with tempfile.TemporaryDirectory(prefix="modelkin-lineage-bench-") as home:
        reg = Registry.init(home)
        reg.lineage._model = model
        t0 = time.perf_counter()
        summary = register_zoo(reg, zoo.dir, order=order)
        register_s = time.perf_counter() - t0
        ref_of = {r["name"]: r["ref"] for r in summary["models"]}
        name_of = {v: k for k, v in ref_of.items()}
        verdicts: dict[str, dict[str, Any]] = {}
        t0 = time.perf_counter()
        for n in zoo.names:
            verdicts[n] = reg.lineage.parent(ref_of[n], k=1).to_json()
        parent_s = (time.perf_counter() - t0) / len(zoo.names)
        # the none-probability of each verdict, for AUROC, from the pure layer on stored sketches
        infos = storage.versions(reg.engine)
        vid = {info.ref: i for i, info in infos.items()}
        sk = storage.load_sketches(reg.engine, vid.values())
        order_of = {i: i for i in vid.values()}
        t0 = time.perf_counter()
        forest_ids, refs, tree_verdicts = reg.lineage.forest()
        tree_s = time.perf_counter() - t0
        forest = Forest(
            tuple(type(e)(name_of[refs[e.parent]], name_of[refs[e.child]], e.relation, e.confidence)
                  for e in forest_ids.edges),
            tuple(name_of[refs[r]] for r in forest_ids.roots),
        )  # fmt: skip
        none_p = {name_of[refs[i]]: v.none_probability for i, v in tree_verdicts.items()}
        restricted = {}
        for setting, items in restricted_sets(zoo).items():
            hits = []
            for child, cands in items:
                q = vid[ref_of[child]]
                keys = [vid[ref_of[c]] for c in cands]
                v = decide(sk[q], [(k, sk[k]) for k in keys], model, order=order_of, query_order=q)
                # top-1: the best-ranked candidate (whether "no parent" would win is the AUROC row's business)
                hits.append(bool(v.candidates) and v.candidates[0].key == vid[ref_of[cands[0]]])
            restricted[setting] = float(np.mean(hits))
        reg.close()
    got = {n: tuple(sorted(name_of[r] for r in verdicts[n]["parents"])) for n in zoo.names}
    return {
        "got": got,
        "confidence": {n: verdicts[n]["confidence"] for n in zoo.names},
        "none": none_p,
        "forest": forest,
        "restricted": restricted,
        "register_s": register_s / len(zoo.names),
        "parent_s": parent_s,
        "tree_s": tree_s,
    }


def evaluate_baseline(zoo: Zoo, cost: Callable[[str, str], float], root_cost: float) -> dict[str, Any]:
    names = zoo.names
    best: dict[str, tuple[float, str | None]] = {}
    for n in names:
        scored = [(cost(p, n), p) for p in names if p != n]
        scored = [s for s in scored if np.isfinite(s[0])]
        best[n] = min(scored) if scored else (float("inf"), None)
    got = {n: ((best[n][1],) if best[n][0] <= root_cost and best[n][1] else ()) for n in names}
    restricted = {}
    for setting, items in restricted_sets(zoo).items():
        hits = []
        for child, cands in items:
            scored = [(cost(c, child), c) for c in cands if np.isfinite(cost(c, child))]
            hits.append(bool(scored) and min(scored)[1] == cands[0])
        restricted[setting] = float(np.mean(hits))
    return {
        "got": got,
        "confidence": None,
        "none": {n: best[n][0] for n in names},
        "forest": baseline_forest(names, cost, root_cost),
        "restricted": restricted,
    }


def summarise(zoo: Zoo, result: dict[str, Any]) -> dict[str, float]:
    names = [n for n in zoo.names if not zoo.distilled(n)]
    got = result["got"]

    def acc(subset: list[str]) -> float:
        return float(np.mean([got[n] == zoo.parents(n) for n in subset])) if subset else float("nan")

    out = {
        "independent": result["restricted"]["independent"],
        "siblings": result["restricted"]["siblings"],
        **{f"lineage{g}": result["restricted"][f"lineage{g}"] for g in (1, 2, 3)},
        "all": acc([n for n in names if zoo.parents(n)]),
        "pruned": acc([n for n in names if zoo.kind(n) == "pruned"]),
        "int4": acc([n for n in names if zoo.kind(n) == "int4"]),
        "adapter": acc([n for n in names if zoo.kind(n) == "adapter"]),
        "merge": acc([n for n in names if zoo.kind(n) == "merge"]),
        "distilled": float(
            np.mean([got[n] == tuple(zoo.models[n]["parents"]) for n in zoo.names if zoo.distilled(n)])
        ),  # fmt: skip
    }
    out.update(tree_metrics(zoo, result["forest"]))
    labels = [not zoo.parents(n) for n in names]
    out["auroc"] = float(roc_auc_score(labels, [result["none"][n] for n in names]))
    if result["confidence"] is not None:
        out["ece"] = expected_calibration_error([result["confidence"][n] for n in names],
                                                [got[n] == zoo.parents(n) for n in names])  # fmt: skip
    else:
        out["ece"] = float("nan")
    return out


ROWS = [
    ("independent", "parent top-1, candidates from independent roots (target ≥ 99%)"),
    ("siblings", "parent top-1, candidates are the siblings (target ≥ 97%)"),
    ("all", "parent exact, every registered model a candidate"),
    ("pruned", "pruned children (≥ 95%)"),
    ("int4", "int4-quantised children (≥ 95%)"),
    ("adapter", "LoRA-merged children (≥ 95%)"),
    ("merge", "both parents of merges (≥ 90%)"),
    ("lineage1", "ancestor top-1 among its generation, gap 1 (Neural Lineage protocol, ≥ 99%)"),
    ("lineage2", "ancestor top-1 among its generation, gap 2 (≥ 98%)"),
    ("lineage3", "ancestor top-1 among its generation, gap 3 (≥ 97%)"),
    ("gap1", "ancestor at generation gap 1 in the recovered tree (every edge of the chain right)"),
    ("gap2", "ancestor at gap 2 in the recovered tree"),
    ("gap3", "ancestor at gap 3 in the recovered tree"),
    ("edges", "directed edges of the recovered tree (≥ 95%)"),
    ("roots", "roots recovered as roots"),
    ("auroc", "no registered parent: AUROC (≥ 0.99)"),
    ("ece", "confidence calibration error, ECE (≤ 0.05)"),
    ("distilled", "distilled students: teacher found (not in the rows above)"),
]


# -- scale ---------------------------------------------------------------------------------------------------------


SIBLING_STEPS = 40


def fine_tunes(zoo: Zoo, parents: Sequence[str], rng: np.random.Generator) -> list[tuple[dict[str, np.ndarray], str]]:
    """One real fine-tune of each of ``parents`` on its own task (Adam, random seed and learning rate, half the
    data): siblings of one parent share their data and recipe, so they are correlated, as real ones are."""
    from modelkin.zoo.recipes import apply
    from modelkin.zoo.tasks import ZooData

    data = ZooData(zoo.truth["seed"], 3)
    out = []
    for parent in parents:
        recipe = {
            "op": "finetune",
            "seed": int(rng.integers(2**31)),
            "task": zoo.models[parent]["task"],
            "new_head": False,
            "freeze": [],
            "data_fraction": 0.5,
            "optimizer": {"name": "adam", "lr": float(rng.uniform(5e-4, 3e-3)), "steps": SIBLING_STEPS,
                          "batch_size": 64},
        }  # fmt: skip
        weights = {k: torch.from_numpy(v) for k, v in zoo.weights[parent].items()}
        _, w = apply(recipe, [(zoo.models[parent]["architecture"], weights)], data)
        out.append(({k: v.numpy() for k, v in w.items()}, parent))
    return out


@contextmanager
def sketch_registry(weights: dict[str, dict[str, np.ndarray]], model: ParentModel) -> Iterator[Registry]:
    """A fresh in-process registry holding one version ``NAME:1`` per entry, in the dict's order (its
    registration order), with its sketch inserted through modelkin's storage code (not a full registration)."""
    from sqlalchemy import insert

    from modelkin.db.schema import Model, Version

    with tempfile.TemporaryDirectory(prefix="modelkin-lineage-sketches-") as home:
        reg = Registry.init(home)
        reg.lineage._model = model
        names = list(weights)
        with reg.engine.begin() as conn:
            conn.execute(insert(Model), [{"name": n} for n in names])
            ids = dict(conn.execute(Model.__table__.select().with_only_columns(Model.name, Model.id)).all())
            conn.execute(insert(Version), [
                {"model_id": ids[n], "number": 1, "digest": f"sha256:{i:064x}", "parameters": 0, "tensor_count": 0,
                 "bytes": 0, "arch_fingerprint": "", "card": {}, "yanked": False}
                for i, n in enumerate(names)])  # fmt: skip
        vids = {info.ref.rsplit(":", 1)[0]: vid for vid, info in storage.versions(reg.engine).items()}
        for i in range(0, len(names), 500):
            chunk = names[i : i + 500]
            storage.save_sketches(reg.engine, [(vids[n], sketch_model(weights[n].items())) for n in chunk])
        try:
            yield reg
        finally:
            reg.close()


def scale_run(zoo: Zoo, total: int, siblings: int, model: ParentModel, seed: int = 0) -> dict[str, Any]:
    """``total`` models in one in-process registry: ``siblings`` real fine-tunes of zoo roots, the rest perturbed
    copies of zoo models, plus the zoo itself. Sketches go in through modelkin's storage (not full
    registrations); parent queries run through ``registry.lineage.parent``."""
    rng = np.random.default_rng(seed)
    roots = [n for n in zoo.names if not zoo.models[n]["parents"] and zoo.models[n]["relation"] is None]
    made: dict[str, tuple[dict[str, np.ndarray], str | None]] = {n: (zoo.weights[n], None) for n in zoo.names}
    t0 = time.perf_counter()
    tuned = fine_tunes(zoo, [roots[i % len(roots)] for i in range(siblings)], rng)
    made.update({f"sib-{i:05d}": w for i, w in enumerate(tuned)})
    train_s = time.perf_counter() - t0
    while len(made) < total:
        base = zoo.names[int(rng.integers(len(zoo.names)))]
        step = float(np.exp(rng.uniform(np.log(0.01), np.log(0.3))))
        noisy = {k: (v + step * np.linalg.norm(v) / np.sqrt(v.size) * rng.standard_normal(v.shape)).astype(np.float32)
                 for k, v in zoo.weights[base].items()}  # fmt: skip
        made[f"copy-{len(made):05d}"] = (noisy, base)
    t0 = time.perf_counter()
    with sketch_registry({n: w for n, (w, _) in made.items()}, model) as reg:
        insert_s = (time.perf_counter() - t0) / len(made)
        queries = [f"sib-{i:05d}" for i in rng.choice(siblings, min(100, siblings), replace=False)]
        t0 = time.perf_counter()
        first = reg.lineage.parent(f"{queries[0]}:1")
        cold_s = time.perf_counter() - t0
        hits, times = [first.parent == f"{made[queries[0]][1]}:1"], []
        for q in queries[1:]:
            t0 = time.perf_counter()
            report = reg.lineage.parent(f"{q}:1")
            times.append(time.perf_counter() - t0)
            hits.append(report.parent == f"{made[q][1]}:1")
        # a tree of 1,000: the filter selects a thousand versions (zoo, siblings, copies)
        t0 = time.perf_counter()
        forest, _, _ = reg.lineage.forest("name LIKE 'sib-%'")
        tree_s = time.perf_counter() - t0
        tree_n = len(forest.edges) + len(forest.roots)
    return {"total": len(made), "siblings": siblings, "train_s": train_s, "insert_s": insert_s, "cold_s": cold_s,
            "warm_s": statistics.median(times), "accuracy": float(np.mean(hits)), "queries": len(queries),
            "tree_s": tree_s, "tree_n": tree_n}  # fmt: skip


def cli_startup(repeat: int = 5) -> dict[str, float]:
    def run(*args: str) -> float:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, *args], check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    with tempfile.TemporaryDirectory() as home:
        env_home = {"MODELKIN_HOME": home}
        os.environ.update(env_home)
        subprocess.run([sys.executable, "-m", "modelkin", "init"], check=True, capture_output=True)
        return {"python": run("-c", "pass"), "help": run("-m", "modelkin", "lineage", "--help"),
                "tree": run("-m", "modelkin", "lineage", "tree", "--json")}  # fmt: skip


def indexing_cost(zoo: Zoo, repeat: int = 3) -> dict[str, float]:
    """Per model: reading its weights once from the file against reading and sketching them."""
    from safetensors import safe_open

    files = [zoo.dir / "models" / f"{n}.safetensors" for n in zoo.names]

    def read() -> None:
        for f in files:
            with safe_open(str(f), framework="pt") as st:
                for k in st.keys():
                    st.get_tensor(k)

    def read_and_sketch() -> None:
        for f in files:
            with safe_open(str(f), framework="pt") as st:
                sketch_model((k, st.get_tensor(k)) for k in st.keys())

    out = {}
    for name, fn in (("read", read), ("sketch", read_and_sketch)):
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times) / len(files)
    return out


RESULTS = Path("benchmarks/results")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calibrate", type=Path, help="zoo to fit on (seed 0); required unless --timing-only")
    ap.add_argument("--zoo", type=Path, required=True, help="zoo to report on (another seed)")
    ap.add_argument("--scale", type=int, default=10000)
    ap.add_argument("--siblings", type=int, default=1000)
    ap.add_argument("--no-neural", action="store_true", help="skip the Neural Lineage baselines")
    ap.add_argument(
        "--timing-only",
        action="store_true",
        help="only the scale, indexing and start-up timings, with the committed fitted.json",
    )
    ap.add_argument("--out", type=Path, help="default benchmarks/results/lineage.md (lineage-timing.md with "
                    "--timing-only)")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(1)
    command = "python " + " ".join(sys.argv)
    if args.timing_only:
        timing_only(Zoo(args.zoo), args.scale, args.siblings, args.out or RESULTS / "lineage-timing.md", command)
        return
    if args.calibrate is None:
        ap.error("--calibrate is required unless --timing-only is given")
    args.out = args.out or RESULTS / "lineage.md"
    started = time.perf_counter()
    cal, test = Zoo(args.calibrate), Zoo(args.zoo)
    model = calibrate(cal, command)
    model.save()
    print(f"fitted on {cal.dir}: {model}", file=sys.stderr)
    base_cal = Baselines(cal, with_neural=not args.no_neural)
    kurt_sign = fit_kurtosis_sign(cal, base_cal)
    cal_scorers = base_cal.scorers(kurt_sign)
    root_costs = {name: fit_root_cost(cal, cost) for name, cost in cal_scorers.items() if
                  not (args.no_neural and name.startswith("Neural"))}  # fmt: skip
    base = Baselines(test, with_neural=not args.no_neural)
    columns: dict[str, dict[str, float]] = {}
    timings: dict[str, dict[str, float]] = {}
    for order in ORDERS:
        result = evaluate_modelkin(test, order, model)
        columns[f"modelkin ({order})"] = summarise(test, result)
        timings[order] = {k: result[k] for k in ("register_s", "parent_s", "tree_s")}
        print(f"modelkin {order}: {columns[f'modelkin ({order})']}", file=sys.stderr)
    for name, cost in base.scorers(kurt_sign).items():
        if name in root_costs:
            columns[name] = summarise(test, evaluate_baseline(test, cost, root_costs[name]))
            print(f"{name}: {columns[name]}", file=sys.stderr)
    scale = scale_run(test, args.scale, args.siblings, model) if args.scale else None
    cost = indexing_cost(test)
    startup = cli_startup()
    write_report(
        args.out,
        command,
        cal,
        test,
        model,
        columns,
        timings,
        scale,
        cost,
        startup,
        kurt_sign,
        time.perf_counter() - started,
    )


def write_report(out: Path, command: str, cal: Zoo, test: Zoo, model: ParentModel, columns: dict[str, dict[str, float]],
                 timings: dict[str, dict[str, float]], scale: dict[str, Any] | None, cost: dict[str, float],
                 startup: dict[str, float], kurt_sign: float, seconds: float) -> None:  # fmt: skip
    names = list(columns)
    lines = [
        "# Lineage benchmark",
        "",
        f"Command: `{command}`  ",
        f"Calibration zoo: {cal.dir} (size {cal.truth['size']}, seed {cal.truth['seed']}); report zoo: {test.dir} "
        f"(size {test.truth['size']}, seed {test.truth['seed']}, {len(test.names)} models), registered blind. "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs, torch threads 1. "
        f"Total run time {seconds / 60:.1f} min.",
        "",
        "Baselines ignore registration order (same numbers for both orders); their no-parent thresholds and "
        f"MoTHer's kurtosis direction (children {'more' if kurt_sign > 0 else 'less'} kurtotic, fitted) come from "
        "the calibration zoo. Neural Lineage runs the trunk on 128 of the zoo's unlabelled probes, l1 feature "
        "distance, α = 0.01, and is only defined between models of one architecture.",
        "",
        "Ancestors are measured two ways. Neural Lineage's cross-generation protocol (the source of the issue's "
        "99 / 98 / 97 % and of the paper's 99.1 / 98.8 / 97.8 %): a descendant g generations down, the candidates "
        "its true ancestor and every other model of that ancestor's generation, top-1 from the weights. The "
        "recovered-tree rows are stricter: the ancestor must sit at exactly generation g in the whole recovered "
        "forest, so every one of the g edges between them must be right (gap 1 is the directed-edge row).",
        "",
        "| measure | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key, label in ROWS:
        cells = []
        for n in names:
            v = columns[n].get(key, float("nan"))
            cells.append("—" if not np.isfinite(v) else f"{v:.3f}" if key in ("auroc", "ece") else pct(v))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Time (modelkin, in-process, per model)", "",
              "| | shuffled | topological |", "|---|---|---|"]  # fmt: skip
    for key, label in (("register_s", "register (ingest + sketch + detect parent)"),
                       ("parent_s", "`lineage parent` (every registered model a candidate)"),
                       ("tree_s", f"whole tree of {len(test.names)} (seconds, not per model)")):  # fmt: skip
        lines.append(f"| {label} | " + " | ".join(f"{timings[o][key]:.3f} s" for o in ORDERS) + " |")
    lines += timing_lines(scale, cost, startup)
    lines += ["## Fitted parent model", "", "```json", json.dumps(model.to_json(), indent=1), "```", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))


def timing_lines(scale: dict[str, Any] | None, cost: dict[str, float], startup: dict[str, float]) -> list[str]:
    """The report's timing sections (scale, indexing cost, CLI start-up), also all that --timing-only prints."""
    lines = ["", f"Indexing cost per zoo model: read its weights once {1e3 * cost['read']:.2f} ms, read and "
             f"sketch {1e3 * cost['sketch']:.2f} ms ({cost['sketch'] / cost['read']:.1f}x)."]  # fmt: skip
    if scale:
        lines += [
            "",
            "## Scale (in-process)",
            "",
            f"{scale['total']:,} models: the report zoo, {scale['siblings']:,} real fine-tuned siblings "
            f"({SIBLING_STEPS} Adam steps from one of its roots, trained in {scale['train_s']:.0f} s) and perturbed "
            "copies of zoo models. Version rows and sketches are inserted through modelkin's storage code, not full "
            f"registrations ({1e3 * scale['insert_s']:.1f} ms per model: its rows and its sketch).",
            "",
            "| measure | value |",
            "|---|---|",
            f"| `lineage parent`, first query (loads the candidate index) | {scale['cold_s']:.2f} s |",
            f"| `lineage parent`, median of the next {scale['queries'] - 1} | {scale['warm_s']:.3f} s |",
            f"| parent accuracy of those {scale['queries']} sibling queries | {pct(scale['accuracy'])} |",
            f"| tree of {scale['tree_n']:,} models (the siblings) | {scale['tree_s']:.1f} s |",
        ]
    return lines + ["", "## CLI start-up (median of 5)", "",
                    f"`python -c pass` {startup['python']:.2f} s; `modelkin lineage --help` {startup['help']:.2f} s; "
                    f"`modelkin lineage tree --json` on an empty registry {startup['tree']:.2f} s.", ""]  # fmt: skip


def timing_only(zoo: Zoo, scale: int, siblings: int, out: Path, command: str) -> None:
    """The timing rows alone, with the committed fitted.json (no calibration, no accuracy part), so they can be
    re-measured on a quiet machine in a few minutes."""
    model = ParentModel.load()
    result = scale_run(zoo, scale, siblings, model) if scale else None
    lines = ["# Lineage benchmark: timing rows only", "", f"Command: `{command}`  ",
             f"Zoo: {zoo.dir}; fitted model: the committed fitted.json; `uptime` at the end: "
             f"{os.getloadavg()[0]:.2f} (1 min load, {os.cpu_count()} cores), torch threads 1."]  # fmt: skip
    lines += timing_lines(result, indexing_cost(zoo), cli_startup())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
