"""The fast subset of the fuzz harness (benchmarks/fuzz.py runs 10,000 cases): hostile files and strings through
the CLI's real entry point end in a clear error or a success, never an internal error, never running code."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from fuzzing.harness import HANG_SECONDS, TERMINATED, Summary, run, run_main

SUBSET = 160  # about 20 s; every mutation family appears


def test_fuzz_subset_has_no_internal_error_hang_or_code_execution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setenv("MODELKIN_HOME", str(tmp_path / "home"))
    summary = Summary()
    for outcome in run(seed=0, count=SUBSET, workdir=tmp_path):
        summary.add(outcome)
    assert summary.cases == SUBSET and set(summary.by_kind) == {"safetensors", "pickle", "hf", "cli"}
    assert [(o.case.args, o.stderr) for o in summary.internal_errors] == []
    assert [o.case.args for o in summary.executed] == []
    assert summary.exit_codes.get(-1, 0) == 0  # no case was stopped by the guard
    assert summary.peak_bytes < 500_000_000
    assert sum(summary.exit_codes.values()) == SUBSET and HANG_SECONDS == 2.0


def test_a_sigterm_stops_the_harness_instead_of_ending_one_case(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI turns SIGTERM into SystemExit(143) so it cleans up; run in-process, that exit must not pass for the
    case's exit code (the run went on, swallowing the signal), and the harness's own handler comes back."""
    import modelkin.cli.app as cli_app

    def killed(**_: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the handler main() installed, before this returns
        raise AssertionError("SIGTERM did not unwind the command")

    real_app = cli_app.app
    monkeypatch.setattr(cli_app, "app", killed)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        run_main(("list",))
    assert stopped.value.code == TERMINATED and signal.getsignal(signal.SIGTERM) is before
    monkeypatch.setattr(cli_app, "app", real_app)
    assert run_main(("--version",))[0] == 0 and signal.getsignal(signal.SIGTERM) is before
