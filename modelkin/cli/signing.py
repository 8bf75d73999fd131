"""``modelkin sign``: sign a registered version or a folder in the OpenSSF model-signing format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelkin.cli import output
from modelkin.cli.options import Json, PassphraseFile, open_registry


def sign(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Argument(help="A REF (its exported layout is signed) or a folder.", show_default=False)
    ],
    key: Annotated[Path, typer.Option("--key", help="PREFIX.key from `modelkin keys new`.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Signature file (default: DIR/model.sig, or NAME-N.sig for a REF).")
    ] = None,
    passphrase_file: PassphraseFile = None,
    json_out: Json = False,
) -> None:
    """Write a Sigstore bundle (DSSE, in-toto) that `model_signing verify key` accepts."""
    from modelkin.provenance.keyfiles import load_private_key, read_passphrase
    from modelkin.provenance.ownership import sign_folder
    from modelkin.provenance.signing import key_id

    passphrase = read_passphrase(passphrase_file)
    signer = key_id(load_private_key(key, passphrase).public_key())
    folder = Path(target)
    if folder.is_dir():
        signature, count = sign_folder(folder, key, out, passphrase)
        what = str(folder)
    else:
        reg = open_registry(ctx)
        version = reg.get(target)
        signature, count = reg.ownership.sign(version.ref, key, out or Path(f"{version.name}-{version.version}.sig"),
                                              passphrase)  # fmt: skip
        what = version.ref
    if json_out:
        output.emit_json({"target": what, "signature": str(signature), "signed_files": count, "key_id": signer})
    else:
        output.stdout.print(f"signed {what} ({count} files) into {signature}")
