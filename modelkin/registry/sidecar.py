"""The ``.modelkin/`` folder an export writes beside a model's files, so that importing the export is exact.

An export's ``README.md`` carries the version's lineage for the Hub (``base_model``) and modelkin's provenance
block, which changes its bytes. ``.modelkin/export.json`` records what was written and what the version stored:

    {"format": "modelkin-export/1", "ref": "minilm:1", "digest": "sha256:…", "relation": null,
     "architecture": {...}, "parents": [{"ref": "base:1", "digest": "sha256:…", "hub": "org/base"}],
     "cards": {"README.md": {"written": "<sha256>", "stored": "<sha256> or null"}}}

and ``.modelkin/README.md`` holds the stored card's original bytes. Reading the folder back, a card whose bytes
are still the ones written is replaced by the original (or dropped when the version had none), the sidecar and
a ``model.sig`` signature bundle are never model files, and so the manifest digest comes out the same. A card
edited after the export no longer matches and is kept as the user's own.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelkin.errors import InvalidModelFile
from modelkin.registry.untrusted import load_json, read_bounded

SIDECAR_DIR = ".modelkin"
SIDECAR_FILE = f"{SIDECAR_DIR}/export.json"
SIGNATURE_FILE = "model.sig"  # an OpenSSF model-signing bundle over the exported files
FORMAT = "modelkin-export/1"
CARD_FILES = ("README.md",)
MAX_SIDECAR_BYTES = 1_000_000
MAX_CARD_BYTES = 10_000_000


@dataclass(frozen=True)
class Sidecar:
    """What an export recorded; ``cards`` maps a card's path to (sha256 written, sha256 stored or None)."""

    doc: dict[str, Any]
    cards: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    @property
    def parents(self) -> list[dict[str, Any]]:
        parents = self.doc.get("parents")
        return [p for p in parents if isinstance(p, dict)] if isinstance(parents, list) else []

    @property
    def relation(self) -> str | None:
        relation = self.doc.get("relation")
        return relation if isinstance(relation, str) else None

    @property
    def architecture(self) -> dict[str, Any] | None:
        spec = self.doc.get("architecture")
        return spec if isinstance(spec, dict) else None


def document(version: Any, parents: list[dict[str, Any]], cards: dict[str, tuple[str, str | None]]) -> bytes:
    """The ``export.json`` of an export of ``version`` (a ModelVersion)."""
    doc = {
        "format": FORMAT,
        "ref": version.ref,
        "digest": version.digest,
        "relation": version.relation,
        "architecture": version.architecture,
        "parents": parents,
        "cards": {path: {"written": written, "stored": stored} for path, (written, stored) in cards.items()},
    }
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def original_path(card: str) -> str:
    return f"{SIDECAR_DIR}/{card}"


def read(folder: Path) -> Sidecar | None:
    """The sidecar of an exported folder, or None; a malformed one is an error, not silently ignored."""
    path = folder / SIDECAR_FILE
    if not path.is_file() or path.is_symlink():
        return None
    doc = load_json(read_bounded(path, MAX_SIDECAR_BYTES, SIDECAR_FILE), SIDECAR_FILE)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InvalidModelFile(f"{SIDECAR_FILE} in {folder} is not a modelkin export record ({FORMAT}).")
    cards: dict[str, tuple[str, str | None]] = {}
    recorded = doc.get("cards")
    for card, entry in (recorded if isinstance(recorded, dict) else {}).items():
        if card in CARD_FILES and isinstance(entry, dict) and isinstance(entry.get("written"), str):
            stored = entry.get("stored")
            cards[card] = (entry["written"], stored if isinstance(stored, str) else None)
    return Sidecar(doc, cards)


def is_own_file(rel: str) -> bool:
    """Files of an export folder that are modelkin's record or a signature, never part of the model."""
    return rel == SIGNATURE_FILE or rel == SIDECAR_DIR or rel.startswith(SIDECAR_DIR + "/")


def model_view(folder: Path, rels: Iterable[str]) -> dict[str, Path]:
    """The model's files among ``rels`` (paths in ``folder``), each with the file its bytes must be read from.

    modelkin's own files and a signature are left out, and so is a card the export generated; a card the
    export rewrote maps to the stored original. Outside an export every path maps to itself.
    """
    record = read(folder)
    view: dict[str, Path] = {}
    for rel in rels:
        if is_own_file(rel):
            continue
        source = card_source(folder, record, rel) if record is not None and rel in record.cards else folder / rel
        if source is not None:
            view[rel] = source
    return view


def card_source(folder: Path, sidecar: Sidecar | None, card: str) -> Path | None:
    """Where the bytes of ``folder/card`` really come from: itself, the stored original, or nowhere (None).

    The original is used only when the card is byte for byte what the export wrote and the original's own
    digest matches the record; it must be a regular file inside the folder.
    """
    path = folder / card
    if sidecar is None or card not in sidecar.cards:
        return path
    written, stored = sidecar.cards[card]
    if sha256_small(path) != written:
        return path  # edited after the export: the user's card now
    if stored is None:
        return None  # the export generated it: the version had no card
    original = folder / original_path(card)
    if not original.is_file() or stat.S_ISLNK(os.lstat(original).st_mode) or sha256_small(original) != stored:
        raise InvalidModelFile(
            f"{original_path(card)} in {folder} is missing or does not match its record.",
            hint="export the version again, or delete the .modelkin folder to import the files as they are",
        )
    return original


def sha256_small(path: Path) -> str:
    """The digest of a small file (a card), read at once; a device or an oversized file is refused."""
    return hashlib.sha256(read_bounded(path, MAX_CARD_BYTES)).hexdigest()
