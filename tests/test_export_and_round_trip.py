"""Exports never write outside their folder, and an export imports back as the same version (issue 10)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelkin import Registry


@pytest.fixture
def reg() -> Iterator[Registry]:
    """Writing files does not depend on the database: SQLite only."""
    r = Registry.init()
    yield r
    r.close()


def _snapshot(folder: Path) -> dict[str, tuple[str, bytes | str]]:
    """Every entry under ``folder`` (not followed): links as their targets, files as their bytes."""
    out: dict[str, tuple[str, bytes | str]] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_file():
            out[rel] = ("file", p.read_bytes())
        else:
            out[rel] = ("dir", "")
    return out


def test_export_replaces_a_symlinked_card_instead_of_writing_through_it(
    reg: Registry, weights: Path, tmp_path: Path, cli: Any
) -> None:
    reg.register(weights, name="m")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").symlink_to(victim)
    result = cli("export", "m", out, "--force")
    assert result.exit_code == 0, result.stderr
    assert victim.read_text() == "precious"
    assert not (out / "README.md").is_symlink() and (out / "README.md").read_text().startswith("---\n")


def test_export_refuses_a_symlinked_folder_and_leaves_everything_untouched(
    reg: Registry, minilm_dir: Path, tmp_path: Path, cli: Any
) -> None:
    reg.import_hf(str(minilm_dir), name="minilm")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "1_Pooling").symlink_to(elsewhere, target_is_directory=True)
    before = _snapshot(out)
    result = cli("export", "minilm:1", out, "--force")
    assert result.exit_code == 1 and result.stdout == "" and "symlink" in result.stderr, result.stderr
    assert _snapshot(out) == before and list(elsewhere.iterdir()) == []
    link = tmp_path / "link"
    link.symlink_to(elsewhere, target_is_directory=True)
    result = cli("export", "minilm:1", link)
    assert result.exit_code == 1 and "symlink" in result.stderr and list(elsewhere.iterdir()) == []


def test_exported_files_have_normal_permissions(reg: Registry, weights: Path, tmp_path: Path, cli: Any) -> None:
    reg.register(weights, name="m")
    old = os.umask(0o022)
    try:
        assert cli("export", "m", tmp_path / "out").exit_code == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert modes and set(modes.values()) == {0o644}, modes


def test_failed_export_leaves_the_given_folder_as_it_was(
    reg: Registry, weights: Path, tmp_path: Path, cli: Any
) -> None:
    v = reg.register(weights, name="m").version
    blob = Path(reg.store.location) / v.files[0].sha256[:2] / v.files[0].sha256[2:]
    os.chmod(blob, 0o644)
    blob.write_bytes(b"tampered")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    before = _snapshot(out)
    result = cli("export", "m", out, "--force")
    assert result.exit_code == 1 and result.stdout == ""
    assert _snapshot(out) == before


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_minilm_export_imports_back_as_the_same_manifest(
    reg: Registry, minilm_dir: Path, tmp_path: Path, cli: Any
) -> None:
    v = reg.import_hf(str(minilm_dir), name="minilm").version
    out = tmp_path / "export"
    assert cli("export", "minilm:1", out).exit_code == 0
    assert _sha(out / "README.md") != _sha(minilm_dir / "README.md")  # the card carries modelkin's block
    result = cli("import-hf", out, "--name", "back", "--json")
    assert result.exit_code == 0, result.stderr
    back = json.loads(result.stdout)
    assert back["digest"] == v.digest and back["ref"] == "back:1"
    again = json.loads(cli("import-hf", out, "--name", "minilm", "--json").stdout)
    assert again["ref"] == "minilm:1" and again["created"] is False  # the same version when the name matches
    verified = json.loads(cli("verify", "minilm:1", "--against", out, "--json").stdout)
    assert verified["ok"] is True, verified
    # a signature bundle beside the files is not a model file either
    (out / "model.sig").write_text('{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}')
    assert json.loads(cli("import-hf", out, "--name", "signed", "--json").stdout)["digest"] == v.digest
    assert json.loads(cli("verify", "minilm:1", "--against", out, "--json").stdout)["ok"] is True
    # a card edited after the export is the user's card now: a new version
    with open(out / "README.md", "a") as fh:
        fh.write("\nEdited.\n")
    assert json.loads(cli("import-hf", out, "--name", "edited", "--json").stdout)["digest"] != v.digest


def test_generated_card_and_declared_lineage_round_trip(reg: Registry, weights: Path, tmp_path: Path, cli: Any) -> None:
    from conftest import make_weights

    base = reg.register(weights, name="base").version
    child_weights = make_weights(tmp_path / "c" / "child.safetensors", seed=3)
    child = reg.register(child_weights, name="child", parents=[base.ref], relation="pruned").version
    out = tmp_path / "out"
    assert cli("export", "child", out).exit_code == 0
    card = (out / "README.md").read_text()
    assert "base_model: base" in card  # the Hub sees the lineage
    back = json.loads(cli("import-hf", out, "--name", "child-back", "--json").stdout)
    assert back["digest"] == child.digest and back["files"] == [f.to_json() for f in child.files]
    assert back["declared_parents"] == [base.ref] and back["relation"] == "pruned"
    assert json.loads(cli("verify", "child", "--against", out, "--json").stdout)["ok"] is True


def test_tampered_export_record_is_a_clear_error(reg: Registry, weights: Path, tmp_path: Path, cli: Any) -> None:
    from huggingface_hub import ModelCardData

    folder = tmp_path / "hf"
    folder.mkdir()
    shutil.copy(weights, folder / "model.safetensors")
    (folder / "README.md").write_text(f"---\n{ModelCardData(license='mit').to_yaml()}\n---\n# m\n")
    reg.import_hf(str(folder), name="m")
    out = tmp_path / "out"
    assert cli("export", "m", out).exit_code == 0
    (out / ".modelkin" / "README.md").write_text("swapped")
    result = cli("import-hf", out, "--name", "again")
    assert result.exit_code == 1 and "does not match its record" in result.stderr
    (out / ".modelkin" / "export.json").write_text("[" * 10_000 + "]" * 10_000)
    result = cli("import-hf", out, "--name", "again")
    assert result.exit_code == 1 and "nests deeper" in result.stderr and "Traceback" not in result.stderr
