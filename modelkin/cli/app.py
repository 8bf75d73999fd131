"""The ``modelkin`` command: one typer app; errors become one sentence on stderr and an exit code.

Exit codes: 0 ok; 1 failed, not found or verification failed; 2 usage error (including a malformed REF,
name or filter). ``MODELKIN_DEBUG=1`` shows the
traceback instead.
"""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from modelkin import __version__
from modelkin.cli import output
from modelkin.config import debug_enabled
from modelkin.errors import ModelkinError

try:
    from modelkin.cli.coercion import install as read_values_directly
except ImportError:  # a typer without the internals modelkin.cli.coercion uses: typer coerces every value itself
    read_values_directly = None  # type: ignore[assignment]

# every command in the order --help lists them (typer's: commands, then groups): name -> "module:attribute" under
# modelkin.cli, a function for a command, a typer.Typer for a group; a module is imported only when needed
COMMANDS: dict[str, str] = {
    "init": "admin:init",
    "register": "models:register",
    "import-hf": "hub:import_hf",
    "register-zoo": "zoo:register_zoo",
    "list": "models:list_versions",
    "show": "models:show",
    "tag": "models:tag",
    "diff": "models:diff",
    "log": "models:log",
    "yank": "models:yank",
    "export": "models:export",
    "verify": "models:verify",
    "gc": "admin:gc",
    "sign": "signing:sign",
    "search": "retrieval:search",
    "alias": "aliases:app",
    "keys": "keys:app",
    "watermark": "watermark:app",
    "claim": "claims:app",
    "db": "admin:db_app",
    "probes": "retrieval:probes_app",
    "index": "retrieval:index_app",
    "retrieval": "retrieval:retrieval_app",
    "lineage": "lineage:app",
    "store": "store:app",
}


class _LazyCommands(MutableMapping[str, Any]):
    """The root group's commands: every name is known up front, a command is built when first looked up.

    Building a click command from typer needs its module (and what that imports) and a pass over its
    parameters; a command run pays for itself alone, ``--help`` for all of them.
    """

    def __init__(self, specs: Mapping[str, str], built: Mapping[str, Any]) -> None:
        self._specs = {**dict(specs), **{name: "" for name in built}}
        self._built: dict[str, Any] = dict(built)

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            self._built[name] = _build(name, self._specs[name])
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._specs.setdefault(name, "")
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._specs[name]
        self._built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


def _build(name: str, spec: str) -> Any:
    """The click command for ``COMMANDS[name]``, built by typer exactly as ``app.command``/``add_typer`` would."""
    module, attribute = spec.split(":")
    target = getattr(importlib.import_module(f"modelkin.cli.{module}"), attribute)
    holder = typer.Typer()
    holder.callback()(lambda: None)  # a group, so that get_command returns the command inside it by name
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name)
    else:
        holder.command(name)(target)
    command = typer.main.get_command(holder).commands[name]  # type: ignore[attr-defined]
    if read_values_directly is not None:
        read_values_directly(command)
    return command


class _Group(TyperGroup):
    """Turns expected failures (ModelkinError, OS errors such as a missing file) into exit 1 and one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # commands registered on ``app`` the usual way (app.command, add_typer) are kept, after COMMANDS
        self.commands = _LazyCommands(COMMANDS, self.commands)
        if read_values_directly is not None:
            read_values_directly(self)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if output.stdout_gone(exc):  # the reader stopped reading: stop quietly, as `git log | head` does
                raise typer.Exit(1) from None
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
