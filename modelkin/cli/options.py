"""Options shared by many commands, as ``Annotated`` aliases, and the registry each command opens."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from modelkin.registry.reader import Reader
    from modelkin.registry.registry import Registry

Json = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of a table.")]
Ref = Annotated[
    str, typer.Argument(help="NAME, NAME:VERSION, NAME@ALIAS or sha256:<digest prefix>.", show_default=False)
]
Filter = Annotated[
    str | None,
    typer.Option("--filter", "-f", help="e.g. \"name LIKE 'bert%' AND tags.task = 'digits' AND parameters > 1e6\"."),
]
Tags = Annotated[list[str] | None, typer.Option("--tag", "-t", help="KEY=VALUE; repeat for several.")]


def open_registry(ctx: typer.Context) -> Registry:
    """The registry selected by --home / MODELKIN_HOME (and MODELKIN_DATABASE_URL, MODELKIN_STORE)."""
    from modelkin.registry.registry import Registry

    home: Path | None = ctx.find_root().params.get("home")
    reg = Registry.open(home)
    ctx.call_on_close(reg.close)
    return reg


def open_reader(ctx: typer.Context) -> Reader:
    """The same registry, opened for reading only: what ``list``, ``show`` and ``log`` need, without the ORM."""
    from modelkin.registry.reader import open_reader as open_for_reading

    home: Path | None = ctx.find_root().params.get("home")
    reader = open_for_reading(home)
    ctx.call_on_close(reader.close)
    return reader


def parse_pairs(pairs: list[str] | None, what: str = "--tag") -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE.", param_hint=what)
        out[key.strip()] = value
    return out


PassphraseFile = Annotated[
    Path | None, typer.Option("--passphrase-file", help="File whose first line is the private key's passphrase.")
]
Target = Annotated[str, typer.Argument(help="A REF, or a weights file or model folder on disk.", show_default=False)]
