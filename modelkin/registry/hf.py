"""Hugging Face interop: importing a repo (local folder, local HF cache, or the Hub) and exporting a version.

The model card's ``base_model``/``base_model_relation`` become *declared* lineage on import; license, datasets
and metrics stay as the version's card metadata and are written back on export, together with modelkin's own
precise relation and the manifest digest. The Hub is reached only for a repo id that is not in the local cache,
and never when ``HF_HUB_OFFLINE`` is set.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelkin.errors import ExportError, HubError
from modelkin.registry import sidecar, untrusted
from modelkin.registry.safe_write import SafeFolder
from modelkin.registry.sources import FOREIGN_WEIGHT_SUFFIXES, PICKLE_SUFFIXES
from modelkin.registry.store import CHUNK

if TYPE_CHECKING:
    from modelkin.registry.ingest import Progress
    from modelkin.registry.records import ModelVersion
    from modelkin.registry.registry import Registration, Registry

# modelkin relation -> HF's four base_model_relation values
HF_RELATION = {
    "finetune": "finetune",
    "adapter": "adapter",
    "merge": "merge",
    "quantized": "quantized",
    "pruned": "finetune",
    "watermarked": "finetune",
    "distilled": "finetune",
}
CARD_FILE = "README.md"


def read_card(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The YAML metadata of a model card ({} when there is none), and a warning when it does not parse.

    A card with broken YAML is still a model, its metadata just unusable; a hostile one (an alias bomb,
    nesting thousands deep, megabytes of metadata) is refused: see modelkin.registry.untrusted.
    """
    if not path.is_file():
        return {}, []
    text = untrusted.read_bounded(path, sidecar.MAX_CARD_BYTES).decode("utf-8", errors="replace")
    try:
        return untrusted.load_card_metadata(text, path.name), []
    except untrusted.UnreadableMetadata as exc:
        return {}, [f"ignored the model card's metadata: {exc}"]


def import_hf(
    reg: Registry,
    source: str,
    *,
    revision: str | None = None,
    name: str | None = None,
    allow_pickle: bool = False,
    tags: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> Registration:
    """Register a local HF-format folder, or a repo id from the local cache (or the Hub, when online)."""
    from modelkin.registry.registry import HF_REPO_RE

    path = Path(source).expanduser()
    if path.exists():
        folder, trusted, label, default_name = path, None, str(path.absolute()), path.absolute().name
    elif HF_REPO_RE.match(source):
        folder, trusted, commit = _snapshot(source, revision, allow_pickle)
        label, default_name = f"hf:{source}@{commit}", source
    else:
        raise HubError(f"{source!r} is neither a folder nor a Hugging Face repo id (org/name).")
    record = sidecar.read(folder) if folder.is_dir() else None
    card_path = sidecar.card_source(folder, record, CARD_FILE) if (folder / CARD_FILE).is_file() else None
    card, warnings = read_card(card_path) if card_path is not None else ({}, [])
    if record is not None:  # a modelkin export: its record names the parents precisely
        parents, more = _recorded_parents(reg, record)
        relation = record.relation
    else:
        parents, more = _declared_bases(reg, card)
        relation = card.get("base_model_relation")
    warnings += more
    if relation is not None and (not isinstance(relation, str) or relation not in HF_RELATION):
        warnings.append(f"ignored base_model_relation {relation!r} in the model card")
        relation = None
    result = reg.register(
        folder,
        name=name or default_name,
        parents=parents,
        relation=relation,
        tags=tags,
        allow_pickle=allow_pickle,
        card=card,
        source_label=label,
        trusted_root=trusted,
        progress=progress,
        architecture_fallback=record.architecture if record is not None else None,
    )
    return replace(result, warnings=(*warnings, *result.warnings))


def _recorded_parents(reg: Registry, record: sidecar.Sidecar) -> tuple[list[str], list[str]]:
    """An export's parents: the registered version with the recorded digest, else by Hub id as a card names it."""
    found: list[str] = []
    by_hub: list[Any] = []
    for p in record.parents:
        ref = _registered(reg, p.get("digest"))
        if ref is not None:
            found.append(ref)
        else:
            by_hub.append(p.get("hub"))
    parents, warnings = _declared_bases(reg, {"base_model": by_hub}) if by_hub else ([], [])
    return found + parents, warnings


def _registered(reg: Registry, digest: object) -> str | None:
    from modelkin.errors import ModelkinError

    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        return None
    try:
        return reg.get(digest).ref
    except ModelkinError:
        return None


def _declared_bases(reg: Registry, card: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``base_model`` ids become REFs when a model of that name is registered, ``hf:`` ids otherwise.

    A card is written by hand: values that are not repo ids are skipped with a warning, never fatal.
    """
    from modelkin.errors import ModelkinError
    from modelkin.registry.registry import HF_REPO_RE

    raw = card.get("base_model")
    bases = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else [] if raw is None else [raw]
    parents: list[str] = []
    warnings: list[str] = []
    for base in bases:
        if not isinstance(base, str) or not HF_REPO_RE.match(base):
            warnings.append(f"ignored base_model {base!r} in the model card: not a repo id")
            continue
        try:
            parents.append(reg.get(base).ref)
        except ModelkinError:
            parents.append(f"hf:{base}")
    return parents, warnings


def hub_cache() -> Path:
    """HF's cache folder, read from the environment at call time (huggingface_hub reads it once at import)."""
    if cache := os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(cache)
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _snapshot(repo_id: str, revision: str | None, allow_pickle: bool) -> tuple[Path, Path, str]:
    """(snapshot folder, repo cache folder that its symlinks may point into, commit)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    cache = hub_cache()
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True))
    except LocalEntryNotFoundError:
        if _offline():
            raise HubError(
                f"{repo_id} is not in the local Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set.",
                hint="unset HF_HUB_OFFLINE to download it, or import a local folder",
            ) from None
        skip = [f"*{s}" for s in FOREIGN_WEIGHT_SUFFIXES | (set() if allow_pickle else PICKLE_SUFFIXES)]
        try:
            folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, ignore_patterns=skip))
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
            raise HubError(f"could not fetch {repo_id} from the Hugging Face Hub: {exc}.") from None
    return folder, folder.parents[1], folder.name


def export_version(reg: Registry, version: ModelVersion, out: Path, *, force: bool = False) -> Path:
    """Write an HF-format folder: every file (digest-checked), a card carrying the lineage, and the sidecar.

    Writes never follow a link out of ``out`` (see modelkin.registry.safe_write); on refusal or failure the
    folder is left as it was found, and removed if the export created it.
    """
    if os.path.lexists(out) and (not out.is_dir() or out.is_symlink() or any(out.iterdir())) and not force:
        raise ExportError(f"{out} exists and is not empty.", hint="choose a new folder or pass --force")
    stored = next((f for f in version.files if f.path == CARD_FILE), None)
    original = reg.store.read_verified(stored.sha256) if stored is not None else None
    card = render_card(reg, version, original)
    parents = [_parent_record(reg, p) for p in version.declared_parents]
    cards = {CARD_FILE: (_sha256(card), stored.sha256 if stored is not None else None)}
    folder = SafeFolder(out, create=True)
    try:
        extra = [CARD_FILE, sidecar.SIDECAR_FILE] + ([sidecar.original_path(CARD_FILE)] if original else [])
        for rel in [f.path for f in version.files] + extra:
            folder.check(rel)
        for f in version.files:
            if f.path != CARD_FILE:
                folder.stage(f.path, _verified_chunks(reg, f.sha256))
        folder.stage(CARD_FILE, [card])
        if original is not None:
            folder.stage(sidecar.original_path(CARD_FILE), [original])
        folder.stage(sidecar.SIDECAR_FILE, [sidecar.document(version, parents, cards)])
        folder.commit()
    except BaseException:
        folder.abort()
        if folder.created:  # a failed export leaves nothing behind; a folder the user gave us is left as it was
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        folder.close()
    return out


def _verified_chunks(reg: Registry, digest: str) -> Iterator[bytes]:
    """A blob's bytes in chunks, hashed again on the way so that nothing changed between check and copy."""
    h = hashlib.sha256()
    with reg.store.local_path(digest) as path, open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            yield chunk
    if h.hexdigest() != digest:
        raise ExportError(f"blob {digest[:12]} changed while it was being exported.", hint="run `modelkin verify`")


def render_card(reg: Registry, version: ModelVersion, original: bytes | None) -> bytes:
    """The version's card (its own README if it had one) with base_model and modelkin's provenance block.

    A stored card whose metadata is not valid YAML is exported as it is: there is no metadata to extend.
    """
    import yaml

    body = f"# {version.name}\n\nExported from a modelkin registry as {version.ref}.\n"
    data: dict[str, Any] = {}
    if original is not None:
        text = original.decode("utf-8", errors="replace")
        try:
            data = untrusted.load_card_metadata(text, CARD_FILE)
        except untrusted.UnreadableMetadata:
            return original
        body = untrusted.split_front_matter(text)[1]
    data = {k: v for k, v in data.items() if k not in ("base_model", "base_model_relation", "modelkin")}
    bases = [_hub_id(reg, p) for p in version.declared_parents]
    if bases:
        data["base_model"] = bases[0] if len(bases) == 1 else bases
        if version.relation in HF_RELATION:
            data["base_model_relation"] = HF_RELATION[version.relation]
    data["modelkin"] = {
        "ref": version.ref,
        "digest": version.digest,
        "relation": version.relation,
        "parents": list(version.declared_parents),
    }
    front = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{front}---\n\n{body.lstrip()}".encode()


def _parent_record(reg: Registry, parent: str) -> dict[str, Any]:
    """A declared parent as the sidecar keeps it: its REF here, its manifest digest, its Hub id."""
    digest = None if parent.startswith("hf:") else reg.get(parent).digest
    return {"ref": parent, "digest": digest, "hub": _hub_id(reg, parent)}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hub_id(reg: Registry, parent: str) -> str:
    """How a parent is named on the Hub: ``hf:org/name`` as it is, a registered model by its HF origin or name."""
    if parent.startswith("hf:"):
        return parent[3:]
    v = reg.get(parent)
    if v.source and v.source.startswith("hf:"):
        return v.source[3:].split("@", 1)[0]
    return v.name
