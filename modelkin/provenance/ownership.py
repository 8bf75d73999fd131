"""``registry.ownership``: NeuralMark watermarks, ownership claims and signed models, wired to storage.

The facade receives the registry as a :class:`~modelkin.registry.host.Host`; the algorithms live in
``modelkin.provenance.watermark`` and ``modelkin.provenance.signing``. What needs no registry (checking a
claim or a watermark against weights on disk, signing or checking a folder) is also offered as module-level
functions, so a claim verifies on a machine that has none.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from modelkin.db.engine import read_session, write_session
from modelkin.db.schema import Model, Version, WatermarkRecord
from modelkin.errors import InvalidKey, ModelkinError, WatermarkError
from modelkin.provenance import signing
from modelkin.provenance.watermark import (
    DEFAULT_FLOOR,
    DEFAULT_FPR,
    DEFAULT_MARGIN,
    DEFAULT_TOGETHER,
    HEAL_BUFFER,
    Detection,
    Projection,
    WatermarkKey,
    align,
    choose_layer,
    consumer,
    corrected,
    detect,
    embed_posthoc,
    fine_tune,
    plan_rounds,
    pool_size,
    unit_metric,
)

if TYPE_CHECKING:
    import torch
    from cryptography.hazmat.primitives.asymmetric import ec

    from modelkin.registry.host import Host

Tensors = Mapping[str, "torch.Tensor"]


@dataclass(frozen=True)
class Placement:
    """Where a watermark is read: layer, filter rounds R, pool size m, and how the layer was found."""

    layer: str
    rounds: int
    pool: int
    found_by: str  # record | option | rule | claim
    recorded_in: str | None = None  # with found_by "record": the marked version the record belongs to


NOT_ALIGNED = "not aligned: no reference and no registry record of this key, so channel permutations are not undone"


@dataclass(frozen=True)
class WatermarkReport:
    detection: Detection
    placement: Placement
    aligned: bool
    alignment: str = NOT_ALIGNED  # what was done about channel permutations, in one sentence

    def to_json(self) -> dict[str, Any]:
        d = self.detection
        return {"detected": d.detected, "matched_bits": d.matched_bits, "bits": d.bits, "p_value": d.p_value,
                "hash_ok": d.hash_ok, "layer": self.placement.layer, "aligned": self.aligned}  # fmt: skip


@dataclass(frozen=True)
class EmbedResult:
    ref: str
    placement: Placement
    detection: Detection
    relative_change: float
    created: bool

    def to_json(self) -> dict[str, Any]:
        p, d = self.placement, self.detection
        return {"ref": self.ref, "layer": p.layer, "rounds": p.rounds, "pool": p.pool, "bits": d.bits,
                "matched_bits": d.matched_bits, "p_value": d.p_value,
                "relative_change": self.relative_change}  # fmt: skip


@dataclass(frozen=True)
class ClaimReport:
    verdict: str  # owned | not-owned | invalid-claim
    signature_ok: bool
    commitment_ok: bool
    watermark: dict[str, Any]
    owner_key_id: str | None
    claimed_at: str | None
    reasons: tuple[str, ...] = ()
    alignment: str | None = None  # what was done about channel permutations (None: the watermark was not read)

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "signature_ok": self.signature_ok, "commitment_ok": self.commitment_ok,
                "watermark": self.watermark, "owner_key_id": self.owner_key_id,
                "claimed_at": self.claimed_at}  # fmt: skip


# -- registry-free pieces -------------------------------------------------------------------------------------


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file or of the safetensors files in a folder (read without running code)."""
    from safetensors import SafetensorError, safe_open

    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.safetensors") if not p.is_symlink())
    if not files:
        raise WatermarkError(f"{path} holds no .safetensors weights.", hint="give a weights file or a model folder")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                for name in st.keys():
                    out[name] = st.get_tensor(name)
        except (SafetensorError, OSError) as exc:
            raise WatermarkError(f"{f} is not a readable safetensors file ({exc}).") from None
    return out


def _shapes(tensors: Tensors) -> dict[str, tuple[tuple[int, ...], str]]:
    return {n: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in tensors.items()}


def _as_array(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().numpy() if t.is_floating_point() else t.detach().numpy()


def place(tensors: Tensors, key: WatermarkKey, layer: str | None, recorded: Placement | None = None) -> Placement:
    """The recorded placement, else ``layer`` with the rule's rounds, else the rule's choice."""
    if recorded is not None:
        if recorded.layer not in tensors:
            raise WatermarkError(f"the model has no tensor {recorded.layer!r}, where this key's watermark was "
                                 "recorded.", hint="is this a different architecture?")  # fmt: skip
        return recorded
    if layer is not None:
        if layer not in tensors:
            raise WatermarkError(f"the model has no tensor named {layer!r}.", hint="`modelkin show` lists them")
        t = tensors[layer]
        if t.dim() < 2 or not t.is_floating_point():
            raise WatermarkError(f"{layer} is not a floating-point weight matrix.")
        rounds, pool = plan_rounds(t.numel(), key.watermark(), key.rows)
        if pool < 1:
            raise WatermarkError(
                f"{layer} ({t.numel()} entries) is too small for the filter of a {key.rows}-row key.",
                hint="choose a larger tensor, or a key with fewer --rows",
            )
        return Placement(layer, rounds, pool, "option")
    try:
        plan = choose_layer(_shapes(tensors), key.watermark(), key.rows)
    except ValueError as exc:
        hint = (
            "a key with fewer --rows fits, but so few weights carry a mark detectable at p < 2^-64 (>= 72 "
            "--bits) only by changing them a lot; marking while training (watermark.Regulariser) costs little "
            "accuracy but fine-tuning removes the mark more often (README, Ownership)"
        )
        raise WatermarkError(f"{exc}.", hint=hint) from None
    return Placement(plan.layer, plan.rounds, plan.pool, "rule")


def mark_weight(
    tensors: Tensors,
    key: WatermarkKey,
    placement: Placement,
    margin: float = DEFAULT_MARGIN,
    floor: float = DEFAULT_FLOOR,
    together: float = DEFAULT_TOGETHER,
) -> np.ndarray:
    """The tensor at ``placement`` with every bit of ``key`` beyond ``margin``, changed least in the downstream
    metric of the weight that reads its outputs (cost.py; plain least norm when none does). Bits already beyond
    the margin cost nothing, so on a tensor that carries the mark (trained with the regulariser) it only tops
    the weak bits up."""
    reader = consumer({n: tuple(t.shape) for n, t in tensors.items()}, placement.layer)
    metric = unit_metric(_as_array(tensors[reader]), floor, together) if reader is not None else None
    weight = _as_array(tensors[placement.layer])
    return embed_posthoc(weight, key, placement.rounds, placement.pool, margin, metric)


def _detect_at(
    tensors: Tensors, key: WatermarkKey, placement: Placement, reference: np.ndarray | None, fpr: float
) -> WatermarkReport:
    weight = _as_array(tensors[placement.layer])
    if reference is not None:
        try:
            weight = align(weight, reference)
        except ValueError as exc:
            raise WatermarkError(f"cannot align {placement.layer}: {exc}.") from None
    try:
        detection = detect(weight.reshape(-1), key, placement.rounds, placement.pool, fpr)
    except ValueError as exc:
        raise WatermarkError(f"{placement.layer} is too small for this key: {exc}.") from None
    return WatermarkReport(detection, placement, reference is not None, "aligned to the reference" if reference
                           is not None else NOT_ALIGNED)  # fmt: skip


@dataclass(frozen=True)
class Source:
    """The model a recorded mark was made from (the marked version's declared parent), loaded only if needed."""

    ref: str
    load: Callable[[], Tensors]


def read_twice(
    tensors: Tensors, key: WatermarkKey, placement: Placement, source: Source, fpr: float
) -> WatermarkReport:
    """The suspect read as stored and, if that does not detect, again aligned to the mark's ``source``: aligning
    to the marked version itself would copy part of the mark's pattern onto any model of that shape, and the
    source does not depend on the key. Two readings, so both p-values are doubled (Bonferroni)."""
    plain = _detect_at(tensors, key, placement, None, fpr)
    first = replace(plain, detection=corrected(plain.detection, 2, fpr))
    if first.detection.detected:
        return replace(first, alignment=f"detected as stored (not aligned; p doubled for a second reading "
                                        f"aligned to {source.ref})")  # fmt: skip
    unmarked = source.load().get(placement.layer)
    if unmarked is None or unmarked.shape != tensors[placement.layer].shape:
        return replace(plain, alignment=f"not aligned: {source.ref}, the recorded mark's source, has no "
                                        f"{placement.layer} of this shape")  # fmt: skip
    second = _detect_at(tensors, key, placement, _as_array(unmarked), fpr)
    second = replace(second, detection=corrected(second.detection, 2, fpr))
    aligned = f"aligned to {source.ref}, the model this key's recorded mark was made from"
    if second.detection.p_value < first.detection.p_value:
        return replace(second, alignment=f"{aligned} (p doubled for the two readings)")
    return replace(first, aligned=False, alignment=f"read as stored: {aligned}, it matched no more bits (p "
                                                   "doubled for the two readings)")  # fmt: skip


def verify_watermark(
    tensors: Tensors,
    key: WatermarkKey,
    *,
    layer: str | None = None,
    recorded: Placement | None = None,
    reference: np.ndarray | None = None,
    fpr: float = DEFAULT_FPR,
) -> WatermarkReport:
    """Extract the key's watermark from ``tensors`` (aligned to ``reference`` first when given)."""
    return _detect_at(tensors, key, place(tensors, key, layer, recorded), reference, fpr)


def verify_claim(
    tensors: Tensors,
    claim_bytes: bytes,
    key: WatermarkKey,
    reference: Tensors | None = None,
    fpr: float = DEFAULT_FPR,
    source: Source | None = None,
) -> ClaimReport:
    """Owned only if the claim's signature verifies, the watermark key opens its commitment, and the watermark
    is detected where the claim says it is: after undoing channel permutations against the owner's
    ``reference`` weights when given, else read as stored and aligned to the mark's ``source`` (``read_twice``)
    when a registry knows it, else as stored."""
    doc = signing.parse_claim(claim_bytes)
    check = signing.check_claim(doc) if doc is not None else signing.ClaimCheck(False, "the claim is not JSON")
    claim = check.claim
    owner = claim.get("key_id") if isinstance(claim.get("key_id"), str) else None
    at = claim.get("claimed_at") if isinstance(claim.get("claimed_at"), str) else None
    if not check.signature_ok:
        return ClaimReport("invalid-claim", False, False, {}, owner, at, (str(check.reason),))
    reasons: list[str] = []
    commitment_ok = key.commitment() == claim["commitment"] and key.bits == claim["bits"]
    if not commitment_ok:
        reasons.append(
            f"the watermark key does not open the claim's commitment (a {key.bits}-bit key; the claim has "
            f"{claim['bits']} bits)"
            if key.bits != claim["bits"]
            else "the watermark key does not open the claim's commitment: it is not the key this claim was made with"
        )
    try:
        claimed = place(tensors, key, None, Placement(claim["layer"], claim["rounds"], claim["pool"], "claim"))
        if reference is not None:
            report = _detect_at(tensors, key, claimed, _reference_tensor(reference, claimed.layer), fpr)
        elif source is not None:
            report = read_twice(tensors, key, claimed, source, fpr)
        else:
            report = _detect_at(tensors, key, claimed, None, fpr)
        watermark = report.to_json()
        if not report.detection.detected:
            reasons.append(f"the watermark is not detected ({report.detection.matched_bits}/{key.bits} bits, "
                           f"p = {report.detection.p_value:.3g})")  # fmt: skip
    except WatermarkError as exc:
        watermark = {"detected": False, "error": str(exc), "layer": claim["layer"]}
        reasons.append(str(exc))
        report = None
    owned = commitment_ok and report is not None and report.detection.detected
    return ClaimReport("owned" if owned else "not-owned", True, commitment_ok, watermark, owner, at,
                       tuple(dict.fromkeys(reasons)), report.alignment if report is not None else None)  # fmt: skip


def _reference_tensor(reference: Tensors, layer: str) -> np.ndarray:
    if layer not in reference:
        raise WatermarkError(f"the reference has no tensor {layer!r} to align to.")
    return _as_array(reference[layer])


def sign_folder(folder: Path, private_key: Path, out: Path | None, passphrase: bytes | None) -> tuple[Path, int]:
    """Sign a folder in the OpenSSF model-signing format (default: FOLDER/model.sig)."""
    out = out if out is not None else folder / signing.DEFAULT_SIGNATURE
    return out, signing.sign_folder(folder, private_key, out, passphrase)


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the facade ------------------------------------------------------------------------------------------------


class Ownership:
    """Mark a registered version, prove ownership of a suspect, and sign or check a version's files."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def _record(self, key: WatermarkKey, tensors: Tensors, ref: str | None) -> Placement | None:
        """This key's recorded embedding: the one in ``ref`` itself, else the newest whose layer ``tensors`` has
        (large enough for the recorded pooling)."""
        with read_session(self.host.engine) as s:
            rows = list(s.execute(
                select(WatermarkRecord, Version.number, Model.name)
                .select_from(WatermarkRecord)
                .join(Version, WatermarkRecord.version_id == Version.id)
                .join(Model, Version.model_id == Model.id)
                .where(WatermarkRecord.commitment == key.commitment())
                .order_by(WatermarkRecord.id.desc())
            ))  # fmt: skip
        usable = [(r, f"{name}:{n}") for r, n, name in rows if r.bits == key.bits and r.layer in tensors
                  and pool_size(tensors[r.layer].numel(), key.watermark(), r.rounds, key.rows) >= r.pool]  # fmt: skip
        if not usable:
            return None
        own = [(r, at) for r, at in usable if at == ref]
        r, at = own[0] if own else usable[0]
        return Placement(r.layer, r.rounds, r.pool, "record", at)

    def embed(
        self,
        ref: str,
        key: WatermarkKey,
        name: str,
        *,
        layer: str | None = None,
        data: tuple[np.ndarray, np.ndarray] | None = None,
        margin: float | None = None,
    ) -> EmbedResult:
        """Mark ``ref`` post hoc (healed by a short fine-tune when ``data`` = (x, y) is given) and register the
        result as the next version of ``name``, a ``watermarked`` child of ``ref``."""
        source = self.host.get(ref)
        tensors = self.host.load_state_dict(source.ref)
        placement = place(tensors, key, layer)
        original = tensors[placement.layer]
        margin = DEFAULT_MARGIN if margin is None else margin
        changed = {placement.layer: _to_dtype(mark_weight(tensors, key, placement, margin), original)}
        if data is not None:
            changed = self._heal(source.ref, {**tensors, **changed}, key, placement, data, _as_array(original), margin)
        new = {**tensors, **changed}
        weight = _as_array(new[placement.layer])
        detection = detect(weight.reshape(-1), key, placement.rounds, placement.pool)
        if not detection.detected:
            raise WatermarkError(f"the embedded watermark does not verify ({detection.matched_bits}/{key.bits}).")
        delta = np.linalg.norm(weight - _as_array(original)) / (np.linalg.norm(_as_array(original)) or 1.0)
        registration = self._register(source, changed, name)
        version = registration.version
        self._save_record(version.name, version.version, key, placement, "healed" if data is not None else "posthoc")
        return EmbedResult(version.ref, placement, detection, float(delta), registration.created)

    def _heal(
        self, ref: str, tensors: dict[str, torch.Tensor], key: WatermarkKey, placement: Placement,
        data: tuple[np.ndarray, np.ndarray], source: np.ndarray, margin: float,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """A short fine-tune of every trainable tensor on (x, y), the marked one projected back after each step
        to every bit beyond HEAL_BUFFER x ``margin`` of the unmarked ``source`` (heal.py): the bits keep a buffer
        beyond the data-free mark's margin and cost nothing more while they hold."""
        x, y = data
        module = self.host.load_module(ref)
        module.load_state_dict(tensors)
        if placement.layer not in dict(module.named_parameters()):
            raise WatermarkError(f"{placement.layer} is not a trainable parameter of {ref}; cannot heal.")
        projection = Projection(key, placement.rounds, placement.pool, source, HEAL_BUFFER * margin)
        try:
            return fine_tune(module, x, y, layer=placement.layer, projection=projection)
        except (RuntimeError, TypeError, IndexError, ValueError) as exc:  # torch's report of a shape/label mismatch
            raise WatermarkError(
                f"cannot heal {ref} on the --data samples ({str(exc).splitlines()[0]}).",
                hint="--data must hold inputs the model takes (x) and its class indices (y)",
            ) from None

    def _register(self, source: Any, changed: dict[str, torch.Tensor], name: str) -> Any:
        """The source version's stored files with the changed tensors rewritten, registered under ``name``."""
        from safetensors import safe_open
        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory(prefix="modelkin-watermark-") as tmp:
            root = Path(tmp) / "model"
            root.mkdir()
            for f in source.files:
                target = root / f.path
                target.parent.mkdir(parents=True, exist_ok=True)
                self.host.store.copy_verified(f.sha256, target)
                if f.path.endswith(".safetensors"):
                    with safe_open(str(target), framework="pt") as st:
                        names, metadata = list(st.keys()), st.metadata()
                        if any(n in changed for n in names):
                            state = {n: changed[n] if n in changed else st.get_tensor(n) for n in names}
                        else:
                            continue
                    save_file({n: t.contiguous() for n, t in state.items()}, str(target), metadata=metadata)
            # the architecture is discovered again from the copied files (metadata, config.json), as it was
            return self.host.register(root, name=name, parents=[source.ref], relation="watermarked", tags=source.tags)

    def _save_record(self, name: str, number: int, key: WatermarkKey, placement: Placement, method: str) -> None:
        with write_session(self.host.engine) as s:
            version = s.scalar(select(Version).join(Model).where(Model.name == name, Version.number == number))
            assert version is not None
            exists = s.scalar(select(WatermarkRecord).where(
                WatermarkRecord.version_id == version.id, WatermarkRecord.commitment == key.commitment()))  # fmt: skip
            if exists is None:
                s.add(WatermarkRecord(version_id=version.id, layer=placement.layer, rounds=placement.rounds,
                                      pool=placement.pool, bits=key.bits, rows=key.rows,
                                      commitment=key.commitment(), method=method))  # fmt: skip

    def verify(
        self,
        target: str | Path,
        key: WatermarkKey,
        *,
        layer: str | None = None,
        reference: str | None = None,
        fpr: float = DEFAULT_FPR,
    ) -> WatermarkReport:
        """Is ``key``'s watermark in ``target`` (a REF, or a weights file or folder on disk)?

        Channel permutations are undone against ``reference`` when given. Without it, when the registry holds
        this key's record for another version, the suspect is read as stored and, if that reading does not
        detect, again aligned to the model the recorded mark was made from (its declared parent): aligning to the
        marked version itself would copy part of the mark's pattern onto any model of that shape, and the
        parent does not depend on the key. Two readings, so both p-values are doubled (Bonferroni)."""
        ref = self.host.get(target).ref if isinstance(target, str) else None
        tensors = self.host.load_state_dict(ref) if ref is not None else read_tensors(Path(target))
        placement = place(tensors, key, layer, self._record(key, tensors, ref))
        if reference is not None:
            owner_ref = self.host.get(reference).ref
            owner = self.host.load_state_dict(owner_ref)
            report = _detect_at(tensors, key, placement, _reference_tensor(owner, placement.layer), fpr)
            return replace(report, alignment=f"aligned to {owner_ref} (--reference)")
        source, why_not = self._alignment_source(placement, ref)
        if source is None:
            plain = _detect_at(tensors, key, placement, None, fpr)
            return plain if why_not is None else replace(plain, alignment=f"not aligned: {why_not}")
        return read_twice(
            tensors, key, placement, Source(source, functools.partial(self.host.load_state_dict, source)), fpr
        )

    def _alignment_source(self, placement: Placement, ref: str | None) -> tuple[str | None, str | None]:
        """(the version to align a suspect to, None), else (None, why not), for a placement found by a record;
        (None, None) when there is no record."""
        recorded = placement.recorded_in
        if recorded is None:
            return None, None  # the plain reading's NOT_ALIGNED says it
        return self._source_of(recorded, ref)

    def _source_of(self, recorded: str, ref: str | None) -> tuple[str | None, str | None]:
        """(the declared parent of the marked version ``recorded``, None), else (None, why a suspect ``ref``
        is not aligned to it)."""
        if recorded == ref:
            return None, f"{ref} is the version this key's record marked"
        parents = self.host.get(recorded).declared_parents
        if not parents:
            return None, f"{recorded}, the recorded version, declares no parent to align to"
        source = self.host.get(parents[0]).ref
        return (None, f"{ref} is the model this key's recorded mark was made from") if source == ref else (source, None)

    def create_claim(
        self, ref: str, key: WatermarkKey, signing_key: ec.EllipticCurvePrivateKey, claimed_at: str | None = None
    ) -> dict[str, Any]:
        """A signed claim on ``ref``; refused unless the key's watermark is detected in it."""
        version = self.host.get(ref)
        tensors = self.host.load_state_dict(version.ref)
        report = verify_watermark(tensors, key, recorded=self._record(key, tensors, version.ref))
        if not report.detection.detected:
            raise WatermarkError(
                f"{version.ref} does not carry this key's watermark ({report.detection.matched_bits}/{key.bits}"
                " bits); a claim would not verify.",
                hint="claim the version that `modelkin watermark embed` registered",
            )
        p = report.placement
        statement = {"model_digest": version.digest, "commitment": key.commitment(), "layer": p.layer,
                     "rounds": p.rounds, "pool": p.pool, "bits": key.bits,
                     "claimed_at": claimed_at or _utc_now()}  # fmt: skip
        return signing.create_claim(signing_key, statement)

    def verify_claim(
        self, target: str | Path, claim_bytes: bytes, key: WatermarkKey, reference: str | Path | None = None
    ) -> ClaimReport:
        """``verify_claim`` on a REF or a path, aligned to the owner's ``reference`` (a REF or a path) if given;
        without one, when this registry holds the claimed version (the claim's ``model_digest``), the suspect is
        also read aligned to that version's declared parent, as ``verify`` does with a key's record."""
        if reference is not None:
            return verify_claim(self.tensors(target), claim_bytes, key, self.tensors(reference))
        ref = self.host.get(target).ref if isinstance(target, str) else None
        source, why_not = self._claimed_source(claim_bytes, ref)
        report = verify_claim(self.tensors(target), claim_bytes, key, source=source)
        if why_not is not None and report.alignment is not None:
            return replace(report, alignment=f"not aligned: {why_not}")
        return report

    def _claimed_source(self, claim_bytes: bytes, ref: str | None) -> tuple[Source | None, str | None]:
        """(the source of the version a claim names, None) when this registry holds it and ``ref`` is neither;
        else (None, why not) for a claimed version registered here, (None, None) for one that is not."""
        doc = signing.parse_claim(claim_bytes)
        digest = doc.get("model_digest") if isinstance(doc, dict) else None
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            return None, None
        try:
            marked = self.host.get(digest).ref
        except ModelkinError:
            return None, None  # not registered here (or not a digest): read as stored, as without a registry
        parent, why_not = self._source_of(marked, ref)
        if parent is None:
            return None, why_not
        return Source(parent, functools.partial(self.host.load_state_dict, parent)), None

    def tensors(self, source: str | Path) -> dict[str, torch.Tensor]:
        """A registered version's tensors (a REF), or those of weights on disk (a Path)."""
        return self.host.load_state_dict(self.host.get(source).ref) if isinstance(source, str) else read_tensors(source)

    def sign(self, ref: str, private_key: Path, out: Path, passphrase: bytes | None = None) -> tuple[Path, int]:
        """Sign a version's exported layout (what `modelkin export` writes) into ``out``."""
        with tempfile.TemporaryDirectory(prefix="modelkin-sign-") as tmp:
            folder = self.host.export(ref, Path(tmp) / self.host.get(ref).name)
            return out, signing.sign_folder(folder, private_key, out, passphrase)

    def verify_signature(self, ref: str, signature: Path, public_key: Path) -> signing.FolderVerdict:
        """Check a version's exported layout against a model-signing bundle."""
        if not signature.is_file():
            raise InvalidKey(f"{signature} does not exist.")
        with tempfile.TemporaryDirectory(prefix="modelkin-verify-") as tmp:
            folder = self.host.export(ref, Path(tmp) / self.host.get(ref).name)
            return signing.verify_folder(folder, signature, public_key)


def _to_dtype(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(like.dtype).reshape(like.shape)
