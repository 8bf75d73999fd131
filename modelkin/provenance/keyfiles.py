"""Key files on disk: secrets are created 0600 and never overwritten; every read failure is a clear error.

A watermark key file is a small safetensors file (safe to parse: no code runs on load) holding K as tensor
``key`` and, in its metadata, the format tag and the bits K hashed to when it was generated.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec

from modelkin.errors import InvalidKey
from modelkin.provenance import signing
from modelkin.provenance.watermark.keys import WatermarkKey, bits_from_hex, bits_to_hex, check_shape

WATERMARK_KEY_FORMAT = "modelkin.neuralmark-key.v1"


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (never replacing a file that exists) and write ``data``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InvalidKey(f"{path} already exists.", hint="choose another path; keys are never overwritten") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_public(path: Path, data: bytes) -> None:
    if path.exists():
        raise InvalidKey(f"{path} already exists.", hint="choose another path; keys are never overwritten")
    path.write_bytes(data)


def read_passphrase(path: Path | None) -> bytes | None:
    """The first line of a passphrase file (without its line break); None without a file."""
    if path is None:
        return None
    lines = path.read_bytes().splitlines()
    if not lines or not lines[0]:
        raise InvalidKey(f"the passphrase file {path} is empty.")
    return lines[0]


def write_keypair(prefix: Path, passphrase: bytes | None) -> tuple[Path, Path, str]:
    """PREFIX.key (PKCS#8, 0600, encrypted with a passphrase) and PREFIX.pub (SPKI); returns them and the key id."""
    private, public = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for p in (private, public):
        if p.exists():
            raise InvalidKey(f"{p} already exists.", hint="choose another --out; keys are never overwritten")
    key = signing.new_private_key()
    write_secret(private, signing.private_pem(key, passphrase))
    write_public(public, signing.public_pem(key.public_key()))
    return private, public, signing.key_id(key.public_key())


def load_private_key(path: Path, passphrase: bytes | None) -> ec.EllipticCurvePrivateKey:
    return signing.load_private_pem(path.read_bytes(), passphrase, str(path))


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    return signing.load_public_pem(path.read_bytes(), str(path))


def save_watermark_key(path: Path, key: WatermarkKey) -> None:
    from safetensors.numpy import save

    metadata = {"format": WATERMARK_KEY_FORMAT, "bits": bits_to_hex(key.claimed_bits)}
    write_secret(path, save({"key": np.ascontiguousarray(key.matrix, dtype=np.float32)}, metadata=metadata))


def load_watermark_key(path: Path) -> WatermarkKey:
    """The key in ``path``; anything else (a PEM key, a model, a damaged file) is a clear InvalidKey."""
    import json
    import struct

    data = path.read_bytes()
    hint = "give the file written by `modelkin watermark keygen`"
    try:
        (size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + size])
        metadata = header.get("__metadata__") or {}
        entry = header.get("key") or {}
    except (struct.error, ValueError, UnicodeDecodeError, AttributeError, RecursionError):
        raise InvalidKey(f"{path} is not a modelkin watermark key.", hint=hint) from None
    if metadata.get("format") != WATERMARK_KEY_FORMAT or entry.get("dtype") != "F32" or len(header) != 2:
        raise InvalidKey(f"{path} is not a modelkin watermark key.", hint=hint)
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        matrix = load(data)["key"]
        rows, bits = matrix.shape
        check_shape(rows, bits)
        claimed = bits_from_hex(str(metadata.get("bits", "")), bits)
    except (ValueError, TypeError, SafetensorError) as exc:
        raise InvalidKey(f"{path} is a damaged watermark key ({exc}).", hint=hint) from None
    if not np.isfinite(matrix).all():
        raise InvalidKey(f"{path} is a damaged watermark key (non-finite entries).", hint=hint)
    return WatermarkKey(matrix, claimed)
