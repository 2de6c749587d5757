"""`regflow.failures.explain` on real failures (issue 18, item 6): a full disk, a folder that
cannot be written, storage under a file, an unreachable warehouse, a connection killed in
the middle of a load and a key violation, each put in words with its fix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from warehouse_helpers import database, embedded_server

from regflow.failures import explain


def _raised(fn: Any) -> BaseException:
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError("no failure")


def test_a_full_disk():
    def write() -> None:
        with open("/dev/full", "w") as f:  # the kernel's always-full device: ENOSPC
            f.write("x")

    why = explain(_raised(write), node="weigh")
    assert why.kind == "disk-full"
    assert why.cause.startswith("the disk is full") and "(node weigh)" in why.cause
    assert "regflow gc" in why.fix


def test_a_file_that_cannot_be_written():
    # (even root may not create a file in /sys: a real EACCES where chmod stops no root)
    why = explain(_raised(lambda: Path("/sys/regflow-probe").write_text("x")))
    assert why.kind == "not-writable"
    assert why.cause == "cannot write /sys/regflow-probe: Permission denied"
    assert "--storage" in why.fix


def test_storage_under_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    why = explain(_raised(lambda: (tmp_path / "f" / "sub").mkdir(parents=True)))
    assert why.cause == f"cannot write {tmp_path}/f/sub: one of its parent folders is a file"


def test_a_cause_wrapped_by_another_exception_is_found(tmp_path):
    def wrapped() -> None:
        try:
            Path("/sys/regflow-probe").write_text("x")
        except OSError as exc:
            raise RuntimeError("stage failed") from exc

    assert explain(_raised(wrapped)).kind == "not-writable"


def test_an_unreachable_warehouse():
    why = explain(_raised(lambda: psycopg.connect("postgresql://u@127.0.0.1:1/db")))
    assert why.kind == "warehouse-unreachable"
    assert "Connection refused" in why.cause and "REGFLOW_WAREHOUSE" in why.fix


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Any]:
    yield from embedded_server(tmp_path_factory)


@pytest.fixture()
def db(server) -> Iterator[tuple[str, Any]]:
    yield from database(server)


def test_a_connection_killed_mid_load_and_a_key_violation(db):
    uri, _ = db
    with psycopg.connect(uri) as conn, psycopg.connect(uri, autocommit=True) as admin:
        conn.execute("CREATE TABLE dim_entity (entity_key bigint PRIMARY KEY)")
        conn.execute("INSERT INTO dim_entity VALUES (1)")
        conn.commit()
        # the SCD2 dimension's key inserted twice
        dup = explain(_raised(lambda: conn.execute("INSERT INTO dim_entity VALUES (1)")))
        assert dup.kind == "warehouse-refused"
        assert "duplicate key value violates unique constraint" in dup.cause
        conn.rollback()
        conn.execute("INSERT INTO dim_entity VALUES (2)")  # a load in progress ...
        pid = conn.info.backend_pid
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))  # ... the server kills it
        killed = explain(_raised(lambda: conn.execute("INSERT INTO dim_entity VALUES (3)")))
        assert killed.kind == "warehouse-unreachable"
        assert killed.cause.startswith("the warehouse is unreachable or the connection broke")
