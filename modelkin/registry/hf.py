"""Hugging Face interop: importing a repo (local folder, local HF cache, or the Hub) and exporting a version.

The model card's ``base_model``/``base_model_relation`` become *declared* lineage on import; license, datasets
and metrics stay as the version's card metadata and are written back on export, together with modelkin's own
precise relation and the manifest digest. The Hub is reached only for a repo id that is not in the local cache,
and never when ``HF_HUB_OFFLINE`` is set.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelkin.errors import ExportError, HubError, InvalidModelFile
from modelkin.registry import untrusted
from modelkin.registry.sources import FOREIGN_WEIGHT_SUFFIXES, PICKLE_SUFFIXES

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


MAX_CARD_BYTES = 10_000_000


def read_card(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The YAML metadata of a model card ({} when there is none), and a warning when it does not parse.

    A card with broken YAML is still a model, its metadata just unusable; a hostile one (an alias bomb,
    nesting thousands deep, megabytes of metadata) is refused: see modelkin.registry.untrusted.
    """
    if not path.is_file():
        return {}, []
    if path.stat().st_size > MAX_CARD_BYTES:
        raise InvalidModelFile(f"{path.name} is larger than {MAX_CARD_BYTES} bytes, too large for a model card.")
    text = path.read_bytes().decode("utf-8", errors="replace")
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
    card, card_warnings = read_card(folder / CARD_FILE)
    parents, warnings = _declared_bases(reg, card)
    warnings = card_warnings + warnings
    relation = card.get("base_model_relation")
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
    )
    return replace(result, warnings=(*warnings, *result.warnings))


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
    """Write an HF-format folder: every file (digest-checked) plus a model card carrying the lineage."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ExportError(f"{out} exists and is not empty.", hint="choose a new folder or pass --force")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        for f in version.files:
            if f.path == CARD_FILE:
                continue
            target = out / f.path
            if not target.resolve().is_relative_to(out.resolve()):
                raise ExportError(f"stored path {f.path!r} would escape {out}.")
            target.parent.mkdir(parents=True, exist_ok=True)
            reg.store.copy_verified(f.sha256, target)
        write_card(reg, version, out / CARD_FILE)
    except BaseException:
        if created:  # a failed export leaves nothing behind; a folder the user gave us is left as it was given
            shutil.rmtree(out, ignore_errors=True)
        raise
    return out


def write_card(reg: Registry, version: ModelVersion, path: Path) -> None:
    """The version's card (its own README if it had one) with base_model and modelkin's provenance block."""
    from huggingface_hub import ModelCard, ModelCardData

    body = f"# {version.name}\n\nExported from a modelkin registry as {version.ref}.\n"
    stored = next((f for f in version.files if f.path == CARD_FILE), None)
    if stored is not None:
        text = reg.store.read_verified(stored.sha256).decode("utf-8", errors="replace")
        body = ModelCard(text, ignore_metadata_errors=True).text
    data = {k: v for k, v in version.card.items() if k not in ("base_model", "base_model_relation", "modelkin")}
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
    card = ModelCard(f"---\n{ModelCardData(**data).to_yaml()}\n---\n\n{body.lstrip()}")
    card.save(path)


def _hub_id(reg: Registry, parent: str) -> str:
    """How a parent is named on the Hub: ``hf:org/name`` as it is, a registered model by its HF origin or name."""
    if parent.startswith("hf:"):
        return parent[3:]
    v = reg.get(parent)
    if v.source and v.source.startswith("hf:"):
        return v.source[3:].split("@", 1)[0]
    return v.name
