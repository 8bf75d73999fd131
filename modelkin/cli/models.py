"""Commands about model versions: register, list, show, tag, yank, diff, log, export, verify."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelkin.cli import output
from modelkin.cli.options import Filter, Json, PassphraseFile, Ref, Tags, open_reader, open_registry, parse_pairs
from modelkin.errors import InvalidModelFile
from modelkin.registry.records import RELATIONS, ModelVersion
from modelkin.registry.untrusted import load_json, read_bounded

if TYPE_CHECKING:
    from modelkin.registry.registry import Registration


def register(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A .safetensors file or a Hugging Face-format directory.")],
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Model name (default: the file or folder name).")
    ] = None,
    parent: Annotated[
        list[str] | None,
        typer.Option("--parent", "-p", help="Declared parent: a REF or an HF repo id; repeat for merges."),
    ] = None,
    relation: Annotated[
        str | None, typer.Option(help=f"How it derives from its parents: {', '.join(RELATIONS)}.")
    ] = None,
    tag: Tags = None,
    arch: Annotated[Path | None, typer.Option(help='JSON file with the architecture spec {"family": ...}.')] = None,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Accept .bin/.pt/.ckpt, loaded with torch.load(weights_only=True).")
    ] = False,
    json_out: Json = False,
) -> None:
    """Register a weights file or model directory as a new immutable version."""
    reg = open_registry(ctx)
    spec = _read_arch(arch) if arch is not None else None
    with output.byte_progress(f"registering {path.name}") as progress:
        result = reg.register(
            path, name=name, parents=parent or [], relation=relation, tags=parse_pairs(tag),
            architecture=spec, allow_pickle=allow_pickle, progress=progress,
        )  # fmt: skip
    print_registration(result, json_out)


def print_registration(result: Registration, json_out: bool) -> None:
    v = result.version
    if json_out:
        output.emit_json({**v.to_json(), "created": result.created, "skipped": list(result.skipped),
                          "warnings": list(result.warnings)})  # fmt: skip
        return
    for w in result.warnings:
        output.info(f"warning: {w}")
    if result.skipped:
        output.info(f"skipped (not stored): {', '.join(result.skipped)}")
    verb = "registered" if result.created else "already registered as"
    output.stdout.print(output.styled(
        f"{verb} ", (v.ref, "bold"), f"  {v.digest[:19]}  {output.human_count(v.parameters)} parameters, "
        f"{v.tensors} tensors, {output.human_bytes(v.bytes)}"
    ))  # fmt: skip


MAX_ARCH_BYTES = 64_000_000  # an embedded HF config is a few KB


def _read_arch(path: Path) -> dict[str, Any]:
    spec = load_json(read_bounded(path, MAX_ARCH_BYTES, str(path)), str(path))
    if not isinstance(spec, dict):
        raise InvalidModelFile(f'{path} must hold a JSON object such as {{"family": "mlp", ...}}.')
    return spec


def list_versions(
    ctx: typer.Context,
    filter: Filter = None,
    sort: Annotated[
        str, typer.Option(help="name, version, created, parameters, bytes or tensors; -KEY descends.")
    ] = "name",
    limit: Annotated[int | None, typer.Option(min=0, help="Show at most this many.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include yanked versions.")] = False,
    latest: Annotated[bool, typer.Option("--latest", help="Only the newest version of each model.")] = False,
    json_out: Json = False,
) -> None:
    """List registered versions, filtered and sorted."""
    reader = open_reader(ctx)
    if json_out:
        output.emit_json_items(reader.iter_json(filter, sort=sort, limit=limit, include_yanked=all_, latest=latest))
        return
    versions = reader.iter_versions(filter, sort=sort, limit=limit, include_yanked=all_, latest=latest)
    rows = (
        (v.ref + (" (yanked)" if v.yanked else ""), v.parameters, v.bytes,
         v.created_at.isoformat(timespec="seconds"), v.digest, v.family,
         ", ".join(v.declared_parents), ", ".join(f"{k}={val}" for k, val in v.tags.items()))
        for v in versions
    )  # fmt: skip
    output.table(LIST_COLUMNS, rows)


# on a narrow terminal the columns with the highest priority numbers are dropped first
LIST_COLUMNS = (
    output.Column("ref", 0, whole=True),
    output.Column("params", 0, output.human_count),
    output.Column("size", 0, output.human_bytes),
    output.Column("created", 0, lambda iso: iso[:16].replace("T", " ")),
    output.Column("digest", 2, lambda d: d[7:19]),
    output.Column("family", 3),
    output.Column("parents", 4),
    output.Column("tags", 5),
)


def show(ctx: typer.Context, ref: Ref, json_out: Json = False) -> None:
    """Show one version: identity, lineage as declared and as detected, architecture, tags, aliases and files."""
    reader = open_reader(ctx)
    v = reader.get(ref)
    detected = reader.detected_parents(v.ref)
    if json_out:
        output.emit_json({**v.to_json(), "detected_parents": detected})
        return
    print_version(v, detected)


def print_version(v: ModelVersion, detected: Sequence[Mapping[str, Any]] = ()) -> None:
    output.fields(
        [
            ("ref", v.ref + ("  (yanked)" if v.yanked else "")),
            ("digest", v.digest),
            ("parameters", f"{v.parameters:,}"),
            ("tensors", v.tensors),
            ("size", output.human_bytes(v.bytes)),
            ("parents", ", ".join(v.declared_parents) or "none declared"),
            ("relation", v.relation or ""),
            (
                "detected parents",
                ", ".join(f"{d['ref']} ({d['relation']}, {d['confidence']})" for d in detected) or "none detected",
            ),
            ("architecture", _describe_arch(v.architecture)),
            ("tags", ", ".join(f"{k}={val}" for k, val in v.tags.items())),
            ("aliases", ", ".join(f"@{a}" for a in v.aliases)),
            ("license", v.card.get("license", "")),
            ("source", v.source or ""),
            ("created", v.created_at.isoformat(timespec="seconds")),
        ]
    )
    if output.is_terminal():
        output.table(FILE_COLUMNS, [(f.path, f.size, f.sha256) for f in v.files])
    else:  # piped: every line is KEY<TAB>VALUE..., files included, so awk can pick any of them
        output.fields([("file", f.path, f.size, f.sha256) for f in v.files])


FILE_COLUMNS = (output.Column("file", 0, whole=True), output.Column("size", 0, output.human_bytes),
                output.Column("sha256", 1))  # fmt: skip


def _describe_arch(spec: dict[str, Any] | None) -> str:
    """The family and its small parameters; an embedded HF config is summarised by its model_type."""
    if spec is None:
        return "unknown"
    params = {k: v for k, v in spec.items() if k not in ("family", "config")}
    if isinstance(spec.get("config"), dict):
        params["model_type"] = spec["config"].get("model_type")
    return f"{spec.get('family')} " + json.dumps(params, sort_keys=True)


def tag(
    ctx: typer.Context,
    ref: Ref,
    pairs: Annotated[list[str] | None, typer.Argument(help="KEY=VALUE pairs to set.", show_default=False)] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", "-r", help="Tag key to remove; repeatable.")] = None,
    json_out: Json = False,
) -> None:
    """Set or remove tags on a version (tags are labels, not part of its identity)."""
    if not pairs and not remove:
        raise typer.BadParameter("give KEY=VALUE pairs to set or --remove KEY.", param_hint="PAIRS")
    v = open_registry(ctx).tag(ref, parse_pairs(pairs, "PAIRS"), remove or [])
    if json_out:
        output.emit_json(v.to_json())
    else:
        output.stdout.print(f"{v.ref}: " + (", ".join(f"{k}={val}" for k, val in v.tags.items()) or "no tags"))


def yank(
    ctx: typer.Context,
    ref: Ref,
    reason: Annotated[str | None, typer.Option(help="Why it was yanked (kept in the log).")] = None,
    undo: Annotated[bool, typer.Option("--undo", help="Make the version visible again.")] = False,
    json_out: Json = False,
) -> None:
    """Hide a version from NAME resolution and listings; it stays for lineage and verification."""
    v = open_registry(ctx).yank(ref, reason, undo=undo)
    if json_out:
        output.emit_json(v.to_json())
    else:
        output.stdout.print(f"{'restored' if undo else 'yanked'} {v.ref}")


def diff(
    ctx: typer.Context,
    a: Ref,
    b: Ref,
    all_: Annotated[bool, typer.Option("--all", help="Also list tensors that are the same.")] = False,
    json_out: Json = False,
) -> None:
    """Compare two versions tensor by tensor: same, changed (relative distance), only in one."""
    d = open_registry(ctx).diff(a, b)
    if json_out:
        output.emit_json(d.to_json())
        return
    rows = [
        (t.name, t.status, "" if t.relative_distance is None else f"{t.relative_distance:.3g}")
        for t in d.tensors
        if all_ or t.status != "same"
    ]
    if rows:
        output.table(["tensor", "status", "‖b−a‖/‖a‖"], rows, title=f"{d.a} → {d.b}")
    output.stdout.print(", ".join(f"{n} {status}" for status, n in sorted(d.counts().items())) or "no tensors")


def log(
    ctx: typer.Context,
    ref: Annotated[str | None, typer.Argument(help="Only events of this version.", show_default=False)] = None,
    limit: Annotated[int | None, typer.Option(min=0, help="Only the last N events.")] = None,
    json_out: Json = False,
) -> None:
    """Show the append-only event log (what changed in the registry, and when)."""
    events = open_reader(ctx).log(ref, limit)
    if json_out:
        output.emit_json([e.to_json() for e in events])
        return
    rows = ((e.at.strftime("%Y-%m-%d %H:%M:%S"), e.kind, e.ref, _summary(e.detail)) for e in events)
    output.table(LOG_COLUMNS, rows)


LOG_COLUMNS = (output.Column("at (UTC)", 0), output.Column("event", 0), output.Column("ref", 0, whole=True),
               output.Column("detail", 1))  # fmt: skip


def _summary(detail: dict[str, Any]) -> str:
    """``key=value`` pairs of what is set (a terminal elides the column, a pipe gets it whole)."""
    parts = []
    for k, v in detail.items():
        if v in (None, [], {}):
            continue
        parts.append(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}")
    return " ".join(parts)


def export(
    ctx: typer.Context,
    ref: Ref,
    directory: Annotated[Path, typer.Argument(help="Target folder (created; must be empty unless --force).")],
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty folder.")] = False,
    sign: Annotated[
        Path | None, typer.Option("--sign", help="Also write DIR/model.sig (OpenSSF model signing) with this key.")
    ] = None,
    passphrase_file: PassphraseFile = None,
    json_out: Json = False,
) -> None:
    """Write a version as a Hugging Face-format folder with a model card that carries its lineage."""
    reg = open_registry(ctx)
    v = reg.get(ref)
    if sign is not None:  # a bad key or passphrase fails before anything is written
        from modelkin.provenance.keyfiles import load_private_key, read_passphrase

        passphrase = read_passphrase(passphrase_file)
        load_private_key(sign, passphrase)
    out = reg.export(v.ref, directory, force=force)
    signature = None
    if sign is not None:
        from modelkin.provenance.ownership import sign_folder

        signature, _ = sign_folder(out, sign, None, passphrase)
    if json_out:
        output.emit_json({"ref": v.ref, "digest": v.digest, "directory": str(out.absolute()),
                          "files": [f.path for f in v.files],
                          **({"signature": str(signature)} if signature else {})})  # fmt: skip
    else:
        output.stdout.print(f"exported {v.ref} to {out}" + (f", signed into {signature}" if signature else ""))


def verify(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="A REF; with --signature also a folder on disk.", show_default=False)],
    against: Annotated[
        Path | None, typer.Option(help="Compare a local copy (folder or weights file) instead of the stored blobs.")
    ] = None,
    signature: Annotated[
        Path | None, typer.Option("--signature", help="Check an OpenSSF model-signing bundle (needs --public-key).")
    ] = None,
    public_key: Annotated[Path | None, typer.Option("--public-key", help="PEM public key for --signature.")] = None,
    json_out: Json = False,
) -> None:
    """Re-hash every blob of a version; exit 1 if anything is missing, extra or changed.

    With --signature SIG --public-key PUB, check REF's exported layout (or the folder DIR) against a model-signing
    bundle instead, such as one that `modelkin sign` or `model_signing sign key` wrote.
    """
    if signature is not None or public_key is not None:
        if signature is None or public_key is None:
            raise typer.BadParameter("--signature and --public-key go together.", param_hint="--signature")
        if against is not None:
            raise typer.BadParameter("--against cannot be combined with --signature.", param_hint="--against")
        _verify_signature(ctx, ref, signature, public_key, json_out)
        return
    report = open_registry(ctx).verify(ref, against)
    _print_verify(report.ref, report.checked, [(p.path, p.kind) for p in report.problems], None, json_out, "blobs")


def _verify_signature(ctx: typer.Context, target: str, signature: Path, public_key: Path, json_out: bool) -> None:
    from modelkin.provenance.signing import verify_folder

    if not signature.is_file():
        raise FileNotFoundError(f"{signature} does not exist")
    folder = Path(target)
    if folder.is_dir():
        verdict, what = verify_folder(folder, signature, public_key), str(folder)
    else:
        reg = open_registry(ctx)
        what = reg.get(target).ref
        verdict = reg.ownership.verify_signature(what, signature, public_key)
    _print_verify(what, verdict.signed_files, list(verdict.problems), verdict.error, json_out, "signed files")


def _print_verify(
    what: str, checked: int, problems: list[tuple[str, str]], error: str | None, json_out: bool, unit: str
) -> None:
    ok = not problems and error is None
    if json_out:
        doc: dict[str, Any] = {"ok": ok, "ref": what, "checked": checked,
                               "problems": [{"path": p, "kind": k} for p, k in problems]}  # fmt: skip
        output.emit_json({**doc, "error": error} if error is not None else doc)
    elif ok:
        output.stdout.print(f"{what}: OK ({checked} {unit} checked)")
    else:
        if error is not None:
            output.info(error)
        if problems:
            output.table(["path", "problem"], problems, title=f"{what}: FAILED")
        else:
            output.stdout.print(f"{what}: FAILED")
    if not ok:
        raise typer.Exit(1)
