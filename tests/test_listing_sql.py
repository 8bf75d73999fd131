"""Listing in SQL (issue 10): filters, sorting and limits pushed down give exactly what Python's reading gives,
and values reach the database only as bound parameters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import make_weights
from sqlalchemy import inspect

from modelkin import Registry
from modelkin.registry.filters import parse_filter, parse_filter_tree
from modelkin.registry.listing import plan
from modelkin.registry.rows import FIELDS, filter_fields

FILTERS = [
    "name = 'm1'",
    "name LIKE 'M%'",  # SQLite's LIKE ignores case, Python's does not: SQL narrows, Python decides
    "name LIKE 'm_' AND parameters > 100",
    "tags.task = 'digits' OR tags.task = 'text'",
    "tags.task != 'digits'",
    "tags.lr > 0.01",  # tags compared as numbers: left to Python
    "tags.lr = 1e-3",
    "tags.task IN ('text', 'none') AND version >= 1",
    "parameters >= 212 AND parameters < 1e9 AND bytes > 0",
    "tags.note LIKE '%a%a%a%z'",
    "family = 'mlp' OR name ILIKE 'M1%'",
    "yanked = false",
    "version IN (1, 2)",
    "version IN (1, 2.5) OR parameters < 212.5",  # a float is compared as a float, not cast to the column's type
    "version = 3000000000 OR tensors IN (1, 3000000000)",  # past an INTEGER column's range: no match, no error
    "version < 3000000000 AND tensors > -3000000000",
    "name = '1'",
    "parameters = '212'",
    "tags.`odd.key-1` = 'x'",
    "name = 'x''; DROP TABLE versions; --'",
]


@pytest.fixture
def populated(registry: Registry, tmp_path: Path) -> Registry:
    for i in range(8):
        tags = {"task": ["digits", "text"][i % 2], "lr": ["0.001", "1e-3", "0.1", "x"][i % 4], "note": "a" * (i * 40)}
        if i == 3:
            tags["odd.key-1"] = "x"
        registry.register(make_weights(tmp_path / f"w{i}.safetensors", seed=i, scale=i + 1), name=f"m{i % 3}",
                          tags=tags)  # fmt: skip
    registry.yank("m0:1")
    return registry


def test_sql_pushdown_agrees_with_python(populated: Registry, cli: Any) -> None:
    """Through SQLAlchemy (``Registry``) and through the driver alone (the CLI), the same SQL text and rows."""
    everything = populated.list(include_yanked=True)

    def listed(expr: str, *options: str) -> list[str]:
        result = cli("list", "--filter", expr, "--all", "--json", *options)
        assert result.exit_code == 0, result.stderr
        return [v["ref"] for v in json.loads(result.stdout)]

    for expr in FILTERS:
        predicate = parse_filter(expr, FIELDS)
        expected = [v.ref for v in everything if predicate(filter_fields(v))]
        assert [v.ref for v in populated.list(expr, include_yanked=True)] == expected, expr
        assert listed(expr) == expected, expr
        for sort in ("-created", "parameters", "-version"):
            got = [v.ref for v in populated.list(expr, sort=sort, include_yanked=True, limit=3)]
            ordered = [r.ref for r in populated.list(None, sort=sort, include_yanked=True)]
            assert got == [ref for ref in ordered if ref in expected][:3], (expr, sort)
            assert listed(expr, "--sort", sort, "--limit", "3") == got, (expr, sort)
    assert sum(bool(populated.list(expr, include_yanked=True)) for expr in FILTERS) >= 12  # most filters match


def test_latest_and_limits_in_sql(populated: Registry, cli: Any) -> None:
    latest = json.loads(cli("list", "--latest", "--json").stdout)
    assert [v["ref"] for v in latest] == ["m0:3", "m1:3", "m2:2"]
    assert [v["ref"] for v in json.loads(cli("list", "--latest", "--all", "--json").stdout)][0] == "m0:3"
    assert [v["ref"] for v in json.loads(cli("list", "--sort", "-name", "--limit", "2", "--json").stdout)] == [
        "m2:2", "m2:1"]  # fmt: skip
    assert json.loads(cli("list", "--limit", "0", "--json").stdout) == []
    log = json.loads(cli("log", "--limit", "2", "--json").stdout)
    assert [e["kind"] for e in log] == ["register", "yank"]
    assert [e["kind"] for e in json.loads(cli("log", "m0:1", "--json").stdout)] == ["register", "yank"]


def test_filter_values_are_bound_parameters_never_sql_text(populated: Registry) -> None:
    node = parse_filter_tree("name = 'x''; DROP TABLE versions; --' OR tags.task LIKE '%''--'", FIELDS)
    assert node is not None
    for postgresql, pyformat in [(False, False), (True, False), (True, True)]:
        sql, values, keep = plan(node, sort=None, limit=5, include_yanked=False, latest=False, postgresql=postgresql,
                                 pyformat=pyformat)  # fmt: skip
        assert "DROP" not in sql and "--" not in sql and "%" not in sql.replace("%(", "")
        assert "x'; DROP TABLE versions; --" in values.values() and "%'--" in values.values() and keep is not None
    assert populated.list("name = 'x''; DROP TABLE versions; --'") == []
    assert inspect(populated.engine).has_table("versions") and len(populated.list(include_yanked=True)) == 8


def test_sqlite_statistics_are_kept_as_the_registry_grows(registry: Registry, tmp_path: Path) -> None:
    """SQLite gathers none itself: writes ANALYZE when versions was never analyzed or has doubled since."""
    if registry.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's autovacuum keeps its own statistics")

    def analyzed_rows() -> int | None:
        with registry.engine.connect() as conn:
            if not inspect(conn).has_table("sqlite_stat1"):
                return None
            stat = conn.exec_driver_sql("SELECT stat FROM sqlite_stat1 WHERE tbl = 'versions' AND idx IS NOT NULL")
            value = stat.scalar()
            return None if value is None else int(value.split()[0])

    assert analyzed_rows() is None
    seen = []
    for i in range(5):
        registry.register(make_weights(tmp_path / f"s{i}.safetensors", seed=i), name=f"s{i}")
        seen.append(analyzed_rows())
    assert seen == [1, 2, 2, 4, 4]  # the first write, then each doubling


def test_list_json_written_from_rows_is_what_the_records_encode(populated: Registry, cli: Any, tmp_path: Path) -> None:
    """``list --json`` writes each version straight from its rows (modelkin.registry.version_json): byte for byte
    what encoding the records' ``to_json`` gives, with every kind of field filled in somewhere."""
    populated.register(make_weights(tmp_path / "rich.safetensors", seed=40), name="rich", parents=["m1:1", "m2:2"],
                       relation="finetune", tags={"z": "last", "a": "first \"quoted\""},
                       card={"license": "mit", "note": "Zürich \x1b[2J \u202e", "n": [1, 2.5, True]})  # fmt: skip
    populated.set_alias("rich:1", "prod")
    odd = json.dumps({"family": ["odd", 1.5], "n": None, "deep": {"x": [{}], "y": "東京"}})  # any JSON is encoded
    with populated.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE versions SET architecture = '{odd}' WHERE number = 2")
    populated.set_alias("m1:2", "staging")
    cases: list[tuple[tuple[str, ...], dict[str, Any]]] = [
        ((), {}), (("--all",), {"include_yanked": True}), (("--latest",), {"latest": True}),
        (("--sort", "-created", "--limit", "4"), {"sort": "-created", "limit": 4}),
        (("--filter", "tags.lr > 0.01"), {"filter": "tags.lr > 0.01"}),  # decided in Python: from records
        (("--filter", "name = 'rich' OR yanked = true", "--all"),
         {"filter": "name = 'rich' OR yanked = true", "include_yanked": True}),
    ]  # fmt: skip
    for args, options in cases:
        listed = cli("list", "--json", *args)
        assert listed.exit_code == 0, listed.stderr
        expected = [v.to_json() for v in populated.list(**options)]
        assert listed.stdout == json.dumps(expected, indent=2, ensure_ascii=False) + "\n", args
        assert any(v["ref"] == "rich:1" for v in expected) or "tags.lr" in str(args) or "--limit" in args
