"""``modelkin store check``: can this machine use the blob store the registry is configured with?"""

from __future__ import annotations

from pathlib import Path

import typer

from modelkin.cli import output
from modelkin.cli.options import Json

app = typer.Typer(help="The blob store (MODELKIN_STORE): check that it can be used.", no_args_is_help=True)


@app.command("check")
def check(ctx: typer.Context, json_out: Json = False) -> None:
    """Write, read back and delete a probe object; say in one sentence what is wrong if that fails.

    Needs no initialised registry. Exit 1 when the store cannot be used (the JSON is printed all the same).
    """
    from modelkin.config import Settings
    from modelkin.registry.store import check_store

    home: Path | None = ctx.find_root().params.get("home")
    settings = Settings.resolve(home)
    result = check_store(settings.store, settings.staging)
    if json_out:
        output.emit_json(result.to_json())
    elif result.ok:
        output.stdout.print(f"store ok: {result.store} (probe written, read back and deleted)")
    else:
        output.error(RuntimeError(f"store {result.store}: {result.message}"))
        if result.hint:
            output.info(f"Hint: {result.hint}")
    if not result.ok:
        raise typer.Exit(1)
