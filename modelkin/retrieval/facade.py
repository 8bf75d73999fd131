"""``registry.retrieval``: probe pools, capture at registration, the persisted index, search and training.

The facade stores and fetches; the algorithms live beside it (space, capture, features, scorers, index,
baselines, training). Knowledge tensors and trained encoders are blobs with a row each, so the index under
``HOME/retrieval/`` is derived data: it is checked against the database on every search and rebuilt from the
blobs (never by running models) whenever it is missing or stale.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays
from sqlalchemy import delete, select

from modelkin.db.engine import read_session, write_session
from modelkin.db.schema import File, KnowledgeRow, LoggedScore, Model, ProbePool, RetrievalEncoder, Version
from modelkin.errors import InvalidQueryData, ModelkinError, RetrievalUnavailable
from modelkin.registry import architectures, indexers
from modelkin.retrieval import knowledge as kstore
from modelkin.retrieval.features import ModelFeatures, check_query, model_features, query_features
from modelkin.retrieval.files import read_pool, read_query
from modelkin.retrieval.index import VectorIndex, build
from modelkin.retrieval.scorers import UNNAMED, Learned, TrainingFree
from modelkin.retrieval.space import Space, fit_space

if TYPE_CHECKING:
    from modelkin.registry.host import Host
    from modelkin.registry.records import ModelVersion

NAME = "retrieval"
SPACE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")  # also names the index file under HOME/retrieval
RERANK = "rerank"
SHORTLIST = 1000  # vector-search candidates rescored from stored knowledge (no forward passes)
KNOWLEDGE = "knowledge-logme"
Progress = Callable[[str, int], None]  # (ref just handled, how many are to capture in all)


@dataclass(frozen=True)
class SearchResult:
    results: list[dict[str, Any]]
    scorer: str
    forward_passes: int
    elapsed_ms: float
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"results": self.results, "scorer": self.scorer, "forward_passes": self.forward_passes,
                "elapsed_ms": self.elapsed_ms}  # fmt: skip


@dataclass
class _Serving:
    """What answers for one probe pool: its φ, the pool in φ coordinates, and the scorer (with its encoder id)."""

    pool: ProbePool
    space: Space
    pool_phi: np.ndarray
    scorer: TrainingFree | Learned
    encoder: int | None


class Indexer:
    """The registration hook: capture a newly registered executable version and add it to the index.

    It reuses the registry's own ``retrieval`` object when there is one, so a bulk registration fits φ and reads
    the pool once rather than once per model, and searches after it see the same caches.
    """

    name = NAME

    def __init__(self, host: Host) -> None:
        shared = getattr(host, NAME, None)
        self.retrieval = shared if isinstance(shared, Retrieval) else Retrieval(host)

    def on_registered(self, version: ModelVersion) -> str | None:
        return self.retrieval.capture(version)


def indexer(host: Host) -> Indexer:
    return Indexer(host)


class Retrieval:
    """Retrieval over one registry (see the module docstring)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._serving: dict[int, _Serving] = {}
        self._outputs: dict[int, dict[int, np.ndarray]] = {}

    # -- probe pools ---------------------------------------------------------------------------------------

    def add_probes(self, space: str, path: str | os.PathLike[str], on_model: Progress | None = None
                   ) -> dict[str, Any]:  # fmt: skip
        """Register a new version of ``space``'s probe pool, then capture every model of that space on it.

        Adding the newest pool again resumes its capture (an interrupted ``probes add`` left the rest pending or
        skipped); models whose forward failed are retried by ``index rebuild --capture`` only. ``on_model(ref,
        total)`` is called after each model captured or passed over.
        """
        if not SPACE_NAME.fullmatch(space):
            raise InvalidQueryData(
                f"{space!r} is not a valid input space name.",
                hint="use letters, digits, '.', '_' and '-' (up to 100, not starting with '.'), e.g. digits-64",
            )
        x = read_pool(Path(path))
        digest = self.host.store.put_bytes(save_arrays({"x": x}))
        with write_session(self.host.engine) as s:
            latest = s.scalar(select(ProbePool).where(ProbePool.space == space).order_by(ProbePool.number.desc()))
            if latest is not None and latest.digest == digest:
                row, created = latest, False
            else:
                number = (latest.number if latest else 0) + 1
                row = ProbePool(space=space, number=number, digest=digest, samples=len(x), features=x.shape[1],
                                source=str(Path(path).absolute()))  # fmt: skip
                s.add(row)
                s.flush()
                created = True
            record = _pool_json(row)
        states = ("pending", "failed", "skipped") if created else ("pending", "skipped")
        return {**record, "created": created, **self._capture_missing(space, states, on_model)}

    def probes(self) -> list[dict[str, Any]]:
        with read_session(self.host.engine) as s:
            rows = s.scalars(select(ProbePool).order_by(ProbePool.space, ProbePool.number))
            return [_pool_json(r) for r in rows]

    # -- capture -------------------------------------------------------------------------------------------

    def capture(self, version: ModelVersion, *, vid: int | None = None) -> str | None:
        """Capture one version's knowledge and index it; a reason string when it is not for retrieval."""
        from modelkin.retrieval.capture import capture
        from modelkin.retrieval.runner import forward_fn, one_thread

        if version.architecture is None:
            return "no architecture spec, so it cannot be run"
        try:
            space = architectures.input_space(version.architecture)
        except ModelkinError as exc:
            return f"its architecture cannot be built here ({exc})"
        if space is None:
            return "its architecture declares no input space"
        pool = self._latest_pool(space)
        if pool is None:
            return f"no probe pool for input space {space!r} yet (`modelkin probes add {space} FILE`)"
        vid = vid if vid is not None else indexers.version_id(self.host.engine, version)
        x = self._pool_inputs(pool)
        start = time.perf_counter()
        module = self.host.load_module(version.ref)
        with one_thread():
            knowledge = capture(forward_fn(module), x, name=version.ref)
        seconds = time.perf_counter() - start
        digest = self.host.store.put_bytes(kstore.to_bytes(knowledge, pool.digest))
        with write_session(self.host.engine) as s:
            s.execute(delete(KnowledgeRow).where(KnowledgeRow.version_id == vid))
            s.add(KnowledgeRow(version_id=vid, pool_id=pool.id, digest=digest, forward_calls=knowledge.forward_calls,
                               seconds=seconds))  # fmt: skip
        self._outputs.get(pool.id, {}).pop(vid, None)
        self._add_to_index(pool, vid, knowledge)
        return None

    def _capture_missing(self, space: str | None = None, states: Iterable[str] = ("pending", "failed", "skipped"),
                         on_model: Progress | None = None) -> dict[str, Any]:  # fmt: skip
        """Capture versions not yet captured on their space's newest pool; record each outcome."""
        engine = self.host.engine
        known = indexers.states(engine, NAME)
        wanted = set(states)
        with read_session(engine) as s:
            current = {vid: pid for vid, pid in s.execute(select(KnowledgeRow.version_id, KnowledgeRow.pool_id))}
            newest = {p.space: p.id for p in s.scalars(select(ProbePool).order_by(ProbePool.number))}
            rows = list(s.execute(select(Version.id, Model.name, Version.number, Version.architecture)
                                  .join(Model).order_by(Version.id)))  # fmt: skip
        todo = []
        for vid, name, number, arch in rows:
            version_space = _space_of(arch)
            if space is not None and version_space != space:
                continue
            stale = version_space in newest and current.get(vid) not in (None, newest[version_space])
            state = known.get(vid, ("pending", None))[0]
            if stale or state in wanted and not (vid in current and state == "done"):
                todo.append((vid, f"{name}:{number}"))
        done = 0
        skipped: list[dict[str, str]] = []
        failed: list[dict[str, str]] = []
        for vid, ref in todo:
            try:
                reason = self.capture(self.host.get(ref), vid=vid)
            except Exception as exc:  # one bad model must not stop the others
                detail = str(exc) if str(exc).endswith(".") else f"{type(exc).__name__}: {exc}"
                indexers.mark(engine, vid, NAME, "failed", detail)
                failed.append({"ref": ref, "reason": detail})
            else:
                indexers.mark(engine, vid, NAME, "skipped" if reason else "done", reason)
                if reason:
                    skipped.append({"ref": ref, "reason": reason})
                else:
                    done += 1
            if on_model is not None:
                on_model(ref, len(todo))
        return {"captured": done, "skipped": skipped, "failed": failed}

    # -- the index -----------------------------------------------------------------------------------------

    def rebuild(self, capture: bool = False, on_model: Progress | None = None) -> dict[str, Any]:
        """Recompute every vector from stored knowledge (no model runs); with ``capture``, first capture what
        is pending, failed, skipped or captured on an outdated pool (``on_model`` as in :meth:`add_probes`)."""
        captured = self._capture_missing(on_model=on_model) if capture else {"captured": 0, "skipped": [], "failed": []}
        self._serving.clear()
        indexed = 0
        for pool in self._newest_pools():
            indexed += self._rebuild_pool(pool).size
        return {"indexed": indexed, **captured}

    def status(self) -> dict[str, Any]:
        """What is indexed, what is not and why, and which scorer/encoder serves each space."""
        engine = self.host.engine
        known = indexers.states(engine, NAME)
        with read_session(engine) as s:
            rows = list(s.execute(select(Version.id, Model.name, Version.number).join(Model).order_by(Version.id)))
            captured = dict(s.execute(select(KnowledgeRow.version_id, KnowledgeRow.pool_id)).all())
        spaces = []
        for pool in self._newest_pools():
            serving = self._serving_for(pool)
            index = self._index(pool)
            spaces.append({"space": pool.space, "pool": pool.number, "samples": pool.samples,
                           "features": pool.features, "scorer": serving.scorer.name, "encoder": serving.encoder,
                           "indexed": index.size, "index": index.kind})  # fmt: skip
        versions = []
        for vid, name, number in rows:
            state, detail = known.get(vid, ("pending", "registered before retrieval existed"))
            if state == "done" and vid not in captured:
                state, detail = "pending", "its knowledge row is missing; `modelkin index rebuild --capture`"
            versions.append({"ref": f"{name}:{number}", "state": state, "detail": detail})
        counts = {k: sum(1 for v in versions if v["state"] == k) for k in indexers.STATES}
        return {"spaces": spaces, "counts": counts, "versions": versions}

    def _newest_pools(self) -> list[ProbePool]:
        with read_session(self.host.engine) as s:
            newest: dict[str, ProbePool] = {}
            for p in s.scalars(select(ProbePool).order_by(ProbePool.number)):
                newest[p.space] = p
            s.expunge_all()
            return sorted(newest.values(), key=lambda p: p.space)

    def _latest_pool(self, space: str) -> ProbePool | None:
        return next((p for p in self._newest_pools() if p.space == space), None)

    def _pool_inputs(self, pool: ProbePool) -> np.ndarray:
        return np.asarray(load_arrays(self.host.store.read_verified(pool.digest))["x"])

    def _serving_for(self, pool: ProbePool) -> _Serving:
        with read_session(self.host.engine) as s:
            enc = s.scalar(select(RetrievalEncoder).where(RetrievalEncoder.pool_id == pool.id)
                           .order_by(RetrievalEncoder.id.desc()))  # fmt: skip
            enc_id, enc_digest = (enc.id, enc.digest) if enc else (None, None)
        cached = self._serving.get(pool.id)
        if cached is not None and cached.encoder == enc_id:
            return cached
        x = self._pool_inputs(pool)
        space = fit_space(x)
        free = TrainingFree(space.components.shape[0], len(space.landmarks), space.bandwidth)
        scorer: TrainingFree | Learned = free
        if enc_digest is not None:
            scorer = Learned.from_bytes(self.host.store.read_verified(enc_digest), free)
        serving = _Serving(pool, space, space.encode(x), scorer, enc_id)
        self._serving[pool.id] = serving
        return serving

    def _index_path(self, pool: ProbePool) -> Path:
        return Path(self.host.settings.home) / "retrieval" / f"{pool.space}.faiss"

    def _vectors(self, serving: _Serving, features: Sequence[ModelFeatures]) -> np.ndarray:
        if not features:
            return np.zeros((0, serving.scorer.dim), np.float32)
        if isinstance(serving.scorer, Learned):
            return serving.scorer.model_vectors(list(features))
        return np.stack([serving.scorer.model_vector(f) for f in features])

    def model_features(self, pool: ProbePool, vids: Sequence[int]) -> dict[int, ModelFeatures]:
        """Features of each version's stored knowledge on ``pool`` (versions without it are left out)."""
        serving = self._serving_for(pool)
        with read_session(self.host.engine) as s:
            rows = dict(
                s.execute(
                    select(KnowledgeRow.version_id, KnowledgeRow.digest).where(
                        KnowledgeRow.pool_id == pool.id, KnowledgeRow.version_id.in_(vids)
                    )
                ).all()
            )
        out = {}
        for vid in vids:
            if vid in rows:
                k = kstore.from_bytes(self.host.store.read_verified(rows[vid]))
                out[vid] = model_features(k, serving.space, serving.pool_phi)
        return out

    def _rebuild_pool(self, pool: ProbePool) -> VectorIndex:
        serving = self._serving_for(pool)
        with read_session(self.host.engine) as s:
            vids = list(s.scalars(select(KnowledgeRow.version_id).where(KnowledgeRow.pool_id == pool.id)
                                  .order_by(KnowledgeRow.version_id)))  # fmt: skip
        feats = self.model_features(pool, vids)
        index = build(np.array(list(feats), np.int64), self._vectors(serving, list(feats.values())),
                      serving.scorer.dim)  # fmt: skip
        self._write_index(pool, serving, index)
        return index

    def _write_index(self, pool: ProbePool, serving: _Serving, index: VectorIndex) -> None:
        path = self._index_path(pool)
        path.parent.mkdir(parents=True, exist_ok=True)
        for target, data in ((path, index.to_bytes()),
                             (path.with_suffix(".json"), json.dumps(_index_meta(serving)).encode())):  # fmt: skip
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)

    def _index(self, pool: ProbePool, adding: int | None = None) -> VectorIndex:
        """The persisted index if it matches the database (pool, encoder, set of versions), else a rebuild.

        ``adding`` is a version whose knowledge row was just written and which the caller is about to add: the
        index may lack it without being stale (else every registration would rebuild the whole index).
        """
        serving = self._serving_for(pool)
        path = self._index_path(pool)
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
            index = VectorIndex.from_bytes(path.read_bytes())
        except (OSError, ValueError, RuntimeError):
            return self._rebuild_pool(pool)
        with read_session(self.host.engine) as s:
            vids = np.array(sorted(s.scalars(select(KnowledgeRow.version_id).where(KnowledgeRow.pool_id == pool.id))),
                            dtype=np.int64)  # fmt: skip
        held = index.ids()
        if adding is not None:
            vids, held = vids[vids != adding], held[held != adding]
        if meta != _index_meta(serving) or index.dim != serving.scorer.dim or not np.array_equal(held, vids):
            return self._rebuild_pool(pool)
        return index

    def _add_to_index(self, pool: ProbePool, vid: int, k: Any) -> None:
        serving = self._serving_for(pool)
        index = self._index(pool, adding=vid)  # a rebuild already holds vid: adding replaces it
        vector = self._vectors(serving, [model_features(k, serving.space, serving.pool_phi)])
        index.add(np.array([vid], np.int64), vector)
        self._write_index(pool, serving, index)

    # -- search --------------------------------------------------------------------------------------------

    def search(self, x: Any, y: Any, k: int = 5, filter: str | None = None, rerank: int = 0,
               shortlist: int = SHORTLIST) -> SearchResult:  # fmt: skip
        """Rank registered models for the task (x, y); runs no model unless ``rerank`` > 0.

        Three stages: faiss vector search (inside the filter) for the top ``max(k, rerank, shortlist)``; the
        shortlist rescored by LogME on each model's stored outputs at the query's nearest probes (zero forward
        passes; ``shortlist=0`` keeps the vector order); then, with ``rerank`` N, N stage-2 leaders picked for
        recall run on the samples and are ranked by LogME, kNN and their stage-2 score (N forward passes).
        """
        start = time.perf_counter()
        if k < 1:
            raise InvalidQueryData(f"k must be at least 1, got {k}.")
        if rerank < 0:
            raise InvalidQueryData(f"rerank must be 0 or more, got {rerank}.")
        x, y = check_query(x, y)
        pool = self._pool_for(x.shape[1])
        serving = self._serving_for(pool)
        index = self._index(pool)
        if index.size == 0:
            raise RetrievalUnavailable(
                f"no model of input space {pool.space!r} is indexed yet.",
                hint="register executable models, or run `modelkin index rebuild --capture`",
            )
        refs = self._refs()
        allowed = np.array(sorted(refs[v.ref] for v in self.host.list(filter)), dtype=np.int64)
        q = query_features(x, y, serving.space)
        qvec = serving.scorer.query_vector(q)
        ids, scores = index.search(qvec, max(k, rerank, shortlist), allowed)
        names = {vid: ref for ref, vid in refs.items()}
        ranked = [{"ref": names[int(i)], "score": round(float(s), 6), "scored_by": serving.scorer.name}
                  for i, s in zip(ids, scores, strict=True)]  # fmt: skip
        name = serving.scorer.name
        if shortlist:
            ranked = self._knowledge_rescore(serving, ids[:shortlist], ranked, x, y)
            name += f"+{KNOWLEDGE}"
        passes = 0
        notes: list[str] = []
        if rerank:
            ranked, passes, notes = self._rerank(serving, ranked, rerank, x, y)
        results = [{"ref": r["ref"], "score": r["score"], "rank": n, "scored_by": r["scored_by"]}
                   for n, r in enumerate(ranked[:k], 1)]  # fmt: skip
        name += f"+{RERANK}" if rerank else ""
        return SearchResult(results, name, passes, round((time.perf_counter() - start) * 1000, 2), notes)

    def _knowledge_rescore(self, serving: _Serving, ids: np.ndarray, ranked: list[dict[str, Any]], x: np.ndarray,
                           y: np.ndarray) -> list[dict[str, Any]]:  # fmt: skip
        """Stage 2: knowledge LogME, plus the vector score at the weight fitted in training (see ``mixing``)."""
        from modelkin.retrieval.mixing import mix
        from modelkin.retrieval.proxy import knowledge_logme, nearest_probes

        nearest = nearest_probes(serving.space.encode(x), serving.pool_phi)
        outputs = self._pool_outputs(serving.pool, [int(i) for i in ids])
        head = ranked[: len(ids)]
        scores = knowledge_logme([outputs[int(i)] for i in ids], nearest, y)
        if serving.scorer.knowledge_mix > 0:
            families = self._families([int(i) for i in ids])
            weights = np.array([serving.scorer.mix_weight(families.get(int(i))) for i in ids])
            scores = mix(scores, np.array([r["score"] for r in head]), weights)
        rescored = [{"ref": r["ref"], "score": round(float(v), 6), "scored_by": KNOWLEDGE}
                    for r, v in zip(head, scores, strict=True)]  # fmt: skip
        rescored.sort(key=lambda r: -r["score"])
        return rescored + ranked[len(rescored) :]

    def _pool_outputs(self, pool: ProbePool, vids: Sequence[int]) -> dict[int, np.ndarray]:
        """Each version's stored logits on the pool (read from its knowledge blob, then cached)."""
        cache = self._outputs.setdefault(pool.id, {})
        missing = [v for v in vids if v not in cache]
        if missing:
            with read_session(self.host.engine) as s:
                query = select(KnowledgeRow.version_id, KnowledgeRow.digest).where(
                    KnowledgeRow.pool_id == pool.id, KnowledgeRow.version_id.in_(missing))  # fmt: skip
                rows = dict(s.execute(query).all())
            for vid, digest in rows.items():
                cache[vid] = kstore.from_bytes(self.host.store.read_verified(digest)).pool_logits
        return {v: cache[v] for v in vids}

    def _rerank(self, serving: _Serving, ranked: list[dict[str, Any]], n: int, x: np.ndarray, y: np.ndarray
                ) -> tuple[list[dict[str, Any]], int, list[str]]:  # fmt: skip
        """Run ``n`` stage-2 leaders picked for recall and rank them by real estimators (see ``rerank``)."""
        from modelkin.retrieval.baselines import knn, logme
        from modelkin.retrieval.rerank import WINDOW, combine, pick
        from modelkin.retrieval.runner import features_and_probs, one_thread

        if not ranked:
            return ranked, 0, []
        refs = self._refs()
        stage = [r for r in ranked if r["scored_by"] == ranked[0]["scored_by"]]  # the stage that ordered the list
        window = [refs[r["ref"]] for r in stage[:WINDOW]]
        outputs = self._pool_outputs(serving.pool, window)
        chosen = pick(np.array([r["score"] for r in stage]), [outputs[v].argmax(axis=1) for v in window], n)
        head, picked = [stage[i] for i in chosen], set(chosen)
        tail = [r for i, r in enumerate(ranked) if i not in picked]  # stage is ranked's prefix
        ran: list[tuple[dict[str, Any], float, float]] = []
        notes: list[str] = []
        passes = 0
        for r in head:
            try:
                module = self.host.load_module(r["ref"])
                passes += 1
                with one_thread():
                    feats, _ = features_and_probs(module, x, r["ref"])
            except ModelkinError as exc:
                notes.append(f"skipped {r['ref']} in the rerank: {exc}")
                continue
            ran.append((r, logme(feats, y), knn(feats, y)))
        scores = np.zeros(0)
        if ran:
            table = np.array([(a, b, r["score"]) for r, a, b in ran], dtype=np.float64)
            scores = combine(table[:, 0], table[:, 1], table[:, 2])
        rescored = [{"ref": r["ref"], "score": round(float(v), 6), "scored_by": RERANK}
                    for (r, _, _), v in zip(ran, scores, strict=True)]  # fmt: skip
        rescored.sort(key=lambda r: -r["score"])
        return rescored + tail, passes, notes

    def _pool_for(self, features: int) -> ProbePool:
        pools = self._newest_pools()
        if not pools:
            raise RetrievalUnavailable(
                "no probe pool is registered, so nothing is indexed for search.",
                hint="add one with `modelkin probes add SPACE FILE`, e.g. `modelkin probes add digits-64 "
                     "ZOO/probes/digits-64.npz`",
            )  # fmt: skip
        fitting = [p for p in pools if p.features == features]
        if not fitting:
            spaces = ", ".join(f"{p.space} ({p.features})" for p in pools)
            raise InvalidQueryData(
                f"the query has {features} features per sample, and no input space takes that many.",
                hint=f"the registered input spaces (features): {spaces}",
            )
        if len(fitting) > 1:
            raise InvalidQueryData(
                f"several input spaces take {features} features ({', '.join(p.space for p in fitting)}).",
                hint="search one of them with --filter \"input_space = '<space>'\"",
            )
        return fitting[0]

    def _refs(self) -> dict[str, int]:
        with read_session(self.host.engine) as s:
            return {f"{n}:{num}": vid for vid, n, num in s.execute(select(Version.id, Model.name, Version.number)
                                                                     .join(Model))}  # fmt: skip

    # -- training ------------------------------------------------------------------------------------------

    def log_score(self, ref: str, x: Any, y: Any, score: float) -> dict[str, Any]:
        """Record a transfer score measured for ``ref`` on a task; ``train`` learns from these."""
        if not np.isfinite(score):
            raise InvalidQueryData(f"the score must be a finite number, got {score}.")
        x, y = check_query(x, y)
        version = self.host.get(ref)
        digest = self.host.store.put_bytes(save_arrays({"x": x, "y": y}))
        vid = indexers.version_id(self.host.engine, version)
        with write_session(self.host.engine) as s:
            s.add(LoggedScore(version_id=vid, data_digest=digest, score=float(score)))
        return {"ref": version.ref, "score": float(score), "data": f"sha256:{digest}"}

    def train(self, zoos: Sequence[str | os.PathLike[str]] = (), scores: str | os.PathLike[str] | None = None,
              *, target: str = "finetune", epochs: int = 100, seed: int = 0,
              exclude_families: Sequence[str] = ()) -> dict[str, Any]:  # fmt: skip
        """Train the alignment encoders on ground truth (zoos, a JSONL file, logged scores) and re-index."""
        from modelkin.retrieval.training import train
        from modelkin.retrieval.truth import jsonl_tasks, logged_tasks, zoo_tasks

        tasks = []
        refs = self._refs()
        for zoo in zoos:
            tasks += zoo_tasks(Path(zoo), self._versions_by_file_digest(), target)
        if scores is not None:
            tasks += jsonl_tasks(Path(scores), lambda r: refs.get(self.host.get(r).ref))
        tasks += logged_tasks(self._logged(), self.host.store.read_verified)
        if not tasks:
            raise RetrievalUnavailable(
                "there is nothing to train on: no registered zoo, scores file or logged score gave a task.",
                hint="register the zoo first (`modelkin register-zoo DIR`), then `modelkin retrieval train --zoo DIR`",
            )
        excluded = self._family_ids(exclude_families)
        by_pool: dict[int, tuple[ProbePool, list[Any]]] = {}
        for pool in self._newest_pools():
            fitting = [t for t in tasks if t.x.shape[1] == pool.features]
            if fitting:
                by_pool[pool.id] = (pool, fitting)
        if not by_pool:
            raise RetrievalUnavailable("no probe pool takes the training tasks' feature count.",
                                       hint="add the pool with `modelkin probes add SPACE FILE`")  # fmt: skip
        reports = []
        for pool, fitting in by_pool.values():
            reports.append(self._train_pool(pool, fitting, excluded, train, epochs, seed))
        return {"encoders": reports, "indexed": sum(r["indexed"] for r in reports)}

    def _train_pool(self, pool: ProbePool, tasks: list[Any], excluded: set[int], train: Any, epochs: int,
                    seed: int) -> dict[str, Any]:  # fmt: skip
        from modelkin.retrieval.training import TaskExample
        from modelkin.retrieval.truth import views

        serving = self._serving_for(pool)
        wanted = sorted({vid for t in tasks for vid in t.scores} - excluded)
        feats = self.model_features(pool, wanted)
        if len(feats) < 2:
            raise RetrievalUnavailable(
                f"only {len(feats)} of the scored models are captured on the {pool.space} pool, too few to train.",
                hint="run `modelkin index rebuild --capture` after adding the probe pool",
            )
        order = {vid: i for i, vid in enumerate(feats)}
        examples, kept = [], []
        for t in tasks:
            keep = [(order[v], s) for v, s in sorted(t.scores.items()) if v in order]
            if len(keep) >= 2:
                idx, sc = zip(*keep, strict=True)
                qviews = [query_features(vx, vy, serving.space) for vx, vy in views(t.x, t.y, seed)]
                examples.append(TaskExample(qviews, np.array(idx, np.int64), np.array(sc, np.float64)))
                kept.append(t)
        if not examples:
            raise RetrievalUnavailable("no training task has scores for 2 or more captured models.")
        free = TrainingFree(serving.space.components.shape[0], len(serving.space.landmarks), serving.space.bandwidth)
        weight, by_weight = self._fit_mix(serving, feats, kept, examples, free, train, epochs, seed)
        families = self._families(list(feats))
        unseen, by_unseen = self._fit_unseen_mix(serving, feats, families, kept, examples, free, train, epochs, seed)
        learned, summary = train(free, list(feats.values()), examples, epochs=epochs, seed=seed)
        trained = sorted({families.get(v) or UNNAMED for v in feats})
        learned.config.update(knowledge_mix=weight, unseen_family_mix=unseen, families=trained)
        summary = {**summary, "knowledge_mix": weight, "knowledge_mix_fit": by_weight, "unseen_family_mix": unseen,
                   "unseen_family_mix_fit": by_unseen, "families": trained}  # fmt: skip
        digest = self.host.store.put_bytes(learned.to_bytes())
        with write_session(self.host.engine) as s:
            row = RetrievalEncoder(pool_id=pool.id, digest=digest, summary=summary)
            s.add(row)
            s.flush()
            encoder = row.id
        self._serving.pop(pool.id, None)
        index = self._rebuild_pool(pool)
        return {"space": pool.space, "encoder": encoder, "indexed": index.size, **summary}

    def _fit_mix(self, serving: _Serving, feats: dict[int, ModelFeatures], tasks: Sequence[Any],
                 examples: Sequence[Any], free: TrainingFree, train: Any, epochs: int, seed: int
                 ) -> tuple[float, dict[str, float]]:  # fmt: skip
        """Cross-fit the learned score's weight in search's second stage (``mixing``): fold encoders score the
        tasks held out of their training, beside knowledge LogME on the same tasks."""
        from modelkin.retrieval.mixing import fit_weight, folds

        vids = list(feats)
        outputs = self._pool_outputs(serving.pool, vids)
        scored: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
        for held in folds(len(examples)):
            out = set(held.tolist())
            rest = [e for i, e in enumerate(examples) if i not in out]
            fold, _ = train(free, list(feats.values()), rest, epochs=epochs, seed=seed)
            self._score_held_out(serving, fold, feats, outputs, [(tasks[i], examples[i], None) for i in held], scored)
        return fit_weight(*scored) if scored[2] else (0.0, {})

    def _fit_unseen_mix(self, serving: _Serving, feats: dict[int, ModelFeatures], families: dict[int, str | None],
                        tasks: Sequence[Any], examples: Sequence[Any], free: TrainingFree, train: Any, epochs: int,
                        seed: int) -> tuple[float, dict[str, float]]:  # fmt: skip
        """Cross-fit the learned score's weight for models of a family the encoders never saw: for each family,
        encoders trained on one task fold without that family's models score its models on the other fold's
        tasks. With fewer than two families nothing measures it, and the weight is 0: knowledge LogME reads
        outputs and needs no training, the learned score is only known to help on families it was trained on."""
        from modelkin.retrieval.mixing import fit_weight, folds
        from modelkin.retrieval.training import TaskExample

        vids = list(feats)
        names = np.array([families.get(v) or UNNAMED for v in vids])
        split = folds(len(examples))
        if len(set(names)) < 2 or not split:
            return 0.0, {}
        train_on, score_on = split[0], split[1]
        outputs = self._pool_outputs(serving.pool, vids)
        scored: tuple[list[Any], list[Any], list[Any]] = ([], [], [])
        for family in sorted(set(names)):
            members = np.flatnonzero(names == family)
            rest = []
            for i in train_on:
                keep = ~np.isin(examples[i].models, members)
                if keep.sum() >= 2:
                    e = examples[i]
                    rest.append(TaskExample(e.views, e.models[keep], e.scores[keep]))
            if not rest:
                continue
            fold, _ = train(free, list(feats.values()), rest, epochs=epochs, seed=seed)
            held = [(tasks[i], examples[i], np.isin(examples[i].models, members)) for i in score_on]
            self._score_held_out(serving, fold, feats, outputs, held, scored)
        return fit_weight(*scored) if scored[2] else (0.0, {})

    def _score_held_out(self, serving: _Serving, fold: Learned, feats: dict[int, ModelFeatures],
                        outputs: dict[int, np.ndarray], held: Sequence[tuple[Any, Any, np.ndarray | None]],
                        scored: tuple[list[Any], list[Any], list[Any]]) -> None:  # fmt: skip
        """Append knowledge LogME, the fold encoder's score and the truth of each held-out task (restricted to
        the models a mask keeps, when there is one) to ``scored``."""
        from modelkin.retrieval.proxy import knowledge_logme, nearest_probes

        vids = list(feats)
        vectors = fold.model_vectors(list(feats.values()))
        for t, e, keep in held:
            models, truth = (e.models, e.scores) if keep is None else (e.models[keep], e.scores[keep])
            if len(models) < 2:
                continue
            scored[1].append(vectors[models] @ fold.query_vector(query_features(t.x, t.y, serving.space)))
            nearest = nearest_probes(serving.space.encode(t.x), serving.pool_phi)
            scored[0].append(knowledge_logme([outputs[vids[m]] for m in models], nearest, t.y))
            scored[2].append(truth)

    def _versions_by_file_digest(self) -> dict[str, int]:
        """File sha256 -> the first version holding it: how a zoo's files are matched to registered versions."""
        with read_session(self.host.engine) as s:
            out: dict[str, int] = {}
            for sha, vid in s.execute(select(File.sha256, File.version_id).order_by(File.version_id)):
                out.setdefault(sha, vid)
            return out

    def _logged(self) -> list[tuple[str, int, float]]:
        with read_session(self.host.engine) as s:
            query = select(LoggedScore.data_digest, LoggedScore.version_id, LoggedScore.score)
            return [(str(d), int(v), float(sc)) for d, v, sc in s.execute(query.order_by(LoggedScore.id))]

    def _families(self, vids: Sequence[int]) -> dict[int, str | None]:
        with read_session(self.host.engine) as s:
            return dict(s.execute(select(Version.id, Version.family).where(Version.id.in_(list(vids)))).all())

    def _family_ids(self, families: Sequence[str]) -> set[int]:
        if not families:
            return set()
        with read_session(self.host.engine) as s:
            return set(s.scalars(select(Version.id).where(Version.family.in_(list(families)))))


def _space_of(arch: dict[str, Any] | None) -> str | None:
    if arch is None:
        return None
    try:
        return architectures.input_space(arch)
    except ModelkinError:
        return None


def _pool_json(row: ProbePool) -> dict[str, Any]:
    created = row.created_at.isoformat() if row.created_at else None
    return {"space": row.space, "version": row.number, "samples": row.samples, "features": row.features,
            "digest": f"sha256:{row.digest}", "created_at": created}  # fmt: skip


def _index_meta(serving: _Serving) -> dict[str, Any]:
    return {"pool": serving.pool.digest, "encoder": serving.encoder, "scorer": serving.scorer.name}


def read_query_file(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    return read_query(Path(path))
