"""Driving every command the way a user does, checking the JSON contract and the exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelkin.db import migrate
from tests.conftest import make_weights

VERSION_KEYS = {"ref", "name", "version", "digest", "parameters", "tensors", "bytes", "files", "tags", "aliases",
                "declared_parents", "relation", "architecture"}  # fmt: skip
MLP = {"family": "mlp", "in_features": 8, "hidden": [16], "num_classes": 4, "input_space": "digits-64"}


def ok(result: Any) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.lstrip().startswith(("{", "[")) else result.stdout


@pytest.fixture
def home(cli: Any, backend: str) -> None:
    ok(cli("init"))


def test_uninitialised_registry_says_how_to_fix(backend: str, cli: Any) -> None:
    result = cli("list")
    assert result.exit_code == 1 and result.stdout == ""
    assert "no registry" in result.stderr and "modelkin init" in result.stderr


def test_full_walkthrough(home: None, cli: Any, tmp_path: Path) -> None:
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(MLP))
    base = make_weights(tmp_path / "base.safetensors", seed=1)
    child = make_weights(tmp_path / "child.safetensors", seed=2)

    reg = ok(cli("register", base, "--name", "digits", "--tag", "task=digits", "--arch", arch, "--json"))
    assert VERSION_KEYS <= reg.keys() and reg["ref"] == "digits:1" and reg["created"] is True
    assert reg["architecture"] == MLP and reg["digest"].startswith("sha256:") and len(reg["digest"]) == 71
    reg2 = ok(cli("register", child, "--name", "digits-ft", "--parent", "digits:1", "--relation", "finetune",
                  "--parent", "hf:org/other", "--json"))  # fmt: skip
    assert reg2["declared_parents"] == ["digits:1", "hf:org/other"] and reg2["relation"] == "finetune"
    assert "registered digits-ft:1" not in ok(cli("register", child, "--name", "digits-ft"))  # already there
    assert "already registered as digits-ft:1" in ok(cli("register", child, "--name", "digits-ft"))

    listed = ok(cli("list", "--json"))
    assert [v["ref"] for v in listed] == ["digits:1", "digits-ft:1"] and all(VERSION_KEYS <= v.keys() for v in listed)
    assert [v["ref"] for v in ok(cli("list", "--filter", "tags.task = 'digits'", "--json"))] == ["digits:1"]
    assert [v["ref"] for v in ok(cli("list", "--filter", "family = 'mlp'", "--json"))] == ["digits:1"]
    assert [v["ref"] for v in ok(cli("list", "--sort", "-name", "--limit", "1", "--json"))] == ["digits-ft:1"]
    table = ok(cli("list"))
    assert "digits:1" in table and "digits-ft:1" in table

    shown = ok(cli("show", "digits-ft", "--json"))
    assert VERSION_KEYS <= shown.keys()
    assert shown["files"] == [{"path": "model.safetensors", "sha256": shown["files"][0]["sha256"],
                               "size": child.stat().st_size}]  # fmt: skip
    assert "digits-ft:1" in ok(cli("show", f"sha256:{shown['digest'][7:19]}"))

    assert ok(cli("alias", "set", "digits:1", "prod", "--json")) == {"alias": "digits@prod", "ref": "digits:1",
                                                                      "previous": None}  # fmt: skip
    assert ok(cli("show", "digits@prod", "--json"))["aliases"] == ["prod"]
    assert ok(cli("alias", "remove", "digits@prod", "--json"))["ref"] == "digits:1"
    assert cli("alias", "remove", "digits", "--json").exit_code == 2

    assert ok(cli("tag", "digits", "acc=0.93", "split=test", "--json"))["tags"] == {"acc": "0.93", "split": "test",
                                                                                     "task": "digits"}  # fmt: skip
    assert ok(cli("tag", "digits", "--remove", "split", "--json"))["tags"] == {"acc": "0.93", "task": "digits"}
    assert cli("tag", "digits", "novalue").exit_code == 2
    assert cli("tag", "digits").exit_code == 2

    d = ok(cli("diff", "digits", "digits-ft", "--json"))
    assert d["a"] == "digits:1" and d["summary"] == {"changed": 3, "same": 1}  # both heads' biases are zeros
    assert {t["status"] for t in d["tensors"]} == {"changed", "same"}
    assert "changed" in ok(cli("diff", "digits", "digits-ft"))

    assert ok(cli("verify", "digits", "--json")) == {"ok": True, "ref": "digits:1", "checked": 2, "problems": []}
    assert ok(cli("verify", "digits", "--against", base, "--json"))["ok"] is True
    against_other = cli("verify", "digits", "--against", child, "--json")
    assert against_other.exit_code == 1
    assert json.loads(against_other.stdout)["problems"] == [{"path": "model.safetensors", "kind": "changed"}]

    exported = ok(cli("export", "digits-ft", tmp_path / "out", "--json"))
    assert exported["ref"] == "digits-ft:1" and (tmp_path / "out" / "model.safetensors").exists()
    assert (tmp_path / "out" / "README.md").exists()

    assert ok(cli("yank", "digits-ft", "--reason", "leaked test set", "--json"))["yanked"] is True
    assert cli("show", "digits-ft").exit_code == 1
    assert ok(cli("show", "digits-ft:1", "--json"))["yanked"] is True
    assert [v["ref"] for v in ok(cli("list", "--json"))] == ["digits:1"]
    assert len(ok(cli("list", "--all", "--json"))) == 2
    ok(cli("yank", "digits-ft:1", "--undo"))

    events = ok(cli("log", "--json"))
    assert [e["kind"] for e in events] == ["db-upgrade", "register", "register", "alias", "unalias", "tag", "tag",
                                           "yank", "unyank"]  # fmt: skip
    assert [e["kind"] for e in ok(cli("log", "digits-ft:1", "--limit", "1", "--json"))] == ["unyank"]
    assert "register" in ok(cli("log"))

    assert ok(cli("gc", "--grace", "0", "--json")) == {
        "blobs_removed": 0, "bytes_freed": 0, "kept_recent": 0, "dry_run": False, "leftovers_removed": 0,
        "leftover_bytes": 0, "temporary_removed": 0, "staging_removed": 0, "multipart_aborted": 0,
    }  # fmt: skip
    head = migrate.SCHEMA_HEAD
    assert ok(cli("db", "upgrade", "--json")) == {"before": head, "after": head}
    assert head in ok(cli("db", "current"))


def test_json_errors_print_nothing_on_stdout(home: None, cli: Any, tmp_path: Path) -> None:
    for args in (["show", "nosuch", "--json"], ["diff", "a", "b", "--json"], ["export", "x", tmp_path, "--json"],
                 ["list", "--filter", "bogus = 1", "--json"], ["list", "--sort", "colour", "--json"]):  # fmt: skip
        result = cli(*args)
        assert result.exit_code in (1, 2) and result.stdout == "", args
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") <= 2


def test_bad_arch_files(home: None, cli: Any, tmp_path: Path, weights: Path) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{nope")
    result = cli("register", weights, "--arch", bad_json)
    assert result.exit_code == 1 and "not valid JSON" in result.stderr
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe{}")
    result = cli("register", weights, "--arch", binary)
    assert result.exit_code == 1 and "is not UTF-8 text" in result.stderr
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"family": "transformer-xxl"}))
    result = cli("register", weights, "--arch", unknown)
    assert result.exit_code == 1 and "transformer-xxl" in result.stderr and result.stdout == ""
    assert cli("list", "--json").stdout.strip() == "[]"


def test_usage_errors_exit_2(home: None, cli: Any) -> None:
    assert cli("register").exit_code == 2
    assert cli("nosuch-command").exit_code == 2
    assert cli("list", "--limit", "-3").exit_code == 2


def test_debug_variable_shows_the_exception(home: None, cli: Any) -> None:
    result = cli("show", "nosuch", env={"MODELKIN_DEBUG": "1"})
    assert result.exit_code != 0 and type(result.exception).__name__ == "ModelNotFound"


def test_console_script_runs_as_a_subprocess(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "modelkin", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("modelkin ")
    result = subprocess.run([sys.executable, "-m", "modelkin", "show", "x"], capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "modelkin init" in result.stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("notaurl", "cannot use database URL"),
        ("mysql://user@localhost/db", "cannot use database URL"),  # driver not installed
        ("postgresql+psycopg://nobody:x@127.0.0.1:1/none", "the registry database failed"),  # nothing listens
    ],
)
def test_unusable_database_urls_are_one_clear_error(cli: Any, url: str, message: str) -> None:
    for command in (["init"], ["list", "--json"]):
        result = cli(*command, env={"MODELKIN_DATABASE_URL": url})
        assert result.exit_code == 1 and result.stdout == "", result.stderr
        assert result.stderr.startswith(f"Error: {message}") and "Traceback" not in result.stderr
