"""The read commands stay lean (issue 10, fast to start): list, show and log never load the ORM or Alembic.

Timing is measured by benchmarks/scale.py, not here; what a test can hold is the cause of the start-up cost,
the modules a command imports. Each command runs in a fresh interpreter through the CLI's real entry point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelkin import Registry

PROBE = """
import json, sys
from modelkin.cli.app import main
sys.argv = ["modelkin", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("alembic", "torch", "numpy", "safetensors")
               or m.startswith("sqlalchemy.orm") or m == "modelkin.registry.registry")
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def run_fresh(*args: str) -> tuple[str, dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=120)  # fmt: skip
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return proc.stdout, report


@pytest.fixture
def reg(backend: str, weights: Path, tmp_path: Path) -> Any:
    from conftest import make_weights

    r = Registry.init()
    r.register(weights, name="a", tags={"task": "digits"})
    r.register(make_weights(tmp_path / "b.safetensors", seed=1), name="b", parents=["a:1"])
    r.set_alias("b:1", "prod")
    yield r
    r.close()


@pytest.mark.parametrize(
    "args",
    [
        ("list",),
        ("list", "--limit", "1", "--json"),
        ("list", "--filter", "tags.task = 'digits'"),
        ("show", "b@prod"),
        ("show", "b:1", "--json"),
        ("log", "--limit", "2"),
        ("log", "a:1", "--json"),
    ],
)
def test_read_commands_never_load_the_orm(reg: Registry, args: tuple[str, ...]) -> None:
    stdout, report = run_fresh(*args)
    assert report == {"code": 0, "heavy": []}
    assert stdout  # and they answered


def test_read_commands_answer_what_the_registry_api_does(reg: Registry) -> None:
    stdout, _ = run_fresh("show", "b@prod", "--json")
    shown = json.loads(stdout)
    assert shown == {**reg.get("b@prod").to_json(), "detected_parents": []}
    assert json.loads(run_fresh("list", "--json")[0]) == [v.to_json() for v in reg.list()]
    assert json.loads(run_fresh("log", "--json")[0]) == [e.to_json() for e in reg.log()]


def test_a_missing_or_outdated_registry_is_refused_on_the_read_path(cli: Any, reg: Registry) -> None:
    with reg.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    result = cli("list")
    assert result.exit_code == 1 and "db upgrade" in result.stderr
    assert run_fresh("show", "a")[1]["code"] == 1
