"""The real all-MiniLM-L6-v2 weights and children made from them the way real children are made."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from modelkin import Registry

transformers = pytest.importorskip("transformers")


@pytest.fixture
def registry() -> Iterator[Registry]:
    """SQLite only: these tests move real 90 MB models around; the backends are covered by test_lineage.py."""
    reg = Registry.init()
    yield reg
    reg.close()


def _parent(cli: Any, target: str | Path) -> dict[str, Any]:
    result = cli("lineage", "parent", target, "--json")
    assert result.exit_code == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def _save(tmp: Path, name: str, state: dict[str, torch.Tensor]) -> Path:
    path = tmp / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def _noised(state: dict[str, torch.Tensor], scale: float, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * v.std() * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
            for k, v in state.items()}  # fmt: skip


def _int8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        if v.is_floating_point() and v.dim() == 2:
            scale = v.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127
            v = (v / scale).round().clamp(-128, 127) * scale
        out[k] = v
    return out


def _pruned(state: dict[str, torch.Tensor], sparsity: float = 0.5) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        if v.is_floating_point() and v.dim() == 2:
            threshold = v.abs().flatten().kthvalue(int(v.numel() * sparsity)).values
            v = torch.where(v.abs() > threshold, v, torch.zeros_like(v))
        out[k] = v
    return out


def _classifier(minilm_dir: Path, steps: int = 3) -> dict[str, torch.Tensor]:
    """MiniLM loaded into a 3-class sequence classifier (``bert.`` prefix, new head), fine-tuned a few steps."""
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification.from_pretrained(str(minilm_dir), num_labels=3)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids = torch.randint(1000, 5000, (8, 16), generator=g)
        loss = model(input_ids=ids, labels=torch.randint(0, 3, (8,), generator=g)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_minilm_children_and_a_stranger(registry: Registry, cli: Any, minilm_dir: Path, tmp_path: Path) -> None:
    assert cli("register", minilm_dir, "--name", "minilm").exit_code == 0
    state = load_file(str(minilm_dir / "model.safetensors"))
    children = {
        "noised": (_noised(state, 0.01, 0), "finetune"),
        "int8": (_int8(state), "quantized"),
        "pruned": (_pruned(state), "pruned"),
        "classifier": (_classifier(minilm_dir), "finetune"),
    }
    for name, (weights, _) in children.items():
        assert cli("register", _save(tmp_path, name, weights), "--name", name).exit_code == 0
    config = transformers.BertConfig.from_pretrained(str(minilm_dir))
    torch.manual_seed(3)
    stranger = {k: v.detach().clone() for k, v in transformers.BertModel(config).state_dict().items()}
    assert cli("register", _save(tmp_path, "random-bert", stranger), "--name", "random-bert").exit_code == 0
    for name, (_, relation) in children.items():
        out = _parent(cli, name)
        assert (out["parent"], out["relation"]) == ("minilm:1", relation), (name, out)
    assert registry.get("classifier").tensors != registry.get("minilm").tensors  # renamed, new head, pooler kept
    out = _parent(cli, "random-bert")
    assert out["parent"] is None and out["relation"] is None
    # an unregistered path: a 30%-pruned copy handed over as a file
    loose = _parent(cli, _save(tmp_path, "loose", _pruned(state, 0.3)))
    assert (loose["parent"], loose["relation"]) == ("minilm:1", "pruned") and not registry.list("name = 'loose'")


def test_import_hf_card_declarations_are_audited(registry: Registry, cli: Any, minilm_dir: Path,
                                                 tmp_path: Path) -> None:  # fmt: skip
    assert cli("register", minilm_dir, "--name", "minilm").exit_code == 0
    config = transformers.BertConfig.from_pretrained(str(minilm_dir))
    torch.manual_seed(4)
    stranger = {k: v.detach().clone() for k, v in transformers.BertModel(config).state_dict().items()}
    assert cli("register", _save(tmp_path, "random-bert", stranger), "--name", "random-bert").exit_code == 0
    state = load_file(str(minilm_dir / "model.safetensors"))
    for folder, base in (("honest", "minilm"), ("wrong", "random-bert")):
        d = tmp_path / folder
        d.mkdir()
        save_file({k: v.contiguous() for k, v in _noised(state, 0.01, 7).items()}, str(d / "model.safetensors"))
        (d / "config.json").write_text((minilm_dir / "config.json").read_text())
        (d / "README.md").write_text(f"---\nbase_model: {base}\nlicense: apache-2.0\n---\n\n# {folder}\n")
        result = cli("import-hf", d, "--name", folder)
        assert result.exit_code == 0, result.stderr
    honest = json.loads(cli("lineage", "audit", "honest", "--json").stdout)["findings"][0]
    assert (honest["declared"], honest["status"], honest["detected"]) == (["minilm:1"], "confirmed", ["minilm:1"])
    wrong = cli("lineage", "audit", "wrong", "--strict", "--json")
    finding = json.loads(wrong.stdout)["findings"][0]
    assert wrong.exit_code == 1 and finding["status"] == "mismatch" and finding["declared"] == ["random-bert:1"]
