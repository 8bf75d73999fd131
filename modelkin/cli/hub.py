"""``modelkin import-hf``: bring a Hugging Face model in, with its card's declared lineage."""

from __future__ import annotations

from typing import Annotated

import typer

from modelkin.cli import output
from modelkin.cli.models import print_registration
from modelkin.cli.options import Json, Tags, open_registry, parse_pairs


def import_hf(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Argument(help="A local HF-format folder, or a repo id (org/name) from the HF cache or the Hub.")
    ],
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit of a repo id.")] = None,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Model name (default: the repo id or folder name).")
    ] = None,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Accept pickle weights, loaded with torch.load(weights_only=True).")
    ] = False,
    tag: Tags = None,
    json_out: Json = False,
) -> None:
    """Import a Hugging Face model: base_model in its card becomes declared lineage.

    A repo id is looked up in the local HF cache first; the Hub is contacted only if it is not there and
    HF_HUB_OFFLINE is not set.
    """
    reg = open_registry(ctx)
    with output.byte_progress(f"importing {source}") as progress:
        result = reg.import_hf(
            source, revision=revision, name=name, allow_pickle=allow_pickle, tags=parse_pairs(tag), progress=progress
        )
    print_registration(result, json_out)
