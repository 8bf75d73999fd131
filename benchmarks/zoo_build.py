"""Reference-zoo build times against the issue's targets (tiny < 30 s, full < 60 min with >= 250 models and
>= 40 tasks), and the cached rebuild.

    python benchmarks/zoo_build.py [--sizes tiny small full] [--seed 0] [--out benchmarks/results/zoo_build.md]

Each size is built from scratch into a temporary folder in a fresh process (`python -m modelkin.zoo build`),
so the wall time includes interpreter and torch start-up as a user sees it; then built again into the same
folder to time the cache. There is no outside baseline for building this zoo: the targets are the issue's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"tiny": 30.0, "full": 3600.0}


def build(out: Path, size: str, seed: int) -> tuple[float, dict[str, object]]:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "modelkin.zoo", "build", str(out), "--size", size, "--seed", str(seed), "--quiet"],
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - t0, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small", "full"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "zoo_build.md")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="modelkin-zoo-bench-", dir=Path.cwd()) as tmp:
        for size in args.sizes:
            out = Path(tmp) / size
            wall, summary = build(out, size, args.seed)
            cached_wall, cached = build(out, size, args.seed)
            assert cached["cached"] is True
            target = TARGETS.get(size)
            verdict = "" if target is None else ("met" if wall < target else "missed") + f" (< {target:g} s)"
            rows.append(
                f"| {size} | {summary['models']} | {summary['tasks']} | {summary['edges']} | {wall:.1f} s | "
                f"{summary['seconds']:.1f} s | {cached_wall:.1f} s | {verdict} |"
            )
    text = "\n".join(
        [
            "# Reference zoo build times",
            "",
            f"Command: `python benchmarks/zoo_build.py --sizes {' '.join(args.sizes)} --seed {args.seed}`.",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; one run each;"
            " builds use one core.",
            "",
            "| size | models | tasks | edges | wall time (fresh process) | inside the build | cached rebuild (wall) "
            "| target |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
            *rows,
            "",
            "Wall time includes starting Python and importing torch (about 3 s); a cached rebuild is nearly all of"
            " that start-up.",
            "",
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
