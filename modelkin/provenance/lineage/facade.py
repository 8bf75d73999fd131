"""``registry.lineage``: wires the pure lineage algorithms to the registry's tables and weights.

Registration sketches each new version (one streamed pass over its weights) and stores its detected parent;
``parent`` answers for a REF or an unregistered PATH against every registered model; ``tree`` recovers the whole
forest and stores its edges (source = detected) beside the declared ones; ``audit`` holds declarations against
the weights.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterator, Sequence
from contextlib import ExitStack
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, cast

from sqlalchemy import func, select

from modelkin.db.schema import LineageSketch
from modelkin.errors import InvalidModelFile
from modelkin.provenance.lineage import storage
from modelkin.provenance.lineage.index import CandidateIndex
from modelkin.provenance.lineage.reports import (
    AncestorsReport,
    AuditReport,
    CandidateScore,
    EdgeRecord,
    Finding,
    ParentReport,
    TreeReport,
)
from modelkin.provenance.lineage.sketch import ModelSketch, sketch_model

if TYPE_CHECKING:
    import numpy as np

    from modelkin.provenance.lineage.calibration import ParentModel
    from modelkin.provenance.lineage.decide import Verdict
    from modelkin.provenance.lineage.tree import Forest
    from modelkin.registry.host import Host
    from modelkin.registry.records import ModelVersion

METHOD = "weights"
TREE_METHOD = "weights-tree"
SEARCH = 24  # candidates that get the precise comparison
TREE_SEARCH = 12  # per model when recovering a whole tree (each node's parent is among its nearest)
MERGE_POOL = 64  # nearest models the two-parent fit may draw a merge's second parent from


class Lineage:
    """Parent detection, ancestry and audit over one registry."""

    def __init__(self, host: Host, model: ParentModel | None = None) -> None:
        self.host = host
        self._model = model
        self._index: tuple[tuple[int, int], CandidateIndex] | None = None
        self._sketches: dict[int, ModelSketch] = {}

    @property
    def model(self) -> ParentModel:
        """The fitted parent model (loaded on first use: ``show`` needs none of the numerics)."""
        if self._model is None:
            from modelkin.provenance.lineage.calibration import ParentModel

            self._model = ParentModel.load()
        return self._model

    # -- sketches --------------------------------------------------------------------------------------------

    def index_version(self, version: ModelVersion, just_written: bool = False) -> str | None:
        """Sketch a registered version and store it; a reason string when there is nothing to sketch.

        ``just_written``: registration hashed these blobs a moment ago, so they are not hashed again here.
        """
        sketch = self._sketch_version(version, just_written)
        vid = self._ids_by_ref()[version.ref]
        storage.save_sketch(self.host.engine, vid, sketch)  # an empty sketch too: it is not read again
        self._sketches[vid] = sketch
        if not sketch.tensors:
            why = "NaN or infinite values" if sketch.skipped else "no floating-point tensors"
            return f"nothing to compare: {why}"
        return None

    def _sketch_version(self, version: ModelVersion, just_written: bool) -> ModelSketch:
        from modelkin.provenance.lineage.weights import mapped_tensors

        store = self.host.store
        digests = {t["name"]: t["sha256"] for t in self.host.manifest(version.ref)["tensors"]}
        with ExitStack() as stack:
            tensors = []
            for f in version.files:
                if f.path.endswith(".safetensors"):
                    path = stack.enter_context((store.written_path if just_written else store.local_path)(f.sha256))
                    tensors.append(mapped_tensors(path, f.path, digests))
            return sketch_model(((name, array) for name, array, _ in chain(*tensors)), digests)

    def _ids_by_ref(self) -> dict[str, int]:
        return {v.ref: v.id for v in storage.versions(self.host.engine).values()}

    def _catch_up(self) -> None:
        """Sketch versions registered before lineage existed, or whose indexing failed or was interrupted."""
        have = storage.sketched_ids(self.host.engine)
        for vid, info in storage.versions(self.host.engine).items():
            if vid not in have:
                self.index_version(self.host.get(info.ref))

    def _candidate_index(self) -> CandidateIndex:
        engine = self.host.engine
        with engine.connect() as conn:
            count, top = conn.execute(select(func.count(), func.max(LineageSketch.version_id))).one()
        key = (int(count), int(top or 0))
        if self._index is None or self._index[0] != key:
            self._index = (key, CandidateIndex(storage.index_entries(engine)))
        return self._index[1]

    def _load(self, ids: Sequence[int]) -> dict[int, ModelSketch]:
        missing = [i for i in ids if i not in self._sketches]
        loaded = storage.load_sketches(self.host.engine, missing)
        stale = [i for i, sketch in loaded.items() if sketch is None]
        if stale:  # made by an older sketch format: sketch those versions again (their index rows change too)
            refs = {v.id: v.ref for v in storage.versions(self.host.engine).values()}
            for i in stale:
                self.index_version(self.host.get(refs[i]))
            self._index = None
        self._sketches.update((i, sketch) for i, sketch in loaded.items() if sketch is not None)
        return {i: self._sketches[i] for i in ids if i in self._sketches}

    def _verdict(
        self, sketch: ModelSketch, exclude: int | None, index: CandidateIndex | None = None, search: int = SEARCH
    ) -> Verdict:
        from modelkin.provenance.lineage.decide import decide

        index = index or self._candidate_index()
        keys, beyond = index.shortlist(sketch, search, MERGE_POOL, exclude={exclude} if exclude is not None else set())
        ids = [_id(key) for key in chain(keys, beyond)]
        sketches = self._load(ids)
        # version ids grow with registration: the order decide() may use as a tie-break between near-copies
        order: dict[Hashable, int] = {i: i for i in ids}
        near = [i for i in ids[: len(keys)] if i in sketches]
        far = [i for i in ids[len(keys) :] if i in sketches]
        return decide(sketch, [(i, sketches[i]) for i in near], self.model, order, exclude,
                      pool=[(i, sketches[i]) for i in far])  # fmt: skip

    # -- queries ---------------------------------------------------------------------------------------------

    def parent(self, target: str | os.PathLike[str], k: int = 3) -> ParentReport:
        """The parent of a registered REF or of an unregistered PATH (nothing is stored for a PATH)."""
        self._catch_up()
        refs = {v.id: v.ref for v in storage.versions(self.host.engine).values()}
        path = _as_path(target)
        if path is not None:
            sketch, vid, query = sketch_path(path), None, str(path)
        else:
            version = self.host.get(str(target))
            vid = self._ids_by_ref()[version.ref]
            loaded = self._load([vid])
            if vid not in loaded or not loaded[vid].tensors:
                raise InvalidModelFile(f"{version.ref} has no finite floating-point weights to compare.")
            sketch, query = loaded[vid], version.ref
        verdict = self._verdict(sketch, vid)
        return _report(query, verdict, refs, k)

    def detect_and_store(self, version: ModelVersion) -> None:
        """At registration: the new version's detected parent(s), stored as detected edges."""
        vid = self._ids_by_ref()[version.ref]
        sketch = self._load([vid]).get(vid)
        if sketch is None or not sketch.tensors:
            return
        verdict = self._verdict(sketch, vid)
        storage.replace_detected(self.host.engine, {vid: _edges_of(verdict)}, METHOD)

    def forest(self, filter: str | None = None) -> tuple[Forest, dict[int, str], dict[Hashable, Verdict]]:
        """The recovered forest over the versions ``filter`` selects (all, yanked ones included, by default)."""
        from modelkin.provenance.lineage.tree import recover_forest

        self._catch_up()
        refs = {v.id: v.ref for v in storage.versions(self.host.engine).values()}
        ids = sorted(storage.sketched_ids(self.host.engine))
        if filter:
            wanted = {v.ref for v in self.host.list(filter, include_yanked=True)}
            ids = [i for i in ids if refs[i] in wanted]
        chosen = set(ids)
        entries = [e for e in storage.index_entries(self.host.engine) if e.key in chosen]
        index = CandidateIndex(entries) if filter else self._candidate_index()
        sketches = self._load(ids)
        verdicts: dict[Hashable, Verdict] = {i: self._verdict(sketches[i], i, index, TREE_SEARCH) for i in ids}
        return recover_forest(ids, verdicts), refs, verdicts

    def tree(self, filter: str | None = None) -> TreeReport:
        """Recover the forest, store its edges as detected lineage, and report it."""
        forest, refs, _ = self.forest(filter)
        stored: dict[int, list[tuple[int, str | None, float]]] = {_id(v): [] for v in _nodes(forest)}
        for e in forest.edges:
            stored[_id(e.child)].append((_id(e.parent), e.relation, e.confidence))
        storage.replace_detected(self.host.engine, stored, TREE_METHOD)
        edges = tuple(
            EdgeRecord(refs[_id(e.parent)], refs[_id(e.child)], e.relation, e.confidence) for e in forest.edges
        )
        return TreeReport(edges, tuple(refs[_id(r)] for r in forest.roots))

    def ancestors(self, ref: str) -> AncestorsReport:
        from modelkin.provenance.lineage.tree import ancestors

        version = self.host.get(ref)
        forest, refs, _ = self.forest()
        vid = self._ids_by_ref()[version.ref]
        return AncestorsReport(version.ref, tuple((refs[_id(a)], g) for a, g in ancestors(forest, vid)))

    def audit(self, ref: str | None = None) -> AuditReport:
        """Each version's declared parents against its detected ones (one version if ``ref`` is given)."""
        from modelkin.provenance.lineage.audit import judge

        self._catch_up()
        infos = storage.versions(self.host.engine)
        by_ref = {v.ref: v.id for v in infos.values()}
        versions = [self.host.get(ref)] if ref is not None else self.host.list(include_yanked=True, sort="created")
        findings = []
        for v in versions:
            vid = by_ref[v.ref]
            sketch = self._load([vid]).get(vid)
            verdict = self._verdict(sketch, vid) if sketch is not None and sketch.tensors else None
            declared = [_declared_key(d, by_ref, infos) for d in v.declared_parents]
            status, confidence = judge(declared, verdict, self.model.confidence)
            detected = tuple(infos[_id(p)].ref for p in verdict.parents) if verdict else ()
            if status == "duplicate" and verdict is not None:
                detected = tuple(infos[_id(d)].ref for d in verdict.duplicates)
            findings.append(Finding(v.ref, tuple(v.declared_parents), detected, status, confidence))
        return AuditReport(tuple(findings))


class LineageIndexer:
    """The registration hook: sketch the new version, then store its detected parent."""

    name = "lineage"

    def __init__(self, host: Host) -> None:
        self.lineage = Lineage(host)

    def on_registered(self, version: ModelVersion) -> str | None:
        reason = self.lineage.index_version(version, just_written=True)
        if reason is None:
            self.lineage.detect_and_store(version)
        return reason


def indexer(host: Host) -> LineageIndexer:
    return LineageIndexer(host)


# -- helpers -----------------------------------------------------------------------------------------------------


def _id(key: Hashable) -> int:
    """Candidate keys are version ids here (the pure layer keeps them opaque)."""
    return int(cast(int, key))


def _nodes(forest: Forest) -> set[Hashable]:
    return {e.child for e in forest.edges} | set(forest.roots)


def _edges_of(verdict: Verdict) -> list[tuple[int, str | None, float]]:
    return [(_id(p), verdict.relation, verdict.confidence) for p in verdict.parents]


def _report(query: str, verdict: Verdict, refs: dict[int, str], k: int) -> ParentReport:
    return ParentReport(
        query=query,
        parents=tuple(refs[_id(p)] for p in verdict.parents),
        relation=verdict.relation,
        confidence=verdict.confidence,
        candidates=tuple(CandidateScore(refs[_id(c.key)], c.utility, c.confidence) for c in verdict.candidates[:k]),
        duplicates=tuple(refs[_id(d)] for d in verdict.duplicates),
        method=METHOD + ("+merge-fit" if verdict.relation == "merge" else ""),
    )


def _declared_key(declared: str, by_ref: dict[str, int], infos: dict[int, storage.VersionInfo]) -> int | None:
    """The registered version a declared parent names: a REF, or an ``hf:org/name`` that was imported."""
    if declared in by_ref:
        return by_ref[declared]
    if declared.startswith("hf:"):
        repo = declared[3:]
        hits = [v.id for v in infos.values() if v.source and v.source.split("@", 1)[0] == f"hf:{repo}"]
        hits += [v.id for v in infos.values() if v.ref.rsplit(":", 1)[0] == repo]
        return max(hits) if hits else None
    return None


def _as_path(target: str | os.PathLike[str]) -> Path | None:
    """A filesystem path when ``target`` names one (or clearly means one); None for a REF."""
    text = os.fspath(target)
    path = Path(text).expanduser()
    if path.exists():
        return path
    if isinstance(target, os.PathLike) or text.startswith((".", "/", "~")) or text.endswith(".safetensors"):
        raise FileNotFoundError(f"{text} does not exist")
    return None


def sketch_path(path: Path) -> ModelSketch:
    """Sketch an unregistered weights file or model folder (checked like a registration, nothing stored)."""
    sketch = sketch_model((name, array) for name, array, _ in _read_tensors(path))
    if not sketch.tensors:
        what = "only NaN or infinite values" if sketch.skipped else "no floating-point tensors"
        raise InvalidModelFile(f"{path} holds {what}, so there is nothing to compare.")
    return sketch


def _read_tensors(path: Path) -> Iterator[tuple[str, np.ndarray, str]]:
    from modelkin.provenance.lineage.weights import mapped_tensors
    from modelkin.registry.sources import collect

    files = [f for f in collect(path, allow_pickle=False).files if f.kind == "safetensors"]
    if not files:
        raise InvalidModelFile(f"{path} is not a model: it holds no .safetensors weights.",
                               hint="give a .safetensors file or a Hugging Face-format folder")  # fmt: skip
    for f in files:
        yield from mapped_tensors(f.path, f.shown)
