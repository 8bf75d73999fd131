"""A seeded generator of hostile inputs for modelkin's CLI: each case is files on disk plus the arguments to run.

Four families, each starting from something valid and mutating it one to three times:

- ``safetensors``: header fields (dtype, shape, offsets, names, ``__metadata__``) replaced with wrong types,
  64-bit overflows, thousands of digits, huge ranks, lone surrogates, deep nesting; raw bytes flipped,
  truncated, extended; the header length field lied about.
- ``pickle``: torch checkpoints and raw pickles, some whose ``__reduce__`` would create a marker folder if it
  ever ran (the harness checks for it after every case), truncated or flipped; run with and without
  ``--allow-pickle``.
- ``hf``: Hugging Face folders whose ``config.json``, card front matter (alias bombs, recursion, odd tags and
  types), shard index (escaping names, wrong types) or export record is mutated, imported with ``import-hf``.
- ``cli``: filters, REFs and tag values for ``list``, ``show`` and ``tag`` (long LIKE patterns, deep parentheses,
  control characters, markup).

``make_case(seed, index, workdir, marker)`` is deterministic in ``(seed, index)``.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("safetensors", "pickle", "hf", "cli")
DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "U8": np.uint8, "F64": np.float64, "I8": np.int8}
BIG = "__BIG_NUMBER__"  # replaced in the serialised text by a number JSON libraries cannot produce


@dataclass(frozen=True)
class Case:
    kind: str
    mutation: str
    args: tuple[str, ...]


class Evil:
    """Pickles to a call of ``os.makedirs(marker)``: it runs only if an unpickler executes globals."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return os.makedirs, (self.marker,)


def make_case(seed: int, index: int, workdir: Path, marker: Path) -> Case:
    rng = random.Random(f"{seed}:{index}")
    kind = KINDS[index % len(KINDS)] if index < len(KINDS) * 4 else rng.choice(KINDS + ("safetensors", "hf"))
    folder = workdir / f"case-{index}"
    folder.mkdir(parents=True)
    name = f"fuzz-{index}"
    if kind == "safetensors":
        path, mutation = _safetensors_case(rng, folder / "model.safetensors")
        return Case(kind, mutation, ("register", str(path), "--name", name, *rng.choice([(), ("--json",)])))
    if kind == "pickle":
        path, mutation, allow = _pickle_case(rng, folder, str(marker))
        return Case(kind, mutation, ("register", str(path), "--name", name, *(("--allow-pickle",) if allow else ())))
    if kind == "hf":
        mutation, allow = _hf_case(rng, folder, str(marker))
        verb = rng.choice(["import-hf", "import-hf", "register"])
        return Case(kind, mutation, (verb, str(folder), "--name", name, *(("--allow-pickle",) if allow else ())))
    return _cli_case(rng)


# -- safetensors ---------------------------------------------------------------------------------------------


def valid_tensors(rng: random.Random) -> dict[str, np.ndarray]:
    out = {}
    for i in range(rng.randint(1, 4)):
        dtype = DTYPES[rng.choice(list(DTYPES))]
        shape = tuple(rng.randint(0, 4) for _ in range(rng.randint(0, 3)))
        out[f"layer.{i}.weight"] = np.arange(int(np.prod(shape)), dtype=np.float64).astype(dtype).reshape(shape)
    return out


def _header_and_data(tensors: dict[str, np.ndarray]) -> tuple[dict[str, Any], bytes]:
    header: dict[str, Any] = {}
    data = b""
    for name, arr in tensors.items():
        dtype = next(k for k, v in DTYPES.items() if v == arr.dtype)
        raw = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return header, data


def _weird_value(rng: random.Random) -> Any:
    return rng.choice([
        None, True, -1, 1.5, 2**64, 2**63, -(2**63), BIG, "", "F32", "\ud800", "\x1b[2J", "[bold]x[/]",
        [], [1, 2], {}, {"a": 1}, [[1]], "x" * rng.choice([10, 10_000]), 1e308, _deep(rng.choice([70, 2000])),
    ])  # fmt: skip


def _deep(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def _mutate_header(rng: random.Random, header: dict[str, Any]) -> str:
    names = [n for n in header if n != "__metadata__"]
    target = header[rng.choice(names)] if names else None
    choice = rng.choice([
        "dtype", "shape", "shape-rank", "shape-dim", "offsets", "offset-one", "name", "metadata", "metadata-arch",
        "metadata-type", "entry-type", "drop-field", "extra-tensor", "swap-offsets",
    ])  # fmt: skip
    if not isinstance(target, dict):  # no tensor left, or an earlier mutation replaced the entry
        choice = "metadata"
    if choice == "dtype":
        target["dtype"] = _weird_value(rng)
    elif choice == "shape":
        target["shape"] = _weird_value(rng)
    elif choice == "shape-rank":
        target["shape"] = [rng.choice([1, 2, 0])] * rng.choice([65, 1000, 100_000])
    elif choice == "shape-dim":
        if isinstance(target.get("shape"), list) and target["shape"]:
            target["shape"][rng.randrange(len(target["shape"]))] = _weird_value(rng)
        else:
            target["shape"] = [_weird_value(rng)]
    elif choice == "offsets":
        target["data_offsets"] = _weird_value(rng)
    elif choice == "offset-one":
        old = target.get("data_offsets")
        offsets = list(old) if isinstance(old, list) and len(old) == 2 and all(type(o) is int for o in old) else [0, 0]
        offsets[rng.randrange(2)] = rng.choice([_weird_value(rng), offsets[0] + rng.randint(-3, 3)])
        target["data_offsets"] = offsets
    elif choice == "swap-offsets":
        old = target.get("data_offsets")
        target["data_offsets"] = list(reversed(old)) if isinstance(old, list) else [1, 0]
    elif choice == "name":
        old = rng.choice(names)
        new = rng.choice(["\ud800x", "", "\x1b]0;pwned\x07", "[red]x", "a" * 100_000, "../../etc", "\u202eabc"])
        header[new] = header.pop(old)
    elif choice == "metadata":
        header["__metadata__"] = rng.choice([_weird_value(rng), {"k": _weird_value(rng)}, {"\ud800": "v"}])
    elif choice == "metadata-arch":
        spec = rng.choice(['{"family": ' + "[" * 3000 + "]" * 3000 + "}", '{"family": "mlp", "x": NaN}',
                           '{"family": "mlp", "x": ' + "9" * 5000 + "}", "[1, 2]", "{bad", '{"family": "nope"}',
                           '{"family": "mlp", "layers": [64, -1, 10]}', '"\\ud800"'])  # fmt: skip
        header["__metadata__"] = {"modelkin.architecture": spec}
    elif choice == "metadata-type":
        header["__metadata__"] = [1, 2]
    elif choice == "entry-type":
        header[rng.choice(names)] = _weird_value(rng)
    elif choice == "drop-field":
        target.pop(rng.choice(["dtype", "shape", "data_offsets"]), None)
    elif choice == "extra-tensor":
        header[f"extra.{rng.randint(0, 9)}"] = {"dtype": "F32", "shape": [rng.randint(0, 3)], "data_offsets": [0, 4]}
    return choice


def _serialise(header: dict[str, Any], rng: random.Random) -> bytes:
    try:
        text = json.dumps(header)
    except (ValueError, RecursionError):
        text = "{}"
    return text.replace(json.dumps(BIG), rng.choice(["9" * 3000, "9" * 5000, "-" + "1" * 400, "1e999"])).encode()


def _safetensors_case(rng: random.Random, path: Path) -> tuple[Path, str]:
    header, data = _header_and_data(valid_tensors(rng))
    mutations = []
    raw_mode = rng.random() < 0.3
    for _ in range(rng.randint(0 if not raw_mode else 0, 2)):
        mutations.append(_mutate_header(rng, header))
    raw = _serialise(header, rng)
    if raw_mode:
        raw, data, how = _mutate_bytes(rng, raw, data)
        mutations.append(how)
    length = len(raw)
    if rng.random() < 0.1:
        length = rng.choice([0, 7, length - 1, length + 1, 2**63, 100_000_001, 2**64 - 1])
        mutations.append("length-field")
    path.write_bytes(struct.pack("<Q", length) + raw + data)
    return path, "+".join(mutations) or "valid"


def _mutate_bytes(rng: random.Random, raw: bytes, data: bytes) -> tuple[bytes, bytes, str]:
    choice = rng.choice(["flip", "truncate", "append", "not-utf8", "not-object", "deep", "nan", "bom", "huge-keys"])
    if choice == "flip" and raw:
        b = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        raw = bytes(b)
    elif choice == "truncate":
        data = data[: rng.randint(0, max(0, len(data) - 1))]
    elif choice == "append":
        data += os.urandom(rng.randint(1, 64))
    elif choice == "not-utf8":
        raw = raw[:1] + b"\xff\xfe" + raw[1:]
    elif choice == "not-object":
        raw = rng.choice([b"[]", b"1", b"null", b'"x"', b""])
    elif choice == "deep":
        depth = rng.choice([100, 10_000, 200_000])
        raw = b'{"__metadata__": ' + b"[" * depth + b"]" * depth + b"}"
    elif choice == "nan":
        raw = raw.replace(b"[0,", b"[NaN,", 1) if b"[0," in raw else b'{"w": {"dtype": "F32", "shape": [NaN]}}'
    elif choice == "bom":
        raw = b"\xef\xbb\xbf" + raw
    elif choice == "huge-keys":
        raw = b"{" + b",".join(b'"k%d": {}' % i for i in range(rng.choice([1000, 50_000]))) + b"}"
    return raw, data, f"bytes-{choice}"


# -- pickles -------------------------------------------------------------------------------------------------


def _pickle_case(rng: random.Random, folder: Path, marker: str) -> tuple[Path, str, bool]:
    import torch

    path = folder / rng.choice(["pytorch_model.bin", "model.pt", "weights.ckpt", "x.pth"])
    choice = rng.choice(["valid", "evil-torch", "evil-raw", "evil-nested", "not-state-dict", "truncated", "flip"])
    state: Any = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    if choice == "evil-torch":
        torch.save({"w": torch.ones(2), "x": Evil(marker)}, path)
    elif choice == "evil-raw":
        path.write_bytes(pickle.dumps(Evil(marker), protocol=rng.randint(0, 5)))
    elif choice == "evil-nested":
        torch.save({"state_dict": {"w": torch.ones(1)}, "optimizer": [Evil(marker)]}, path)
    elif choice == "not-state-dict":
        torch.save(rng.choice([[torch.ones(1)], {"w": 3}, {}, "text", {1: torch.ones(1)}]), path)
    else:
        torch.save(state, path)
        if choice in ("truncated", "flip"):
            raw = bytearray(path.read_bytes())
            if choice == "truncated":
                raw = raw[: rng.randint(0, len(raw) - 1)]
            else:
                for _ in range(rng.randint(1, 8)):
                    raw[rng.randrange(len(raw))] = rng.randrange(256)
            path.write_bytes(bytes(raw))
    return path, choice, rng.random() < 0.7


# -- Hugging Face folders ------------------------------------------------------------------------------------


def _alias_bomb(levels: int) -> str:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(levels):
        prev, cur = chr(97 + i), chr(98 + i)
        lines.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines)


CARD_FRONT_MATTER = [
    lambda rng: _alias_bomb(rng.choice([3, 9, 12])),
    lambda rng: "a: &a [*a]",
    lambda rng: "a: " + "[" * rng.choice([60, 100, 5000]) + "]" * 5000,
    lambda rng: "a: {" * 200 + "}" * 200,
    lambda rng: "license: [",
    lambda rng: "base_model: " + rng.choice(["5", "{a: 1}", "[org/ok, 7]", "https://x.invalid/y", "'\\x1b[2J'"]),
    lambda rng: "base_model_relation: " + rng.choice(["[merge]", "adapter", "9", "'[bold]x'"]),
    lambda rng: "x: !!python/object/apply:os.makedirs ['MARKER']",
    lambda rng: "x: !!binary aGVsbG8=\ndate: 2024-01-01\n1: one\n? [a, b]\n: complex-key",
    lambda rng: 'license: "\\ud800"',
    lambda rng: "tags: ['" + "y" * rng.choice([100, 2_000_000]) + "']",
    lambda rng: "license: mit\nmodel-index: " + json.dumps([{"name": "m", "results": [{"metrics": [1] * 1000}]}]),
]


def _hf_case(rng: random.Random, folder: Path, marker: str) -> tuple[str, bool]:
    from safetensors.numpy import save_file

    tensors = valid_tensors(rng)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 4}))
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# model\n")
    choice = rng.choice(["config", "card", "card", "index", "symlink", "sidecar", "pickle-shard", "signature"])
    allow = False
    if choice == "config":
        text = rng.choice([
            "[" * 100_000 + "]" * 100_000, '{"a": ' + "[" * 500 + "]" * 500 + "}", '{"a": ' + "9" * 5000 + "}",
            '{"model_type": "bert", "a": NaN}', '{"model_type": 7}', "[1]", "\xff", '{"a": "\\ud800"}',
            '{"model_type": "bert", "a": 1e999}', json.dumps({"model_type": "bert", "x": _deep(70)}),
            json.dumps({"model_type": "\x1b[2J[bold]"}),
        ])  # fmt: skip
        (folder / "config.json").write_bytes(text.encode("utf-8", "surrogatepass"))
    elif choice == "card":
        front = rng.choice(CARD_FRONT_MATTER)(rng).replace("MARKER", marker)
        (folder / "README.md").write_bytes(f"---\n{front}\n---\n# card\n".encode("utf-8", "surrogatepass"))
    elif choice == "index":
        shard = rng.choice(["../outside.safetensors", "/etc/passwd", "missing.safetensors", "model.safetensors"])
        weight_map: Any = rng.choice([{name: shard for name in tensors}, [1], {"w": 5}, {"nope": "model.safetensors"}])
        text = json.dumps({"weight_map": weight_map})
        if rng.random() < 0.2:
            text = '{"weight_map": ' + "[" * 3000 + "]" * 3000 + "}"
        (folder / "model.safetensors.index.json").write_text(text)
    elif choice == "symlink":
        outside = folder.parent / f"outside-{folder.name}.txt"
        outside.write_text("secret")
        (folder / rng.choice(["tokenizer.json", "README.md.link"])).symlink_to(outside)
    elif choice == "sidecar":
        (folder / ".modelkin").mkdir()
        doc = rng.choice([
            '{"format": "modelkin-export/1", "cards": {"README.md": {"written": "00", "stored": "11"}}}',
            "[" * 5000 + "]" * 5000, '{"format": "other"}', '{"format": "modelkin-export/1", "parents": 7}',
            '{"format": "modelkin-export/1", "parents": [{"digest": "sha256:' + "0" * 64 + '", "hub": 5}]}',
        ])  # fmt: skip
        (folder / ".modelkin" / "export.json").write_text(doc)
    elif choice == "pickle-shard":
        import torch

        os.unlink(folder / "model.safetensors")
        torch.save(rng.choice([{"w": torch.ones(2)}, {"w": Evil(marker)}]), folder / "pytorch_model.bin")
        allow = rng.random() < 0.7
    elif choice == "signature":
        (folder / "model.sig").write_text(rng.choice(["{}", "\x00\x01", "not json"]))
    return choice, allow


# -- plain CLI strings ---------------------------------------------------------------------------------------


def _cli_case(rng: random.Random) -> Case:
    choice = rng.choice(["filter", "filter", "like", "ref", "tag", "sort"])
    if choice == "filter":
        atoms = [
            "name",
            "tags.x",
            "parameters",
            "=",
            "!=",
            "<",
            "LIKE",
            "IN",
            "AND",
            "OR",
            "(",
            ")",
            "'a'",
            "1e999",
            "9" * 5000,
            "'\ud800'",
            "null",
            "true",
            ",",
            "`k`",
            "'\x1b[2J'",
            "tags.`a b`",
            "version",
            ">=",
        ]
        expr = " ".join(rng.choice(atoms) for _ in range(rng.randint(1, 12)))
        expr = rng.choice([expr, "(" * 5000 + "name = 'a'" + ")" * 5000, "name = 'a' AND " * 2000 + "true = true"])
        return Case("cli", "filter", ("list", "--filter", expr, "--limit", "5", "--json"))
    if choice == "like":
        pattern = "".join(rng.choice(["%", "_", "a", "\\", "z"]) for _ in range(rng.randint(1, 40)))
        return Case("cli", "like", ("list", "--filter", f"tags.note LIKE '{pattern}'", "--limit", "5"))
    if choice == "ref":
        ref = rng.choice(["", ":", "a:0", "a:" + "9" * 5000, "sha256:", "sha256:zz", "a@", "\ud800", "x" * 100_000,
                          "fuzz-0:1", "[bold]x", "a:-1", "a@\x1b[2J"])  # fmt: skip
        return Case("cli", "ref", ("show", ref))
    if choice == "tag":
        value = rng.choice(["\x1b[2J", "[bold]x[/bold]", "\ud800", "a" * 3000, "\u202e", "ok"])
        key = rng.choice(["note", "k=v", "", "a b", "x" * 300, "\x00"])
        return Case("cli", "tag", ("tag", "fuzz-0", f"{key}={value}"))
    return Case("cli", "sort", ("list", "--sort", rng.choice(["-name", "created", "x", "-", "--"]), "--limit", "3"))
