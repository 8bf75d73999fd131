"""JSON text as ``json.dumps(obj, indent=2, ensure_ascii=False, default=str, allow_nan=False)`` writes it, faster.

The standard library encodes indented JSON in pure Python, which costs more than reading 100,000 versions from
the database. ``encode`` walks the same structure with the C string encoder and plain concatenation; the
output is the same character for character (``tests/test_output.py``). It lives outside the CLI because
``modelkin.registry.version_json`` writes a listing's JSON straight from database rows with it.
"""

from __future__ import annotations

import math
from json.encoder import encode_basestring  # type: ignore[attr-defined]  # the C encoder when available
from typing import Any

ITEM = "\n  "  # what starts each line of an item of a top-level array: a newline and its indentation


def encode(obj: Any, newline: str) -> str:
    """``obj`` indented, its nested lines starting with ``newline`` (a newline and the indentation so far).

    Strings, ints, None and booleans inside containers (most of a record) are written inline, without a call.
    """
    kind = type(obj)  # exact types first: a record is almost only str, dict, list and int
    if kind is str:
        return encode_basestring(obj)  # type: ignore[no-any-return]
    if kind is dict or kind is list or kind is tuple:
        if not obj:
            return "{}" if kind is dict else "[]"
        inner = newline + "  "
        parts = []
        for k, v in obj.items() if kind is dict else enumerate(obj):
            t = type(v)
            if t is str:
                text = encode_basestring(v)
            elif t is int:
                text = int.__repr__(v)
            elif v is None or v is True or v is False:
                text = _CONSTANTS[v]
            else:
                text = encode(v, inner)
            if kind is dict:
                head = _HEADS.get(k) if type(k) is str else None
                if head is None:
                    head = (encode_basestring(k) if type(k) is str else _key(k)) + ": "
                    if type(k) is str and len(_HEADS) < 4096:
                        _HEADS[k] = head
                text = head + text
            parts.append(text)
        opening, closing = ("{", "}") if kind is dict else ("[", "]")
        return opening + inner + ("," + inner).join(parts) + newline + closing
    if obj is None or obj is True or obj is False:
        return _CONSTANTS[obj]
    if isinstance(obj, int):
        return int.__repr__(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError("Out of range float values are not JSON compliant: " + repr(obj))
        return float.__repr__(obj)
    if isinstance(obj, str):
        return encode_basestring(obj)  # type: ignore[no-any-return]
    if isinstance(obj, (dict, list, tuple)):
        return encode(dict(obj) if isinstance(obj, dict) else list(obj), newline)
    return encode_basestring(str(obj))  # type: ignore[no-any-return]  # default=str


def _key(key: Any) -> str:
    if isinstance(key, str):
        return encode_basestring(key)
    if key is None or key is True or key is False:
        return f'"{_CONSTANTS[key]}"'
    if isinstance(key, (int, float)):
        return f'"{encode(key, "")}"'
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


_CONSTANTS = {None: "null", True: "true", False: "false"}
_HEADS: dict[str, str] = {}  # '"key": ' of the keys seen so far: a listing repeats the same few thousand times
