"""Reading and checking a safetensors header without trusting it.

The safetensors format is an 8-byte little-endian header length, a JSON header, then one byte buffer that the
header's ``data_offsets`` slice. We parse the header ourselves so that registration can stream the file once
(hashing tensors as their bytes go by) instead of loading it, and we apply every rule the reference
implementation applies, so that a file we accept is one ``safetensors`` will load.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from modelkin.errors import InvalidModelFile

_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_HEADER_BYTES = 100_000_000  # the reference implementation's limit
MAX_RANK = 64  # numpy's and torch's limit on dimensions; checked before a shape's size is computed
MAX_INDEX = 2**64  # shapes and offsets are 64-bit unsigned integers in the format

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
        doc = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise bad("its header is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise bad(f"its header is not valid JSON ({exc.msg} at character {exc.pos})") from None
    except RecursionError:
        raise bad("its header nests JSON far deeper than a header can") from None
    except ValueError:  # integers of thousands of digits (Python refuses to read them), NaN, Infinity
        raise bad("its header holds a number that is not a 64-bit integer") from None
    if not isinstance(doc, dict):
        raise bad("its header is not a JSON object")
    metadata = doc.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise bad("its __metadata__ is not a map of strings to strings")
    if not all(_is_text(k) and _is_text(v) for k, v in metadata.items()) or not all(_is_text(k) for k in doc):
        raise bad("a tensor name or metadata string is not valid Unicode (a lone surrogate)")
    tensors = [_entry(name, info, bad) for name, info in doc.items()]
    tensors.sort(key=lambda t: (t.begin, t.end))
    data_length = file_size - 8 - header_len
    cursor = 0
    for t in tensors:
        if t.begin != cursor:
            raise bad(f"tensor {_short(t.name)} starts at byte {t.begin}, expected {cursor} (hole or overlap)")
        cursor = t.end
    if cursor != data_length:
        raise bad(f"its tensors cover {cursor} data bytes but the file holds {data_length}")
    return Header(tuple(tensors), dict(metadata), 8 + header_len, data_length)


def _no_constant(name: str) -> object:
    raise ValueError(name)


def _is_text(s: str) -> bool:
    return s.isascii() or _SURROGATE.search(s) is None


def _index(value: object) -> bool:
    """A value the format can hold as a dimension or an offset: a 64-bit unsigned integer."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_INDEX


def _entry(name: str, info: object, fail: Callable[[str], InvalidModelFile]) -> TensorEntry:
    shown = _short(name)
    if not isinstance(info, dict):
        raise fail(f"entry {shown} is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise fail(f"tensor {shown} has unknown dtype {_short(dtype)}")
    if not isinstance(shape, list):
        raise fail(f"tensor {shown} has a shape that is not a list ({_short(shape)})")
    if len(shape) > MAX_RANK:
        raise fail(f"tensor {shown} has {len(shape)} dimensions, more than the {MAX_RANK} allowed")
    if not all(_index(d) for d in shape):
        raise fail(f"tensor {shown} has a shape that is not a list of 64-bit unsigned integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_index(o) for o in offsets):
        raise fail(f"tensor {shown} has data_offsets that are not two 64-bit unsigned integers")
    if offsets[0] > offsets[1]:
        raise fail(f"tensor {shown} has data_offsets that end before they begin {offsets}")
    bits = math.prod(shape) * DTYPE_BITS[dtype]  # exact integers, however absurd the shape
    if bits % 8 or bits // 8 != offsets[1] - offsets[0]:
        needs = f"{bits // 8} bytes" if bits % 8 == 0 else f"{bits} bits (not whole bytes)"
        raise fail(
            f"tensor {shown} of shape {shape} and dtype {dtype} needs {needs} but its offsets span "
            f"{offsets[1] - offsets[0]}"
        )
    return TensorEntry(name, dtype, tuple(shape), offsets[0], offsets[1])


def _short(value: object, limit: int = 60) -> str:
    """A value for a message: its repr, cut to ``limit`` characters (a name may be a megabyte long)."""
    if isinstance(value, (list, dict)):
        return f"a {type(value).__name__} of {len(value)} items"
    text = repr(value[: limit + 1] if isinstance(value, str) else value)
    return text if len(text) <= limit else text[:limit] + "…"


def read_header_from_path(path: Path, label: str | None = None) -> Header:
    with open(path, "rb") as fh:
        return read_header(fh, path.stat().st_size, label or path.name)
