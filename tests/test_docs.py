"""The documentation cannot drift from the code: CLI reference, README coverage, schema head, doctests."""

from __future__ import annotations

import doctest
from pathlib import Path

import modelkin.refs
from modelkin.cli.reference import command_paths, render
from modelkin.db import migrate

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current() -> None:
    assert (ROOT / "docs" / "cli.md").read_text() == render(), "run `make docs` and commit docs/cli.md"


def test_readme_shows_every_command_with_an_example() -> None:
    readme = (ROOT / "README.md").read_text()
    for path in command_paths():
        if path and not (len(path) == 1 and any(p[:1] == path and len(p) > 1 for p in command_paths())):
            assert f"modelkin {' '.join(path)} " in readme or f"modelkin {' '.join(path)}\n" in readme, path


def test_schema_head_names_the_newest_migration() -> None:
    assert migrate.script_head() == migrate.SCHEMA_HEAD


def test_ref_grammar_doctests() -> None:
    assert doctest.testmod(modelkin.refs).failed == 0
