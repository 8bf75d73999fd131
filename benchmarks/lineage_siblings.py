"""Correlated siblings: many fine-tunes of one base on the same data, each asked for its parent.

    python benchmarks/lineage_siblings.py --zoo /work/zoos/full-s1 [--siblings 200] [--base NAME]
        [--out benchmarks/results/lineage-siblings.md]

Siblings trained from one base on one task drift the same way, so they can sit nearer each other than any of
them sits to the base: the hard case for any rule that takes "nearest" for "parent". The base and its siblings
(the scale run's recipe, benchmarks/lineage.py) go into a fresh in-process registry in two registration orders
(base first; shuffled), with the committed fitted.json; each sibling's ``lineage parent`` must name the base
(every other sibling is a candidate), and the recovered tree must hang every sibling on the base. The table
also says how often a sibling's nearest other model (compare's distance) is a sibling rather than the base.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lineage import Zoo, fine_tunes, pct, sketch_registry  # noqa: E402

from modelkin.provenance.lineage.calibration import ParentModel  # noqa: E402
from modelkin.provenance.lineage.compare import compare  # noqa: E402
from modelkin.provenance.lineage.sketch import sketch_model  # noqa: E402


def measure(weights: dict[str, dict[str, np.ndarray]], base: str, model: ParentModel) -> dict[str, float]:
    """Parent and tree accuracy of the siblings, registered in the dict's order."""
    siblings = [n for n in weights if n != base]
    with sketch_registry(weights, model) as reg:
        reports = [reg.lineage.parent(f"{n}:1", k=1) for n in siblings]
        forest, refs, _ = reg.lineage.forest()
        edges = {(refs[e.parent], refs[e.child]) for e in forest.edges}
    return {
        "parent": float(np.mean([r.parent == f"{base}:1" for r in reports])),
        "top1": float(np.mean([bool(r.candidates) and r.candidates[0].ref == f"{base}:1" for r in reports])),
        "none": float(np.mean([r.parent is None for r in reports])),
        "edges": float(np.mean([(f"{base}:1", f"{n}:1") in edges for n in siblings])),
    }


def nearest_is_sibling(weights: dict[str, dict[str, np.ndarray]], base: str) -> float:
    sk = {n: sketch_model(w.items()) for n, w in weights.items()}
    siblings = [n for n in weights if n != base]
    hits = []
    for n in siblings:
        to_base = compare(sk[n], sk[base]).distance
        hits.append(any(compare(sk[n], sk[m]).distance < to_base for m in siblings if m != n))
    return float(np.mean(hits))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", type=Path, required=True)
    ap.add_argument("--siblings", type=int, default=200)
    ap.add_argument("--base", help="the zoo root to fine-tune (default: its first plain root)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/lineage-siblings.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    zoo = Zoo(args.zoo)
    roots = [n for n in zoo.names if not zoo.models[n]["parents"] and zoo.models[n]["relation"] is None]
    base = args.base or roots[0]
    if base not in zoo.names:
        ap.error(f"{base} is not a model of {zoo.dir}")
    rng = np.random.default_rng(0)
    tuned = fine_tunes(zoo, [base] * args.siblings, rng)
    weights = {base: zoo.weights[base], **{f"sib-{i:04d}": w for i, (w, _) in enumerate(tuned)}}
    model = ParentModel.load()
    names = list(weights)
    shuffled = [names[i] for i in rng.permutation(len(names))]
    columns = {"base first": measure(weights, base, model),
               "shuffled": measure({n: weights[n] for n in shuffled}, base, model)}  # fmt: skip
    nearest = nearest_is_sibling(weights, base)
    lines = [
        "# Lineage: correlated siblings",
        "",
        f"Command: `python {' '.join(sys.argv)}`  ",
        f"{args.siblings} fine-tunes of `{base}` ({zoo.models[base]['architecture']['family']}, zoo {zoo.dir}, seed "
        f"{zoo.truth['seed']}) on its task, the scale run's recipe; fitted model: the committed fitted.json. "
        f"Run time {(time.perf_counter() - started) / 60:.1f} min.",
        "",
        f"A sibling's nearest other model is another sibling, not the base: {pct(nearest)} of siblings.",
        "",
        "| measure | base first | shuffled |",
        "|---|---|---|",
    ]
    for key, label in (("parent", "`lineage parent` names the base"),
                       ("top1", "the base is the top candidate"),
                       ("none", "reported as having no registered parent"),
                       ("edges", "recovered tree hangs the sibling on the base")):  # fmt: skip
        lines.append(f"| {label} | " + " | ".join(pct(columns[c][key]) for c in columns) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
