"""``modelkin keys new``: an ECDSA P-256 signing key pair for ownership claims and signed models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelkin.cli import output
from modelkin.cli.options import Json, PassphraseFile

app = typer.Typer(help="Signing keys (ECDSA P-256): one key signs ownership claims and model folders.",
                  no_args_is_help=True)  # fmt: skip


@app.command("new")
def new(
    out: Annotated[Path, typer.Option("--out", help="Writes PREFIX.key (private, 0600) and PREFIX.pub.")],
    passphrase_file: PassphraseFile = None,
    json_out: Json = False,
) -> None:
    """Make a key pair: PREFIX.key (PKCS#8 PEM, mode 0600, encrypted with a passphrase) and PREFIX.pub (SPKI PEM)."""
    from modelkin.provenance.keyfiles import read_passphrase, write_keypair

    private, public, key_id = write_keypair(out, read_passphrase(passphrase_file))
    if json_out:
        output.emit_json({"key_id": key_id, "private": str(private), "public": str(public)})
    else:
        output.stdout.print(f"wrote {private} (keep it secret) and {public}")
        output.stdout.print(f"key id {key_id}")
