"""``modelkin lineage``: where a model came from, from its weights, held against what was declared."""

from __future__ import annotations

from typing import Annotated

import typer

from modelkin.cli import output
from modelkin.cli.options import Filter, Json, Ref, open_registry

app = typer.Typer(
    help="Where did this model come from? Parents, ancestors and the whole tree, detected from the weights.",
    no_args_is_help=True,
)


def _pct(p: float | None) -> str:
    return "" if p is None else f"{p:.2f}"


@app.command("parent")
def parent(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Argument(metavar="REF|PATH", help="A registered REF, or a weights file/folder (not stored).")
    ],
    k: Annotated[int, typer.Option("--k", min=1, help="How many candidates to list.")] = 3,
    json_out: Json = False,
) -> None:
    """The registered model this one was derived from (every registered model is a candidate)."""
    report = open_registry(ctx).lineage.parent(target, k=k)
    if json_out:
        output.emit_json(report.to_json())
        return
    if report.parents:
        output.stdout.print(
            f"{report.query} <- {' + '.join(report.parents)}  ({report.relation}, confidence {_pct(report.confidence)})"
        )
    elif report.relation == "related":
        output.stdout.print(f"{report.query}: related to {report.candidates[0].ref}, but no parent "
                            f"(confidence {_pct(report.confidence)})")  # fmt: skip
    else:
        output.stdout.print(f"{report.query}: no registered parent (confidence {_pct(report.confidence)})")
    if report.duplicates:
        output.stdout.print(f"identical weights: {', '.join(report.duplicates)}")
    if report.candidates:
        output.table(["candidate", "score", "confidence"],
                     [(c.ref, f"{c.score:.2f}", _pct(c.confidence)) for c in report.candidates])  # fmt: skip


@app.command("ancestors")
def ancestors(ctx: typer.Context, ref: Ref, json_out: Json = False) -> None:
    """Every detected ancestor of a version, with its generation (1 = parent)."""
    report = open_registry(ctx).lineage.ancestors(ref)
    if json_out:
        output.emit_json(report.to_json())
        return
    if not report.ancestors:
        output.stdout.print(f"{report.ref}: no registered ancestors")
        return
    output.table(["ancestor", "generation"], list(report.ancestors), title=f"ancestors of {report.ref}")


@app.command("tree")
def tree(
    ctx: typer.Context,
    filter: Filter = None,
    json_out: Json = False,
    dot: Annotated[bool, typer.Option("--dot", help="Print Graphviz DOT instead of a table.")] = False,
) -> None:
    """Recover the ancestry forest of the registered models and store it as detected lineage."""
    if json_out and dot:
        raise typer.BadParameter("choose one of --json and --dot.", param_hint="--json/--dot")
    report = open_registry(ctx).lineage.tree(filter)
    if json_out:
        output.emit_json(report.to_json())
    elif dot:
        output.stdout.out(report.to_dot(), end="")
    else:
        rows = [(e.child, e.parent, e.relation or "", _pct(e.confidence)) for e in report.edges]
        if rows:
            output.table(["child", "parent", "relation", "confidence"], rows)
        output.stdout.print(f"{len(report.edges)} edges; roots: {', '.join(report.roots) or 'none'}")


@app.command("audit")
def audit(
    ctx: typer.Context,
    ref: Annotated[str | None, typer.Argument(help="Audit only this version.", show_default=False)] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 on any mismatch or undeclared parent.")] = False,
    json_out: Json = False,
) -> None:
    """Hold declared parents against the weights: confirmed, mismatch, undeclared, no-parent, duplicate..."""
    from modelkin.provenance.lineage.audit import FLAGGED

    report = open_registry(ctx).lineage.audit(ref)
    if json_out:
        output.emit_json(report.to_json())
    else:
        rows = [(f.ref, ", ".join(f.declared), ", ".join(f.detected), f.status, _pct(f.confidence))
                for f in report.findings]  # fmt: skip
        output.table(["ref", "declared", "detected", "status", "confidence"], rows)
    if strict and any(f.status in FLAGGED for f in report.findings):
        raise typer.Exit(1)
