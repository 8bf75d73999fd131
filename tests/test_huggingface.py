"""The real all-MiniLM-L6-v2, registered and imported offline; model cards in and out."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub import ModelCard

from modelkin import Registry
from modelkin.errors import HubError

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_TENSORS = 104
MINILM_PARAMETERS = 22_713_728
REPO = "sentence-transformers/all-MiniLM-L6-v2"
COMMIT = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"


def fake_hf_cache(cache: Path, repo: str, source: Path, commit: str = COMMIT) -> Path:
    """Lay ``source`` out as huggingface_hub's cache does: blobs by hash, a snapshot of symlinks, refs/main."""
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "blobs").mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    snap = root / "snapshots" / commit
    for f in sorted(p for p in source.rglob("*") if p.is_file()):
        data = f.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snap / f.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snap


def _check_minilm(v: Any) -> None:
    weights = next(f for f in v.files if f.path == "model.safetensors")
    assert weights.sha256 == MINILM_SHA256
    assert v.tensors == MINILM_TENSORS and v.parameters == MINILM_PARAMETERS
    assert v.architecture["family"] == "hf-transformers" and v.architecture["config"]["model_type"] == "bert"


def test_register_minilm_directory(registry: Registry, store: str, minilm_dir: Path, cli: Any) -> None:
    result = cli("register", minilm_dir, "--name", "minilm", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert {"ref", "name", "version", "digest", "parameters", "tensors", "bytes"} <= out.keys()
    assert out["ref"] == "minilm:1" and out["parameters"] == MINILM_PARAMETERS and out["tensors"] == MINILM_TENSORS
    v = registry.get("minilm")
    _check_minilm(v)
    assert "1_Pooling/config.json" in {f.path for f in v.files}
    assert v.card == {}  # register keeps files; only import-hf reads the card
    state = registry.load_state_dict("minilm")
    assert sum(t.numel() for t in state.values()) == MINILM_PARAMETERS


def test_import_minilm_from_offline_hf_cache(registry: Registry, minilm_dir: Path, tmp_path: Path, cli: Any) -> None:
    fake_hf_cache(Path(os.environ["HF_HUB_CACHE"]), REPO, minilm_dir)
    result = cli("import-hf", REPO, "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["ref"] == f"{REPO}:1"
    v = registry.get(REPO)
    _check_minilm(v)
    assert v.source == f"hf:{REPO}@{COMMIT}"
    assert v.card["license"] == "apache-2.0" and "s2orc" in v.card["datasets"]
    # same bytes again: the existing version
    assert json.loads(cli("import-hf", REPO, "--json").stdout)["created"] is False


def test_hf_cache_symlink_outside_repo_is_refused(registry: Registry, minilm_dir: Path, tmp_path: Path) -> None:
    snap = fake_hf_cache(Path(os.environ["HF_HUB_CACHE"]), "org/evil", minilm_dir)
    (tmp_path / "secret").write_text("private")
    (snap / "extra.txt").symlink_to(tmp_path / "secret")
    with pytest.raises(Exception, match="outside the model directory"):
        registry.import_hf("org/evil")


def test_import_unknown_repo_offline_is_a_clear_error(registry: Registry, cli: Any) -> None:
    with pytest.raises(HubError, match="not in the local Hugging Face cache"):
        registry.import_hf("org/not-cached")
    result = cli("import-hf", "org/not-cached")
    assert result.exit_code == 1 and result.stdout == "" and "HF_HUB_OFFLINE" in result.stderr
    result = cli("import-hf", "not a repo!")
    assert result.exit_code == 1 and "neither a folder nor" in result.stderr


def _child_dir(tmp_path: Path, base: str, relation: str | None) -> Path:
    """A tiny fine-tuned 'child' in HF format whose card declares its base model."""
    from safetensors.torch import save_file

    child = tmp_path / "child"
    child.mkdir(parents=True)
    save_file({"w": torch.ones(3, 3), "b": torch.zeros(3)}, str(child / "model.safetensors"))
    meta = {"base_model": base, "license": "mit", "datasets": ["digits"],
            "metrics": ["accuracy"]} | ({"base_model_relation": relation} if relation else {})  # fmt: skip
    from huggingface_hub import ModelCardData

    (child / "README.md").write_text(f"---\n{ModelCardData(**meta).to_yaml()}\n---\n\n# child\n\nA child model.\n")
    return child


def test_card_base_model_becomes_declared_lineage(registry: Registry, minilm_dir: Path, tmp_path: Path) -> None:
    registry.import_hf(str(minilm_dir), name=REPO)
    child = registry.import_hf(str(_child_dir(tmp_path, REPO, "quantized")), name="child").version
    assert child.declared_parents == (f"{REPO}:1",) and child.relation == "quantized"
    assert child.card["license"] == "mit" and child.card["metrics"] == ["accuracy"]
    orphan_dir = _child_dir(tmp_path / "o", "someone/unregistered", None)
    orphan = registry.import_hf(str(orphan_dir), name="orphan").version
    assert orphan.declared_parents == ("hf:someone/unregistered",) and orphan.relation == "finetune"


def test_export_writes_hf_folder_and_card(
    registry: Registry, store: str, minilm_dir: Path, tmp_path: Path, cli: Any
) -> None:
    registry.import_hf(str(minilm_dir), name=REPO)
    pruned_dir = tmp_path / "pruned"
    shutil.copytree(minilm_dir, pruned_dir)
    state = registry.load_state_dict(REPO)
    state["encoder.layer.0.attention.self.query.weight"][:, :100] = 0.0
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(pruned_dir / "model.safetensors"))
    registry.register(pruned_dir, name="minilm-pruned", parents=[REPO], relation="pruned")
    out = tmp_path / "export"
    result = cli("export", "minilm-pruned", out, "--json")
    assert result.exit_code == 0, result.stderr
    v = registry.get("minilm-pruned")
    for f in v.files:
        if f.path != "README.md":
            assert hashlib.sha256((out / f.path).read_bytes()).hexdigest() == f.sha256
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == REPO  # the parent's Hub id, not its registry ref
    assert card.data.base_model_relation == "finetune"  # HF has no "pruned"
    assert card.data.modelkin == {"ref": "minilm-pruned:1", "digest": v.digest, "relation": "pruned",
                                  "parents": [f"{REPO}:1"]}  # fmt: skip
    assert "all-MiniLM-L6-v2" in card.text  # the original card's body is kept
    # exporting into a non-empty folder needs --force; verify --against reads the card as the version stored it
    assert cli("export", "minilm-pruned", out).exit_code == 1
    assert cli("export", "minilm-pruned", out, "--force").exit_code == 0
    assert registry.verify("minilm-pruned", against=out).ok
    # importing the export again gives the same version, and recovers the declared lineage from the record
    again = registry.import_hf(str(out), name="reimported").version
    assert again.declared_parents == (f"{REPO}:1",) and again.relation == "pruned"
    assert again.digest == v.digest and again.files == v.files


def test_card_metadata_round_trips(registry: Registry, tmp_path: Path) -> None:
    child = registry.import_hf(str(_child_dir(tmp_path, "org/base", "adapter")), name="child").version
    registry.export(child.ref, tmp_path / "out")
    data = ModelCard.load(tmp_path / "out" / "README.md").data
    assert data.license == "mit" and data.datasets == ["digits"] and data.metrics == ["accuracy"]
    assert data.base_model == "org/base" and data.base_model_relation == "adapter"


@pytest.mark.parametrize(
    ("yaml_meta", "parents", "relation"),
    [
        ("base_model: 5\nbase_model_relation: [merge]", (), None),
        ("base_model: {a: 1}", (), None),
        ("base_model: https://example.invalid/x", (), None),
        ("base_model: [org/ok, 7]\nbase_model_relation: adapter", ("hf:org/ok",), "adapter"),
    ],
)
def test_malformed_card_metadata_is_skipped_with_a_warning(
    registry: Registry, tmp_path: Path, yaml_meta: str, parents: tuple[str, ...], relation: str | None, cli: Any
) -> None:
    from safetensors.torch import save_file

    model = tmp_path / "m"
    model.mkdir()
    save_file({"w": torch.ones(2)}, str(model / "model.safetensors"))
    (model / "README.md").write_text(f"---\n{yaml_meta}\n---\n\n# m\n")
    result = cli("import-hf", model, "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert tuple(out["declared_parents"]) == parents and out["relation"] == (
        relation or ("finetune" if parents else None)
    )
    assert out["warnings"] and all(w.startswith("ignored base_model") for w in out["warnings"])


def test_minilm_runs_through_load_module(registry: Registry, minilm_dir: Path) -> None:
    """The hf-transformers family: the registry's module gives the same embeddings as transformers' own loader."""
    transformers = pytest.importorskip("transformers")  # in the test extra, so CI runs this
    registry.register(minilm_dir, name="minilm")
    module = registry.load_module("minilm")
    reference = transformers.AutoModel.from_pretrained(str(minilm_dir)).eval()
    assert type(module) is type(reference) and not module.training
    input_ids = torch.tensor([[101, 2944, 4939, 6309, 15871, 102], [101, 1037, 2117, 6251, 102, 0]])
    attention_mask = (input_ids != 0).long()
    with torch.no_grad():
        ours = module(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        theirs = reference(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    assert ours.shape == (2, 6, 384) and torch.equal(ours, theirs)
