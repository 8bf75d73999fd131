"""Checking stored bytes against their digests (``verify``) and removing unreferenced blobs (``gc``)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from modelkin.db.engine import read_session, write_session
from modelkin.db.schema import Event, File, Version
from modelkin.errors import IntegrityError
from modelkin.registry import sidecar
from modelkin.registry.records import GcReport, Problem, VerifyReport
from modelkin.registry.sources import SKIPPED_DIRS
from modelkin.registry.staging import Staging
from modelkin.registry.store import sha256_file

if TYPE_CHECKING:
    from modelkin.registry.registry import Registry

MANIFEST_PATH = "(manifest)"


def verify_version(reg: Registry, ref: str, against: Path | None = None) -> VerifyReport:
    """Re-hash every blob of a version (or, with ``against``, a local copy of it) and report each difference.

    Problems: ``missing`` (a file the manifest lists is absent), ``extra`` (a file that the manifest does not
    list), ``changed`` (bytes that no longer hash to the recorded digest). The manifest itself is checked first
    because it is what the version's digest names.
    """
    version = reg.get(ref)
    recorded = {f.path: f.sha256 for f in version.files}
    problems: list[Problem] = []
    try:
        manifest = json.loads(reg.store.read_verified(version.digest.removeprefix("sha256:")))
    except IntegrityError as exc:
        problems.append(Problem(MANIFEST_PATH, "missing" if exc.actual is None else "changed"))
    else:
        listed = {f["path"]: f["sha256"] for f in manifest["files"]}
        problems += _differences(listed, recorded)  # the database's file rows against the manifest
        recorded = listed
    if against is None:
        for path, digest in sorted(recorded.items()):
            actual = reg.store.hash_blob(digest)
            if actual != digest:
                problems.append(Problem(path, "missing" if actual is None else "changed"))
    else:
        problems += _differences(recorded, _hash_local(against, recorded))
    return VerifyReport(version.ref, tuple(problems), len(recorded) + 1)


def _differences(expected: dict[str, str], found: dict[str, str]) -> list[Problem]:
    """path -> sha256 maps compared: expected but absent is missing, unexpected is extra, else changed."""
    return (
        [Problem(p, "missing") for p in sorted(expected.keys() - found.keys())]
        + [Problem(p, "extra") for p in sorted(found.keys() - expected.keys())]
        + [Problem(p, "changed") for p in sorted(expected.keys() & found.keys()) if expected[p] != found[p]]
    )


def _hash_local(path: Path, recorded: dict[str, str]) -> dict[str, str]:
    """sha256 of every file of a local model directory, or of a lone weights file under its stored name."""
    if path.is_file():
        weights = [p for p in recorded if p.endswith(".safetensors")]
        return {weights[0] if len(weights) == 1 else path.name: sha256_file(path)}
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist")
    rels = [f.relative_to(path) for f in sorted(path.rglob("*")) if f.is_file()]
    view = sidecar.model_view(path, [r.as_posix() for r in rels if not SKIPPED_DIRS.intersection(r.parts[:-1])])
    return {rel: sha256_file(source) for rel, source in view.items()}  # an export's card as the version stored it


def collect_garbage(reg: Registry, grace_seconds: float, dry_run: bool = False) -> GcReport:
    """Delete blobs that no version references, if older than ``grace_seconds``, and what crashes left behind.

    The grace period protects a registration running concurrently: its blobs are written before the version
    row that references them is committed. ``gc --grace 0`` is for when nothing else is writing. Leftovers
    (temporary files and objects, staging files, unfinished multipart uploads) go as soon as their writer is
    gone; those whose writer cannot be known (another host, an upload) go after the grace period.
    """
    with read_session(reg.engine) as s:
        referenced = set(s.scalars(select(File.sha256).distinct()))
        referenced |= {d.removeprefix("sha256:") for d in s.scalars(select(Version.digest))}
    cutoff = time.time() - grace_seconds
    removed = freed = recent = 0
    for blob in reg.store.iter_blobs():
        if blob.digest in referenced:
            continue
        if blob.mtime > cutoff:
            recent += 1
            continue
        if not dry_run:  # the listing may be old by now: a registration reusing the blob has refreshed its age
            now = reg.store.mtime(blob.digest)
            if now is None:  # removed meanwhile
                continue
            if now > cutoff:
                recent += 1
                continue
        removed += 1
        freed += blob.size
        if not dry_run:
            reg.store.delete(blob.digest)
    staging = Staging(reg.settings.staging)
    leftovers = [*reg.store.leftovers(cutoff), *staging.leftovers(cutoff)]
    if not dry_run:
        for item in leftovers:
            if item.kind == "staging":
                staging.remove(item)
            else:
                reg.store.remove_leftover(item)
    counts = Counter(item.kind for item in leftovers)
    leftover_bytes = sum(item.size for item in leftovers)
    report = GcReport(
        removed, freed + leftover_bytes, recent, dry_run, len(leftovers), leftover_bytes,
        counts["temporary"], counts["staging"], counts["multipart"],
    )  # fmt: skip
    if not dry_run:
        with write_session(reg.engine) as s:
            s.add(Event(kind="gc", detail=report.to_json()))
    return report
