"""``modelkin claim create|verify``: signed ownership claims bound to a watermark."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelkin.cli import output
from modelkin.cli.options import Json, PassphraseFile, Ref, Target, open_registry
from modelkin.errors import RegistryNotFound

app = typer.Typer(help="Ownership claims: a signed statement binding your key to a watermarked version.",
                  no_args_is_help=True)  # fmt: skip

WmKey = Annotated[Path, typer.Option("--wm-key", help="The watermark key the model was marked with.")]


@app.command("create")
def create(
    ctx: typer.Context,
    ref: Ref,
    wm_key: WmKey,
    signing_key: Annotated[Path, typer.Option("--signing-key", help="PREFIX.key from `modelkin keys new`.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the claim (JSON).")],
    passphrase_file: PassphraseFile = None,
    json_out: Json = False,
) -> None:
    """Sign a claim that REF carries your watermark (refused unless it is detected there)."""
    from modelkin.canonical import canonical_json
    from modelkin.provenance.keyfiles import load_private_key, load_watermark_key, read_passphrase

    key = load_watermark_key(wm_key)
    private = load_private_key(signing_key, read_passphrase(passphrase_file))
    claim = open_registry(ctx).ownership.create_claim(ref, key, private)
    out.write_bytes(canonical_json(claim) + b"\n")
    summary = {"path": str(out), "model_digest": claim["model_digest"], "key_id": claim["key_id"],
               "layer": claim["layer"], "claimed_at": claim["claimed_at"]}  # fmt: skip
    if json_out:
        output.emit_json(summary)
    else:
        output.stdout.print(f"wrote {out}: {ref} claimed by key {claim['key_id'][:16]}…")


@app.command("verify")
def verify(
    ctx: typer.Context,
    target: Target,
    claim: Annotated[Path, typer.Option("--claim", help="The claim JSON from `claim create`.")],
    wm_key: WmKey,
    reference: Annotated[
        str | None,
        typer.Option("--reference", help="The owner's marked version (REF or path): undo channel permutations."),
    ] = None,
    json_out: Json = False,
) -> None:
    """Check a claim against a suspect model: owned, not-owned or invalid-claim; exit 1 unless owned."""
    from modelkin.provenance.keyfiles import load_watermark_key
    from modelkin.provenance.ownership import read_tensors, verify_claim

    key = load_watermark_key(wm_key)
    data = claim.read_bytes()
    sources = [target] + ([reference] if reference is not None else [])
    try:
        reg = open_registry(ctx)  # when it holds the claimed version, a shuffled copy is aligned to its parent
    except RegistryNotFound as exc:
        if not all(Path(s).exists() for s in sources):
            exc.hint = "a REF needs a registry; give paths to check a claim without one"
            raise
        owner = read_tensors(Path(reference)) if reference is not None else None
        report = verify_claim(read_tensors(Path(target)), data, key, owner)  # weights on disk: no registry needed
    else:
        as_source = {s: Path(s) if Path(s).exists() else s for s in sources}
        report = reg.ownership.verify_claim(as_source[target], data, key,
                                            as_source[reference] if reference is not None else None)  # fmt: skip
    if report.alignment is not None:
        output.info(report.alignment)
    for reason in report.reasons:
        output.info(reason)
    if json_out:
        output.emit_json(report.to_json())
    else:
        w = report.watermark
        bits = f", {w['matched_bits']}/{w['bits']} bits, p = {w['p_value']:.3g}" if "matched_bits" in w else ""
        output.stdout.print(f"{report.verdict}{bits}  (owner key {report.owner_key_id or '?'}, claimed "
                            f"{report.claimed_at or '?'})")  # fmt: skip
    if report.verdict != "owned":
        raise typer.Exit(1)
