"""Registry housekeeping: ``init``, ``gc`` and ``db upgrade``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelkin.cli import output
from modelkin.cli.options import Json, open_registry

db_app = typer.Typer(help="Database schema management (Alembic).", no_args_is_help=True)


def init(ctx: typer.Context, json_out: Json = False) -> None:
    """Create the registry (directory, database schema, blob store); safe to run again."""
    from modelkin.db import migrate
    from modelkin.registry.registry import Registry

    home: Path | None = ctx.find_root().params.get("home")
    with Registry.init(home) as reg:
        info = {**reg.describe(), "schema": migrate.current_revision(reg.engine)}
    if json_out:
        output.emit_json(info)
    else:
        output.stdout.print(f"registry ready at {info['home']}")
        output.fields([("database", info["database"]), ("store", info["store"]), ("schema", info["schema"])])


def gc(
    ctx: typer.Context,
    grace: Annotated[
        float,
        typer.Option(
            min=0, help="Keep unreferenced blobs younger than this many seconds (a registration may be running)."
        ),
    ] = 3600.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be removed; remove nothing.")] = False,
    json_out: Json = False,
) -> None:
    """Remove blobs that no version references, and what interrupted writes left (temp files, staging, uploads)."""
    report = open_registry(ctx).gc(grace, dry_run)
    if json_out:
        output.emit_json(report.to_json())
        return
    verb = "would remove" if dry_run else "removed"
    output.stdout.print(f"{verb} {report.blobs_removed} blobs, {output.human_bytes(report.bytes_freed)} freed")
    if report.leftovers_removed:
        output.stdout.print(
            f"{verb} {report.leftovers_removed} leftovers of interrupted writes "
            f"({report.temporary_removed} temporary, {report.staging_removed} staging, "
            f"{report.multipart_aborted} multipart uploads), {output.human_bytes(report.leftover_bytes)}"
        )
    if report.kept_recent:
        output.info(f"kept {report.kept_recent} unreferenced blobs younger than {grace:g} s (see --grace)")


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, json_out: Json = False) -> None:
    """Migrate the database schema to this release's revision."""
    from modelkin.registry.registry import Registry

    home: Path | None = ctx.find_root().params.get("home")
    with Registry.connect(home) as reg:
        before, after = reg.upgrade()
    result = {"before": before, "after": after}
    if json_out:
        output.emit_json(result)
    else:
        output.stdout.print(f"schema at {result['after']}" + ("" if before == result["after"] else f" (was {before})"))


@db_app.command("current")
def db_current(ctx: typer.Context, json_out: Json = False) -> None:
    """Show the schema revision of the database and the one this release expects."""
    from modelkin.db import migrate

    reg = open_registry(ctx)
    result = {"current": migrate.current_revision(reg.engine), "head": migrate.SCHEMA_HEAD}
    if json_out:
        output.emit_json(result)
    else:
        output.stdout.print(f"current {result['current']}, expected {result['head']}")
