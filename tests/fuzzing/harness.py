"""Runs fuzz cases through the CLI's real entry point (``modelkin.cli.app:main``), in this process.

In-process runs keep 10,000 cases to minutes on one core. Each case is timed (wall clock of ``main()`` alone,
start-up excluded, and the process's CPU time, which a busy machine or a slow fsync does not inflate), its
resident memory is sampled every few milliseconds by a thread (the peak above what the process held before
the case), its output is checked for "internal error" and tracebacks, and after every case
the marker folder that a malicious pickle's ``__reduce__`` would create is looked for. A case still running
after ``GUARD_SECONDS`` is interrupted and counted as a hang.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fuzzing.cases import Case, make_case

HANG_SECONDS = 2.0  # the bound for one command on hostile input
GUARD_SECONDS = 30.0  # a case still running then is stopped and counted as a hang
_PAGE = os.sysconf("SC_PAGE_SIZE")


class _Interrupted(BaseException):
    """Raised by the guard timer; a BaseException so that modelkin's own handlers cannot swallow it."""


@dataclass
class Outcome:
    case: Case
    exit_code: int
    seconds: float
    cpu_seconds: float  # this process's CPU time during the case: a slow disk or a busy machine adds none
    peak_bytes: int  # resident memory above the level before the case
    internal_error: bool
    code_executed: bool
    stderr: str


@dataclass
class Summary:
    cases: int = 0
    internal_errors: list[Outcome] = field(default_factory=list)
    hangs: list[Outcome] = field(default_factory=list)
    cpu_hangs: list[Outcome] = field(default_factory=list)
    executed: list[Outcome] = field(default_factory=list)
    peak_bytes: int = 0
    slowest: float = 0.0
    exit_codes: dict[int, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, o: Outcome) -> None:
        self.cases += 1
        self.exit_codes[o.exit_code] = self.exit_codes.get(o.exit_code, 0) + 1
        self.by_kind[o.case.kind] = self.by_kind.get(o.case.kind, 0) + 1
        self.peak_bytes = max(self.peak_bytes, o.peak_bytes)
        self.slowest = max(self.slowest, o.seconds)
        if o.internal_error:
            self.internal_errors.append(o)
        if o.seconds > HANG_SECONDS:
            self.hangs.append(o)
        if o.cpu_seconds > HANG_SECONDS:
            self.cpu_hangs.append(o)
        if o.code_executed:
            self.executed.append(o)


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


@contextlib.contextmanager
def _sampling() -> Iterator[list[int]]:
    """Yields a one-item list that ends up holding the peak resident memory seen while the block ran."""
    peak = [_rss()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.002):
            peak[0] = max(peak[0], _rss())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _rss())


TERMINATED = 128 + signal.SIGTERM  # the exit code the CLI unwinds with on SIGTERM (modelkin.cli.app)


def _on_guard(signum: int, frame: object) -> None:
    raise _Interrupted()


def run_main(
    args: tuple[str, ...], guard: float = GUARD_SECONDS
) -> tuple[int, str, str, float, float, int, bool]:
    """(exit code, stdout, stderr, seconds, CPU seconds, peak bytes above the start, interrupted) of one call;
    ``guard`` 0 runs it unguarded."""
    from modelkin.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    code, interrupted = 0, False
    before = _rss()
    terminate = signal.getsignal(signal.SIGTERM)  # main() installs its own; the harness's is put back after
    previous = signal.signal(signal.SIGALRM, _on_guard)
    signal.setitimer(signal.ITIMER_REAL, guard)
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        with _sampling() as peak, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            sys.argv = ["modelkin", *args]
            try:
                main()
            except SystemExit as exc:
                if exc.code == TERMINATED:
                    raise  # a SIGTERM the CLI unwound from was meant for the harness: stop the run, not the case
                code = exc.code if isinstance(exc.code, int) else 1
    except _Interrupted:
        code, interrupted = -1, True
    finally:
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        signal.signal(signal.SIGTERM, terminate)
    return code, out.getvalue(), err.getvalue(), seconds, cpu, max(0, peak[0] - before), interrupted


def run_case(case: Case, marker: Path) -> Outcome:
    code, _stdout, stderr, seconds, cpu, peak, interrupted = run_main(case.args)
    internal = "internal error" in stderr or "Traceback" in stderr or code not in (0, 1, 2)
    executed = marker.exists()
    if executed:
        shutil.rmtree(marker, ignore_errors=True)
    return Outcome(case, code, seconds if not interrupted else GUARD_SECONDS, cpu, peak,
                   internal and not interrupted, executed,
                   stderr.strip().splitlines()[0] if stderr.strip() else "")  # fmt: skip


def prepare(home: Path) -> Path:
    """A fresh registry in ``home`` holding ``fuzz-0:1`` (for the tag and show cases); returns the marker path."""
    import numpy as np
    from safetensors.numpy import save_file

    os.environ["MODELKIN_HOME"] = str(home)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.pop("MODELKIN_DEBUG", None)
    home.mkdir(parents=True, exist_ok=True)
    seed_file = home.parent / "seed.safetensors"
    save_file({"w": np.ones(3, dtype=np.float32)}, str(seed_file))
    # the set-up is not a case: unguarded, since its first imports can pass the guard on a loaded machine
    for args in (("init",), ("register", str(seed_file), "--name", "fuzz-0", "-t", "note=" + "a" * 3000)):
        code, _, err, *_ = run_main(args, guard=0)
        assert code == 0, err or f"set-up command {args[0]!r} exited {code}"
    return home.parent / "MARKER-code-ran"


def warm_up(workdir: Path, marker: Path) -> None:
    """One case of each kind first, so that lazy imports (torch, yaml) are not timed as a hang."""
    for i in range(8):
        run_case(make_case(-1, i, workdir / "warm-up", marker), marker)


def run(seed: int, count: int, workdir: Path, start: int = 0) -> Iterator[Outcome]:
    """Generate and run cases ``start .. start + count`` of ``seed``; each case's files are removed after it."""
    marker = prepare(workdir / "home")
    warm_up(workdir, marker)
    for i in range(start, start + count):
        case = make_case(seed, i, workdir / "cases", marker)
        try:
            yield run_case(case, marker)
        finally:
            shutil.rmtree(workdir / "cases" / f"case-{i}", ignore_errors=True)
