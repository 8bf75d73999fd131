"""Readable and safe output (issue 10): tables that fit the terminal, plain rows in pipes, nothing interpreted."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelkin import Registry
from modelkin.cli import output

LONG = "a-rather-long-model-name-that-tests-the-table-width"
HOSTILE = "\x1b[2J[bold]loud[/bold]\u202e"


@pytest.fixture
def reg(weights: Path, tmp_path: Path) -> Iterator[Registry]:
    from conftest import make_weights

    r = Registry.init()
    r.register(weights, name=LONG, tags={"note": HOSTILE, "task": "digits"})
    r.register(make_weights(tmp_path / "b.safetensors", seed=1), name="b", parents=[f"{LONG}:1"])
    yield r
    r.close()


def terminal(columns: int) -> dict[str, str]:
    """What rich needs to believe stdout is a terminal of this width (rich reads it when the CLI prints)."""
    return {"TTY_COMPATIBLE": "1", "COLUMNS": str(columns), "NO_COLOR": "1"}


def on_screen(text: str) -> str:
    """``text`` as a terminal shows it: without the bold/dim style codes (NO_COLOR drops colours, not those)."""
    return re.sub("\x1b\\[[0-9;]*m", "", text)


def test_piped_list_is_tab_separated_with_full_values(reg: Registry, cli: Any) -> None:
    result = cli("list")
    assert result.exit_code == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [r[0] for r in rows] == [f"{LONG}:1", "b:1"] and {len(r) for r in rows} == {8}
    v = reg.get(f"{LONG}:1")
    assert rows[0][1:5] == [str(v.parameters), str(v.bytes), v.created_at.isoformat(timespec="seconds"), v.digest]
    assert not any(c in result.stdout for c in "│─┃━…")


def test_piped_show_keeps_the_whole_digest(reg: Registry, cli: Any) -> None:
    v = reg.get("b")
    lines = dict(line.split("\t", 1) for line in cli("show", "b").stdout.splitlines())
    assert lines["digest"] == v.digest and lines["parents"] == f"{LONG}:1"
    assert lines["file"] == f"model.safetensors\t{v.files[0].size}\t{v.files[0].sha256}"


def test_json_is_unchanged_by_streaming(reg: Registry, cli: Any) -> None:
    result = cli("list", "--json")
    expected = json.dumps([v.to_json() for v in reg.list()], indent=2, ensure_ascii=False) + "\n"
    assert result.stdout == expected
    assert cli("list", "--json", "--filter", "name = 'nothing'").stdout == "[]\n"


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.choice("sifbnld" if depth < 4 else "sifbn")
    if kind == "s":
        return "".join(rng.choice('ab"\\\n\t\x00é€\u202e\U0001f600') for _ in range(rng.randrange(6)))
    if kind == "i":
        return rng.choice([0, -1, 7, 2**70, True])
    if kind == "f":
        return rng.choice([0.5, -1e300, 1e-7, 3.0])
    if kind == "b":
        return rng.random() < 0.5
    if kind == "n":
        return None
    if kind == "l":
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))] + ([()] if rng.random() < 0.2 else [])
    keys = ["k", "é", "", "\x1b", 3, None, False, 1.5]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def test_json_writer_matches_json_dumps_byte_for_byte(capsys: pytest.CaptureFixture[str]) -> None:
    """The fast writer behind every --json (and the streamed list) prints exactly what json.dumps would."""
    rng = random.Random(0)
    docs = [_random_json(rng) for _ in range(400)]
    for doc in docs:
        output.emit_json(doc)
        expected = json.dumps(doc, indent=2, ensure_ascii=False, default=str, allow_nan=False) + "\n"
        assert capsys.readouterr().out == expected
    output.emit_json_stream(iter(docs))
    assert capsys.readouterr().out == json.dumps(docs, indent=2, ensure_ascii=False, default=str) + "\n"
    with pytest.raises(ValueError):
        output.emit_json({"x": [float("nan")]})


@pytest.mark.parametrize("columns", [200, 120, 80, 60, 40])
def test_terminal_tables_fit_and_never_cut_a_ref(reg: Registry, cli: Any, columns: int) -> None:
    result = cli("list", env=terminal(columns))
    assert result.exit_code == 0, result.stderr
    lines = on_screen(result.stdout).splitlines()
    assert lines and all(len(line) <= columns for line in lines), lines
    header = lines[0].split()
    ref_width = lines[0].index(header[1]) if len(header) > 1 else columns
    ref_column = "".join(line[:ref_width].strip() for line in lines[2:])
    assert ref_column == f"{LONG}:1b:1"  # whole, or wrapped over lines, never cut
    if columns >= 60:
        assert {"ref", "params", "size", "created"} <= set(header)
    if columns <= 80:
        assert "tags" not in header  # lower-priority columns went first


def test_terminal_elides_long_values_with_an_ellipsis(reg: Registry, cli: Any) -> None:
    reg.tag("b", {"long": "x" * 300})
    wide = cli("list", env=terminal(250)).stdout
    assert "…" in wide and "x" * 300 not in wide


def test_untrusted_text_is_printed_as_typed(reg: Registry, cli: Any) -> None:
    for env in ({}, terminal(500)):
        for args in (["show", f"{LONG}:1"], ["list"], ["tag", "b", f"x={HOSTILE}"], ["log", "--limit", "3"]):
            out = cli(*args, env=env).stdout
            assert "\x1b[2J" not in out and "\u202e" not in out, args
            assert "\\x1b[2J[bold]loud[/bold]\\u202e" in out, (args, out)


def test_errors_and_warnings_escape_control_characters(cli: Any, tmp_path: Path, weights: Path) -> None:
    import shutil

    Registry.init().close()
    result = cli("register", tmp_path / "gone\x1b[31m[bold].safetensors")
    assert result.exit_code in (1, 2) and "\x1b[31m" not in result.stderr and "\\x1b[31m[bold]" in result.stderr
    folder = tmp_path / "hf"
    folder.mkdir()
    shutil.copy(weights, folder / "model.safetensors")
    (folder / "README.md").write_text('---\nbase_model: "\\e[2J[bold]x"\n---\n')  # YAML's \e is ESC
    result = cli("import-hf", folder)
    assert result.exit_code == 0 and "warning: ignored base_model" in result.stderr, result.stderr
    assert "\x1b[2J" not in result.stderr and "\\x1b[2J[bold]x" in result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://alice:hunter2secret@localhost:notaport/db",
        "postgresql+nodriverhere://alice:hunter2secret@localhost/db",
        "post gres://alice:hunter2secret@localhost/db",
        "postgresql+psycopg://alice:hunter2secret@127.0.0.1:1/db",
    ],
)
def test_database_passwords_are_redacted(cli: Any, url: str) -> None:
    result = cli("list", env={"MODELKIN_DATABASE_URL": url})
    assert result.exit_code == 1 and result.stdout == ""
    assert "hunter2secret" not in result.stderr and "Error:" in result.stderr, result.stderr


def test_clean_and_fit_columns_directly() -> None:
    assert output.clean("a\tb\nc\x7f\x9b\ud800") == "a\\x09b\\x0ac\\x7f\\x9b\\ud800"
    assert output.clean("sqlite:///x and postgresql://u:pw@h/db") == "sqlite:///x and postgresql://u:***@h/db"
    cols = [output.Column("ref", 0, whole=True), output.Column("a", 0), output.Column("b", 2), output.Column("c", 1)]
    cells = [["r" * 10, "a" * 10, "b" * 10, "c" * 10]]
    assert output.fit_columns(cols, cells, 200) == {0: 10, 1: 10, 2: 10, 3: 10}
    assert output.fit_columns(cols, cells, 40) == {0: 10, 1: 10, 3: 10}  # b (priority 2) goes first
    assert output.fit_columns(cols, cells, 26) == {0: 10, 1: 10}
    assert output.fit_columns(cols, [["r" * 50, "a", "b", "c"]], 30) == {0: 26, 1: 1}  # the REF wraps


@pytest.mark.parametrize("args", [("log",), ("log", "--json"), ("show", "nope")])
def test_a_reader_that_stops_reading_ends_the_command_quietly(args: tuple[str, ...]) -> None:
    """``modelkin log | head -1``: no "Broken pipe" error once the reader has gone, exit 1; real errors still show."""
    import os
    import subprocess
    import sys

    Registry.init().close()
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes anything
    try:
        proc = subprocess.run([sys.executable, "-m", "modelkin.cli.app", *args], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120)  # fmt: skip
    finally:
        os.close(write)
    assert proc.returncode == 1
    if args[0] == "show":
        assert proc.stderr.startswith("Error: no model named 'nope' is registered.")
    else:
        assert proc.stderr == ""
