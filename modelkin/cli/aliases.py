"""``modelkin alias``: movable names for versions (``name@prod``)."""

from __future__ import annotations

from typing import Annotated

import typer

from modelkin.cli import output
from modelkin.cli.options import Json, Ref, open_registry

app = typer.Typer(help="Point NAME@ALIAS at a version, or remove an alias.", no_args_is_help=True)


@app.command("set")
def set_alias(
    ctx: typer.Context,
    ref: Ref,
    alias: Annotated[str, typer.Argument(help="Alias name, e.g. prod.", show_default=False)],
    json_out: Json = False,
) -> None:
    """Point NAME@ALIAS at the version REF names (moving it if it pointed elsewhere)."""
    v, before = open_registry(ctx).set_alias(ref, alias)
    if json_out:
        output.emit_json({"alias": f"{v.name}@{alias}", "ref": v.ref, "previous": before})
    else:
        moved = f" (was {before})" if before and before != v.ref else ""
        output.stdout.print(f"{v.name}@{alias} -> {v.ref}{moved}")


@app.command("remove")
def remove_alias(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="NAME@ALIAS to remove.", show_default=False)],
    json_out: Json = False,
) -> None:
    """Remove an alias; the version it pointed at is untouched."""
    name, sep, alias = target.partition("@")
    if not sep or not name or not alias:
        raise typer.BadParameter(f"{target!r} is not NAME@ALIAS.", param_hint="TARGET")
    ref = open_registry(ctx).remove_alias(name, alias)
    if json_out:
        output.emit_json({"alias": target, "ref": ref, "removed": True})
    else:
        output.stdout.print(f"removed {target} (was {ref})")
