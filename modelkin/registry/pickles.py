"""Pickle checkpoints, refused by default and, with ``--allow-pickle``, converted to safetensors.

Conversion loads only through ``torch.load(weights_only=True)``, whose unpickler accepts tensors and plain
containers and refuses any other global, so a malicious checkpoint cannot run code here.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path, PurePosixPath
from typing import Any

from modelkin.errors import InvalidModelFile


def converted_name(rel: str) -> str:
    """``pytorch_model-00001-of-00002.bin`` -> ``model-00001-of-00002.safetensors`` (HF's naming)."""
    p = PurePosixPath(rel)
    stem = re.sub(r"^pytorch_model", "model", p.stem)
    return str(p.with_name(stem + ".safetensors"))


def convert_pickle(src: Path, dst: Path, label: str) -> None:
    import torch
    from safetensors.torch import save_file

    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message goes on to suggest weights_only=False, which is exactly what we must not advise
        raise InvalidModelFile(
            f"{label} could not be loaded safely: it holds objects other than tensors and plain containers.",
            hint="pickle files are loaded with torch.load(weights_only=True) only; re-save it as safetensors",
        ) from None
    except Exception as exc:  # truncated or corrupt files: EOFError, RuntimeError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise InvalidModelFile(f"{label} could not be loaded: {first}") from None
    state = _state_dict(obj, label)
    # clone: safetensors refuses tensors that share storage, which pickled state dicts often do (tied weights)
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(dst))


def _state_dict(obj: Any, label: str) -> dict[str, Any]:
    import torch

    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise InvalidModelFile(f"{label} does not hold a state dict (a map of names to tensors).")
    return obj


def convert_index(src: Path, dst: Path) -> None:
    """Rewrite ``pytorch_model.bin.index.json`` to name the converted shards."""
    import json

    doc = json.loads(src.read_text(encoding="utf-8"))
    doc["weight_map"] = {k: converted_name(v) for k, v in doc["weight_map"].items()}
    dst.write_text(json.dumps(doc, indent=2, sort_keys=True), encoding="utf-8")
