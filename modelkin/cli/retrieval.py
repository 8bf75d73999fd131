"""Retrieval commands: ``probes add|list``, ``index rebuild|status``, ``search``, ``retrieval train|log-score``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from modelkin.cli import output
from modelkin.cli.options import Filter, Json, Ref, open_registry

probes_app = typer.Typer(help="Probe pools: unlabelled inputs each input space's models are captured on.",
                         no_args_is_help=True)  # fmt: skip
index_app = typer.Typer(help="The retrieval index: what is captured and indexed, and rebuilding it.",
                        no_args_is_help=True)  # fmt: skip
retrieval_app = typer.Typer(help="Training the retriever from ground-truth transfer scores.", no_args_is_help=True)

Data = Annotated[Path, typer.Option("--data", help="Labelled samples: .npz with arrays x and y, or .csv (label last).")]


def _failures(summary: dict[str, Any]) -> None:
    for item in summary.get("failed", []):
        output.info(f"warning: {item['ref']} was not indexed: {item['reason']}")


@probes_app.command("add")
def probes_add(
    ctx: typer.Context,
    space: Annotated[str, typer.Argument(help="Input space name, as architectures declare it (e.g. digits-64).")],
    file: Annotated[Path, typer.Argument(help=".npz with an array x (samples, features), or a .npy array.")],
    json_out: Json = False,
) -> None:
    """Register a new version of an input space's probe pool and capture that space's models on it.

    Adding the newest pool again resumes an interrupted capture."""
    with output.count_progress(f"capturing on {space}") as advance:
        summary = open_registry(ctx).retrieval.add_probes(space, file, on_model=advance)
    _failures(summary)
    if json_out:
        output.emit_json(summary)
        return
    verb = "added" if summary["created"] else "already the newest pool:"
    output.stdout.print(f"{verb} {summary['space']} pool v{summary['version']} ({summary['samples']} samples, "
                        f"{summary['features']} features); captured {summary['captured']} models, "
                        f"{len(summary['skipped'])} skipped, {len(summary['failed'])} failed")  # fmt: skip


@probes_app.command("list")
def probes_list(ctx: typer.Context, json_out: Json = False) -> None:
    """List every probe pool version."""
    pools = open_registry(ctx).retrieval.probes()
    if json_out:
        output.emit_json({"pools": pools})
        return
    rows = [(p["space"], p["version"], p["samples"], p["features"], p["digest"][:19]) for p in pools]
    output.table(["SPACE", "VERSION", "SAMPLES", "FEATURES", "DIGEST"], rows)


@index_app.command("rebuild")
def index_rebuild(
    ctx: typer.Context,
    capture: Annotated[
        bool, typer.Option("--capture", help="First capture versions that are pending, failed, skipped or stale.")
    ] = False,
    json_out: Json = False,
) -> None:
    """Recompute every model vector from stored knowledge (no model runs) and rewrite the index."""
    with output.count_progress("capturing") as advance:
        summary = open_registry(ctx).retrieval.rebuild(capture=capture, on_model=advance)
    _failures(summary)
    if json_out:
        output.emit_json(summary)
        return
    extra = f"; captured {summary['captured']}, failed {len(summary['failed'])}" if capture else ""
    output.stdout.print(f"indexed {summary['indexed']} models{extra}")


@index_app.command("status")
def index_status(ctx: typer.Context, json_out: Json = False) -> None:
    """What is indexed, what is not and why, and which scorer and encoder version serve each input space."""
    status = open_registry(ctx).retrieval.status()
    if json_out:
        output.emit_json(status)
        return
    if status["spaces"]:
        output.table(["SPACE", "POOL", "SCORER", "ENCODER", "INDEXED", "INDEX"],
                     [(s["space"], f"v{s['pool']}", s["scorer"], s["encoder"] or "-", s["indexed"], s["index"])
                      for s in status["spaces"]])  # fmt: skip
    else:
        output.info("no probe pool yet: `modelkin probes add SPACE FILE`")
    c = status["counts"]
    output.stdout.print(f"{c['done']} indexed, {c['pending']} pending, {c['skipped']} skipped, {c['failed']} failed")
    rows = [(v["ref"], v["state"], v["detail"]) for v in status["versions"] if v["state"] != "done"]
    if rows:
        output.table(["REF", "STATE", "WHY"], rows)


def search(
    ctx: typer.Context,
    data: Data,
    k: Annotated[int, typer.Option("--k", min=1, help="How many models to return.")] = 5,
    filter: Filter = None,
    rerank: Annotated[
        int, typer.Option("--rerank", min=0, help="Run N leading models on the samples and rerank them (LogME, kNN).")
    ] = 0,
    json_out: Json = False,
) -> None:
    """Rank registered models for the task the labelled samples describe (runs none unless --rerank)."""
    from modelkin.retrieval.facade import read_query_file

    x, y = read_query_file(data)
    result = open_registry(ctx).retrieval.search(x, y, k=k, filter=filter, rerank=rerank)
    for note in result.warnings:
        output.info(f"warning: {note}")
    if json_out:
        output.emit_json(result.to_json())
        return
    output.table(["RANK", "REF", "SCORE", "SCORED BY"],
                 [(r["rank"], r["ref"], f"{r['score']:.4f}", r["scored_by"]) for r in result.results])  # fmt: skip
    output.info(f"{result.scorer}, {result.forward_passes} forward passes, {result.elapsed_ms:.0f} ms")


@retrieval_app.command("train")
def train(
    ctx: typer.Context,
    zoo: Annotated[
        list[Path] | None, typer.Option("--zoo", help="A registered reference zoo (its meta-train tasks); repeat.")
    ] = None,
    scores: Annotated[
        Path | None, typer.Option("--scores", help='JSONL lines {"ref": REF, "data": FILE, "score": S}.')
    ] = None,
    json_out: Json = False,
) -> None:
    """Train the alignment encoders on ground-truth transfer scores (and every logged score), then re-index."""
    summary = open_registry(ctx).retrieval.train(zoo or [], scores)
    if json_out:
        output.emit_json(summary)
        return
    for e in summary["encoders"]:
        output.stdout.print(f"encoder {e['encoder']} for {e['space']}: {e['tasks']} tasks, {e['models']} models, "
                            f"loss {e['first_loss']} -> {e['final_loss']}; indexed {e['indexed']} models")  # fmt: skip


@retrieval_app.command("log-score")
def log_score(
    ctx: typer.Context,
    ref: Ref,
    data: Data,
    score: Annotated[float, typer.Option("--score", help="The transfer score you measured (higher is better).")],
    json_out: Json = False,
) -> None:
    """Record a transfer score you measured for a model on a task; `retrieval train` learns from it."""
    from modelkin.retrieval.facade import read_query_file

    x, y = read_query_file(data)
    result = open_registry(ctx).retrieval.log_score(ref, x, y, score)
    if json_out:
        output.emit_json(result)
        return
    output.stdout.print(f"logged {result['score']:g} for {result['ref']} on {result['data'][:19]}")
