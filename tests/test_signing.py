"""Signatures: DSSE-style domain separation, and OpenSSF model signing interop both ways with the real
`model_signing` CLI (run as a subprocess from the same environment)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelkin.canonical import canonical_json
from modelkin.provenance import signing
from tests.test_ownership import failed, mlp_file, ok

MODEL_SIGNING = Path(sys.executable).with_name("model_signing")


def model_signing(*args: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MODEL_SIGNING), *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.fixture
def published(cli: Any, tmp_path: Path) -> Path:
    """A registry with model:1, a key pair me.key/me.pub, and model:1 exported and signed into out/."""
    ok(cli("init"))
    ok(cli("register", mlp_file(tmp_path / "m.safetensors"), "--name", "model"))
    ok(cli("keys", "new", "--out", tmp_path / "me"))
    out = ok(cli("export", "model", tmp_path / "out", "--sign", tmp_path / "me.key", "--json"))
    assert out["signature"] == str(tmp_path / "out" / "model.sig")
    return tmp_path


def test_pae_separates_document_types() -> None:
    key = signing.new_private_key()
    body = canonical_json({"a": 1})
    sig = signing.sign_payload(key, signing.CLAIM_TYPE, body)
    assert signing.verify_payload(key.public_key(), signing.CLAIM_TYPE, body, sig)
    assert not signing.verify_payload(key.public_key(), "application/vnd.in-toto+json", body, sig)
    assert not signing.verify_payload(key.public_key(), signing.CLAIM_TYPE, canonical_json({"a": 2}), sig)
    assert not signing.verify_payload(key.public_key(), signing.CLAIM_TYPE, body, "not base64!")
    assert signing.pae("t", b"xy") == b"DSSEv1 1 t 2 xy"


def test_claim_round_trip_and_tampering() -> None:
    key = signing.new_private_key()
    statement = {"model_digest": "sha256:" + "a" * 64, "commitment": "sha256:" + "b" * 64, "layer": "w",
                 "rounds": 1, "pool": 4, "bits": 256, "claimed_at": "2026-12-01T00:00:00Z"}  # fmt: skip
    claim = signing.create_claim(key, statement)
    assert signing.check_claim(claim).signature_ok
    assert signing.check_claim(json.loads(canonical_json(claim))).signature_ok  # survives a JSON round trip
    for field, value in [("bits", 128), ("pool", 5), ("rounds", True), ("key_id", "0" * 64), ("extra", 1)]:
        assert not signing.check_claim({**claim, field: value}).signature_ok, field
    with pytest.raises(ValueError, match="incomplete claim"):
        signing.create_claim(key, {k: v for k, v in statement.items() if k != "layer"})


def test_export_sign_is_accepted_by_model_signing(published: Path) -> None:
    result = model_signing("verify", "key", "--signature", published / "out" / "model.sig", "--public_key",
                           published / "me.pub", published / "out")  # fmt: skip
    assert result.returncode == 0, result.stderr
    bundle = json.loads((published / "out" / "model.sig").read_text())
    assert bundle["mediaType"].startswith("application/vnd.dev.sigstore.bundle")
    assert bundle["dsseEnvelope"]["payloadType"] == "application/vnd.in-toto+json"
    (published / "out" / "model.safetensors").write_bytes(b"tampered")
    assert model_signing("verify", "key", "--signature", published / "out" / "model.sig", "--public_key",
                         published / "me.pub", published / "out").returncode != 0  # fmt: skip


def test_modelkin_verifies_what_model_signing_signed(published: Path, cli: Any) -> None:
    ok(cli("export", "model", published / "plain"))
    result = model_signing("sign", "key", "--private_key", published / "me.key", "--signature",
                           published / "ms.sig", published / "plain")  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = ok(cli("verify", published / "plain", "--signature", published / "ms.sig", "--public-key",
                 published / "me.pub", "--json"))  # fmt: skip
    # the weights, the generated card and the export's provenance record (.modelkin/export.json)
    assert out == {"ok": True, "ref": str(published / "plain"), "checked": 3, "problems": []}
    by_ref = ok(cli("verify", "model", "--signature", published / "ms.sig", "--public-key", published / "me.pub",
                    "--json"))  # fmt: skip
    assert by_ref["ok"] and by_ref["ref"] == "model:1"  # the registered version's exported layout


def test_sign_a_ref_and_a_folder(published: Path, cli: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(published)
    out = ok(cli("sign", "model", "--key", published / "me.key", "--json"))
    assert out["target"] == "model:1" and out["signature"] == "model-1.sig" and out["signed_files"] == 3
    assert model_signing("verify", "key", "--signature", published / "model-1.sig", "--public_key",
                         published / "me.pub", published / "out").returncode == 0  # fmt: skip
    ok(cli("export", "model", published / "again"))
    folder = ok(cli("sign", published / "again", "--key", published / "me.key", "--json"))
    assert folder["signature"] == str(published / "again" / "model.sig")
    assert ok(cli("verify", published / "again", "--signature", published / "again" / "model.sig",
                  "--public-key", published / "me.pub", "--json"))["ok"]  # fmt: skip


def test_verify_names_each_missing_extra_or_changed_file(published: Path, cli: Any) -> None:
    folder = published / "out"
    (folder / "model.safetensors").unlink()
    (folder / "notes.txt").write_text("added")
    with open(folder / "README.md", "a") as f:
        f.write("edited\n")
    out = failed(cli("verify", folder, "--signature", folder / "model.sig", "--public-key", published / "me.pub",
                     "--json"))  # fmt: skip
    assert not out["ok"] and sorted((p["path"], p["kind"]) for p in out["problems"]) == [
        ("README.md", "changed"), ("model.safetensors", "missing"), ("notes.txt", "extra")]  # fmt: skip
    human = cli("verify", folder, "--signature", folder / "model.sig", "--public-key", published / "me.pub")
    assert human.exit_code == 1 and "notes.txt" in human.stdout and "missing" in human.stdout


def test_existing_verify_is_unchanged(published: Path, cli: Any) -> None:
    out = ok(cli("verify", "model", "--json"))
    assert out["ok"] and set(out) == {"ok", "ref", "checked", "problems"}
    failed(cli("verify", "model", "--signature", published / "out" / "model.sig"), code=2)  # needs --public-key


@pytest.mark.parametrize("bundle", ["truncated", "not-json", "no-envelope", "missing"])
def test_a_broken_signature_bundle_fails_verification(published: Path, cli: Any, bundle: str) -> None:
    sig = published / "out" / "model.sig"
    bad = published / f"{bundle}.sig"
    if bundle == "truncated":
        bad.write_bytes(sig.read_bytes()[: len(sig.read_bytes()) // 2])
    elif bundle == "not-json":
        bad.write_bytes(b"\x89PNG not a bundle")
    elif bundle == "no-envelope":
        bad.write_text(json.dumps({"mediaType": "x"}))
    result = cli("verify", published / "out", "--signature", bad, "--public-key", published / "me.pub", "--json")
    out = failed(result)
    if bundle == "missing":
        assert "does not exist" in result.stderr
    else:
        assert not out["ok"] and "not a model-signing bundle" in out["error"]


def test_a_signature_by_another_key_fails(published: Path, cli: Any) -> None:
    ok(cli("keys", "new", "--out", published / "other"))
    out = failed(cli("verify", published / "out", "--signature", published / "out" / "model.sig", "--public-key",
                     published / "other.pub", "--json"))  # fmt: skip
    assert not out["ok"] and "not made with this public key" in out["error"]
    result = cli("verify", published / "out", "--signature", published / "out" / "model.sig", "--public-key",
                 published / "me.key")  # fmt: skip
    failed(result)
    assert "not a PEM public key" in result.stderr


def test_signing_with_a_passphrase(published: Path, cli: Any) -> None:
    (published / "pass").write_text("s3cret\n")
    (published / "wrong").write_text("nope\n")
    ok(cli("keys", "new", "--out", published / "locked", "--passphrase-file", published / "pass"))
    result = cli("export", "model", published / "x", "--sign", published / "locked.key", "--passphrase-file",
                 published / "wrong")  # fmt: skip
    failed(result)
    assert "passphrase does not decrypt" in result.stderr and not (published / "x").exists()
    ok(cli("export", "model", published / "x", "--sign", published / "locked.key", "--passphrase-file",
           published / "pass"))  # fmt: skip
    assert model_signing("verify", "key", "--signature", published / "x" / "model.sig", "--public_key",
                         published / "locked.pub", published / "x").returncode == 0  # fmt: skip
    failed(cli("sign", "model", "--key", published / "locked.key", "--out", published / "y.sig"))
    # model_signing 1.1.1's own `sign key --password` cannot load an encrypted key (it passes a str where
    # cryptography needs bytes), so the passphrase case is checked one way: modelkin signs, model_signing verifies
