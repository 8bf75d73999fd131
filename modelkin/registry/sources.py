"""What a registration reads: one weights file, or a Hugging Face-format directory, checked for escapes.

Every path that ends up in a manifest is a relative POSIX path that stays inside the model directory. Names
in a sharded index, ``..`` components, absolute paths and symlinks whose target lies outside the trusted root
are refused before a byte is copied.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from modelkin.errors import InvalidModelFile, UnsafeFormat, UnsafePath
from modelkin.registry import sidecar
from modelkin.registry.untrusted import load_json, read_bounded

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"})
# weights of other frameworks that duplicate the safetensors ones in HF repos; not stored
FOREIGN_WEIGHT_SUFFIXES = frozenset({".h5", ".msgpack", ".ot", ".onnx", ".gguf", ".tflite", ".mlmodel"})
SKIPPED_DIRS = frozenset({".git", ".cache", "__pycache__", ".huggingface", sidecar.SIDECAR_DIR})
SAFETENSORS_INDEX = ".safetensors.index.json"
PICKLE_INDEX = ".bin.index.json"

Kind = Literal["safetensors", "pickle", "plain"]


@dataclass(frozen=True)
class SourceFile:
    rel: str  # relative POSIX path inside the model
    path: Path  # where to read it
    kind: Kind
    label: str = ""  # how the user knows the file, for messages (default: rel)

    @property
    def shown(self) -> str:
        return self.label or self.rel


@dataclass(frozen=True)
class ModelSource:
    files: tuple[SourceFile, ...]
    config: dict[str, Any] | None
    skipped: tuple[str, ...]

    @property
    def pickles(self) -> tuple[SourceFile, ...]:
        return tuple(f for f in self.files if f.kind == "pickle")


def collect(path: Path, *, allow_pickle: bool, trusted_root: Path | None = None) -> ModelSource:
    """Classify the files of ``path`` (a weights file or a model directory) and check every one stays inside.

    ``trusted_root`` widens where symlinks may point: the HF cache keeps a snapshot's files as links into the
    repo's ``blobs/`` folder, which is outside the snapshot but inside the repo's cache folder.
    """
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_file():
        return _single_file(path, allow_pickle)
    if not path.is_dir():
        raise InvalidModelFile(f"{path} is neither a file nor a directory.")
    root = path.resolve()
    trusted = (trusted_root or path).resolve()
    files: list[SourceFile] = []
    skipped: list[str] = []
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        here = Path(dirpath)
        for d in sorted(dirnames):
            full = here / d
            if d in SKIPPED_DIRS or full.is_symlink():
                if full.is_symlink():
                    _inside(full, trusted, path)
                skipped.append(_rel(full, path) + "/")
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS and not (here / d).is_symlink())
        for name in sorted(filenames):
            full = here / name
            real = _inside(full, trusted, path) if full.is_symlink() else full
            if not real.is_file():
                raise UnsafePath(f"{_rel(full, path)} in {path} is not a regular file.")
            files.append(SourceFile(_rel(full, path), real, _kind(full)))
    config = _read_json(root / "config.json") if (root / "config.json").is_file() else None
    return _choose_weights(path, _exported_cards(path, files, skipped), skipped, config, allow_pickle)


def _exported_cards(path: Path, files: list[SourceFile], skipped: list[str]) -> list[SourceFile]:
    """In a modelkin export, cards read back as the version stored them (see modelkin.registry.sidecar)."""
    view = sidecar.model_view(path, [f.rel for f in files])
    skipped += [f.rel for f in files if f.rel not in view]
    return [SourceFile(f.rel, view[f.rel], f.kind, f.label) for f in files if f.rel in view]


def _single_file(path: Path, allow_pickle: bool) -> ModelSource:
    kind = _kind(path)
    if kind == "plain":
        raise InvalidModelFile(
            f"{path} is not a weights file.",
            hint="register a .safetensors file, a pickle checkpoint with --allow-pickle, or a model directory",
        )
    if kind == "pickle" and not allow_pickle:
        raise _pickle_refused(str(path))
    # a lone file is stored under HF's conventional name, so identity depends on bytes, not on a file name
    # (a pickle as pytorch_model.bin, which its conversion then names model.safetensors)
    rel = "model.safetensors" if kind == "safetensors" else "pytorch_model.bin"
    return ModelSource((SourceFile(rel, path, kind, label=str(path)),), None, ())


def _choose_weights(
    path: Path, files: list[SourceFile], skipped: list[str], config: dict[str, Any] | None, allow_pickle: bool
) -> ModelSource:
    has_safetensors = any(f.kind == "safetensors" for f in files)
    kept: list[SourceFile] = []
    for f in files:
        suffix = PurePosixPath(f.rel).suffix.lower()
        if suffix in FOREIGN_WEIGHT_SUFFIXES or (
            has_safetensors and (f.kind == "pickle" or f.rel.endswith(PICKLE_INDEX))
        ):
            skipped.append(f.rel)
        else:
            kept.append(f)
    if not any(f.kind in ("safetensors", "pickle") for f in kept):
        raise InvalidModelFile(
            f"{path} holds no weights (no .safetensors or pickle checkpoint).",
            hint="point at the folder that holds model.safetensors, or at the weights file itself",
        )
    pickles = [f for f in kept if f.kind == "pickle"]
    if pickles and not allow_pickle:
        raise _pickle_refused(pickles[0].rel)
    names = {f.rel for f in kept}
    for f in kept:
        if f.rel.endswith(SAFETENSORS_INDEX) or f.rel.endswith(PICKLE_INDEX):
            check_index(f, names)
    return ModelSource(tuple(kept), config, tuple(skipped))


def check_index(index: SourceFile, names: set[str]) -> dict[str, str]:
    """Validate a sharded index: every shard is a plain relative name inside the model and present."""
    doc = _read_json(index.path)
    weight_map = doc.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise InvalidModelFile(f"{index.rel} has no valid weight_map.")
    base = PurePosixPath(index.rel).parent
    for shard in set(weight_map.values()):
        p = PurePosixPath(shard)
        if p.is_absolute() or shard.startswith(("/", "\\")) or ".." in p.parts or "\\" in shard:
            raise UnsafePath(
                f"{index.rel} names shard {shard!r}, which escapes the model directory.",
                hint="a shard must be a file name inside the model directory",
            )
        rel = str(base / p) if str(base) != "." else str(p)
        if rel not in names:
            raise InvalidModelFile(f"{index.rel} names shard {shard!r}, which is not in the model directory.")
    return dict(weight_map)


def _inside(link: Path, trusted: Path, path: Path) -> Path:
    target = link.resolve()
    if not target.is_relative_to(trusted):
        raise UnsafePath(
            f"{_rel(link, path)} in {path} is a symlink to {target}, outside the model directory.",
            hint="copy the file into the directory instead of linking to it",
        )
    return target


def _kind(path: Path) -> Kind:
    name = path.name.lower()
    if name.endswith(".safetensors"):
        return "safetensors"
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return "pickle"
    return "plain"


def _rel(full: Path, root: Path) -> str:
    return full.relative_to(root).as_posix()


MAX_JSON_BYTES = 64_000_000  # a sharded index of a very large model is a few MB; a config a few KB


def _read_json(path: Path) -> dict[str, Any]:
    doc = load_json(read_bounded(path, MAX_JSON_BYTES), path.name)
    if not isinstance(doc, dict):
        raise InvalidModelFile(f"{path.name} is not a JSON object.")
    return doc


def _pickle_refused(name: str) -> UnsafeFormat:
    return UnsafeFormat(
        f"{name} is a pickle file, which can run arbitrary code when loaded; refusing it.",
        hint="convert it to safetensors, or pass --allow-pickle to load it with torch.load(weights_only=True)",
    )
