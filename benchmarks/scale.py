"""How fast everyday commands are with 100,000 versions, on SQLite and PostgreSQL; writes benchmarks/results/scale.md.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py \\
        --postgres postgresql+psycopg://modelkin:modelkin@127.0.0.1:5432/modelkin_test_main

The registry is filled in bulk through SQLAlchemy Core (10 versions per model, one file, two tags and one event
each; registering 100,000 files would measure ingest, not listing), in steps of 1,000, 10,000 and 100,000
versions. At each step every command runs as a user runs it, a fresh ``modelkin`` process whose wall clock
includes start-up (median of ``--repeat`` runs) and whose peak resident memory comes from ``wait4``.
``hf version`` (huggingface_hub's CLI, also typer) runs in the same loop as the start-up yardstick.
After each bulk insert PostgreSQL gets the ``ANALYZE`` its autovacuum would run within a minute, so the commands
are not timed against a server still gathering statistics; SQLite, which gathers none by itself, gets what
modelkin's own write transactions would have left (``modelkin.db.engine.keep_statistics``: an ANALYZE each
time the versions table doubles), since a bulk insert bypasses them.
The PostgreSQL database's ``public`` schema is dropped and recreated: give it a database of its own.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, insert, text

from modelkin.db.engine import keep_statistics, make_engine, redact_url
from modelkin.db.tables import events, files, models, tags, versions
from modelkin.registry.registry import Registry

BIN = Path(sys.executable).parent
RESULTS = Path(__file__).parent / "results" / "scale.md"
STEPS = (1_000, 10_000, 100_000)
PER_MODEL = 10
BATCHES = 1_000  # tag batch=bNNNN: each value matches 100 of 100,000 versions
CHUNK = 10_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TIME = "/usr/bin/time"  # GNU time

COMMANDS: list[tuple[str, list[str], str]] = [
    ("modelkin --version (start-up)", ["modelkin", "--version"], ""),
    ("hf version (huggingface_hub)", ["hf", "version"], ""),
    ("list --limit 20", ["modelkin", "list", "--limit", "20"], "< 0.3 s"),
    ("show model-00042:7", ["modelkin", "show", "model-00042:7"], "< 0.3 s"),
    ("list --filter \"tags.batch = 'b0042'\"", ["modelkin", "list", "--filter", "tags.batch = 'b0042'"], "< 0.5 s"),
    ("list --json (everything)", ["modelkin", "list", "--json"], "< 5 s"),
    ("log --limit 20", ["modelkin", "log", "--limit", "20"], "< 0.3 s"),
]


def populate(url: str, start: int, stop: int) -> None:
    """Versions ``start .. stop`` (and their models, files, tags and register events), inserted in bulk."""
    engine = create_engine(url)
    with engine.begin() as conn:
        for lo in range(start, stop, CHUNK):
            ids = range(lo, min(stop, lo + CHUNK))
            # steps and chunks are multiples of PER_MODEL, so each chunk starts its own models
            model_ids = range(lo // PER_MODEL, ids[-1] // PER_MODEL + 1)
            conn.execute(insert(models), [{"id": m + 1, "name": f"model-{m:05d}", "created_at": T0}
                                          for m in model_ids])  # fmt: skip
            digests = {v: hashlib.sha256(f"version {v}".encode()).hexdigest() for v in ids}
            conn.execute(insert(versions), [_version(v, digests[v]) for v in ids])
            conn.execute(insert(files), [
                {"version_id": v + 1, "path": "model.safetensors", "size": 4096 + v,
                 "sha256": hashlib.sha256(digests[v].encode()).hexdigest()} for v in ids])  # fmt: skip
            conn.execute(insert(tags), [
                {"version_id": v + 1, "key": key, "value": value}
                for v in ids for k, (key, value) in enumerate([("task", f"task-{v % 44}"),
                                                               ("batch", f"b{v % BATCHES:04d}")])])  # fmt: skip
            conn.execute(insert(events), [
                {"at": T0 + timedelta(seconds=v), "kind": "register", "version_id": v + 1,
                 "ref": _ref(v), "detail": {"digest": "sha256:" + digests[v], "source": f"/data/{_ref(v)}"}}
                for v in ids])  # fmt: skip
    engine.dispose()


def _ref(v: int) -> str:
    return f"model-{v // PER_MODEL:05d}:{v % PER_MODEL + 1}"


def _version(v: int, digest: str) -> dict[str, object]:
    return {
        "id": v + 1, "model_id": v // PER_MODEL + 1, "number": v % PER_MODEL + 1, "digest": "sha256:" + digest,
        "parameters": 1000 + (v * 7919) % 10_000_000, "tensor_count": 4, "bytes": 4096 + v,
        "architecture": {"family": "mlp", "input_dim": 64, "hidden": [32], "num_classes": 10},
        "family": "mlp", "arch_fingerprint": digest, "relation": None, "source": f"/data/{_ref(v)}", "card": {},
        "yanked": False, "yank_reason": None, "created_at": T0 + timedelta(seconds=v),
    }  # fmt: skip


def measure(argv: Sequence[str], env: dict[str, str], repeat: int) -> tuple[float, float, float]:
    """(median wall seconds, median CPU seconds, peak resident MB) of fresh processes; output to /dev/null.

    Each runs under GNU time, whose own small process forks it: a child forked from this (large) process
    would report this process's resident set as its own peak.
    """
    times, cpu, peaks = [], [], []
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        for _ in range(repeat):
            started = time.perf_counter()
            proc = subprocess.run([TIME, "-o", report.name, "-f", "%U %S %M", str(BIN / argv[0]), *argv[1:]],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
            times.append(time.perf_counter() - started)
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr}")
            user, system, kb = Path(report.name).read_text().split()[-3:]
            cpu.append(float(user) + float(system))
            peaks.append(int(kb) / 1024)
    return statistics.median(times), statistics.median(cpu), max(peaks)


def environment(home: Path, url: str | None) -> dict[str, str]:
    """The environment the commands run in: this venv's ``modelkin`` first on PATH, the registry at ``home``."""
    env = {**os.environ, "MODELKIN_HOME": str(home), "OMP_NUM_THREADS": "1", "PATH": f"{BIN}:{os.environ['PATH']}"}
    if url is not None:
        env["MODELKIN_DATABASE_URL"] = url
    return env


def init_home(home: Path, url: str | None) -> str:
    """A new empty registry at ``home`` (on ``url``, whose ``public`` schema is wiped first); its database URL."""
    if url is not None:
        reset = create_engine(url)
        with reset.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        reset.dispose()
    reg = Registry.init(home, database_url=url)
    db_url = reg.settings.database_url
    reg.close()
    return db_url


def grow(db_url: str, start: int, stop: int, *, postgresql: bool) -> None:
    """Versions ``start .. stop`` inserted, then the statistics the database would hold after real writes."""
    populate(db_url, start, stop)
    analyze = make_engine(db_url)
    with analyze.begin() as conn:
        if postgresql:
            conn.execute(text("ANALYZE"))
        else:
            keep_statistics(conn)
    analyze.dispose()


def run_backend(
    name: str, url: str | None, repeat: int, steps: Sequence[int]
) -> dict[tuple[str, int], tuple[float, float, float]]:
    with tempfile.TemporaryDirectory(prefix=f"modelkin-scale-{name}-") as tmp:
        home = Path(tmp) / "home"
        env = environment(home, url)
        db_url = init_home(home, url)
        results: dict[tuple[str, int], tuple[float, float, float]] = {}
        done = 0
        for step in steps:
            started = time.perf_counter()
            grow(db_url, done, step, postgresql=url is not None)
            print(f"{name}: {step} versions inserted in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            done = step
            for label, argv, _ in COMMANDS:
                results[(label, step)] = measure(argv, env, repeat)
                print(f"  {label}: {results[(label, step)]}", file=sys.stderr, flush=True)
    return results


def table(name: str, results: dict[tuple[str, int], tuple[float, float, float]], steps: Sequence[int]) -> list[str]:
    head = "| command | target at 100k | " + " | ".join(f"{s:,} versions" for s in steps) + " |"
    lines = [f"### {name}", "", head, "|---|---|" + "---:|" * len(steps)]
    for label, _, target in COMMANDS:
        cells = ["{:.2f} s ({:.2f} s CPU), {:.0f} MB".format(*results[(label, s)]) for s in steps]
        lines.append(f"| `{label}` | {target or 'yardstick'} | " + " | ".join(cells) + " |")
    return lines + [""]


def _options(args: argparse.Namespace) -> str:
    """The command line's options as given (the PostgreSQL password redacted), for the table's header."""
    given = [f" --postgres {redact_url(args.postgres)}"] if args.postgres else []
    given += [f" --repeat {args.repeat}"] if args.repeat != 3 else []
    given += [" --steps " + " ".join(map(str, args.steps))] if args.steps != list(STEPS) else []
    return "".join(given)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="PostgreSQL URL of a database this benchmark may wipe")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS), help="registry sizes, increasing")
    args = parser.parse_args()
    backends = [("SQLite", None)] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    out = [
        "# Everyday commands at 100,000 versions",
        "",
        "Command:",
        "",
        "```",
        "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py" + _options(args),
        "```",
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} CPUs shared with other "
        f"jobs (load average at the start: {os.getloadavg()[0]:.1f}). Each cell: median wall clock of "
        f"{args.repeat} fresh processes including start-up, their median CPU time (user + system: what the "
        "command itself cost, whatever else the machine was running), and their peak resident memory. `hf version` is "
        "huggingface_hub's own CLI, measured in the same loop as a start-up yardstick.",
        "",
    ]
    for name, url in backends:
        out += table(name, run_backend(name, url, args.repeat, args.steps), args.steps)
    args.out.write_text("\n".join(out) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
