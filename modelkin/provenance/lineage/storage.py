"""The lineage tables: sketches (one row per version) and detected edges beside the declared ones."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine, delete, select

from modelkin.db.engine import write_session
from modelkin.db.schema import LineageEdge, LineageSketch, Model, Version
from modelkin.provenance.lineage.index import Entry
from modelkin.provenance.lineage.sketch import COARSE, ModelSketch, StaleSketch, coarse, from_bytes, to_bytes

DETECTED = "detected"


@dataclass(frozen=True)
class VersionInfo:
    id: int
    ref: str
    digest: str
    source: str | None


def versions(engine: Engine) -> dict[int, VersionInfo]:
    """Every registered version (yanked ones too: they stay for lineage), by id, in registration order."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Version.id, Model.name, Version.number, Version.digest, Version.source)
            .join(Model)
            .order_by(Version.id)
        )
        return {vid: VersionInfo(vid, f"{name}:{n}", digest, source) for vid, name, n, digest, source in rows}


def save_sketches(engine: Engine, sketches: Iterable[tuple[int, ModelSketch]]) -> None:
    """Store (or replace) the sketches of several versions in one transaction."""
    with write_session(engine) as s:
        for version_id, sketch in sketches:
            vectors = np.stack([coarse(t) for t in sketch.tensors]) if sketch.tensors else np.zeros((0, COARSE))
            row = s.get(LineageSketch, version_id)
            if row is None:
                row = LineageSketch(version_id=version_id)
                s.add(row)
            row.sketch = to_bytes(sketch)
            row.shapes = [list(t.shape) for t in sketch.tensors]
            row.vectors = vectors.astype(np.float32).tobytes()


def save_sketch(engine: Engine, version_id: int, sketch: ModelSketch) -> None:
    save_sketches(engine, [(version_id, sketch)])


def sketched_ids(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(select(LineageSketch.version_id)).scalars())


def index_entries(engine: Engine) -> list[Entry]:
    """The candidate index's part of every stored sketch (small rows; the precise sketches stay unread)."""
    with engine.connect() as conn:
        rows = conn.execute(select(LineageSketch.version_id, LineageSketch.shapes, LineageSketch.vectors))
        out = []
        for vid, shapes, vectors in rows:
            vec = np.frombuffer(vectors, dtype=np.float32).reshape(len(shapes), COARSE)
            out.append(Entry(vid, tuple(tuple(s) for s in shapes), vec))
        return out


def load_sketches(engine: Engine, ids: Iterable[int]) -> dict[int, ModelSketch | None]:
    """The stored sketches of ``ids``; None for one an older sketch format made (it must be made again)."""
    wanted = list(ids)
    out: dict[int, ModelSketch | None] = {}
    with engine.connect() as conn:
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            rows = conn.execute(
                select(LineageSketch.version_id, LineageSketch.sketch).where(LineageSketch.version_id.in_(chunk))
            )
            for vid, data in rows:
                try:
                    out[vid] = from_bytes(data)
                except StaleSketch:
                    out[vid] = None
    return out


def replace_detected(engine: Engine, edges: Mapping[int, Sequence[tuple[int, str | None, float]]], method: str) -> None:
    """Set the detected parents of each child in ``edges`` (child -> [(parent, relation, confidence)])."""
    with write_session(engine) as s:
        children = list(edges)
        for i in range(0, len(children), 500):
            chunk = children[i : i + 500]
            s.execute(delete(LineageEdge).where(LineageEdge.child_id.in_(chunk), LineageEdge.source == DETECTED))
        s.add_all(
            LineageEdge(
                child_id=child, parent_id=parent, relation=relation, source=DETECTED, score=score, method=method
            )  # fmt: skip
            for child, parents in edges.items()
            for parent, relation, score in parents
        )
