"""The Registry facade: one object that wires storage, database and algorithms together.

Everything the CLI does goes through here, and everything here is usable from Python:

    >>> reg = Registry.init("/tmp/zoo")                         # doctest: +SKIP
    >>> v = reg.register("model.safetensors", name="digits-mlp")  # doctest: +SKIP
    >>> reg.get("digits-mlp").ref                               # doctest: +SKIP
    'digits-mlp:1'
"""

from __future__ import annotations

import builtins
import functools
import json
import os
import random
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, insert, inspect, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from modelkin.config import Settings
from modelkin.db import migrate
from modelkin.db.engine import database_error, make_engine, read_session, redact_url, write_session
from modelkin.db.schema import Alias, Event, File, LineageEdge, Model, Tag, TensorRow, Version
from modelkin.errors import (
    InvalidModelFile,
    InvalidName,
    ModelkinError,
    ModelNotFound,
)
from modelkin.refs import ModelRef, check_alias, check_name
from modelkin.registry import architectures, indexers
from modelkin.registry.diff import diff_versions
from modelkin.registry.hf import export_version, import_hf
from modelkin.registry.ingest import IngestedFile, Progress, ingest_plain, ingest_safetensors
from modelkin.registry.integrity import collect_garbage, verify_version
from modelkin.registry.manifest import build_manifest, manifest_bytes
from modelkin.registry.pickles import convert_index, convert_pickle, converted_name
from modelkin.registry.reader import Reader, open_database, resolve_id
from modelkin.registry.records import RELATIONS, EventRecord, GcReport, ModelVersion, VerifyReport, VersionDiff
from modelkin.registry.rows import to_records
from modelkin.registry.sources import PICKLE_INDEX, SAFETENSORS_INDEX, ModelSource, SourceFile, check_index, collect
from modelkin.registry.staging import Staging
from modelkin.registry.store import BlobStore, open_store

if TYPE_CHECKING:
    import torch

    from modelkin.provenance.lineage.facade import Lineage
    from modelkin.provenance.ownership import Ownership
    from modelkin.retrieval.facade import Retrieval

_RETRIES = 5
HF_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


@dataclass(frozen=True)
class Registration:
    """What ``register`` did: the version, whether it is new, and what it skipped or could not use."""

    version: ModelVersion
    created: bool
    skipped: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)


class Registry:
    """A registry: a database of versions and a content-addressed blob store."""

    def __init__(self, settings: Settings, engine: Engine, store: BlobStore) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.reader = Reader(engine)

    # -- opening -------------------------------------------------------------------------------------------

    @classmethod
    def connect(
        cls, home: str | os.PathLike[str] | None = None, *, database_url: str | None = None, store: str | None = None
    ) -> Registry:
        """Connect without checking the schema: for ``init`` and ``db upgrade``, which bring it up to date."""
        settings = Settings.resolve(home, database_url, store)
        settings.home.mkdir(parents=True, exist_ok=True)
        return cls(settings, make_engine(settings.database_url), open_store(settings.store, settings.staging))

    @classmethod
    def init(
        cls, home: str | os.PathLike[str] | None = None, *, database_url: str | None = None, store: str | None = None
    ) -> Registry:
        """Create (or upgrade in place) the registry at ``home``; safe to run twice."""
        reg = cls.connect(home, database_url=database_url, store=store)
        try:
            reg.store.check()
            reg.upgrade()
        except sa_exc.DBAPIError as exc:
            reg.close()
            raise database_error(exc) or exc from None
        except BaseException:
            reg.close()
            raise
        return reg

    @classmethod
    def open(
        cls, home: str | os.PathLike[str] | None = None, *, database_url: str | None = None, store: str | None = None
    ) -> Registry:
        """Open an existing registry; refuse one that was never initialised or whose schema is behind."""
        settings, engine = open_database(home, database_url=database_url, store=store)
        return cls(settings, engine, open_store(settings.store, settings.staging))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @functools.cached_property
    def retrieval(self) -> Retrieval:
        """Search, probe pools, the index and training (``modelkin.retrieval``), imported on first use."""
        from modelkin.retrieval.facade import Retrieval

        return Retrieval(self)

    @functools.cached_property
    def lineage(self) -> Lineage:
        """Parent detection, ancestry tree and audit (modelkin.provenance.lineage)."""
        from modelkin.provenance.lineage.facade import Lineage

        return Lineage(self)

    @functools.cached_property
    def ownership(self) -> Ownership:
        """Watermarks, ownership claims and signed models (modelkin.provenance.ownership)."""
        from modelkin.provenance.ownership import Ownership

        return Ownership(self)

    def describe(self) -> dict[str, str]:
        return {
            "home": str(self.settings.home),
            "database": redact_url(self.settings.database_url),
            "store": self.store.location,
        }

    # -- registration --------------------------------------------------------------------------------------

    def register(
        self,
        source: str | os.PathLike[str] | torch.nn.Module | Mapping[str, torch.Tensor],
        *,
        name: str | None = None,
        parents: Sequence[str] = (),
        relation: str | None = None,
        tags: Mapping[str, str] | None = None,
        architecture: dict[str, Any] | None = None,
        allow_pickle: bool = False,
        card: Mapping[str, Any] | None = None,
        source_label: str | None = None,
        trusted_root: Path | None = None,
        progress: Progress | None = None,
        architecture_fallback: dict[str, Any] | None = None,
    ) -> Registration:
        """Register a weights file, an HF-format directory, an ``nn.Module`` or a state dict as a new version.

        The same bytes under the same name return the existing version (``created=False``); under another
        name they make a version of that model that shares the blobs. ``architecture_fallback`` (an export's
        record) is used when neither ``architecture`` nor the files give one.
        """
        if relation is not None and relation not in RELATIONS:
            raise InvalidName(f"{relation!r} is not a known relation.", hint=f"use one of: {', '.join(RELATIONS)}")
        tags = {check_tag_key(k): check_tag_value(str(v)) for k, v in (tags or {}).items()}
        spec = architectures.validate_spec(architecture) if architecture is not None else None
        with read_session(self.engine) as s:  # a mistyped parent fails now, not after gigabytes are copied
            for parent in parents:
                _resolve_parent(s, parent)
        with Staging(self.settings.staging).directory("register") as tmp:
            if isinstance(source, (str, os.PathLike)):
                path = Path(source)
                name = check_name(name or _default_name(path))
                src = collect(path, allow_pickle=allow_pickle, trusted_root=trusted_root)
                src = _convert_pickles(src, Path(tmp))
                label = source_label or str(path.absolute())
            else:
                if not name:
                    raise InvalidName("a model registered from Python needs a name.", hint="pass name='my-model'")
                name = check_name(name)
                src = _save_in_memory(source, Path(tmp), spec)
                label = source_label or f"python:{type(source).__name__}"
            ingested = self._ingest(src, progress)
        warnings: list[str] = []
        if spec is None:
            spec, warning = _discover_architecture(ingested, src.config)
            if spec is None and architecture_fallback is not None:
                spec, warning = _checked(architecture_fallback, "the export record")
            warnings += [warning] if warning else []
        else:
            _check_fits(spec, ingested)
        manifest = build_manifest(ingested, spec)
        digest = "sha256:" + self.store.put_bytes(manifest_bytes(manifest))
        version, created = self._retrying(
            lambda s: _write_version(s, name, digest, manifest, ingested, spec, parents, relation, tags, label, card)
        )
        if created:
            warnings += indexers.run(self, version)
        return Registration(version, created, src.skipped, tuple(warnings))

    def _ingest(self, src: ModelSource, progress: Progress | None) -> builtins.list[IngestedFile]:
        total = sum(f.path.stat().st_size for f in src.files)

        def advance(n: int) -> None:
            if progress is not None:
                progress(n, total)

        out: list[IngestedFile] = []
        # in a batch, a remote store uploads each blob while the next file is hashed
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="modelkin-hash") as pool, self.store.batch():
            for f in src.files:
                if f.kind == "safetensors":
                    out.append(ingest_safetensors(f.path, f.rel, self.store, pool, advance, f.shown))
                else:
                    out.append(ingest_plain(f.path, f.rel, self.store, advance))
        _check_shards(src, out)
        return out

    def _retrying(self, work: Any) -> Any:
        """Run ``work(session)`` in a write transaction, again if a concurrent writer created the same row first.

        Writers wait for each other's locks rather than fail; a unique-key collision can only come from two
        transactions creating the same new model or alias at once, and the second attempt then sees it.
        """
        for attempt in range(_RETRIES):
            try:
                with write_session(self.engine) as session:
                    return work(session)
            except sa_exc.IntegrityError:
                if attempt == _RETRIES - 1:
                    raise
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")

    # -- lookup --------------------------------------------------------------------------------------------

    def get(self, ref: str | ModelRef) -> ModelVersion:
        """The version a REF names (``name`` is the latest version that is not yanked)."""
        return self.reader.get(ref)

    def list(
        self,
        filter: str | None = None,
        *,
        sort: str | None = None,
        limit: int | None = None,
        include_yanked: bool = False,
        latest: bool = False,
    ) -> builtins.list[ModelVersion]:
        """Versions matching ``filter`` (see modelkin.registry.filters), sorted by ``sort`` (``-key`` descends)."""
        return list(self.iter_versions(filter, sort=sort, limit=limit, include_yanked=include_yanked, latest=latest))

    def iter_versions(
        self,
        filter: str | None = None,
        *,
        sort: str | None = None,
        limit: int | None = None,
        include_yanked: bool = False,
        latest: bool = False,
    ) -> Iterator[ModelVersion]:
        """``list``, streamed: the database filters, sorts and limits, and rows arrive in batches."""
        return self.reader.iter_versions(filter, sort=sort, limit=limit, include_yanked=include_yanked, latest=latest)

    def manifest(self, ref: str | ModelRef) -> dict[str, Any]:
        """The version's manifest, read from its blob after checking the digest."""
        digest = self.get(ref).digest
        return dict(json.loads(self.store.read_verified(digest.removeprefix("sha256:"))))

    # -- changing what is around a version -----------------------------------------------------------------

    def set_alias(self, ref: str, alias: str) -> tuple[ModelVersion, str | None]:
        """Point ``name@alias`` at the version ``ref`` names; returns it and the REF the alias left, if any."""
        check_alias(alias)

        def work(s: Session) -> tuple[ModelVersion, str | None]:
            v = resolve(s, ref)
            row = s.scalar(select(Alias).where(Alias.model_id == v.model_id, Alias.alias == alias))
            before = None
            if row is None:
                s.add(Alias(model_id=v.model_id, alias=alias, version_id=v.id))
            else:
                before = f"{v.model.name}:{s.get_one(Version, row.version_id).number}"
                row.version_id = v.id
            _log(s, "alias", v, alias=alias, previous=before)
            s.flush()
            return to_records(s, [v])[0], before

        result: tuple[ModelVersion, str | None] = self._retrying(work)
        return result

    def declare_parents(
        self, ref: str, parents: Sequence[str], relation: str | None = None
    ) -> tuple[ModelVersion, int]:
        """Add declared parents to an existing version (a publisher's claim, e.g. made after registration).

        Parents already declared are skipped, and nothing is logged when nothing is new; the relation is
        recorded when the version has none yet. Returns the version and how many edges were added.
        """
        if relation is not None and relation not in RELATIONS:
            raise InvalidName(f"{relation!r} is not a known relation.", hint=f"use one of: {', '.join(RELATIONS)}")

        def work(s: Session) -> tuple[ModelVersion, int]:
            v = resolve(s, ref)
            existing = {(e.parent_id, e.parent_external) for e in s.scalars(
                select(LineageEdge).where(LineageEdge.child_id == v.id, LineageEdge.source == "declared"))}  # fmt: skip
            if v.relation is None:
                v.relation = relation or _default_relation(parents)
            added = []
            for parent in parents:
                parent_version, external = _resolve_parent(s, parent)
                key = (parent_version.id if parent_version else None, external)
                if key not in existing:
                    existing.add(key)
                    added.append(parent)
                    s.add(LineageEdge(child_id=v.id, parent_id=key[0], parent_external=external,
                                      relation=v.relation, source="declared"))  # fmt: skip
            if added:
                _log(s, "declare", v, parents=added, relation=v.relation)
            s.flush()
            return to_records(s, [v])[0], len(added)

        result: tuple[ModelVersion, int] = self._retrying(work)
        return result

    def remove_alias(self, name: str, alias: str) -> str:
        def work(s: Session) -> str:
            row = s.scalar(select(Alias).join(Model).where(Model.name == name, Alias.alias == alias))
            if row is None:
                raise ModelNotFound(f"{name}@{alias} does not exist.")
            v = s.get_one(Version, row.version_id)
            s.delete(row)
            _log(s, "unalias", v, alias=alias)
            return f"{name}:{v.number}"

        removed: str = self._retrying(work)
        return removed

    def tag(self, ref: str, tags: Mapping[str, str], remove: Iterable[str] = ()) -> ModelVersion:
        """Set and remove tags on a version (tags are mutable labels, not part of its identity)."""
        tags = {check_tag_key(k): check_tag_value(str(v)) for k, v in tags.items()}
        remove = list(remove)

        def work(s: Session) -> ModelVersion:
            v = resolve(s, ref)
            existing = {t.key: t for t in s.scalars(select(Tag).where(Tag.version_id == v.id))}
            for k in remove:
                if k in existing:
                    s.delete(existing.pop(k))
            for k, val in tags.items():
                if k in existing:
                    existing[k].value = val
                else:
                    s.add(Tag(version_id=v.id, key=k, value=val))
            _log(s, "tag", v, set=tags, removed=remove)
            s.flush()
            return to_records(s, [v])[0]

        result: ModelVersion = self._retrying(work)
        return result

    def yank(self, ref: str, reason: str | None = None, *, undo: bool = False) -> ModelVersion:
        """Hide a version from ``name`` resolution and listings; it stays for lineage and verification."""

        def work(s: Session) -> ModelVersion:
            v = resolve(s, ref)
            v.yanked = not undo
            v.yank_reason = None if undo else reason
            _log(s, "unyank" if undo else "yank", v, reason=reason)
            s.flush()
            return to_records(s, [v])[0]

        result: ModelVersion = self._retrying(work)
        return result

    def log(self, ref: str | None = None, limit: int | None = None) -> builtins.list[EventRecord]:
        """The append-only event log, oldest first; for one version if ``ref`` is given; the last ``limit``."""
        return self.reader.log(ref, limit)

    # -- reading weights -----------------------------------------------------------------------------------

    def iter_tensors(self, ref: str | ModelRef) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (name, tensor) one at a time, each file's digest checked before it is opened."""
        from safetensors import safe_open

        version = self.get(ref)
        for f in version.files:
            if not f.path.endswith(".safetensors"):
                continue
            with self.store.local_path(f.sha256) as path, safe_open(str(path), framework="pt") as st:
                for key in sorted(st.keys()):
                    yield key, st.get_tensor(key)

    def load_state_dict(self, ref: str | ModelRef) -> dict[str, torch.Tensor]:
        return dict(self.iter_tensors(ref))

    def load_module(self, ref: str | ModelRef) -> torch.nn.Module:
        """A ready module (eval mode, weights loaded strictly) for a version whose architecture is known."""
        version = self.get(ref)
        if version.architecture is None:
            raise architectures.InvalidArchitecture(
                f"{version.ref} has no architecture spec, so it cannot be run.",
                hint="register it with --arch FILE, or with the spec in its safetensors metadata",
            )
        module = architectures.build_module(version.architecture)
        # a stored tensor that names one of the module's non-persistent buffers (BERT's position_ids in older
        # checkpoints) is state the module recomputes itself, not an unexpected weight
        recomputed = {name for name, _ in module.named_buffers()} - module.state_dict().keys()
        state = {k: v for k, v in self.iter_tensors(version.ref) if k not in recomputed}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:  # torch's report of missing, unexpected or mis-shaped tensors
            raise architectures.InvalidArchitecture(
                f"the architecture of {version.ref} does not fit its weights: {str(exc).splitlines()[-1].strip()}"
            ) from None
        return module.eval()

    def diff(self, a: str, b: str) -> VersionDiff:
        return diff_versions(self, a, b)

    def verify(self, ref: str, against: str | os.PathLike[str] | None = None) -> VerifyReport:
        return verify_version(self, ref, Path(against) if against is not None else None)

    def gc(self, grace_seconds: float = 3600.0, dry_run: bool = False) -> GcReport:
        return collect_garbage(self, grace_seconds, dry_run)

    def export(self, ref: str, out: str | os.PathLike[str], *, force: bool = False) -> Path:
        return export_version(self, self.get(ref), Path(out), force=force)

    def import_hf(
        self,
        source: str,
        *,
        revision: str | None = None,
        name: str | None = None,
        allow_pickle: bool = False,
        tags: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> Registration:
        """Import a local HF folder or a cached/Hub repo id; its card's base_model becomes declared lineage."""
        return import_hf(
            self, source, revision=revision, name=name, allow_pickle=allow_pickle, tags=dict(tags or {}),
            progress=progress,
        )  # fmt: skip

    def upgrade(self) -> tuple[str | None, str | None]:
        """Migrate the schema to this release's head; returns (before, after) revisions."""
        before, after = migrate.upgrade(self.engine)
        if before != after:
            with write_session(self.engine) as s:
                _log(s, "db-upgrade", None, before=before, after=after)
        return before, after

    def tensor_digests(self, ref: str | ModelRef) -> dict[str, tuple[str, tuple[int, ...], str]]:
        """name -> (sha256, shape, dtype) for every tensor of a version, from the database."""
        with read_session(self.engine) as s:
            v = resolve(s, ref)
            rows = s.scalars(select(TensorRow).where(TensorRow.version_id == v.id))
            return {t.name: (t.sha256, tuple(t.shape), t.dtype) for t in rows}


# -- helpers shared by the operations above ------------------------------------------------------------------


def resolve(s: Session, ref: str | ModelRef) -> Version:
    """The Version row a REF names (see modelkin.registry.reader.resolve_id), for the operations that change it."""
    return s.get_one(Version, resolve_id(s, ref))


def _write_version(
    s: Session,
    name: str,
    digest: str,
    manifest: dict[str, Any],
    files: Sequence[IngestedFile],
    spec: dict[str, Any] | None,
    parents: Sequence[str],
    relation: str | None,
    tags: Mapping[str, str],
    label: str,
    card: Mapping[str, Any] | None,
) -> tuple[ModelVersion, bool]:
    """The single transaction that makes a version exist, with everything that belongs to it."""
    # lock the model row so that concurrent registrations of one model queue for the next number instead of
    # colliding on it (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers)
    model = s.scalar(select(Model).where(Model.name == name).with_for_update())
    if model is None:
        model = Model(name=name)  # a racing creator makes this flush fail; the retry then finds the model
        s.add(model)
        s.flush()
    existing = s.scalar(select(Version).where(Version.model_id == model.id, Version.digest == digest))
    if existing is not None:
        return to_records(s, [existing])[0], False
    parent_rows = [_resolve_parent(s, p) for p in parents]
    number = (s.scalar(select(func.max(Version.number)).where(Version.model_id == model.id)) or 0) + 1
    v = Version(
        model_id=model.id,
        number=number,
        digest=digest,
        parameters=manifest["parameters"],
        tensor_count=len(manifest["tensors"]),
        bytes=sum(f.size for f in files),
        architecture=spec,
        family=(spec or {}).get("family"),
        arch_fingerprint=manifest["architecture_fingerprint"],
        relation=relation or _default_relation(parents),
        source=label,
        card=dict(card or {}),
    )
    s.add(v)
    s.flush()
    s.execute(insert(File), [{"version_id": v.id, "path": f.path, "size": f.size, "sha256": f.sha256} for f in files])
    insert_tensors(s, v.id, files)
    s.add_all(Tag(version_id=v.id, key=k, value=val) for k, val in tags.items())
    for parent_version, external in parent_rows:
        s.add(
            LineageEdge(
                child_id=v.id,
                parent_id=parent_version.id if parent_version else None,
                parent_external=external,
                relation=v.relation,
                source="declared",
            )
        )
    _log(s, "register", v, ref=f"{name}:{number}", digest=digest, source=label, parents=list(parents))
    indexers.add_pending(s, v.id, indexers.active())
    s.flush()
    return to_records(s, [v])[0], True


def insert_tensors(s: Session, version_id: int, files: Sequence[IngestedFile]) -> None:
    """One bulk INSERT: a large model has thousands of tensors, and per-object ORM inserts cost 10x more."""
    rows = [
        {"version_id": version_id, "name": t.name, "dtype": t.dtype, "shape": list(t.shape), "sha256": t.sha256,
         "file": t.file}
        for f in files
        for t in f.tensors
    ]  # fmt: skip
    if rows:
        s.execute(insert(TensorRow), rows)


def _resolve_parent(s: Session, parent: str) -> tuple[Version | None, str | None]:
    """A registered REF, or an external HF id kept as ``hf:org/name``."""
    if parent.startswith("hf:"):
        if not HF_REPO_RE.match(parent[3:]):
            raise InvalidName(f"{parent!r} is not a valid Hugging Face repo id.", hint="write hf:org/name")
        return None, parent
    try:
        return resolve(s, parent), None
    except ModelNotFound:
        if "/" in parent and HF_REPO_RE.match(parent):
            return None, f"hf:{parent}"
        raise


def _log(s: Session, kind: str, v: Version | None, ref: str | None = None, **detail: Any) -> None:
    if v is not None and ref is None:
        ref = f"{v.model.name}:{v.number}" if inspect(v).has_identity else None
    s.add(Event(kind=kind, version_id=v.id if v is not None else None, ref=ref, detail=detail))


def _default_relation(parents: Sequence[str]) -> str | None:
    return "merge" if len(parents) > 1 else "finetune" if parents else None


def check_tag_key(key: str) -> str:
    if not key or len(key) > 200 or any(c.isspace() or c == "=" or not c.isprintable() for c in key):
        raise InvalidName(f"{key[:80]!r} is not a valid tag key.", hint="a tag key has no spaces and no '='")
    return check_tag_value(key)


def check_tag_value(value: str) -> str:
    """Any text a database can store: no lone surrogates (which UTF-8 cannot encode)."""
    if not value.isascii() and any("\ud800" <= c <= "\udfff" for c in value):
        raise InvalidName("a tag holds a lone surrogate, which is not valid Unicode.", hint="give UTF-8 text")
    return value


def _default_name(path: Path) -> str:
    stem = path.name.split(".")[0] if path.is_file() else path.absolute().name
    return stem or "model"


def _convert_pickles(src: ModelSource, tmp: Path) -> ModelSource:
    """Replace pickle checkpoints (allowed by the caller) with safetensors conversions in ``tmp``."""
    if not src.pickles:
        return src
    files: list[SourceFile] = []
    for i, f in enumerate(src.files):
        if f.kind == "pickle":
            out = tmp / f"converted-{i}.safetensors"
            convert_pickle(f.path, out, f.shown)
            files.append(SourceFile(converted_name(f.rel), out, "safetensors", label=f.shown))
        elif f.rel.endswith(PICKLE_INDEX):
            out = tmp / f"index-{i}.json"
            convert_index(f.path, out)
            files.append(SourceFile(f.rel.removesuffix(PICKLE_INDEX) + SAFETENSORS_INDEX, out, "plain"))
        else:
            files.append(f)
    return ModelSource(tuple(files), src.config, src.skipped)


def _save_in_memory(obj: Any, tmp: Path, spec: dict[str, Any] | None) -> ModelSource:
    """An ``nn.Module`` or state dict from Python, written once as safetensors so it is registered like a file."""
    import torch
    from safetensors.torch import save_file, save_model

    metadata = architectures.spec_to_safetensors_metadata(spec) if spec else None
    out = tmp / "model.safetensors"
    if isinstance(obj, torch.nn.Module):
        save_model(obj, str(out), metadata=metadata)
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        save_file({str(k): v.detach().contiguous() for k, v in obj.items()}, str(out), metadata=metadata)
    else:
        raise InvalidModelFile("register() takes a path, an nn.Module or a non-empty dict of tensors.")
    return ModelSource((SourceFile("model.safetensors", out, "safetensors"),), None, ())


def _check_shards(src: ModelSource, files: Sequence[IngestedFile]) -> None:
    """Every tensor a sharded index maps must be in the shard it names, and no tensor may appear twice."""
    seen: dict[str, str] = {}
    for f in files:
        for t in f.tensors:
            if t.name in seen:
                raise InvalidModelFile(f"tensor {t.name!r} appears in both {seen[t.name]} and {f.path}.")
            seen[t.name] = f.path
    names = {f.rel for f in src.files}
    for sf in src.files:
        if sf.rel.endswith(SAFETENSORS_INDEX):
            base = sf.rel.rsplit("/", 1)[0] + "/" if "/" in sf.rel else ""
            for tensor, shard in check_index(sf, names).items():
                if seen.get(tensor) != base + shard:
                    raise InvalidModelFile(f"{sf.rel} puts {tensor!r} in {shard}, which does not hold it.")


def _check_fits(spec: dict[str, Any], files: Sequence[IngestedFile]) -> None:
    """A given architecture must name exactly the stored tensors, with their shapes.

    The module is built on torch's meta device, so the check allocates no memory for weights. A family that
    cannot be built here (transformers missing) is checked when it is loaded instead.
    """
    import torch

    try:
        with torch.device("meta"):
            module = architectures.build_module(spec)
    except architectures.ArchitectureUnavailable:
        return
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    actual = {t.name: t.shape for f in files for t in f.tensors}
    problems = [f"missing {k}" for k in sorted(expected.keys() - actual.keys())]
    problems += [f"unexpected {k}" for k in sorted(actual.keys() - expected.keys())]
    problems += [
        f"{k} is {list(actual[k])}, the architecture needs {list(expected[k])}"
        for k in sorted(expected.keys() & actual.keys())
        if expected[k] != actual[k]
    ]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise architectures.InvalidArchitecture(
            f"the architecture does not fit the weights: {'; '.join(problems[:3])}{more}.",
            hint="check the spec given with --arch against the model's tensors (`modelkin show` lists them)",
        )


def _discover_architecture(
    files: Sequence[IngestedFile], config: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, str | None]:
    """An architecture spec from the weights' metadata, else from config.json.

    Discovery never fails a registration: a spec whose family no installed plugin provides is kept as declared
    (another machine may have the plugin), and a malformed one is dropped; both with a warning.
    """
    for f in files:
        try:
            found = architectures.spec_from_safetensors_metadata(f.metadata)
        except architectures.InvalidArchitecture as exc:
            return None, f"ignored the architecture in {f.path} metadata: {exc}"
        if found is not None:
            return _checked(found, f"{f.path} metadata")
    found = architectures.spec_from_hf_config(config) if config is not None else None
    return _checked(found, "config.json") if found is not None else (None, None)


def _checked(spec: dict[str, Any], where: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return architectures.validate_spec(spec), None
    except architectures.UnknownArchitecture as exc:
        return spec, f"kept the architecture in {where} unchecked: {exc}"
    except ModelkinError as exc:
        return None, f"ignored the architecture in {where}: {exc}"
