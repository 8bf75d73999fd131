"""The CLI reference (docs/cli.md), generated from each command's ``--help``; a test keeps it current.

Regenerate with ``make docs`` (``python -m modelkin.cli.reference > docs/cli.md``).
"""

from __future__ import annotations

from typing import Any

import typer
from typer.testing import CliRunner

from modelkin.cli.app import app

WIDTH = "100"


def command_paths() -> list[list[str]]:
    """Every command, depth first in the order ``--help`` lists them: [[], ["init"], ["alias", "set"], ...]."""
    out: list[list[str]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        out.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return out


def help_text(path: list[str]) -> str:
    env = {"COLUMNS": WIDTH, "TERMINAL_WIDTH": WIDTH, "NO_COLOR": "1", "TERM": "dumb"}
    result = CliRunner().invoke(app, [*path, "--help"], env=env)
    lines = [line.rstrip() for line in result.stdout.splitlines()]
    return "\n".join(lines).strip("\n")


def render() -> str:
    parts = [
        "# modelkin CLI reference",
        "",
        "Generated from each command's `--help` by `make docs`; `tests/test_docs.py` fails when it drifts.",
    ]
    for path in command_paths():
        parts += ["", f"## `{' '.join(['modelkin', *path])}`", "", "```text", help_text(path), "```"]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(render(), end="")
