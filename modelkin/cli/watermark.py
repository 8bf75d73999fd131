"""``modelkin watermark keygen|embed|verify``: NeuralMark hashed weight watermarks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from modelkin.cli import output
from modelkin.cli.options import Json, Ref, Target, open_registry
from modelkin.errors import InvalidModelFile, RegistryNotFound

if TYPE_CHECKING:
    import numpy as np

    from modelkin.provenance.ownership import WatermarkReport

app = typer.Typer(help="NeuralMark weight watermarks: make a secret key, mark a model, detect the mark.",
                  no_args_is_help=True)  # fmt: skip

KeyFile = Annotated[Path, typer.Option("--key", help="The watermark key written by `watermark keygen`.")]
Layer = Annotated[str | None, typer.Option("--layer", help="Tensor to mark or read (default: the embed rule).")]


@app.command("keygen")
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Key file to create (mode 0600; never overwritten).")],
    bits: Annotated[int, typer.Option("--bits", help="Watermark length n (a multiple of 8).")] = 256,
    rows: Annotated[int, typer.Option("--rows", help="Rows k0 of the key (at least --bits).")] = 512,
    json_out: Json = False,
) -> None:
    """Make a secret NeuralMark key K (rows x bits, Gaussian, from a cryptographic RNG)."""
    from modelkin.provenance.keyfiles import save_watermark_key
    from modelkin.provenance.watermark import generate_key

    try:
        key = generate_key(rows, bits)
    except ValueError as exc:
        raise typer.BadParameter(f"{exc}.", param_hint="--bits/--rows") from None
    save_watermark_key(out, key)
    if json_out:
        output.emit_json({"path": str(out), "bits": key.bits, "rows": key.rows, "commitment": key.commitment()})
    else:
        output.stdout.print(f"wrote {out} ({key.rows} x {key.bits}; keep it secret)")
        output.stdout.print(f"commitment {key.commitment()}")


def read_data(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An .npz with arrays x (float inputs) and y (integer class labels), as the zoo's task files are."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as f:
            x, y = np.asarray(f["x"], dtype=np.float32), np.asarray(f["y"])
    except (KeyError, ValueError, OSError, EOFError) as exc:
        raise InvalidModelFile(f"{path} is not an .npz with arrays x and y ({exc}).") from None
    if len(x) != len(y) or not len(y) or not np.issubdtype(y.dtype, np.integer):
        raise InvalidModelFile(f"{path} needs as many integer labels y as samples x.")
    return x, y.astype(np.int64)


@app.command("embed")
def embed(
    ctx: typer.Context,
    ref: Ref,
    key: KeyFile,
    name: Annotated[str, typer.Option("--name", help="Register the marked model as the next version of NAME.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="An .npz (x, y) for a short healing fine-tune after embedding.")
    ] = None,
    layer: Layer = None,
    margin: Annotated[
        float | None,
        typer.Option(
            "--margin",
            min=0.0,
            help="Per-bit margin in units of the unmarked projections' spread "
            "(default: the calibrated one; larger is more robust and changes the weights more).",
        ),
    ] = None,
    json_out: Json = False,
) -> None:
    """Mark REF (post hoc, data-free; healed with --data) and register it as a `watermarked` child."""
    from modelkin.provenance.keyfiles import load_watermark_key

    wm_key = load_watermark_key(key)
    samples = read_data(data) if data is not None else None
    result = open_registry(ctx).ownership.embed(ref, wm_key, name, layer=layer, data=samples, margin=margin)
    if json_out:
        output.emit_json(result.to_json())
    else:
        d = result.detection
        output.stdout.print(
            f"registered [bold]{result.ref}[/]: watermark in {result.placement.layer} (R={result.placement.rounds}, "
            f"m={result.placement.pool}), {d.matched_bits}/{d.bits} bits, p = {d.p_value:.3g}, "
            f"relative change {result.relative_change:.3g}"
        )


def print_report(report: WatermarkReport, json_out: bool) -> None:
    d = report.detection
    if json_out:
        output.emit_json(report.to_json())
    else:
        verdict = "DETECTED" if d.detected else "not detected"
        output.stdout.print(f"{verdict}: {d.matched_bits}/{d.bits} bits in {report.placement.layer}, "
                            f"p = {d.p_value:.3g}{'' if d.hash_ok else ' (key fails its hash check)'}")  # fmt: skip
    output.info(report.alignment)
    if not d.hash_ok:
        output.info("the key's matrix does not hash to its bits: it was altered or forged")


@app.command("verify")
def verify(
    ctx: typer.Context,
    target: Target,
    key: KeyFile,
    layer: Layer = None,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference",
            help="The owner's registered version: undo channel permutations against it (without it, a suspect "
            "not detected as stored is aligned to the model the key's recorded mark was made from, if any).",
        ),
    ] = None,
    json_out: Json = False,
) -> None:
    """Detect a key's watermark; exit 1 when it is not detected (the JSON is printed either way)."""
    from modelkin.provenance.keyfiles import load_watermark_key
    from modelkin.provenance.ownership import read_tensors, verify_watermark

    wm_key = load_watermark_key(key)
    path = Path(target)
    try:
        reg = open_registry(ctx)
    except RegistryNotFound:
        if not path.exists() or reference is not None:
            raise
        report = verify_watermark(read_tensors(path), wm_key, layer=layer)  # no registry: no records to consult
    else:
        report = reg.ownership.verify(path if path.exists() else target, wm_key, layer=layer, reference=reference)
    print_report(report, json_out)
    if not report.detection.detected:
        raise typer.Exit(1)
