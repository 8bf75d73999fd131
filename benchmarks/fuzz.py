"""Fuzzing modelkin's CLI with hostile files and strings; writes benchmarks/results/fuzz.md.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fuzz.py --cases 10000 --seed 1

Cases come from tests/fuzzing/cases.py (seeded; the fast subset in ``make test`` uses seed 0) and run through
``modelkin.cli.app:main`` in this process (tests/fuzzing/harness.py). The table counts cases, internal errors
(an "internal error" line, a traceback, or an exit code other than 0/1/2), hangs (a case that took over 2 s of
wall clock, start-up excluded), the peak resident memory a case added, and cases after which the marker that a
malicious pickle's ``__reduce__`` would create existed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzzing.harness import GUARD_SECONDS, HANG_SECONDS, Outcome, Summary, run  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "fuzz.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    summary = Summary()
    mutations: Counter[tuple[str, str]] = Counter()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="modelkin-fuzz-") as tmp:
        for i, outcome in enumerate(run(args.seed, args.cases, Path(tmp)), 1):
            summary.add(outcome)
            mutations[(outcome.case.kind, outcome.case.mutation.split("+")[0])] += 1
            if _notable(outcome):
                print(_describe(outcome), file=sys.stderr, flush=True)
            if i % 500 == 0:
                print(f"{i} cases, {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    elapsed = time.time() - started
    args.out.write_text(_table(args, summary, mutations, elapsed))
    print(args.out.read_text())


def _notable(o: Outcome) -> bool:
    return o.internal_error or o.code_executed or o.seconds > HANG_SECONDS


def _describe(o: Outcome) -> str:
    shown = [a if len(a) < 80 else a[:77] + "..." for a in o.case.args]
    return (f"{o.case.kind}/{o.case.mutation} exit {o.exit_code} {o.seconds:.2f} s ({o.cpu_seconds:.2f} s CPU): "
            f"{o.stderr[:200]!r} {shown!r}")  # fmt: skip


def _table(args: argparse.Namespace, s: Summary, mutations: Counter[tuple[str, str]], elapsed: float) -> str:
    lines = [
        "# Fuzzing the CLI with hostile input",
        "",
        "Command (one core, in-process through `modelkin.cli.app:main`):",
        "",
        "```",
        f"OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fuzz.py --cases {args.cases} --seed {args.seed}",
        "```",
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} CPUs (shared); "
        f"run took {elapsed / 60:.1f} min; load average at the end {os.getloadavg()[0]:.1f}.",
        "",
        "| cases | internal errors | hangs over 2 s (wall) | over 2 s of CPU | peak memory a case added "
        "| code executed | slowest case (wall) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {s.cases} | {len(s.internal_errors)} | {len(s.hangs)} | {len(s.cpu_hangs)} | {s.peak_bytes / 1e6:.0f} MB | "
        f"{len(s.executed)} | {s.slowest:.2f} s |",
        "",
        "Exit codes: " + ", ".join(f"{code}: {n}" for code, n in sorted(s.exit_codes.items())) + ".  "
        "Cases by family: " + ", ".join(f"{k} {n}" for k, n in sorted(s.by_kind.items())) + ".",
        "",
        "How to read it: every case must end with exit 0 (accepted), 1 (refused with one sentence) or 2 (usage",
        f"error). A hang is a case over {HANG_SECONDS:.0f} s of wall clock for `main()` alone (start-up excluded; a "
        f"guard stops a case at {GUARD_SECONDS:.0f} s); the CPU column counts cases whose own CPU time passed "
        f"{HANG_SECONDS:.0f} s, which a machine shared with other jobs (or a slow fsync) does not inflate. "
        "Memory is the peak resident set a thread sampled every 2 ms during the case, above what the process "
        "held before it (the harness process itself holds torch and the registry). Code executed counts cases "
        "after which the marker folder that a malicious pickle's "
        "`__reduce__` (or a `!!python/object` YAML tag) would create existed.",
        "",
        "## Cases by family and first mutation",
        "",
        "| family | mutation | cases |",
        "|---|---|---:|",
    ]
    lines += [f"| {kind} | {mutation} | {n} |" for (kind, mutation), n in sorted(mutations.items())]
    problems = s.internal_errors + s.hangs + [o for o in s.cpu_hangs if o not in s.hangs] + s.executed
    if problems:
        lines += ["", "## Problems", ""] + [f"- {_describe(o)}" for o in problems[:50]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
