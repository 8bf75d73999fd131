"""Reading and checking a safetensors header without trusting it.

The safetensors format is an 8-byte little-endian header length, a JSON header, then one byte buffer that the
header's ``data_offsets`` slice. We parse the header ourselves so that registration can stream the file once
(hashing tensors as their bytes go by) instead of loading it, and we apply every rule the reference
implementation applies, so that a file we accept is one ``safetensors`` will load.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from modelkin.errors import InvalidModelFile

MAX_HEADER_BYTES = 100_000_000  # the reference implementation's limit

# bits per element; sub-byte types must fill whole bytes per tensor
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header describes it; offsets are relative to the start of the data buffer."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Header:
    """A checked header: tensors sorted by offset, and where the data buffer starts in the file."""

    tensors: tuple[TensorEntry, ...]
    metadata: dict[str, str]
    data_start: int
    data_length: int


def read_header(fh: BinaryIO, file_size: int, label: str) -> Header:
    """Parse and validate the header of an open safetensors file of ``file_size`` bytes.

    Raises InvalidModelFile with one sentence naming ``label`` on any inconsistency: truncation, absurd
    sizes, offsets past the end, holes or overlaps, shapes that do not match byte counts.
    """

    def bad(why: str) -> InvalidModelFile:
        return InvalidModelFile(
            f"{label} is not a valid safetensors file: {why}.",
            hint="the file may be truncated or corrupt; download or save it again",
        )

    prefix = fh.read(8)
    if len(prefix) < 8:
        raise bad("it is shorter than the 8-byte header length")
    (header_len,) = struct.unpack("<Q", prefix)
    if header_len > MAX_HEADER_BYTES:
        raise bad(f"its header claims {header_len} bytes, more than the {MAX_HEADER_BYTES} allowed")
    if 8 + header_len > file_size:
        raise bad(f"its header claims {header_len} bytes but the file has only {file_size - 8} after the length")
    raw = fh.read(header_len)
    if len(raw) != header_len:
        raise bad("the file ended inside its header")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, integers of thousands of digits, deep nesting
        raise bad(f"its header is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(doc, dict):
        raise bad("its header is not a JSON object")
    metadata = doc.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise bad("its __metadata__ is not a map of strings to strings")
    tensors = [_entry(name, info, bad) for name, info in doc.items()]
    tensors.sort(key=lambda t: (t.begin, t.end))
    data_length = file_size - 8 - header_len
    cursor = 0
    for t in tensors:
        if t.begin != cursor:
            raise bad(f"tensor {t.name!r} starts at byte {t.begin}, expected {cursor} (hole or overlap)")
        cursor = t.end
    if cursor != data_length:
        raise bad(f"its tensors cover {cursor} data bytes but the file holds {data_length}")
    return Header(tuple(tensors), dict(metadata), 8 + header_len, data_length)


def _entry(name: str, info: object, fail: Callable[[str], InvalidModelFile]) -> TensorEntry:
    if not isinstance(info, dict):
        raise fail(f"entry {name!r} is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in DTYPE_BITS:
        raise fail(f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise fail(f"tensor {name!r} has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise fail(f"tensor {name!r} has invalid data_offsets {offsets!r}")
    bits = math.prod(shape) * DTYPE_BITS[dtype]  # exact integers, however absurd the shape
    if bits % 8 or bits // 8 != offsets[1] - offsets[0]:
        needs = f"{bits // 8} bytes" if bits % 8 == 0 else f"{bits} bits (not whole bytes)"
        raise fail(
            f"tensor {name!r} of shape {shape} and dtype {dtype} needs {needs} but its offsets span "
            f"{offsets[1] - offsets[0]}"
        )
    return TensorEntry(name, dtype, tuple(shape), offsets[0], offsets[1])


def read_header_from_path(path: Path, label: str | None = None) -> Header:
    with open(path, "rb") as fh:
        return read_header(fh, path.stat().st_size, label or path.name)
