"""The ``modelkin`` command: one typer app; errors become one sentence on stderr and an exit code.

Exit codes: 0 ok; 1 failed, not found or verification failed; 2 usage error (including a malformed REF,
name or filter). ``MODELKIN_DEBUG=1`` shows the
traceback instead.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from modelkin import __version__
from modelkin.cli import (
    admin,
    aliases,
    claims,
    hub,
    keys,
    lineage,
    models,
    output,
    retrieval,
    signing,
    store,
    watermark,
    zoo,
)
from modelkin.config import debug_enabled
from modelkin.errors import ModelkinError


class _Group(TyperGroup):
    """Turns expected failures (ModelkinError, OS errors such as a missing file) into exit 1 and one line."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            expected = exc if isinstance(exc, (ModelkinError, OSError)) else _database_error(exc)
            if expected is None or debug_enabled():
                raise
            output.error(expected)
            raise typer.Exit(getattr(expected, "exit_code", 1)) from None


def _database_error(exc: Exception) -> ModelkinError | None:
    if type(exc).__module__.startswith("sqlalchemy"):  # only then is SQLAlchemy imported, and worth asking
        from modelkin.db.engine import database_error

        return database_error(exc)
    return None


app = typer.Typer(
    cls=_Group,
    name="modelkin",
    help=(
        "A model zoo and provenance registry: register weights, trace where they came from, prove they are yours.\n\n"
        "The registry lives in --home (MODELKIN_HOME, default ~/.modelkin); MODELKIN_DATABASE_URL and "
        "MODELKIN_STORE override its database and blob store."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        output.stdout.print(f"modelkin {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    home: Annotated[
        Path | None,
        typer.Option(
            envvar="MODELKIN_HOME",
            help="Registry directory (env MODELKIN_HOME; default ~/.modelkin).",
            show_envvar=False,
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Global options; the registry is opened by each command that needs it."""


app.command("init")(admin.init)
app.command("register")(models.register)
app.command("import-hf")(hub.import_hf)
app.command("register-zoo")(zoo.register_zoo)
app.command("list")(models.list_versions)
app.command("show")(models.show)
app.command("tag")(models.tag)
app.add_typer(aliases.app, name="alias")
app.command("diff")(models.diff)
app.command("log")(models.log)
app.command("yank")(models.yank)
app.command("export")(models.export)
app.command("verify")(models.verify)
app.command("gc")(admin.gc)
app.add_typer(keys.app, name="keys")
app.add_typer(watermark.app, name="watermark")
app.add_typer(claims.app, name="claim")
app.command("sign")(signing.sign)
app.add_typer(admin.db_app, name="db")
app.add_typer(retrieval.probes_app, name="probes")
app.add_typer(retrieval.index_app, name="index")
app.command("search")(retrieval.search)
app.add_typer(retrieval.retrieval_app, name="retrieval")
app.add_typer(lineage.app, name="lineage")
app.add_typer(store.app, name="store")


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C does, so staging files and temporary folders are removed on the way out."""
    raise SystemExit(128 + signum)


def main() -> None:
    """Console entry point: anything unexpected is reported in one line unless MODELKIN_DEBUG is set."""
    signal.signal(signal.SIGTERM, _terminated)
    try:
        app(prog_name="modelkin")
    except KeyboardInterrupt:
        output.info("interrupted")
        sys.exit(130)
    except Exception as exc:  # the last line of defence: a bug, not a user error
        if debug_enabled():
            raise
        output.error(RuntimeError(f"internal error ({exc.__class__.__name__}: {exc})"))
        output.info("set MODELKIN_DEBUG=1 to see the traceback, and please report it")
        sys.exit(1)


if __name__ == "__main__":
    main()
