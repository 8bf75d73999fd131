"""Ownership through the CLI as a user drives it: keys, watermark keygen/embed/verify, claims, and every bad input
the issue lists (each a clear error or a not-owned / invalid-claim verdict, never a crash, never `owned`)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from modelkin import Registry
from modelkin.provenance.keyfiles import load_watermark_key
from modelkin.provenance.watermark import DEFAULT_MARGIN, HEAL_BUFFER, pool_indices, projections
from modelkin.provenance.watermark.embed import SLACK
from modelkin.registry.architectures import build_module, spec_to_safetensors_metadata
from tests.conftest import make_weights

SPEC = {"family": "mlp", "in_features": 64, "hidden": [64, 32], "num_classes": 4, "input_space": "digits-64"}
VERIFY_KEYS = {"detected", "matched_bits", "bits", "p_value", "hash_ok", "layer", "aligned"}
EMBED_KEYS = {"ref", "layer", "rounds", "pool", "bits", "matched_bits", "p_value", "relative_change"}
CLAIM_KEYS = {"verdict", "signature_ok", "commitment_ok", "watermark", "owner_key_id", "claimed_at"}


def ok(result: Any) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.lstrip().startswith("{") else result.stdout


def failed(result: Any, code: int = 1) -> Any:
    """A verdict or a clear error: the expected exit code and never a traceback."""
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    return json.loads(result.stdout) if result.stdout.lstrip().startswith("{") else None


def mlp_file(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    module = build_module(SPEC)
    save_file(module.state_dict(), str(path), metadata=spec_to_safetensors_metadata(SPEC))
    return path


@pytest.fixture
def owner(cli: Any, tmp_path: Path) -> Path:
    """A registry with base:1, a signing key pair me.key/me.pub, a watermark key wm.key and marked:1."""
    ok(cli("init"))
    ok(cli("register", mlp_file(tmp_path / "base.safetensors"), "--name", "base"))
    ok(cli("keys", "new", "--out", tmp_path / "me"))
    ok(cli("watermark", "keygen", "--out", tmp_path / "wm.key"))
    ok(cli("watermark", "embed", "base", "--key", tmp_path / "wm.key", "--name", "marked"))
    return tmp_path


def test_key_commands_print_two_lines_not_an_escaped_newline(cli: Any, tmp_path: Path) -> None:
    """The console escapes control characters in what it prints, so a message holding a newline came out as a
    literal ``\\x0a``: each line is its own print."""
    for args, second in (
        (("keys", "new", "--out", tmp_path / "me"), "key id "),
        (("watermark", "keygen", "--out", tmp_path / "wm.key"), "commitment sha256:"),
    ):
        lines = ok(cli(*args)).splitlines()
        assert len(lines) == 2 and lines[0].startswith("wrote ") and lines[1].startswith(second), lines
        assert "\\x0a" not in "".join(lines)


def test_keys_new_writes_a_p256_pair_with_a_private_mode(cli: Any, tmp_path: Path) -> None:
    out = ok(cli("keys", "new", "--out", tmp_path / "alice", "--json"))
    assert set(out) == {"key_id", "private", "public"} and len(out["key_id"]) == 64
    private, public = Path(out["private"]), Path(out["public"])
    assert private == tmp_path / "alice.key" and public == tmp_path / "alice.pub"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_private_key(private.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    import hashlib

    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert out["key_id"] == hashlib.sha256(der).hexdigest()
    failed(cli("keys", "new", "--out", tmp_path / "alice"))  # never overwritten


def test_keys_new_encrypts_with_a_passphrase(cli: Any, tmp_path: Path) -> None:
    (tmp_path / "pass").write_text("correct horse\n")
    ok(cli("keys", "new", "--out", tmp_path / "bob", "--passphrase-file", tmp_path / "pass"))
    text = (tmp_path / "bob.key").read_text()
    assert text.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    from modelkin.provenance.keyfiles import load_private_key

    assert load_private_key(tmp_path / "bob.key", b"correct horse") is not None


def test_keygen_contract(cli: Any, tmp_path: Path) -> None:
    out = ok(cli("watermark", "keygen", "--out", tmp_path / "k", "--bits", "128", "--rows", "256", "--json"))
    assert out == {"path": str(tmp_path / "k"), "bits": 128, "rows": 256, "commitment": out["commitment"]}
    assert out["commitment"].startswith("sha256:") and stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600
    from modelkin.provenance.keyfiles import load_watermark_key

    key = load_watermark_key(tmp_path / "k")
    assert key.matrix.shape == (256, 128) and key.hash_ok() and key.commitment() == out["commitment"]
    failed(cli("watermark", "keygen", "--out", tmp_path / "k2", "--bits", "100"), code=2)
    failed(cli("watermark", "keygen", "--out", tmp_path / "k3", "--bits", "512", "--rows", "256"), code=2)
    failed(cli("watermark", "keygen", "--out", tmp_path / "k"))  # exists: never overwritten


def test_embed_registers_a_watermarked_child_and_records_the_embedding(cli: Any, backend: str, tmp_path: Path) -> None:
    ok(cli("init"))
    ok(cli("register", mlp_file(tmp_path / "base.safetensors"), "--name", "base"))
    ok(cli("watermark", "keygen", "--out", tmp_path / "wm.key"))
    out = ok(cli("watermark", "embed", "base", "--key", tmp_path / "wm.key", "--name", "marked", "--json"))
    assert set(out) == EMBED_KEYS and out["ref"] == "marked:1" and out["layer"] == "trunk.0.weight"
    assert out["bits"] == 256 and out["matched_bits"] == 256 and out["p_value"] < 2.0**-64
    assert out["pool"] >= 1 and out["rounds"] >= 1 and 0 < out["relative_change"] < 1
    shown = ok(cli("show", "marked", "--json"))
    assert shown["declared_parents"] == ["base:1"] and shown["relation"] == "watermarked"
    assert shown["architecture"] == SPEC
    with Registry.open() as reg:
        from modelkin.provenance.keyfiles import load_watermark_key

        key = load_watermark_key(tmp_path / "wm.key")
        tensors = reg.load_state_dict("marked")
        record = reg.ownership._record(key, tensors, "marked:1")
        assert record is not None and (record.layer, record.rounds, record.pool) == (
            out["layer"], out["rounds"], out["pool"])  # fmt: skip
        assert len(reg.load_module("marked")(torch.zeros(2, 64))) == 2  # still a runnable model
    again = ok(cli("watermark", "embed", "base", "--key", tmp_path / "wm.key", "--name", "marked", "--json"))
    assert again["ref"] == "marked:1"  # the same bytes: the same version, recorded once


def test_verify_contract_and_exit_codes(owner: Path, cli: Any) -> None:
    found = ok(cli("watermark", "verify", "marked", "--key", owner / "wm.key", "--json"))
    assert set(found) == VERIFY_KEYS and found["detected"] and found["hash_ok"] and not found["aligned"]
    assert found["matched_bits"] == 256 and found["layer"] == "trunk.0.weight"
    miss = failed(cli("watermark", "verify", "base", "--key", owner / "wm.key", "--json"))
    assert set(miss) == VERIFY_KEYS and not miss["detected"] and miss["p_value"] > 2.0**-64
    human_miss = cli("watermark", "verify", "base", "--key", owner / "wm.key")
    assert human_miss.exit_code == 1 and "not detected" in human_miss.stdout
    human = cli("watermark", "verify", "marked", "--key", owner / "wm.key")
    assert human.exit_code == 0 and "DETECTED" in human.stdout


def test_verify_a_path_on_disk_with_and_without_a_registry(owner: Path, cli: Any, monkeypatch: Any) -> None:
    ok(cli("export", "marked", owner / "exported"))
    on_disk = ok(cli("watermark", "verify", owner / "exported", "--key", owner / "wm.key", "--json"))
    assert on_disk["detected"]
    monkeypatch.setenv("MODELKIN_HOME", str(owner / "nowhere"))  # no registry here: the embed rule finds the layer
    alone = ok(cli("watermark", "verify", owner / "exported" / "model.safetensors", "--key", owner / "wm.key",
                   "--json"))  # fmt: skip
    assert alone["detected"] and alone["layer"] == "trunk.0.weight"


def test_verify_finds_the_recorded_layer_when_the_rule_would_choose_another(cli: Any, tmp_path: Path) -> None:
    ok(cli("init"))
    ok(cli("register", mlp_file(tmp_path / "base.safetensors"), "--name", "base"))
    ok(cli("watermark", "keygen", "--out", tmp_path / "wm.key"))
    out = ok(cli("watermark", "embed", "base", "--key", tmp_path / "wm.key", "--name", "m", "--layer",
                 "trunk.2.weight", "--json"))  # fmt: skip
    assert out["layer"] == "trunk.2.weight"
    found = ok(cli("watermark", "verify", "m", "--key", tmp_path / "wm.key", "--json"))
    assert found["detected"] and found["layer"] == "trunk.2.weight"  # from the record, not the rule
    ok(cli("export", "m", tmp_path / "copy"))  # a copy on disk is still found by the key's record
    assert ok(cli("watermark", "verify", tmp_path / "copy", "--key", tmp_path / "wm.key", "--json"))["detected"]


def _permuted(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The same function with the hidden units of both hidden layers shuffled."""
    g = torch.Generator().manual_seed(seed)
    p0, p1 = torch.randperm(64, generator=g), torch.randperm(32, generator=g)
    out = dict(state)
    out["trunk.0.weight"], out["trunk.0.bias"] = state["trunk.0.weight"][p0], state["trunk.0.bias"][p0]
    out["trunk.2.weight"], out["trunk.2.bias"] = state["trunk.2.weight"][p1][:, p0], state["trunk.2.bias"][p1]
    out["head.weight"] = state["head.weight"][:, p1]
    return {k: v.contiguous() for k, v in out.items()}


def test_reference_undoes_a_channel_permutation(owner: Path, cli: Any) -> None:
    with Registry.open() as reg:
        marked = reg.load_state_dict("marked")
        shuffled = _permuted(marked, seed=5)
        x = torch.rand(8, 64)
        original, module = reg.load_module("marked"), reg.load_module("marked")
        module.load_state_dict(shuffled)
        assert torch.allclose(original(x), module(x), atol=1e-5)  # function preserved
    save_file(shuffled, str(owner / "shuffled.safetensors"), metadata=spec_to_safetensors_metadata(SPEC))
    aligned = ok(cli("watermark", "verify", owner / "shuffled.safetensors", "--key", owner / "wm.key",
                     "--reference", "marked", "--json"))  # fmt: skip
    assert aligned["detected"] and aligned["aligned"]
    by_record = cli("watermark", "verify", owner / "shuffled.safetensors", "--key", owner / "wm.key", "--json")
    assert ok(by_record)["detected"] and json.loads(by_record.stdout)["aligned"]  # the key's record: marked:1
    assert "aligned to base:1, the model this key's recorded mark was made from" in by_record.stderr
    assert json.loads(by_record.stdout)["p_value"] == 2 * 2.0**-256  # two readings: p doubled
    ok(cli("register", owner / "shuffled.safetensors", "--name", "stolen"))
    assert ok(cli("watermark", "verify", "stolen", "--key", owner / "wm.key", "--json"))["aligned"]
    own = cli("watermark", "verify", "marked", "--key", owner / "wm.key")
    assert "not aligned: marked:1 is the version this key's record marked" in own.stderr


def test_a_bare_file_without_a_record_is_not_aligned(owner: Path, cli: Any, monkeypatch: Any) -> None:
    with Registry.open() as reg:
        shuffled = _permuted(reg.load_state_dict("marked"), seed=5)
    save_file(shuffled, str(owner / "shuffled.safetensors"), metadata=spec_to_safetensors_metadata(SPEC))
    monkeypatch.setenv("MODELKIN_HOME", str(owner / "nowhere"))  # no registry: nothing to align to
    plain = cli("watermark", "verify", owner / "shuffled.safetensors", "--key", owner / "wm.key", "--json")
    assert not failed(plain)["detected"] and not json.loads(plain.stdout)["aligned"]
    assert "no reference and no registry record of this key" in plain.stderr


def test_automatic_alignment_raises_no_false_positive(owner: Path, cli: Any) -> None:
    """Unmarked models read through the key's record (as stored, then aligned to the recorded mark's source)
    stay undetected: the parent, an unrelated model, and the parent with its units shuffled."""
    with Registry.open() as reg:
        shuffled_parent = _permuted(reg.load_state_dict("base"), seed=3)
    save_file(shuffled_parent, str(owner / "sp.safetensors"), metadata=spec_to_safetensors_metadata(SPEC))
    ok(cli("register", owner / "sp.safetensors", "--name", "shuffled-parent"))
    ok(cli("register", mlp_file(owner / "other.safetensors", seed=1), "--name", "other"))
    for suspect in ("base", "shuffled-parent", "other"):
        result = cli("watermark", "verify", suspect, "--key", owner / "wm.key", "--json")
        out = failed(result)
        assert not out["detected"] and out["matched_bits"] < 200, suspect
        assert ("aligned to base:1" in result.stderr) == (suspect != "base"), result.stderr  # base is the source


def test_a_claim_on_a_shuffled_copy_is_proved_with_the_reference(owner: Path, cli: Any, monkeypatch: Any) -> None:
    ok(cli("claim", "create", "marked", "--wm-key", owner / "wm.key", "--signing-key", owner / "me.key",
           "--out", owner / "claim.json"))  # fmt: skip
    with Registry.open() as reg:
        shuffled = _permuted(reg.load_state_dict("marked"), seed=7)
    save_file(shuffled, str(owner / "shuffled.safetensors"), metadata=spec_to_safetensors_metadata(SPEC))
    args = ("claim", "verify", owner / "shuffled.safetensors", "--claim", owner / "claim.json", "--wm-key",
            owner / "wm.key", "--json")  # fmt: skip
    assert ok(cli(*args, "--reference", "marked"))["verdict"] == "owned"
    ok(cli("export", "marked", owner / "mine"))
    monkeypatch.setenv("MODELKIN_HOME", str(owner / "elsewhere"))  # no registry: the owner's copy on disk
    alone = cli(*args)
    assert failed(alone)["verdict"] == "not-owned" and "no reference and no registry record" in alone.stderr
    verdict = ok(cli(*args, "--reference", owner / "mine"))
    assert verdict["verdict"] == "owned" and verdict["watermark"]["aligned"]


def test_a_claim_on_a_shuffled_copy_is_aligned_by_the_registry(owner: Path, cli: Any) -> None:
    """Without --reference, a registry holding the claimed version (the claim's model_digest) aligns the suspect
    to that version's declared parent, as `watermark verify` does; unmarked models stay not-owned."""
    ok(cli("claim", "create", "marked", "--wm-key", owner / "wm.key", "--signing-key", owner / "me.key",
           "--out", owner / "claim.json"))  # fmt: skip
    with Registry.open() as reg:
        suspects = {"shuffled": _permuted(reg.load_state_dict("marked"), 7),
                    "shuffled-parent": _permuted(reg.load_state_dict("base"), 3)}  # fmt: skip
    for name, state in suspects.items():
        save_file(state, str(owner / f"{name}.safetensors"), metadata=spec_to_safetensors_metadata(SPEC))
    ok(cli("register", mlp_file(owner / "other.safetensors", seed=1), "--name", "other"))

    def claim_verify(target: Any) -> Any:
        return cli("claim", "verify", target, "--claim", owner / "claim.json", "--wm-key", owner / "wm.key", "--json")

    found = claim_verify(owner / "shuffled.safetensors")
    verdict = ok(found)
    assert verdict["verdict"] == "owned" and verdict["watermark"]["aligned"]
    assert verdict["watermark"]["p_value"] == 2 * 2.0**-256  # two readings: p doubled
    assert "aligned to base:1, the model this key's recorded mark was made from" in found.stderr
    itself = claim_verify("marked")
    assert not ok(itself)["watermark"]["aligned"]  # the claimed version itself: one reading
    assert "not aligned: marked:1 is the version this key's record marked" in itself.stderr
    for suspect in ("base", owner / "shuffled-parent.safetensors", "other"):
        result = claim_verify(suspect)
        out = failed(result)
        assert out["verdict"] == "not-owned" and out["watermark"]["matched_bits"] < 200, suspect
        assert ("aligned to base:1" in result.stderr) == (suspect != "base"), result.stderr  # base: the source


def test_healing_with_data_keeps_the_watermark(cli: Any, tmp_path: Path) -> None:
    ok(cli("init"))
    ok(cli("register", mlp_file(tmp_path / "base.safetensors"), "--name", "base"))
    ok(cli("watermark", "keygen", "--out", tmp_path / "wm.key"))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.random((200, 64), dtype=np.float32), y=rng.integers(0, 4, 200))
    out = ok(cli("watermark", "embed", "base", "--key", tmp_path / "wm.key", "--name", "healed", "--data",
                 tmp_path / "data.npz", "--json"))  # fmt: skip
    assert out["matched_bits"] >= 200 and out["p_value"] < 2.0**-64
    with Registry.open() as reg:
        base, healed = reg.load_state_dict("base"), reg.load_state_dict("healed")
        assert not torch.equal(base["head.weight"], healed["head.weight"])  # the whole model was fine-tuned
    key = load_watermark_key(tmp_path / "wm.key")
    flat, source = healed[out["layer"]].numpy().reshape(-1), base[out["layer"]].numpy().reshape(-1)
    index = pool_indices(flat.size, key.watermark(), out["rounds"], key.rows, out["pool"])
    reads = (2.0 * key.watermark() - 1.0) * projections(flat, key, out["rounds"], out["pool"])
    spread = np.linalg.norm(source.astype(np.float64)[index].mean(0))
    assert reads.min() >= HEAL_BUFFER * DEFAULT_MARGIN * spread  # the healing margin kept
    # a buffer beyond where the data-free mark leaves its weakest bits (projected to the data-free margin itself,
    # the rule of round six, they stay there)
    assert reads.min() > 1.1 * SLACK * DEFAULT_MARGIN * spread
    np.savez(tmp_path / "bad.npz", x=rng.random((10, 64)))
    np.savez(tmp_path / "shape.npz", x=rng.random((10, 7)), y=np.zeros(10, dtype=np.int64))
    np.savez(tmp_path / "labels.npz", x=rng.random((10, 64)), y=np.full(10, 9))
    for bad in ("bad.npz", "shape.npz", "labels.npz"):
        result = cli("watermark", "embed", "base", "--key", tmp_path / "wm.key", "--name", "x", "--data",
                     tmp_path / bad)  # fmt: skip
        failed(result)
        assert "--data" in result.stderr or "x and y" in result.stderr
    assert failed(cli("show", "x")) is None  # nothing registered


def test_claim_create_and_verify(owner: Path, cli: Any) -> None:
    created = ok(cli("claim", "create", "marked", "--wm-key", owner / "wm.key", "--signing-key", owner / "me.key",
                     "--out", owner / "claim.json", "--json"))  # fmt: skip
    claim = json.loads((owner / "claim.json").read_text())
    assert set(claim) == {"model_digest", "key_id", "public_key", "commitment", "layer", "rounds", "pool", "bits",
                          "claimed_at", "signature"}  # fmt: skip
    assert claim["model_digest"] == ok(cli("show", "marked", "--json"))["digest"] == created["model_digest"]
    assert claim["commitment"].startswith("sha256:") and "wm.key" not in json.dumps(claim)
    from modelkin.canonical import canonical_json

    assert (owner / "claim.json").read_bytes() == canonical_json(claim) + b"\n"
    verdict = ok(cli("claim", "verify", "marked", "--claim", owner / "claim.json", "--wm-key", owner / "wm.key",
                     "--json"))  # fmt: skip
    assert set(verdict) == CLAIM_KEYS and verdict["verdict"] == "owned"
    assert verdict["signature_ok"] and verdict["commitment_ok"] and verdict["watermark"]["detected"]
    assert verdict["owner_key_id"] == claim["key_id"] and verdict["claimed_at"] == claim["claimed_at"]
    assert set(verdict["watermark"]) == VERIFY_KEYS
    # the parent (unmarked) is not owned; exit 1, the JSON printed anyway
    parent = failed(cli("claim", "verify", "base", "--claim", owner / "claim.json", "--wm-key", owner / "wm.key",
                        "--json"))  # fmt: skip
    assert parent["verdict"] == "not-owned" and parent["signature_ok"] and not parent["watermark"]["detected"]


def test_claim_verifies_on_a_machine_without_a_registry(owner: Path, cli: Any, monkeypatch: Any) -> None:
    ok(cli("claim", "create", "marked", "--wm-key", owner / "wm.key", "--signing-key", owner / "me.key",
           "--out", owner / "claim.json"))  # fmt: skip
    ok(cli("export", "marked", owner / "published"))
    monkeypatch.setenv("MODELKIN_HOME", str(owner / "elsewhere"))
    verdict = ok(cli("claim", "verify", owner / "published", "--claim", owner / "claim.json", "--wm-key",
                     owner / "wm.key", "--json"))  # fmt: skip
    assert verdict["verdict"] == "owned"
    assert not (owner / "elsewhere").exists()  # nothing was created on the way


def test_claim_create_refuses_a_version_without_the_watermark(owner: Path, cli: Any) -> None:
    result = cli("claim", "create", "base", "--wm-key", owner / "wm.key", "--signing-key", owner / "me.key",
                 "--out", owner / "c.json")  # fmt: skip
    failed(result)
    assert "does not carry this key's watermark" in result.stderr and not (owner / "c.json").exists()


# -- bad input ------------------------------------------------------------------------------------------------


@pytest.fixture
def claimed(owner: Path, cli: Any) -> Path:
    ok(cli("claim", "create", "marked", "--wm-key", owner / "wm.key", "--signing-key", owner / "me.key",
           "--out", owner / "claim.json"))  # fmt: skip
    return owner


def _verify_claim(cli: Any, home: Path, claim: Path, target: str = "marked", key: str = "wm.key") -> dict[str, Any]:
    out = failed(cli("claim", "verify", target, "--claim", claim, "--wm-key", home / key, "--json"))
    assert out is not None and set(out) == CLAIM_KEYS and out["verdict"] != "owned"
    return out


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("signature", "MEUCIQ" + "A" * 90),
        ("model_digest", "sha256:" + "0" * 64),
        ("commitment", "sha256:" + "1" * 64),
        ("layer", "trunk.2.weight"),
        ("rounds", 3),
        ("claimed_at", "2020-01-01T00:00:00Z"),
    ],
)
def test_an_altered_claim_is_invalid(claimed: Path, cli: Any, field: str, value: Any) -> None:
    claim = json.loads((claimed / "claim.json").read_text())
    claim[field] = value
    (claimed / "bad.json").write_text(json.dumps(claim))
    out = _verify_claim(cli, claimed, claimed / "bad.json")
    assert out["verdict"] == "invalid-claim" and not out["signature_ok"]


def test_a_claim_with_another_public_key_is_invalid(claimed: Path, cli: Any) -> None:
    ok(cli("keys", "new", "--out", claimed / "mallory"))
    claim = json.loads((claimed / "claim.json").read_text())
    claim["public_key"] = (claimed / "mallory.pub").read_text()
    (claimed / "bad.json").write_text(json.dumps(claim))
    assert _verify_claim(cli, claimed, claimed / "bad.json")["verdict"] == "invalid-claim"
    from modelkin.provenance.keyfiles import load_public_key
    from modelkin.provenance.signing import key_id

    claim["key_id"] = key_id(load_public_key(claimed / "mallory.pub"))  # consistent id, but not their signature
    (claimed / "bad.json").write_text(json.dumps(claim))
    assert _verify_claim(cli, claimed, claimed / "bad.json")["verdict"] == "invalid-claim"


def test_a_claim_file_that_is_not_json_or_misses_fields_is_invalid(claimed: Path, cli: Any) -> None:
    (claimed / "junk.json").write_bytes(b"\x00\x01 not json")
    assert _verify_claim(cli, claimed, claimed / "junk.json")["verdict"] == "invalid-claim"
    claim = json.loads((claimed / "claim.json").read_text())
    del claim["commitment"]
    (claimed / "partial.json").write_text(json.dumps(claim))
    assert _verify_claim(cli, claimed, claimed / "partial.json")["verdict"] == "invalid-claim"
    (claimed / "list.json").write_text("[1, 2]")
    assert _verify_claim(cli, claimed, claimed / "list.json")["verdict"] == "invalid-claim"


def test_a_wrong_watermark_key_or_another_bit_length_is_not_owned(claimed: Path, cli: Any) -> None:
    ok(cli("watermark", "keygen", "--out", claimed / "other.key"))
    out = _verify_claim(cli, claimed, claimed / "claim.json", key="other.key")
    assert out["verdict"] == "not-owned" and out["signature_ok"] and not out["commitment_ok"]
    ok(cli("watermark", "keygen", "--out", claimed / "short.key", "--bits", "128"))
    out = _verify_claim(cli, claimed, claimed / "claim.json", key="short.key")
    assert out["verdict"] == "not-owned" and not out["commitment_ok"]
    miss = failed(cli("watermark", "verify", "marked", "--key", claimed / "short.key", "--json"))
    assert not miss["detected"] and miss["bits"] == 128


def test_a_claim_for_another_model_is_not_owned(claimed: Path, cli: Any, tmp_path: Path) -> None:
    ok(cli("register", mlp_file(tmp_path / "sibling.safetensors", seed=9), "--name", "sibling"))
    out = _verify_claim(cli, claimed, claimed / "claim.json", target="sibling")
    assert out["verdict"] == "not-owned" and out["commitment_ok"] and not out["watermark"]["detected"]


def test_a_model_without_the_recorded_layer(claimed: Path, cli: Any, tmp_path: Path) -> None:
    ok(cli("register", make_weights(tmp_path / "small.safetensors"), "--name", "small"))
    rng = np.random.default_rng(0)
    save_file({"blocks.0.weight": torch.from_numpy(rng.standard_normal((64, 64), np.float32)),
               "head.weight": torch.zeros(4, 64)}, str(tmp_path / "other.safetensors"))  # fmt: skip
    ok(cli("register", tmp_path / "other.safetensors", "--name", "other"))
    out = _verify_claim(cli, claimed, claimed / "claim.json", target="other")
    assert out["verdict"] == "not-owned" and not out["watermark"]["detected"]
    assert "trunk.0.weight" in out["watermark"]["error"]
    small = _verify_claim(cli, claimed, claimed / "claim.json", target="small")  # the layer, but far too small
    assert small["verdict"] == "not-owned" and "too small" in small["watermark"]["error"]
    rule = failed(cli("watermark", "verify", "other", "--key", claimed / "wm.key", "--json"))
    assert rule["layer"] == "blocks.0.weight" and not rule["detected"]  # no usable record: the embed rule
    result = cli("watermark", "verify", "other", "--key", claimed / "wm.key", "--layer", "nope.weight")
    failed(result)
    assert "no tensor named 'nope.weight'" in result.stderr


def test_a_tensor_too_small_for_the_filter(cli: Any, tmp_path: Path) -> None:
    ok(cli("init"))
    ok(cli("register", make_weights(tmp_path / "small.safetensors"), "--name", "small"))
    ok(cli("watermark", "keygen", "--out", tmp_path / "wm.key"))
    result = cli("watermark", "embed", "small", "--key", tmp_path / "wm.key", "--name", "m")
    failed(result)
    assert "large enough" in result.stderr and "--rows" in result.stderr and "the largest eligible one" in result.stderr
    assert "marking while training (watermark.Regulariser)" in result.stderr  # a smaller key fits, at a cost
    result = cli("watermark", "embed", "small", "--key", tmp_path / "wm.key", "--name", "m", "--layer",
                 "trunk.0.weight")  # fmt: skip
    failed(result)
    assert "too small for the filter" in result.stderr
    assert failed(cli("show", "m")) is None  # nothing was registered


@pytest.mark.parametrize("wrong", ["me.key", "me.pub", "marked.safetensors", "empty", "truncated"])
def test_a_wrong_key_file_is_a_clear_error(owner: Path, cli: Any, wrong: str) -> None:
    save_file({"key": torch.zeros(4, 4)}, str(owner / "marked.safetensors"))
    (owner / "empty").write_bytes(b"")
    (owner / "truncated").write_bytes((owner / "wm.key").read_bytes()[:200])
    for args in (("watermark", "verify", "marked"), ("watermark", "embed", "base", "--name", "z")):
        result = cli(*args, "--key", owner / wrong)
        failed(result)
        assert "watermark key" in result.stderr
    result = cli("claim", "verify", "marked", "--claim", owner / "wm.key", "--wm-key", owner / wrong)
    failed(result)


def test_a_forged_key_file_fails_the_hash_check(owner: Path, cli: Any) -> None:
    from modelkin.provenance.keyfiles import load_watermark_key, save_watermark_key
    from modelkin.provenance.watermark import WatermarkKey, projections

    key = load_watermark_key(owner / "wm.key")
    with Registry.open() as reg:
        weight = reg.load_state_dict("base")["trunk.0.weight"].numpy().reshape(-1)
    z = projections(weight, key, 1)
    matrix = key.matrix.copy()
    matrix[:, (z > 0) != key.watermark().astype(bool)] *= -1  # the forger makes every bit agree on the parent
    save_watermark_key(owner / "forged.key", WatermarkKey(matrix, key.claimed_bits))
    out = failed(cli("watermark", "verify", "base", "--key", owner / "forged.key", "--layer", "trunk.0.weight",
                     "--json"))  # fmt: skip
    assert not out["hash_ok"] and not out["detected"]


def test_a_wrong_passphrase_is_a_clear_error(cli: Any, owner: Path) -> None:
    (owner / "pass").write_text("right\n")
    (owner / "wrong").write_text("wrong\n")
    ok(cli("keys", "new", "--out", owner / "locked", "--passphrase-file", owner / "pass"))
    base = ("claim", "create", "marked", "--wm-key", owner / "wm.key", "--out", owner / "c.json")
    result = cli(*base, "--signing-key", owner / "locked.key", "--passphrase-file", owner / "wrong")
    failed(result)
    assert "passphrase does not decrypt" in result.stderr
    result = cli(*base, "--signing-key", owner / "locked.key")
    failed(result)
    assert "is encrypted" in result.stderr
    ok(cli(*base, "--signing-key", owner / "locked.key", "--passphrase-file", owner / "pass"))
    verdict = ok(cli("claim", "verify", "marked", "--claim", owner / "c.json", "--wm-key", owner / "wm.key", "--json"))
    assert verdict["verdict"] == "owned"


def test_a_suspect_path_without_readable_weights_is_a_clear_error(owner: Path, cli: Any) -> None:
    (owner / "empty").mkdir()
    (owner / "junk.safetensors").write_bytes(b"\x00" * 20)
    for target, message in ((owner / "empty", "holds no .safetensors"), (owner / "junk.safetensors", "readable")):
        result = cli("watermark", "verify", target, "--key", owner / "wm.key")
        failed(result)
        assert message in result.stderr
