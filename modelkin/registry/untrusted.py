"""Reading JSON and YAML that came from a file, with bounded work: size, depth, node and alias caps.

A model folder is input from anyone: a ``config.json`` nested ten thousand levels deep, a card whose YAML front
matter is an alias bomb (a few hundred bytes that expand to billions of nodes), numbers of thousands of digits,
``NaN``, lone surrogates in a string. Each is refused here with one sentence naming the file, before anything
large is built, and what passes is a tree of plain JSON values that every later step (canonical JSON, the
database, the terminal) can hold: UTF-8 strings, finite numbers, at most ``MAX_DEPTH`` levels.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from modelkin.errors import InvalidModelFile

MAX_DEPTH = 64  # real configs and cards nest a handful of levels
MAX_NODES = 1_000_000  # values in one JSON document
MAX_YAML_NODES = 100_000  # values a card's front matter may expand to, aliases included
MAX_FRONT_MATTER_BYTES = 1_000_000
_SURROGATE = re.compile("[\ud800-\udfff]")


class UnreadableMetadata(InvalidModelFile):
    """A card's front matter is not valid YAML: a mistake rather than an attack, so callers may skip it."""


def read_bounded(path: Path, limit: int, what: str | None = None) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (a device or FIFO never is one, whatever it says)."""
    what = what or path.name
    with open(path, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise InvalidModelFile(f"{what} is not a regular file.")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise InvalidModelFile(f"{what} is larger than {limit} bytes.")
    return data


def load_json(data: bytes | str, what: str) -> Any:
    """Parse one JSON document from ``what`` (a file name, for messages) and check it (see ``check_tree``)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        doc = json.loads(text, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise InvalidModelFile(f"{what} is not UTF-8 text.") from None
    except json.JSONDecodeError as exc:
        raise InvalidModelFile(f"{what} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    except RecursionError:
        raise InvalidModelFile(f"{what} nests deeper than {MAX_DEPTH} levels.") from None
    except ValueError as exc:  # numbers past Python's 4300-digit limit, NaN and Infinity
        raise InvalidModelFile(f"{what} holds {_number_problem(exc)}.") from None
    check_tree(doc, what)
    return doc


def _no_constant(name: str) -> Any:
    raise ValueError(f"constant {name}")


def _number_problem(exc: ValueError) -> str:
    if str(exc).startswith("constant "):
        return f"{str(exc)[9:]}, which JSON does not allow"
    return "an integer too long to read (over 4300 digits)"


def check_tree(doc: Any, what: str, max_nodes: int = MAX_NODES) -> None:
    """Refuse a parsed document that is too deep or too big, or holds values JSON cannot carry faithfully."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise InvalidModelFile(f"{what} holds more than {max_nodes} values.")
        if depth > MAX_DEPTH:
            raise InvalidModelFile(f"{what} nests deeper than {MAX_DEPTH} levels.")
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise InvalidModelFile(f"{what} has a key that is not a string ({type(k).__name__}).")
                _check_text(k, what)
                stack.append((v, depth + 1))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, str):
            _check_text(value, what)
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidModelFile(f"{what} holds a number out of range ({value}).")
        elif value is not None and not isinstance(value, (bool, int, float)):
            raise InvalidModelFile(f"{what} holds a {type(value).__name__}, which is not a JSON value.")


def _check_text(text: str, what: str) -> None:
    if not text.isascii() and _SURROGATE.search(text):
        raise InvalidModelFile(f"{what} holds a string that is not valid Unicode (a lone surrogate).")


def split_front_matter(text: str) -> tuple[str | None, str]:
    """(the YAML between the leading ``---`` lines, or None; the rest of the card), in one linear pass."""
    stripped = text.lstrip()
    lines = stripped.splitlines(keepends=True)
    if not lines or lines[0].rstrip() != "---":
        return None, text
    for i in range(1, len(lines)):
        if lines[i].rstrip() == "---":
            return "".join(lines[1:i]), "".join(lines[i + 1 :])
    return None, text


def load_card_metadata(text: str, what: str) -> dict[str, Any]:
    """The YAML front matter of a model card as plain JSON values ({} when there is none).

    The YAML is composed into nodes first and measured: its expansion (every alias counted as often as it is
    used), its depth and any alias cycle are checked on the node graph, which is as small as the text, before
    a single Python object is built.
    """
    import yaml

    front, _ = split_front_matter(text)
    if front is None or not front.strip():
        return {}
    if len(front.encode("utf-8", "surrogatepass")) > MAX_FRONT_MATTER_BYTES:
        raise InvalidModelFile(f"the metadata of {what} is larger than {MAX_FRONT_MATTER_BYTES} bytes.")
    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 1 MB parses in ms
    try:
        node = yaml.compose(front, Loader=loader_class)
        if node is None:
            return {}
        _measure(node, what)
        data = loader_class("").construct_document(node)
    except RecursionError:
        raise InvalidModelFile(f"the metadata of {what} nests deeper than {MAX_DEPTH} levels.") from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "increasing flow level" in first or "increasing indent level" in first:  # libyaml's own depth limit
            raise InvalidModelFile(f"the metadata of {what} nests deeper than {MAX_DEPTH} levels.") from None
        raise UnreadableMetadata(f"the metadata of {what} is not valid YAML ({first}).") from None
    if not isinstance(data, dict):
        raise InvalidModelFile(f"the metadata of {what} is not a mapping of keys to values.")
    plain = _plain(data)
    check_tree(plain, f"the metadata of {what}", MAX_YAML_NODES)
    return dict(plain)


def _measure(root: Any, what: str) -> None:
    """Expanded size and depth of a YAML node graph, each shared node counted once per use, without expanding."""
    import yaml

    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node, yaml)
        if done:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > MAX_YAML_NODES:
                raise InvalidModelFile(
                    f"the metadata of {what} expands to more than {MAX_YAML_NODES} values (a YAML alias bomb?)."
                )
            if depth[key] > MAX_DEPTH:
                raise InvalidModelFile(f"the metadata of {what} nests deeper than {MAX_DEPTH} levels.")
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise InvalidModelFile(f"the metadata of {what} refers to itself (a recursive YAML alias).")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def _children(node: Any, yaml: Any) -> list[Any]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _plain(value: Any) -> Any:
    """YAML's extra types as JSON values: dates as ISO strings, other keys and scalars as strings."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value
