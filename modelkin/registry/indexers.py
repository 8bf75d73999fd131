"""Work that runs when a version is registered (retrieval capture, lineage sketches), kept out of ``register``.

Each capability provides an indexer: an object with a ``name`` and ``on_registered(version)`` that does its
work and returns None, or a short reason when the version is not for it (state ``skipped``). ``INDEXERS``
maps each indexer's name to ``"module:factory"``; the factory takes the registry (a ``Host``) and is imported
only when a version is registered, so start-up never pays for a capability's imports.

The version commits first, with one ``pending`` row per indexer in the same transaction. An indexer that
raises leaves ``failed`` with its message (the registration still succeeds, with a warning); one that is
interrupted leaves ``pending``. Either way the capability's rebuild finds the version through ``versions_in``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from modelkin.db.engine import write_session
from modelkin.db.schema import IndexState, Model, Version, utcnow

if TYPE_CHECKING:
    from modelkin.registry.host import Host
    from modelkin.registry.records import ModelVersion

STATES = ("pending", "done", "skipped", "failed")

# name -> "module:factory"; factory(host) -> Indexer. Each capability adds its own line.
INDEXERS: dict[str, str] = {
    "retrieval": "modelkin.retrieval.facade:indexer",
    "lineage": "modelkin.provenance.lineage.facade:indexer",
}


class Indexer(Protocol):
    name: str

    def on_registered(self, version: ModelVersion) -> str | None: ...


def active() -> list[str]:
    """The names of the indexers that run on every registration."""
    return list(INDEXERS)


def load(name: str, host: Host) -> Indexer:
    module, _, factory = INDEXERS[name].partition(":")
    indexer: Indexer = getattr(importlib.import_module(module), factory)(host)
    return indexer


def add_pending(s: Session, version_id: int, names: Iterable[str]) -> None:
    """Inside the transaction that creates a version: mark it pending for every indexer."""
    s.add_all(IndexState(version_id=version_id, indexer=n, state="pending") for n in names)


def mark(engine: Engine, version_id: int, indexer: str, state: str, detail: str | None = None) -> None:
    """Record an indexer's outcome for one version (insert or update)."""
    if state not in STATES:
        raise ValueError(f"unknown index state {state!r}")
    with write_session(engine) as s:
        row = s.get(IndexState, (version_id, indexer))
        if row is None:
            s.add(IndexState(version_id=version_id, indexer=indexer, state=state, detail=detail))
        else:
            row.state, row.detail, row.updated_at = state, detail, utcnow()


def version_id(engine: Engine, version: ModelVersion) -> int:
    """The database id behind a version record (records carry REFs, the state table keys on ids)."""
    with engine.connect() as conn:
        found = conn.execute(
            select(Version.id).join(Model).where(Model.name == version.name, Version.number == version.version)
        ).scalar_one()
    return int(found)


def run(host: Host, version: ModelVersion, names: Sequence[str] | None = None) -> list[str]:
    """Run the indexers on a committed version; returns one warning per indexer that failed."""
    warnings: list[str] = []
    names = active() if names is None else names
    if not names:
        return warnings
    vid = version_id(host.engine, version)
    for name in names:
        try:
            reason = load(name, host).on_registered(version)
        except Exception as exc:  # a failing indexer must never undo or hide a registration
            detail = f"{type(exc).__name__}: {exc}" if not str(exc).endswith(".") else str(exc)
            mark(host.engine, vid, name, "failed", detail)
            warnings.append(f"{name} indexing of {version.ref} failed ({detail}); `modelkin index rebuild` retries")
        else:
            mark(host.engine, vid, name, "skipped" if reason else "done", reason)
    return warnings


def states(engine: Engine, indexer: str) -> dict[int, tuple[str, str | None]]:
    """version id -> (state, detail) for one indexer; versions without a row were never marked."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(IndexState.version_id, IndexState.state, IndexState.detail).where(IndexState.indexer == indexer)
        )
        return {vid: (state, detail) for vid, state, detail in rows}


def versions_in(engine: Engine, indexer: str, wanted: Iterable[str] = ("pending", "failed")) -> list[int]:
    """Ids of versions whose state for ``indexer`` is in ``wanted``, or that have no state at all (older rows)."""
    wanted = set(wanted)
    known = states(engine, indexer)
    with engine.connect() as conn:
        ids = list(conn.execute(select(Version.id).order_by(Version.id)).scalars())
    return [i for i in ids if i not in known or known[i][0] in wanted]
