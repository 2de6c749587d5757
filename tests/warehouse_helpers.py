"""Small staged stars without Spark, and a real embedded PostgreSQL for warehouse tests.

``fixtures/warehouse/mini.yaml`` declares the star (an SCD2 entity dimension and a position
fact); :func:`stage` writes a run's staged tables the way the star stage would (Parquet plus
metadata and a success marker, through the storage module), from plain Python values, so a
test can drive hundreds of loads in seconds through the real loader.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from regflow.plan.build import build_plan
from regflow.plan.model import Plan
from regflow.runtime.parquet import write_parquet_table
from regflow.spec.types import decimal_ps
from regflow.storage import RunRef, commit_attempt, new_attempt
from regflow.warehouse.model import StarModel, Table, WColumn, star_model, star_table_name

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / "tests" / "fixtures" / "warehouse" / "mini.yaml"
NODE = "mini_star"


def mini_plan(tmp: Path) -> Plan:
    rules = tmp / "no-rules"
    rules.mkdir(exist_ok=True)
    return build_plan(MINI, rules)


def mini_model(plan: Plan) -> StarModel:
    return star_model(plan, NODE)


def key_of(dim: str, member: str, valid_from: dt.date) -> int:
    """A surrogate key for a version (the star stage uses xxhash64 of the same parts)."""
    digest = hashlib.blake2b(f"{dim}|{member}|{valid_from}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def attrs_hash(*values: Any) -> int:
    digest = hashlib.blake2b(repr(values).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _arrow(c: WColumn) -> pa.DataType:
    ps = decimal_ps(c.type)
    if ps:
        return pa.decimal128(*ps)
    return {
        "string": pa.string(),
        "date": pa.date32(),
        "int": pa.int32(),
        "bigint": pa.int64(),
        "boolean": pa.bool_(),
        "double": pa.float64(),
        "timestamp": pa.timestamp("us"),
    }[c.type]


def _write(run: RunRef, t: Table, rows: list[dict[str, Any]]) -> None:
    schema = pa.schema([(c.name, _arrow(c)) for c in t.staged])
    name = star_table_name(NODE, t.name)
    tmp = new_attempt(run, name)
    tmp.mkdir(parents=True)
    if rows:  # (through storage's filesystem: a local folder or S3)
        table = pa.Table.from_pylist(rows, schema=schema)
        write_parquet_table(table, tmp, name="part-0.parquet")
    commit_attempt(run, name, tmp, {"rows": len(rows), "kind": "star"})


def stage(
    plan: Plan,
    root: Path,
    cob: dt.date,
    members: dict[str, tuple[str, str]],
    deals: list[tuple[str, str, Decimal]],
    run_id: str | None = None,
) -> RunRef:
    """Stage the mini star for ``cob``: ``members`` (legal_entity -> (entity_name, country))
    and ``deals`` ((deal_id, legal_entity, amount))."""
    m = mini_model(plan)
    run = RunRef(root, plan.pipeline, str(cob), run_id or f"r-{uuid.uuid4().hex[:8]}")
    date_key = int(cob.strftime("%Y%m%d"))
    _write(
        run,
        m.table("dim_date"),
        [
            {
                "date_key": date_key,
                "date": cob,
                "year": cob.year,
                "quarter": (cob.month - 1) // 3 + 1,
                "month": cob.month,
                "month_name": cob.strftime("%B"),
                "year_month": cob.strftime("%Y-%m"),
                "day": cob.day,
                "day_of_week": cob.isoweekday(),
                "day_name": cob.strftime("%A"),
                "is_weekday": cob.weekday() < 5,
                "is_month_end": False,
                "is_quarter_end": False,
                "is_year_end": False,
            }
        ],
    )
    _write(
        run,
        m.table("dim_entity"),
        [
            {
                "entity_key": key_of("entity", e, cob),
                "legal_entity": e,
                "entity_name": name,
                "country": country,
                "valid_from": cob,
                "row_hash": attrs_hash(name, country),
                "run_id": run.run_id,
            }
            for e, (name, country) in sorted(members.items())
        ],
    )
    _write(
        run,
        m.table("fact_position"),
        [
            {
                "date_key": date_key,
                "cob_date": cob,
                "deal_id": deal,
                "legal_entity": e,
                "amount": amount,
                "lineage_id": attrs_hash(deal, str(cob)),
                "is_adjusted": False,
                "adjustment_rules": None,
                "run_id": run.run_id,
                "spec_hash": plan.data_hash,
                "adjustment_set_hash": plan.adjustment_set_hash,
            }
            for deal, e, amount in deals
        ],
    )
    return run


def load(plan: Plan, run: RunRef, target: Any, **kw: Any) -> Any:
    from regflow.warehouse.loader import load_star

    return load_star(
        mini_model(plan),
        target,
        run,
        spec_hash=plan.data_hash,
        adjustment_set_hash=plan.adjustment_set_hash,
        log=lambda m: None,
        **kw,
    )


def fresh_database(server: Any) -> tuple[str, Any]:
    """A new database on ``server`` and a warehouse Target for it."""
    import psycopg

    from regflow.warehouse.targets import resolve_target

    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server.get_uri(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    uri = server.get_uri(database=name)
    return uri, resolve_target(uri)


def query(uri: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(uri) as c:
        return c.execute(sql, params or None).fetchall()


def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """regflow's own embedded server in a temporary folder (for a module-scoped fixture)."""
    from regflow.warehouse.embedded import EmbeddedServer

    srv = EmbeddedServer(tmp_path_factory.mktemp("pg")).start()
    yield srv
    srv.release()


def database(server: Any) -> Iterator[tuple[str, Any]]:
    """A fresh database (dropped afterwards, so the server's shutdown stays short)."""
    import psycopg

    uri, target = fresh_database(server)
    yield uri, target
    name = uri.split("?")[0].rsplit("/", 1)[1]
    with psycopg.connect(server.get_uri(), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
