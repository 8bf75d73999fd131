"""``modelkin register-zoo``: a whole reference zoo in one command."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from modelkin.cli import output
from modelkin.cli.options import Json, open_registry


class Order(StrEnum):
    shuffled = "shuffled"
    topological = "topological"


def register_zoo(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="A zoo built by `python -m modelkin.zoo build`.")],
    declare_parents: Annotated[
        bool, typer.Option("--declare-parents", help="Declare each model's parents from ground_truth.json.")
    ] = False,
    order: Annotated[
        Order, typer.Option(help="shuffled (as real registries receive models) or topological (parents first).")
    ] = Order.shuffled,
    seed: Annotated[int, typer.Option(help="Seed of the shuffled order.")] = 0,
    json_out: Json = False,
) -> None:
    """Register every model of a reference zoo; lineage stays blind unless --declare-parents."""
    from modelkin.zoo.registration import read_ground_truth, register_zoo

    reg = open_registry(ctx)
    total = len(read_ground_truth(directory)["models"])
    with output.count_progress("registering zoo", total) as advance:
        summary = register_zoo(reg, directory, declare_parents=declare_parents, order=order.value, seed=seed,
                               on_model=advance)  # fmt: skip
    if json_out:
        output.emit_json(summary)
        return
    output.stdout.print(
        f"registered {summary['registered']} models from {directory} ({summary['created']} new, "
        f"{summary['order']} order, {summary['declared_edges']} declared parent edges)"
    )
