"""ECDSA P-256 keys, domain-separated signatures, ownership claims, and OpenSSF model-signing bundles.

One P-256 key serves both jobs: it signs modelkin's ownership claims, and (through the ``model-signing``
package, whose key mode takes elliptic-curve keys) it signs a model folder as a Sigstore bundle holding a DSSE
envelope with an in-toto statement, so ``model_signing verify key`` checks what modelkin signed and the other
way round.

A claim is canonical JSON (sorted keys, no whitespace, UTF-8). Its signature covers the DSSE pre-authentication
encoding ``"DSSEv1" len(type) type len(body) body`` of the claim without its signature, with a payload type of
its own, so a signature made for one kind of document can never be replayed as another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from modelkin.canonical import canonical_json
from modelkin.errors import InvalidKey

CLAIM_TYPE = "application/vnd.modelkin.ownership-claim.v1+json"
CLAIM_FIELDS = {
    "model_digest": str, "key_id": str, "public_key": str, "commitment": str, "layer": str, "rounds": int,
    "pool": int, "bits": int, "claimed_at": str,
}  # fmt: skip
DEFAULT_SIGNATURE = "model.sig"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_KEY_ID = re.compile(r"^[0-9a-f]{64}$")


# -- keys ------------------------------------------------------------------------------------------------------


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted with the best scheme ``cryptography`` offers when a passphrase is given."""
    encryption = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key: ec.EllipticCurvePublicKey) -> str:
    """sha256 (hex) of the DER SubjectPublicKeyInfo."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _p256(key: Any, what: str) -> None:
    if not isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) or not isinstance(
        key.curve, ec.SECP256R1
    ):
        raise InvalidKey(f"{what} is not an ECDSA P-256 key.", hint="make one with `modelkin keys new --out PREFIX`")


def load_private_pem(data: bytes, passphrase: bytes | None, what: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key from PEM; a wrong or missing passphrase and a non-key file are clear errors."""
    try:
        key = serialization.load_pem_private_key(data, passphrase or None)
    except TypeError:
        if passphrase:
            raise InvalidKey(f"{what} is not encrypted, but a passphrase was given.",
                             hint="drop --passphrase-file") from None  # fmt: skip
        raise InvalidKey(f"{what} is encrypted.", hint="give its passphrase with --passphrase-file") from None
    except (ValueError, UnsupportedAlgorithm):
        if passphrase and b"ENCRYPTED" in data:
            raise InvalidKey(f"the passphrase does not decrypt {what}.", hint="check the passphrase file") from None
        raise InvalidKey(f"{what} is not a PEM private key.",
                         hint="give the PREFIX.key written by `modelkin keys new`") from None  # fmt: skip
    _p256(key, what)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def load_public_pem(data: bytes, what: str) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidKey(f"{what} is not a PEM public key.",
                         hint="give the PREFIX.pub written by `modelkin keys new`") from None  # fmt: skip
    _p256(key, what)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


# -- domain-separated signatures -------------------------------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is signed is bound to the kind of document it is."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def sign_payload(key: ec.EllipticCurvePrivateKey, payload_type: str, payload: bytes) -> str:
    """Base64 of the DER ECDSA-SHA256 signature over PAE(payload_type, payload)."""
    return base64.b64encode(key.sign(pae(payload_type, payload), ec.ECDSA(hashes.SHA256()))).decode()


def verify_payload(key: ec.EllipticCurvePublicKey, payload_type: str, payload: bytes, signature: str) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, pae(payload_type, payload), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


# -- ownership claims ------------------------------------------------------------------------------------------


def create_claim(key: ec.EllipticCurvePrivateKey, statement: Mapping[str, Any]) -> dict[str, Any]:
    """The signed claim: ``statement`` (every CLAIM_FIELDS key but key_id and public_key) plus the signer."""
    public = key.public_key()
    body = {**statement, "key_id": key_id(public), "public_key": public_pem(public).decode()}
    problems = _field_problems(body)
    if problems:
        raise ValueError(f"incomplete claim: {problems[0]}")
    return {**body, "signature": sign_payload(key, CLAIM_TYPE, canonical_json(body))}


@dataclass(frozen=True)
class ClaimCheck:
    """Whether a claim document is well formed and signed by the key it names; ``reason`` says why not."""

    signature_ok: bool
    reason: str | None = None
    claim: dict[str, Any] = field(default_factory=dict)


def _field_problems(doc: Mapping[str, Any]) -> list[str]:
    problems = [f"{k} is missing" for k in CLAIM_FIELDS if k not in doc]
    problems += [
        f"{k} must be {t.__name__}" for k, t in CLAIM_FIELDS.items()
        if k in doc and (not isinstance(doc[k], t) or isinstance(doc[k], bool))
    ]  # fmt: skip
    if not problems:
        if not _DIGEST.match(doc["model_digest"]):
            problems.append("model_digest must be sha256:<64 hex>")
        if not _DIGEST.match(doc["commitment"]):
            problems.append("commitment must be sha256:<64 hex>")
        if not _KEY_ID.match(doc["key_id"]):
            problems.append("key_id must be 64 hex digits")
    return problems


def check_claim(doc: Any) -> ClaimCheck:
    """Check a parsed claim: its fields, that key_id names its public key, and the signature over the rest."""
    if not isinstance(doc, dict):
        return ClaimCheck(False, "the claim is not a JSON object")
    problems = _field_problems(doc) + ([] if isinstance(doc.get("signature"), str) else ["signature is missing"])
    if problems:
        return ClaimCheck(False, f"malformed claim: {'; '.join(problems[:3])}", doc)
    body = {k: v for k, v in doc.items() if k != "signature"}
    try:
        public = load_public_pem(doc["public_key"].encode(), "the claim's public_key")
    except InvalidKey as exc:
        return ClaimCheck(False, str(exc), doc)
    if key_id(public) != doc["key_id"]:
        return ClaimCheck(False, "the claim's key_id is not the id of its public_key", doc)
    if not verify_payload(public, CLAIM_TYPE, canonical_json(body), doc["signature"]):
        return ClaimCheck(False, "the claim's signature does not verify: it was altered or signed by another key", doc)
    return ClaimCheck(True, None, doc)


def parse_claim(data: bytes) -> Any:
    """The claim document, or None when the bytes are not JSON."""
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


# -- OpenSSF model signing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderVerdict:
    """The outcome of checking a folder against a model-signing bundle."""

    ok: bool
    signed_files: int = 0
    problems: tuple[tuple[str, str], ...] = ()  # (path, missing | extra | changed)
    error: str | None = None


def _hashing_config(folder: Path, signature: Path) -> Any:
    """model-signing's default per-file SHA-256 hashing, skipping the signature when it lies inside the folder
    (as `model_signing` does itself) and a ``model.sig`` (the conventional name, which ``export --sign`` writes),
    so a version's signature also checks its signed export."""
    import model_signing

    ignored = [Path(DEFAULT_SIGNATURE)]
    try:
        ignored.append(signature.resolve().relative_to(folder.resolve()))
    except ValueError:
        pass
    return model_signing.hashing.Config().set_ignored_paths(paths=ignored)


def sign_folder(folder: Path, private_key: Path, signature: Path, passphrase: bytes | None = None) -> int:
    """Sign every file of ``folder`` into the bundle ``signature``; returns how many files were signed."""
    import model_signing

    load_private_pem(private_key.read_bytes(), passphrase, str(private_key))  # clear errors before the library's
    config = _hashing_config(folder, signature)
    # model-signing 1.1 annotates the password as str but hands it to cryptography, which needs bytes (its own
    # `--password` option fails for that reason), so the bytes are passed as they are
    password: Any = passphrase
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private_key, password=password) \
        .set_hashing_config(config).sign(folder, signature)  # fmt: skip
    return sum(1 for _ in config.hash(folder).resource_descriptors())


def _signed_resources(bundle: Any) -> dict[str, str]:
    """file -> sha256 hex from the bundle's in-toto statement (read only after the signature verified)."""
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return {r["name"]: r["digest"] for r in payload["predicate"]["resources"]}


def _read_bundle(signature: Path) -> Any:
    try:
        bundle = json.loads(signature.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidKey(f"{signature} is not a model-signing bundle (not JSON; truncated?).") from None
    if not isinstance(bundle, dict) or not isinstance(bundle.get("dsseEnvelope"), dict):
        raise InvalidKey(f"{signature} is not a model-signing bundle (no DSSE envelope).")
    return bundle


def verify_folder(folder: Path, signature: Path, public_key: Path) -> FolderVerdict:
    """Check ``folder`` against ``signature`` with ``public_key`` through model-signing; name each file that
    is missing, extra or changed."""
    import model_signing

    load_public_pem(public_key.read_bytes(), str(public_key))
    try:
        bundle = _read_bundle(signature)
    except InvalidKey as exc:
        return FolderVerdict(False, error=str(exc))
    config = _hashing_config(folder, signature)
    verifier = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public_key)
    try:
        verifier.set_hashing_config(config).verify(folder, signature)
    except Exception as exc:  # the library signals every failure with a bare exception; sort them out below
        message = str(exc) or exc.__class__.__name__
        if not message.startswith("Signature mismatch"):
            if "Key mismatch" in message or isinstance(exc, InvalidSignature):
                message = "the signature was not made with this public key (or the bundle was altered)"
            return FolderVerdict(False, error=f"the signature does not verify: {message}")
        expected = _signed_resources(bundle)
        actual = {rd.identifier: rd.digest.digest_hex for rd in config.hash(folder).resource_descriptors()}
        problems = [(p, "missing") for p in sorted(expected.keys() - actual.keys())]
        problems += [(p, "extra") for p in sorted(actual.keys() - expected.keys())]
        problems += [(p, "changed") for p in sorted(expected.keys() & actual.keys()) if expected[p] != actual[p]]
        return FolderVerdict(False, len(expected), tuple(problems))
    return FolderVerdict(True, len(_signed_resources(bundle)))
