"""``register-zoo``: a whole zoo in one command, blind or declared, and the architecture round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from modelkin import Registry
from modelkin.registry.architectures import build_module
from modelkin.zoo.registration import register_zoo, registration_order


def _truth(zoo: Path) -> dict[str, Any]:
    return dict(json.loads((zoo / "ground_truth.json").read_text()))


def test_blind_shuffled_registration(registry: Registry, tiny_zoo: Path, cli: Any) -> None:
    result = cli("register-zoo", tiny_zoo, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    models = _truth(tiny_zoo)["models"]
    assert summary["registered"] == summary["created"] == len(models) and summary["declared_edges"] == 0
    versions = registry.list()
    assert {v.name for v in versions} == set(models)
    assert all(v.declared_parents == () and v.relation is None for v in versions)  # nothing leaks the answer
    assert all(v.architecture == models[v.name]["architecture"] for v in versions)
    # shuffled: some child is registered before one of its parents
    order = [e.ref.split(":")[0] for e in registry.log() if e.kind == "register"]
    position = {name: i for i, name in enumerate(order)}
    assert any(position[p] > position[n] for n, m in models.items() for p in m["parents"])
    again = json.loads(cli("register-zoo", tiny_zoo, "--json").stdout)
    assert again["registered"] == len(models) and again["created"] == 0  # same bytes: nothing new


@pytest.mark.parametrize("order", ["shuffled", "topological"])
def test_declared_parents_match_ground_truth(registry: Registry, tiny_zoo: Path, cli: Any, order: str) -> None:
    result = cli("register-zoo", tiny_zoo, "--declare-parents", "--order", order, "--seed", "3", "--json")
    assert result.exit_code == 0, result.stderr
    truth = _truth(tiny_zoo)
    assert json.loads(result.stdout)["declared_edges"] == len(truth["edges"])
    events = len(registry.log())
    again = json.loads(cli("register-zoo", tiny_zoo, "--declare-parents", "--json").stdout)
    assert again["declared_edges"] == 0 and again["created"] == 0 and len(registry.log()) == events  # idempotent
    for v in registry.list():
        expected = truth["models"][v.name]
        assert v.declared_parents == tuple(f"{p}:1" for p in expected["parents"]), v.name
        assert v.relation == expected["relation"]


def test_orders_are_reproducible_and_topological_puts_parents_first(tiny_zoo: Path) -> None:
    models = _truth(tiny_zoo)["models"]
    assert registration_order(models, "shuffled", 1) == registration_order(models, "shuffled", 1)
    assert registration_order(models, "shuffled", 1) != registration_order(models, "shuffled", 2)
    topo = registration_order(models, "topological", 0)
    assert all(topo.index(p) < topo.index(n) for n, m in models.items() for p in m["parents"])


def test_architecture_round_trip(registry: Registry, tiny_zoo: Path) -> None:
    """register -> load_module gives the same outputs as the zoo's own weights in a freshly built module."""
    registry_summary = register_zoo(registry, tiny_zoo)
    probes = torch.from_numpy(np.load(tiny_zoo / "probes" / "digits-64.npz")["x"][:64]).float()
    families = set()
    for row in registry_summary["models"]:
        module = registry.load_module(row["ref"])
        spec = registry.get(row["ref"]).architecture
        reference = build_module(spec)
        reference.load_state_dict(load_file(str(tiny_zoo / "models" / f"{row['name']}.safetensors")))
        with torch.no_grad():
            assert torch.equal(module(probes), reference.eval()(probes)), row["name"]
        families.add(spec["family"])
    assert families >= {"mlp", "cnn"}


def test_register_zoo_bad_input(registry: Registry, tmp_path: Path, tiny_zoo: Path, cli: Any) -> None:
    result = cli("register-zoo", tmp_path)
    assert result.exit_code == 1 and "not a modelkin zoo" in result.stderr and result.stdout == ""
    broken = tmp_path / "broken"
    (broken / "models").mkdir(parents=True)
    (broken / "ground_truth.json").write_text((tiny_zoo / "ground_truth.json").read_text())
    result = cli("register-zoo", broken)
    assert result.exit_code == 1 and "lacks" in result.stderr
    (broken / "ground_truth.json").write_text("{not json")
    assert "not valid JSON" in cli("register-zoo", broken).stderr
    result = cli("register-zoo", tiny_zoo, "--order", "alphabetical")
    assert result.exit_code == 2 and "alphabetical" in result.stderr
    assert registry.list() == []
