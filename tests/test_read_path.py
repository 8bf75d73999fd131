"""The read commands stay lean (issue 10, fast to start): list, show and log never load the ORM or Alembic.

Timing is measured by benchmarks/scale.py, not here; what a test can hold is the cause of the start-up cost,
the modules a command imports. Each command runs in a fresh interpreter through the CLI's real entry point.
The fixed-shape ones do not even load SQLAlchemy: they run SQL generated from its statements with the driver
alone (sqlite3, psycopg2), and answer exactly what SQLAlchemy (with psycopg) answers.
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
loaded = {name: name in sys.modules for name in ("sqlalchemy", "rich", "pydantic", "psycopg")}
print(json.dumps({"code": code, "heavy": heavy, **loaded,
                  "modules": sorted(m for m in sys.modules if m.startswith("modelkin.cli."))}), file=sys.stderr)
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
def test_read_commands_never_load_the_orm(reg: Registry, backend: str, args: tuple[str, ...]) -> None:
    stdout, report = run_fresh(*args)
    assert report["code"] == 0 and report["heavy"] == []
    assert stdout  # and they answered
    # on either database none of them imports SQLAlchemy, not even a filter; a command builds its own module's
    # commands, not the others'; piped output (as here) is written without rich
    assert report["sqlalchemy"] is False and report["rich"] is False
    assert report["pydantic"] is False  # option values are read directly (modelkin.cli.coercion)
    assert report["psycopg"] is False  # on PostgreSQL they read with psycopg2, five times cheaper to import
    assert [m[13:] for m in report["modules"]] == ["app", "coercion", "models", "options", "output"]


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


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_generated_statements_match_what_sqlalchemy_compiles(dialect: str) -> None:
    """``make sql`` output is current: a statement changed without regenerating fails here."""
    import importlib

    from modelkin.registry import statements

    generated = importlib.import_module(f"modelkin.registry.{dialect}_sql")
    assert Path(str(generated.__file__)).read_text() == statements.render(dialect), "run `make sql`"


def _fast_reader(reg: Registry) -> Any:
    """A Reader on the registry's database through the driver alone (what ``open_reader`` builds for the CLI)."""
    from modelkin.db import pg
    from modelkin.registry.reader import Reader

    url = reg.settings.database_url
    if url.startswith("sqlite:///"):
        return Reader(sqlite_file=url[len("sqlite:///") :])
    args = pg.connect_args(url)
    assert args is not None, "MODELKIN_TEST_DATABASE_URL should be a plain postgresql+psycopg:// URL"
    return Reader(postgresql=pg.PgDatabase(args))


def test_the_fast_path_answers_exactly_what_sqlalchemy_does(reg: Registry, backend: str) -> None:
    """Every named statement, by the driver and through SQLAlchemy, on a registry with yanks, aliases, parents."""
    reg.yank("a:1", "test")
    reg.tag("b:1", {"note": "\x1b[2J", "n": "1"}, [])
    with reg.reader.connect() as conn:  # parents' rows as the writer's ORM would see them
        conn.exec_driver_sql('UPDATE versions SET card = \'{"license": "mit", "x": [1.5, null]}\' WHERE id = 2')
    with reg.engine.begin() as conn:  # a detected parent, with a float score
        conn.exec_driver_sql("INSERT INTO lineage_edges (child_id, parent_id, relation, source, score, method, "
                             "created_at) VALUES (2, 1, 'finetune', 'detected', 0.987654321, 'weights', "
                             "'2026-01-02 03:04:05.678901+00:00')")  # fmt: skip
    lite = _fast_reader(reg)
    fast = {"sqlite": "LiteConnection", "postgresql": "PgConnection"}[backend]
    try:
        for r in (reg.reader, lite):
            with r.connect() as conn:
                assert (type(conn).__name__ == fast) is (r is lite)
        for ref in ("a:1", "b", "b@prod", "b:1", "sha256:" + reg.get("b:1").digest[7:19]):
            assert lite.get(ref) == reg.reader.get(ref)
            assert lite.detected_parents(ref) == reg.reader.detected_parents(ref)
        assert lite.detected_parents("b:1")[0]["confidence"] == 0.9877
        for limit in (None, 0, 1, 5):
            assert list(lite.iter_versions(limit=limit)) == list(reg.reader.iter_versions(limit=limit))
            assert lite.log(limit=limit) == reg.reader.log(limit=limit)
            assert lite.log("b:1", limit) == reg.reader.log("b:1", limit)
        assert list(lite.iter_versions("tags.n = '1'")) == [reg.get("b:1")]
        # a filtered or re-sorted listing is SQL text the listing builder writes, run by the driver
        for filter, options in [("tags.n = '1'", {}), ("name LIKE 'B%'", {}), ("name IN ('a', 'b')", {"limit": 1}),
                                ("yanked = true OR parameters > 1", {"include_yanked": True, "sort": "-created"}),
                                ("tags.task = 'digits' AND license = 'mit'", {"include_yanked": True}),
                                (None, {"latest": True}), (None, {"sort": "-parameters", "limit": 1})]:  # fmt: skip
            assert list(lite.iter_versions(filter, **options)) == list(reg.reader.iter_versions(filter, **options))
        for bad in ("nope", "b:9", "b@staging", "a", "sha256:" + "0" * 12):
            with pytest.raises(Exception) as via_lite:
                lite.get(bad)
            with pytest.raises(Exception) as via_sqlalchemy:
                reg.reader.get(bad)
            assert type(via_lite.value) is type(via_sqlalchemy.value)
            assert str(via_lite.value) == str(via_sqlalchemy.value)
    finally:
        lite.close()


def test_a_database_failure_on_the_fast_path_is_one_sentence(cli: Any, tmp_path: Path) -> None:
    home = tmp_path / "broken"
    home.mkdir()
    (home / "registry.db").write_bytes(b"this is not a database, just sixteen bytes and more" * 100)
    result = cli("--home", str(home), "list")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: the registry database failed: file is not a database.")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://modelkin:modelkin@127.0.0.1:5432/modelkin_test",
        "postgresql+psycopg://alice:p%40ss%3Aw%2Frd@db.example.org/registry",
        "postgresql+psycopg://alice:@localhost:6543/r-1.x",
        "postgresql+psycopg://alice@localhost/r",
        "postgresql+psycopg://localhost/r",
        "postgresql+psycopg://al%20ice:pa:ss@localhost/r",
    ],
)
def test_a_plain_postgresql_url_connects_as_sqlalchemy_would(url: str) -> None:
    """The fast path's connection arguments are the ones SQLAlchemy's psycopg dialect derives from the URL."""
    from sqlalchemy.dialects.postgresql.psycopg import dialect
    from sqlalchemy.engine import make_url

    from modelkin.db import pg

    cargs, cparams = dialect().create_connect_args(make_url(url))
    assert cargs == [] and pg.connect_args(url) == cparams


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://u:p@h/db?sslmode=require",  # driver options: SQLAlchemy's reading of them is kept
        "postgresql+psycopg://u:p@[::1]:5432/db",
        "postgresql+psycopg:///db",  # a Unix socket
        "postgresql+psycopg://u:p@h1,h2/db",
        "postgresql://u:p@h/db",  # SQLAlchemy's default PostgreSQL driver, not psycopg
        "postgresql+psycopg://u:p@h/d%62",
        "postgresql+psycopg://u:p@h:port/db",
    ],
)
def test_any_other_database_url_is_left_to_sqlalchemy(url: str) -> None:
    from modelkin.db import pg

    assert pg.connect_args(url) is None


def test_a_postgresql_failure_on_the_fast_path_is_one_sentence(cli: Any, reg: Registry, backend: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    if backend != "postgresql":
        pytest.skip("a PostgreSQL server refusing a password")
    url = reg.settings.database_url
    monkeypatch.setenv("MODELKIN_DATABASE_URL", url.replace(url.split("//")[1].split("@")[0], "modelkin:wrong"))
    for args in (("list",), ("show", "a"), ("log", "--json")):
        stdout, report = run_fresh(*args)
        assert report["code"] == 1 and stdout == "" and report["sqlalchemy"] is False
        result = cli(*args)
        assert result.exit_code == 1 and "Traceback" not in result.stderr
        assert result.stderr.startswith("Error: the registry database failed: connection failed:")
        assert "password authentication failed" in result.stderr and "wrong" not in result.stderr


def test_a_listing_cut_short_after_the_postgresql_connection_closed_ends_quietly(reg: Registry, backend: str) -> None:
    """``modelkin list | head`` on PostgreSQL: the command closes the reader when stdout goes away, and only then
    is the streaming generator finalized; its transaction must not roll back on the closed connection (that
    printed a traceback as an "exception ignored")."""
    if backend != "postgresql":
        pytest.skip("a sqlite3 transaction cut short raises nothing")
    reader = _fast_reader(reg)
    listing = reader.iter_versions(sort="-created")
    assert next(listing).ref == "b:1"
    reader.close()
    listing.close()  # raised DatabaseUnavailable ("the connection is closed")
