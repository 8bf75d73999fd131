"""The registration-time indexer hook: the version commits first, the indexer's outcome is recorded beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modelkin import Registry
from modelkin.registry import indexers
from modelkin.registry.host import Host
from modelkin.registry.records import ModelVersion
from tests.conftest import make_weights

SEEN: list[tuple[str, int]] = []


class _Counting:
    """Reads every tensor through the host, as a real indexer would, and fails or skips on request."""

    name = "probe"

    def __init__(self, host: Host, behaviour: str) -> None:
        self.host, self.behaviour = host, behaviour

    def on_registered(self, version: ModelVersion) -> str | None:
        if self.behaviour == "raise":
            raise RuntimeError("probe pool unreadable")
        if self.behaviour == "interrupt":
            raise KeyboardInterrupt
        SEEN.append((version.ref, sum(t.numel() for _, t in self.host.iter_tensors(version.ref))))
        return "not executable" if self.behaviour == "skip" else None


def ok_indexer(host: Host) -> _Counting:
    return _Counting(host, "ok")


def bad_indexer(host: Host) -> _Counting:
    return _Counting(host, "raise")


def skip_indexer(host: Host) -> _Counting:
    return _Counting(host, "skip")


def interrupting_indexer(host: Host) -> _Counting:
    return _Counting(host, "interrupt")


def _use(monkeypatch: pytest.MonkeyPatch, **factories: str) -> None:
    monkeypatch.setattr(indexers, "INDEXERS", {k: f"{__name__}:{v}" for k, v in factories.items()})


def _state(reg: Registry, ref: str, name: str) -> tuple[str, str | None]:
    vid = indexers.version_id(reg.engine, reg.get(ref))
    return indexers.states(reg.engine, name)[vid]


def test_indexers_run_once_per_new_version(registry: Registry, weights: Path, monkeypatch: Any) -> None:
    _use(monkeypatch, good="ok_indexer", shy="skip_indexer")
    SEEN.clear()
    registration = registry.register(weights, name="a")
    assert registration.warnings == ()
    assert SEEN == [("a:1", 16 * 8 + 16 + 4 * 16 + 4)] * 2  # both indexers read the stored tensors
    assert _state(registry, "a:1", "good") == ("done", None)
    assert _state(registry, "a:1", "shy") == ("skipped", "not executable")
    registry.register(weights, name="a")  # the same bytes again: no new version, no second indexing
    assert len(SEEN) == 2
    assert indexers.versions_in(registry.engine, "good") == []


def test_a_failing_indexer_never_loses_the_version(registry: Registry, weights: Path, monkeypatch: Any) -> None:
    _use(monkeypatch, bad="bad_indexer")
    registration = registry.register(weights, name="a")
    assert registration.created and registry.get("a:1").digest == registration.version.digest
    assert len(registration.warnings) == 1 and "probe pool unreadable" in registration.warnings[0]
    assert _state(registry, "a:1", "bad") == ("failed", "RuntimeError: probe pool unreadable")
    assert indexers.versions_in(registry.engine, "bad") == [indexers.version_id(registry.engine, registry.get("a:1"))]


def test_an_interrupted_indexer_leaves_the_version_pending(
    registry: Registry, tmp_path: Path, monkeypatch: Any
) -> None:
    _use(monkeypatch, slow="interrupting_indexer")
    with pytest.raises(KeyboardInterrupt):
        registry.register(make_weights(tmp_path / "b.safetensors", seed=3), name="b")
    assert _state(registry, "b:1", "slow") == ("pending", None)  # committed, and marked for a rebuild
    indexers.mark(registry.engine, indexers.version_id(registry.engine, registry.get("b:1")), "slow", "done")
    assert indexers.versions_in(registry.engine, "slow") == []


def test_cli_register_reports_a_failed_indexer_as_a_warning(
    cli: Any, weights: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    _use(monkeypatch, bad="bad_indexer")
    assert cli("init").exit_code == 0
    result = cli("register", weights, "--name", "a", "--json")
    assert result.exit_code == 0, result.stderr
    assert "bad indexing of a:1 failed" in json.loads(result.stdout)["warnings"][0]
    result = cli("register", make_weights(tmp_path / "b.safetensors", seed=5), "--name", "b")
    assert result.exit_code == 0 and "warning: bad indexing of b:1 failed" in result.stderr
