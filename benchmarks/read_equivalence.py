"""Whether the read commands print byte for byte what another tree of modelkin prints, at 100,000 versions.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/read_equivalence.py --base DIR \\
        --postgres postgresql+psycopg://modelkin:modelkin@127.0.0.1:5432/modelkin_test_main

``DIR`` holds the other tree's ``modelkin`` package (for main: ``git archive main modelkin | tar -x -C DIR``).
The registries are filled as ``benchmarks/scale.py`` fills them, then given what its bulk insert lacks (yanked
versions, aliases, declared parents, tags with markup, control characters and non-ASCII text) through the CLI.
Each command of ``READS`` runs as a fresh process with this venv's Python, once importing this tree's package
and once the other's; stdout, stderr and the exit code must be the same. Speed is not compared. Exit 1 when any
command differs. The PostgreSQL database's ``public`` schema is dropped and recreated.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import environment, grow, init_home  # noqa: E402

HERE = Path(__file__).resolve().parents[1]
RUN = "import sys; sys.path.insert(0, sys.argv.pop(1)); from modelkin.cli.app import main; main()"

# written through the CLI after the bulk insert, with the code under test (both trees then read the same rows)
EXTRAS: list[list[str]] = [
    ["tag", "model-00042:7", "note=[bold]markup[/bold]", "weird=\x1b[2Jclear\u202eevil", "city=Zürich 東京"],
    ["tag", "model-00042:3", "task=task-1"],
    ["yank", "model-00042:8", "--reason", "broken \x1b[31mred"],
    ["yank", "model-00007:10", "--reason", "superseded"],
    ["alias", "set", "model-00042:5", "prod"],
    ["alias", "set", "model-00042:6", "staging"],
    ["alias", "set", "model-09999:1", "prod"],
]

READS: list[list[str]] = [
    ["list", "--limit", "20"],
    ["list", "--limit", "20", "--json"],
    ["list", "--limit", "0", "--json"],
    ["list", "--json"],
    ["list"],
    ["list", "--all", "--limit", "100"],
    ["list", "--all", "--json", "--limit", "500"],
    ["list", "--latest", "--limit", "30"],
    ["list", "--latest", "--all", "--json", "--limit", "30"],
    ["list", "--sort", "-parameters", "--limit", "50"],
    ["list", "--sort", "created", "--limit", "50", "--json"],
    ["list", "--sort", "-created", "--limit", "50"],
    ["list", "--sort", "version", "--limit", "40"],
    ["list", "--sort", "bytes", "--limit", "40", "--json"],
    ["list", "--sort", "-tensors", "--limit", "40"],
    ["list", "--sort", "nonsense"],
    ["list", "--filter", "tags.batch = 'b0042'"],
    ["list", "--filter", "tags.batch = 'b0042'", "--json"],
    ["list", "--filter", "tags.batch = 'b0042'", "--all"],
    ["list", "--filter", "tags.task = 'task-1' AND parameters > 5000000", "--limit", "25"],
    ["list", "--filter", "tags.task IN ('task-3', 'task-4') OR name = 'model-00042'", "--limit", "60"],
    ["list", "--filter", "name LIKE 'model-0004%'", "--limit", "30", "--json"],
    ["list", "--filter", "name ILIKE 'MODEL-0004%'", "--limit", "30"],
    ["list", "--filter", "digest LIKE 'sha256:00%'"],
    ["list", "--filter", "tags.note LIKE '%markup%'", "--json"],
    ["list", "--filter", "tags.city = 'Zürich 東京'"],
    ["list", "--filter", "yanked == true", "--all"],
    ["list", "--filter", "parameters >= 9999000", "--sort", "-parameters"],
    ["list", "--filter", "version == 10", "--limit", "15", "--sort", "-created"],
    ["list", "--filter", "family == 'mlp' AND tags.batch != 'b0001'", "--limit", "10"],
    ["list", "--filter", "license == 'mit'"],
    ["list", "--filter", "tags.batch = 'b0042'", "--latest"],
    ["list", "--filter", "parameters > 9998999.5 OR version IN (3, 4.0)", "--limit", "30", "--json"],
    ["list", "--filter", "bytes < 0 OR tensors <= 1"],
    ["list", "--filter", "source != 'nowhere' AND relation IN ('finetune', 'distill')", "--limit", "20"],
    ["list", "--filter", r"tags.note LIKE '\_%' OR tags.weird LIKE '%evil'", "--all"],
    ["list", "--filter", "tags.batch > 'b0998' OR (tags.task = 'task-2' AND name LIKE 'model-0001_')", "--limit", "40"],
    ["list", "--filter", "yanked = false AND input_space = 'nope'", "--limit", "5"],
    ["list", "--filter", "arch_fingerprint LIKE '0%' AND name LIKE 'model-000%'", "--sort", "-bytes", "--limit", "25"],
    ["list", "--filter", "version = 3000000000"],
    ["list", "--filter", "name = 'x''; DROP TABLE versions; --'"],
    ["list", "--filter", "nonsense ~ 3"],
    ["show", "model-00042:7"],
    ["show", "model-00042:7", "--json"],
    ["show", "model-00042"],
    ["show", "model-00042@prod", "--json"],
    ["show", "model-00042:8"],
    ["show", "model-00007", "--json"],
    ["show", "model-99999:1"],
    ["show", "model-0042:1"],
    ["show", "model-00042:11"],
    ["show", "model-00042:nope"],
    ["show", "bad ref!"],
    ["log", "--limit", "20"],
    ["log", "--limit", "20", "--json"],
    ["log", "model-00042:7"],
    ["log", "model-00042:8", "--json"],
    ["log", "model-00042:7", "--limit", "1"],
    ["log", "--limit", "0"],
    ["log", "--json"],
    ["log"],
]


def digest_ref(env: dict[str, str]) -> list[str]:
    """``show`` by a digest prefix, which differs per run of the bulk insert only in which digests exist."""
    out = subprocess.run([sys.executable, "-c", RUN, str(HERE), "show", "model-00042:4", "--json"], env=env,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    digest = out.split('"digest": "sha256:')[1][:12]
    return ["show", f"sha256:{digest}"]


def compare(name: str, url: str | None, base: Path, versions: int, home: Path) -> int:
    """The number of read commands whose output differs between this tree and ``base``."""
    env = environment(home, url)
    env.pop("COLUMNS", None)
    db_url = init_home(home, url)
    grow(db_url, 0, versions, postgresql=url is not None)
    for argv in EXTRAS:
        subprocess.run([sys.executable, "-c", RUN, str(HERE), *argv], env=env, check=True, capture_output=True)
    differ = 0
    for argv in [*READS, digest_ref(env)]:
        ours, theirs = (subprocess.run([sys.executable, "-c", RUN, str(tree), *argv], env=env, capture_output=True)
                        for tree in (HERE, base))  # fmt: skip
        same = (ours.returncode, ours.stdout, ours.stderr) == (theirs.returncode, theirs.stdout, theirs.stderr)
        differ += not same
        print(f"{name}: {'same' if same else 'DIFFERENT'} (exit {ours.returncode}, {len(ours.stdout):,} bytes): "
              f"modelkin {' '.join(argv)!r}", flush=True)  # fmt: skip
    return differ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="folder holding the other tree's modelkin package")
    parser.add_argument("--postgres", help="PostgreSQL URL of a database this check may wipe")
    parser.add_argument("--versions", type=int, default=100_000)
    args = parser.parse_args()
    if not (args.base / "modelkin" / "__init__.py").exists():
        raise SystemExit(f"{args.base} holds no modelkin package.")
    backends = [("SQLite", None)] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    differ = 0
    for name, url in backends:
        with tempfile.TemporaryDirectory(prefix=f"modelkin-reads-{name}-") as tmp:
            differ += compare(name, url, args.base, args.versions, Path(tmp) / "home")
    total = len(backends) * (len(READS) + 1)
    print(f"{total - differ} of {total} read commands print the same bytes, exit code and errors.")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
