"""Option values read without pydantic (modelkin.cli.coercion) are exactly what typer's own coercion makes of them.

Each parameter is compared on awkward values: the direct reading must give the same value, or hand the value on
to typer so that the error is typer's, word for word.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer._click import Context
from typer._click.exceptions import BadParameter
from typer._coercion import build_runtime_param

from modelkin.cli.app import COMMANDS, _build, app
from modelkin.cli.coercion import DirectParam

VALUES = ["", "0", "7", "007", "+3", "-1", " 4", "4 ", "1_0", "1.5", "1e3", "٣", "３", "abc", "2" * 18, "9" * 19,
          "9" * 5000, "name", "-created", "a\x00b", "/tmp", ".", "~/x", "\udcff", True, False, 3]  # fmt: skip


def _params() -> list[Any]:
    root = typer.main.get_command(app)
    params = [p for p in root.params if p.name == "home"]
    for name in ("list", "log", "show", "register"):
        params += [p for p in _build(name, COMMANDS[name]).params if p.name != "json_out"]
    return params


def _outcome(runtime: Any, param: Any, value: Any, ctx: Context) -> tuple[str, Any]:
    try:
        return "value", runtime.coerce(value, param=param, ctx=ctx)
    except BadParameter as exc:
        return "error", exc.format_message()


@pytest.mark.parametrize("param", _params(), ids=lambda p: p.name)
def test_direct_reading_is_typers_reading(param: Any, tmp_path: Path) -> None:
    if param.multiple:  # a list option (--tag, --parent) is left to typer entirely
        assert param._runtime_param is None
        return
    assert isinstance(param._runtime_param, DirectParam)  # installed when the command was built
    ctx = Context(typer.main.get_command(app))
    own = build_runtime_param(param.type_descriptor)
    for value in VALUES:
        direct, typers = _outcome(param._runtime_param, param, value, ctx), _outcome(own, param, value, ctx)
        assert direct == typers, (param.name, value)
        assert type(direct[1]) is type(typers[1])


def test_the_read_commands_never_import_pydantic(cli: Any, tmp_path: Path) -> None:
    from test_read_path import run_fresh

    from modelkin import Registry

    Registry.init().close()
    for args in (("list", "--limit", "20"), ("show", "nope"), ("log", "--limit", "20"), ("list", "--sort", "-created")):
        stdout, report = run_fresh(*args, "--json")
        assert report["pydantic"] is False, args


def test_a_bad_option_value_gets_typers_own_message(cli: Any) -> None:
    from modelkin import Registry

    Registry.init().close()
    for value, message in (("abc", "Input should be a valid integer"), ("-1", "greater than or equal to 0")):
        result = cli("list", "--limit", value)
        assert result.exit_code == 2 and message in result.stderr and "--limit" in result.stderr
    assert cli("list", "--limit", "1_0", "--json").exit_code == 0  # typer's reading, through pydantic
