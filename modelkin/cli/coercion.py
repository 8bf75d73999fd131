"""Option values read without pydantic where the reading is certain: start-up of every command.

typer 0.29 checks each parameter's value through a pydantic ``TypeAdapter`` built when the value is first
processed, even a plain string. Importing pydantic and building the adapters costs a read command about 0.05 s
of its 0.3 s. For values whose reading cannot differ (a string for a ``str`` parameter, ASCII digits within the
bounds of an ``int`` one, a path for a plain ``Path`` one, then checked by typer's own path checks, a bool or
nothing for a flag such as ``--help``) this hands typer the value directly. Every other value, and every value
that would fail, goes to typer's own coercion, built on first use, so messages and edge cases stay typer's
(``tests/test_coercion.py`` compares the two). This uses typer's internal per-parameter slot
``_runtime_param``; where typer's layout differs, nothing is done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer._coercion import RuntimeParam, build_runtime_param
from typer._param_types import coerce_cli_path

_DIGITS = re.compile(r"[0-9]{1,18}")  # what int() and pydantic read alike, far below any digit limit
DIRECT = (str, int, Path, bool)


@dataclass(frozen=True)
class DirectParam(RuntimeParam):
    """typer's coercion of one ``str``, ``int``, ``Path`` or ``bool`` parameter, the certain cases read directly.

    (``RuntimeParam.coerce`` itself answers a missing value, before this is asked.)
    """

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        if type(value) is bool and self.annotation is bool:
            return value
        if type(value) is str:
            kind, info = self.annotation, self.parameter_info
            if kind is str:
                return value
            if kind is int and _DIGITS.fullmatch(value):
                number = int(value)
                if (info.min is None or number >= info.min) and (info.max is None or number <= info.max):
                    return number
            if kind is Path and value and "\x00" not in value:
                return coerce_cli_path(Path(value), info, path_type=Path, param=param, ctx=ctx)
        return build_runtime_param(param.type_descriptor)._coerce_value(value, param=param, ctx=ctx)


def install(command: Any) -> None:
    """Give each plain parameter of a click ``command``, its ``--help`` option and those of its subcommands (for
    a group typer built) the direct reading."""
    for param in getattr(command, "params", ()):
        _direct(param)
    help_option = getattr(command, "get_help_option", None)
    if help_option is not None:  # made when a command is parsed, for its context's option names

        def get_help_option(ctx: Any) -> Any:
            return _direct(help_option(ctx))

        command.get_help_option = get_help_option
    commands = getattr(command, "commands", None)
    if type(commands) is dict:  # a group typer built; the root group's table is lazy and installs as it builds
        for sub in commands.values():
            install(sub)


def _direct(param: Any) -> Any:
    if param is not None and _plain(param):
        descriptor = param.type_descriptor
        param._runtime_param = DirectParam(parameter_info=descriptor.parameter_info, annotation=descriptor.annotation)
    return param


def _plain(param: Any) -> bool:
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or getattr(param, "_runtime_param", False) is not None:
        return False  # not typer's parameter layout, or its coercion already built
    info = descriptor.parameter_info
    return (
        descriptor.annotation in DIRECT
        and descriptor.file_annotation is None
        and not param.multiple
        and param.nargs == 1
        and info.parser is None
        and not info.clamp
        and (descriptor.annotation is not Path or info.path_type is None)
    )
