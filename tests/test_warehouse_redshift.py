"""Redshift loads without Redshift: the real :class:`Loader` against a recording fake of the
Redshift DB-API connection, with S3 served by a real moto server on loopback.

What is checked:

* the exact statement sequence of a COPY load of the LCR star (golden file
  ``fixtures/warehouse/redshift_lcr_copy.sql``; regenerate after an intended change with
  ``REGFLOW_UPDATE_GOLDEN=1 pytest tests/test_warehouse_redshift.py`` and review the diff),
  and its key statements inline: COPY, LOCK, DELETE, DISTSTYLE / DISTKEY / SORTKEY, ENCODE;
* the transactions: the DDL commits on its own, the load commits exactly once, right after
  the load record; any failure rolls back;
* every statement sent parses with ``sqlglot.parse(sql, read="redshift")`` (only LOCK may
  fall back to a ``Command``);
* S3: at COPY time each manifest validates against ``MANIFEST_SCHEMA``, lists every staged
  Parquet object with its real size, and the Parquet columns match the staging table by
  position and type (Redshift maps Parquet columns by position); objects are deleted after a
  commit, kept after a failure, and a retry succeeds and cleans up;
* the upsert path (multi-row INSERTs of at most 500 rows, no S3), configuration errors,
  identifier quoting and Redshift literal escaping.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import jsonschema
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
from runtime_helpers import run_all_stages
from sqlglot import exp

from regflow.errors import ConfigError, DataError, SpecError
from regflow.plan.build import build_plan
from regflow.plan.model import Plan
from regflow.spec.types import decimal_ps
from regflow.storage import RunRef
from regflow.warehouse import sql as S
from regflow.warehouse.dialects import get_dialect
from regflow.warehouse.loader import LoadReport, load_star, staged_files
from regflow.warehouse.model import StarModel, Table, star_model, star_table_name
from regflow.warehouse.s3stage import MANIFEST_SCHEMA, S3Staging, copy_sql, split_s3
from regflow.warehouse.targets import Target

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "fixtures" / "warehouse" / "redshift_lcr_copy.sql"
UPDATE = os.environ.get("REGFLOW_UPDATE_GOLDEN") == "1"

COB = "2026-03-31"
RUN_ID = "r1"
BUCKET = "regflow-staging"
STAGING = f"s3://{BUCKET}/loads"
IAM_ROLE = "arn:aws:iam::123456789012:role/regflow-copy"
PREFIX = f"loads/lcr/cob={COB}/run={RUN_ID}"
REDSHIFT = get_dialect("redshift")

COPY_DEAL = (
    'COPY "stg_fact_lcr_deal" FROM '
    "'s3://regflow-staging/loads/lcr/cob=2026-03-31/run=r1/fact_lcr_deal.manifest' "
    "IAM_ROLE 'arn:aws:iam::123456789012:role/regflow-copy' FORMAT AS PARQUET MANIFEST"
)
LOCK = (
    'LOCK "lcr"."dim_date", "lcr"."dim_entity", "lcr"."dim_entity_snapshots", '
    '"lcr"."dim_lcr_category", "lcr"."fact_lcr_deal", "lcr"."fact_lcr_entity", '
    '"lcr"."regflow_loads"'
)
DELETE_DEAL = 'DELETE FROM "lcr"."fact_lcr_deal" WHERE "date_key" = 20260331'
DELETE_ENTITY = 'DELETE FROM "lcr"."fact_lcr_entity" WHERE "date_key" = 20260331'
_TIMESTAMP = re.compile(r"TIMESTAMP '(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)'")


# ------------------------------------------------------------------------- the fake
class FakeDBError(Exception):
    """Raised by the fake where a test injects a database failure."""


class FakeRedshift:
    """A DB-API connection that records what it is sent, like redshift_connector with
    autocommit off: the first statement after a commit or rollback opens a transaction
    (recorded as ``begin``). Results: ``[]`` for checks and ``information_schema`` (no
    table yet) unless configured, ``(only_if_count,)`` for ``SELECT COUNT(*)``."""

    def __init__(
        self,
        *,
        fail_at: str | None = None,
        only_if_count: int = 0,
        duplicate_keys: list[tuple[Any, ...]] | None = None,
        columns: dict[str, list[str]] | None = None,
        on_execute: Callable[[str], None] | None = None,
    ):
        self.fail_at = re.compile(fail_at) if fail_at else None
        self.only_if_count = only_if_count
        self.duplicate_keys = duplicate_keys or []
        self.columns = columns or {}
        self.on_execute = on_execute
        self.events: list[tuple[str, str, Any]] = []  # (begin|execute|commit|rollback|close)
        self.in_transaction = False
        self.closed = False

    # DB-API
    def cursor(self) -> FakeCursor:
        if self.closed:
            raise FakeDBError("connection is closed")
        return FakeCursor(self)

    def commit(self) -> None:
        self.events.append(("commit", "", None))
        self.in_transaction = False

    def rollback(self) -> None:
        self.events.append(("rollback", "", None))
        self.in_transaction = False

    def close(self) -> None:
        self.events.append(("close", "", None))
        self.closed = True

    # what the tests read
    @property
    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]

    @property
    def statements(self) -> list[str]:
        return [sql for kind, sql, _ in self.events if kind == "execute"]

    def transactions(self) -> list[tuple[list[str], str]]:
        """The statements of each transaction, with how it ended (commit/rollback/open)."""
        out: list[tuple[list[str], str]] = []
        cur: list[str] | None = None
        for kind, sql, _ in self.events:
            if kind == "begin":
                cur = []
            elif kind == "execute":
                assert cur is not None
                cur.append(sql)
            elif kind in ("commit", "rollback") and cur is not None:
                out.append((cur, kind))
                cur = None
        if cur is not None:
            out.append((cur, "open"))
        return out

    def result_for(self, sql: str) -> list[tuple[Any, ...]]:
        if "information_schema.columns" in sql:  # (table, column) of the tables asked for
            assert "table_name IN (" in sql, sql
            # (table, column, numeric scale): the scales are not the point of these tests
            return [
                (t, c, None) for t, cols in self.columns.items() for c in cols if f"'{t}'" in sql
            ]
        if sql.startswith("SELECT COUNT(*)"):
            return [(self.only_if_count,)]
        if "HAVING COUNT(*) > 1" in sql:
            return list(self.duplicate_keys)
        return []


class FakeCursor:
    def __init__(self, conn: FakeRedshift):
        self.conn = conn
        self._rows: list[tuple[Any, ...]] = []

    def execute(self, sql: str, params: Any = None) -> None:
        c = self.conn
        if c.closed:
            raise FakeDBError("connection is closed")
        if params is not None and sql.count("%s") != len(params):  # the driver would fail
            raise FakeDBError(f"{sql.count('%s')} placeholders but {len(params)} parameters")
        if not c.in_transaction:
            c.events.append(("begin", "", None))
            c.in_transaction = True
        c.events.append(("execute", sql, params))
        if c.on_execute is not None:
            c.on_execute(sql)
        if c.fail_at is not None and c.fail_at.search(sql):
            raise FakeDBError(f"injected failure at: {sql[:60]}")
        self._rows = c.result_for(sql)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self._rows)

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None


class NoS3:
    """An S3 client that must not be used."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"S3 used on a path that needs no S3: {name}")


# ------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def plan() -> Plan:
    return build_plan(ROOT / "pipelines" / "lcr.yaml")


@pytest.fixture(scope="module")
def model(plan: Plan) -> StarModel:
    return star_model(plan, "lcr_star")


@pytest.fixture(scope="module")
def staged(spark: Any, lcr_data: Path, plan: Plan, tmp_path_factory: Any) -> RunRef:
    """The LCR star staged by Spark (10k deals): every stage of the pipeline, once."""
    root = tmp_path_factory.mktemp("redshift-storage")
    run_all_stages(plan, root, RUN_ID, spark, {"data_root": str(lcr_data)}, cob=COB)
    return RunRef(root, plan.pipeline, COB, RUN_ID)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback, with dummy credentials."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for k, v in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            mp.setenv(k, v)
        for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "REGFLOW_S3_ENDPOINT"):
            mp.delenv(k, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture()
def s3(s3_endpoint: str) -> Iterator[Any]:
    """A client of the moto server with an empty staging bucket (removed afterwards)."""
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield client
    for key in _keys(client):
        client.delete_object(Bucket=BUCKET, Key=key)
    client.delete_bucket(Bucket=BUCKET)


def _keys(client: Any, prefix: str = "") -> list[str]:
    out: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return sorted(out)


# ------------------------------------------------------------------------- helpers
def _target(
    conn: FakeRedshift,
    *,
    staging: str | None = STAGING,
    iam_role: str | None = IAM_ROLE,
    connects: list[int] | None = None,
) -> Target:
    def connect() -> FakeRedshift:
        if connects is not None:
            connects.append(1)
        return conn

    return Target(
        dialect=REDSHIFT,
        display="redshift://regflow@example.eu-west-1.redshift.amazonaws.com:5439/dev",
        connect=connect,
        staging=staging,
        iam_role=iam_role,
    )


def _load(
    model: StarModel,
    run: RunRef,
    conn: FakeRedshift,
    *,
    client: Any = None,
    method: str = "copy",
    fault: Callable[[str], None] | None = None,
    **target_kw: Any,
) -> LoadReport:
    target = _target(conn, **target_kw)
    s3 = S3Staging(target.staging, client=client) if client is not None and target.staging else None
    return load_star(
        model,
        target,
        run,
        spec_hash="spec-hash",
        adjustment_set_hash="adjustment-set-hash",
        method=method,
        log=lambda _msg: None,
        fault=fault,
        s3=s3,
    )


def assert_parse_as_redshift(statements: list[str]) -> None:
    """Each statement is one statement of Redshift SQL; only LOCK may become a Command."""
    for sql in dict.fromkeys(statements):  # the upsert repeats one text many times
        parsed = sqlglot.parse(sql, read="redshift")
        assert len(parsed) == 1 and parsed[0] is not None, sql
        node = parsed[0]
        if isinstance(node, exp.Command):
            assert sql.startswith("LOCK "), f"not parsed as Redshift SQL: {sql[:200]}"
        first = sql.split(None, 1)[0]
        expected = {
            "COPY": exp.Copy,
            "INSERT": exp.Insert,
            "UPDATE": exp.Update,
            "DELETE": exp.Delete,
            "SELECT": exp.Select,
            "CREATE": exp.Create,
            "DROP": exp.Drop,
        }.get(first)
        if expected is not None:
            assert isinstance(node, expected), (type(node).__name__, sql[:200])


def _arrow_matches(t: pa.DataType, wtype: str) -> bool:
    """The Parquet type Redshift COPY needs for a staging column of regflow type ``wtype``."""
    ps = decimal_ps(wtype)
    if ps:
        return bool(pa.types.is_decimal(t)) and (t.precision, t.scale) == ps
    return {
        "string": pa.types.is_string,
        "boolean": pa.types.is_boolean,
        "date": pa.types.is_date32,
        "int": pa.types.is_int32,
        "bigint": pa.types.is_int64,
        "double": pa.types.is_float64,
        "timestamp": pa.types.is_timestamp,
    }[wtype](t)


class CopyChecker:
    """Run when the fake receives a COPY: what Redshift would read must be on S3 now."""

    def __init__(self, client: Any, model: StarModel, run: RunRef):
        self.client, self.model, self.run = client, model, run
        self.checked: list[str] = []

    def __call__(self, sql: str) -> None:
        if not sql.startswith("COPY "):
            return
        m = re.match(r'COPY "stg_(\w+)" FROM \'([^\']+)\' ', sql)
        assert m, sql
        table = self.model.table(m.group(1))
        check_manifest(self.client, m.group(2), table, self.run)
        self.checked.append(table.name)


def check_manifest(client: Any, manifest_url: str, t: Table, run: RunRef) -> dict[str, Any]:
    """The manifest is valid, complete and exact; the Parquet it lists is the staged table."""
    assert manifest_url == f"s3://{BUCKET}/{PREFIX}/{t.name}.manifest"
    manifest = S3Staging(STAGING, client=client).read_manifest(manifest_url)
    jsonschema.Draft202012Validator(MANIFEST_SCHEMA).validate(manifest)
    local = staged_files(run, "lcr_star", t.name)
    assert len(manifest["entries"]) == len(local)
    rows = 0
    for entry, f in zip(manifest["entries"], local, strict=True):
        assert entry["mandatory"] is True
        bucket, key = split_s3(entry["url"])
        assert bucket == BUCKET and key.startswith(f"{PREFIX}/{t.name}/")
        size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        assert entry["meta"]["content_length"] == size == f.stat().st_size
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        schema = pq.read_schema(pa.BufferReader(body))
        # COPY ... FORMAT AS PARQUET maps columns by position: names, order and types
        assert schema.names == [c.name for c in t.staged], t.name
        for c in t.staged:
            assert _arrow_matches(schema.field(c.name).type, c.type), (t.name, c.name, c.type)
        rows += pq.ParquetFile(pa.BufferReader(body)).metadata.num_rows
    assert rows == run.metadata(star_table_name("lcr_star", t.name))["rows"]
    return manifest


def check_staging_kept(client: Any, model: StarModel, run: RunRef) -> None:
    keys = _keys(client)
    manifests = {f"{PREFIX}/{t.name}.manifest" for t in model.tables}
    assert manifests <= set(keys)
    for t in model.tables:
        manifest = check_manifest(client, f"s3://{BUCKET}/{PREFIX}/{t.name}.manifest", t, run)
        for e in manifest["entries"]:
            assert split_s3(e["url"])[1] in keys
    n_parts = sum(len(staged_files(run, "lcr_star", t.name)) for t in model.tables)
    assert len(keys) == len(manifests) + n_parts


def transcript(conn: FakeRedshift) -> str:
    """The session as reviewable SQL, the load's timestamp replaced by ``<loaded_at>``."""
    out = []
    for kind, sql, _ in conn.events:
        if kind == "execute":
            out.append(_TIMESTAMP.sub("TIMESTAMP '<loaded_at>'", sql) + ";")
        else:
            out.append(f"-- {kind}")
    return "\n".join(out) + "\n"


def _loaded_at(conn: FakeRedshift) -> dt.datetime:
    stamps = {m for sql in conn.statements for m in _TIMESTAMP.findall(sql)}
    assert len(stamps) == 1, stamps  # one load time for every fact row and the record
    return dt.datetime.fromisoformat(stamps.pop())


# ------------------------------------------------------------------------- COPY path
@pytest.mark.slow
def test_copy_load_statements(model: StarModel, staged: RunRef, s3: Any) -> None:
    checker = CopyChecker(s3, model, staged)
    conn = FakeRedshift(on_execute=checker)
    connects: list[int] = []
    report = _load(model, staged, conn, client=s3, connects=connects)

    assert report.method == "copy" and connects == [1]
    assert checker.checked == [t.name for t in model.tables]  # every COPY saw a valid manifest
    assert _keys(s3) == []  # staged objects and manifests deleted after the commit

    # golden: the whole session, statement by statement
    text = transcript(conn)
    if UPDATE:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
    assert GOLDEN.exists(), f"run with REGFLOW_UPDATE_GOLDEN=1 to create {GOLDEN}"
    assert text == GOLDEN.read_text(encoding="utf-8")

    # two transactions: the DDL, then the load, which commits once, after the record
    assert conn.kinds.count("commit") == 2 and "rollback" not in conn.kinds
    assert conn.kinds[-3:] == ["execute", "commit", "close"]
    (ddl, end1), (load, end2) = conn.transactions()
    assert end1 == end2 == "commit"
    d = REDSHIFT
    info = [s for s in ddl if "information_schema" in s]  # the column check, before views
    assert len(info) == 1
    assert ddl == [s.sql for s in S.create_steps(d, model)] + info + [
        s.sql for s in S.fill_steps(d, model)
    ]
    assert not any(s.startswith("BEGIN") or s.startswith("COMMIT") for s in conn.statements)
    assert load[-1].startswith('INSERT INTO "lcr"."regflow_loads" ')
    counts = ",".join(
        f"{t.name}={staged.metadata(star_table_name('lcr_star', t.name))['rows']}"
        for t in model.tables
    )
    assert f"'copy', '{counts}', " in load[-1] and f"'{RUN_ID}', 'spec-hash', " in load[-1]

    # staging: temp tables, then one COPY per table, in the model's order
    n_temp = len(model.tables)  # one CREATE TEMP TABLE each (no DROP: a fresh session)
    assert load[:n_temp] == [sql for t in model.tables for sql in S.create_staging(d, t)]
    copies = load[n_temp : n_temp + len(model.tables)]
    assert copies == [
        f"COPY \"stg_{t.name}\" FROM 's3://{BUCKET}/{PREFIX}/{t.name}.manifest' "
        f"IAM_ROLE '{IAM_ROLE}' FORMAT AS PARQUET MANIFEST"
        for t in model.tables
    ]
    assert COPY_DEAL in copies

    # the merge: LOCK first (tables in one sorted order), the cob's facts replaced
    merge = load[n_temp + len(model.tables) : -1]
    assert merge[0] == LOCK
    locked = re.findall(r'"lcr"\."(\w+)"', LOCK)
    assert locked == sorted(locked)
    assert DELETE_DEAL in merge and DELETE_ENTITY in merge
    assert merge.index(DELETE_DEAL) < merge.index(
        next(s for s in merge if s.startswith('INSERT INTO "lcr"."fact_lcr_deal"'))
    )
    steps = S.merge(d, model, dt.date.fromisoformat(COB), _loaded_at(conn))
    expected = [x for s in steps for x in ([s.only_if] if s.only_if else [s.sql])]
    assert merge == expected  # only_if counted 0: no SCD2 repointing of facts

    assert_parse_as_redshift(conn.statements)


def test_copy_ddl_is_redshift_physical_design(model: StarModel) -> None:
    create = {
        t.name: next(s.sql for s in S.ddl(REDSHIFT, model) if s.name == f"table {t.name}")
        for t in model.tables
    }
    for t in model.dimensions:
        assert create[t.name].endswith(
            ") DISTSTYLE ALL COMPOUND SORTKEY (" + ", ".join(f'"{c}"' for c in t.sortkey) + ")"
        ), create[t.name]
    for t in model.facts:
        assert create[t.name].endswith(
            ') DISTSTYLE KEY DISTKEY ("entity_key") COMPOUND SORTKEY ("date_key")'
        )
    deal = create["fact_lcr_deal"]
    for col in (
        '"date_key" INTEGER NOT NULL ENCODE RAW',  # the sort key: never compressed
        '"entity_key" BIGINT NOT NULL ENCODE AZ64',
        '"deal_id" VARCHAR(256) NOT NULL ENCODE ZSTD',
        '"amount" NUMERIC(20,2) ENCODE AZ64',
        '"cob_date" DATE NOT NULL ENCODE AZ64',
        '"is_adjusted" BOOLEAN NOT NULL ENCODE ZSTD',
        '"loaded_at" TIMESTAMP NOT NULL ENCODE AZ64',
    ):
        assert f"  {col},\n" in deal or f"  {col}\n" in deal, col
    assert '  "legal_entity" VARCHAR(256) ENCODE RAW,\n' in create["dim_entity"]
    assert '  "date_key" INTEGER NOT NULL ENCODE RAW,\n' in create["dim_date"]
    # every column of every table has an encoding; RAW only for the first sort key column
    for t in model.tables:
        lines = [ln.strip().rstrip(",") for ln in create[t.name].splitlines()[1:-1]]
        cols = [ln for ln in lines if not ln.startswith("PRIMARY KEY")]
        assert len(cols) == len(t.columns)
        for ln, c in zip(cols, t.columns, strict=True):
            enc = ln.rsplit(" ENCODE ", 1)[1]
            assert enc == (
                "RAW"
                if c.name == t.sortkey[0]
                else ("ZSTD" if c.type in ("string", "boolean") else "AZ64")
            ), ln
    assert_parse_as_redshift(list(create.values()))


@pytest.mark.slow
def test_only_if_and_key_checks(model: StarModel, staged: RunRef, s3: Any) -> None:
    # a changed SCD2 member: the facts dated in the split-off range are repointed
    conn = FakeRedshift(only_if_count=1)
    _load(model, staged, conn, client=s3)
    repoints = [s for s in conn.statements if s.startswith('UPDATE "lcr"."fact_')]
    assert [re.match(r'UPDATE "lcr"\."(\w+)"', s).group(1) for s in repoints] == [  # type: ignore[union-attr]
        "fact_lcr_deal",
        "fact_lcr_entity",
    ]
    assert_parse_as_redshift(repoints)
    # two members with one surrogate key: the load fails and rolls back
    conn = FakeRedshift(duplicate_keys=[(4242,)])
    with pytest.raises(DataError, match="surrogate key 4242 is used by two members"):
        _load(model, staged, conn, client=s3)
    assert conn.kinds[-2:] == ["rollback", "close"] and conn.kinds.count("commit") == 1
    check_staging_kept(s3, model, staged)


@pytest.mark.slow
@pytest.mark.parametrize(
    "where",
    ["database: merge", "fault: staging:fact_lcr_deal", "fault: staged", "fault: commit"],
)
def test_failure_keeps_staging_and_retry_cleans_up(
    model: StarModel, staged: RunRef, s3: Any, where: str
) -> None:
    kind, step = where.split(": ")

    def fault(name: str) -> None:
        if kind == "fault" and name == step:
            raise RuntimeError(f"injected at {name}")

    fail_at = r'^INSERT INTO "lcr"\."fact_lcr_deal" ' if kind == "database" else None
    conn = FakeRedshift(fail_at=fail_at)
    with pytest.raises(FakeDBError if kind == "database" else RuntimeError, match="injected"):
        _load(model, staged, conn, client=s3, fault=fault)

    # rolled back: the DDL committed on its own, the load never did
    assert conn.kinds.count("commit") == 1 and conn.kinds[-2:] == ["rollback", "close"]
    (_, end1), (load, end2) = conn.transactions()
    assert (end1, end2) == ("commit", "rollback")
    if step == "staged" or step.startswith("staging:"):
        assert LOCK not in load  # failed before the merge
    if step == "commit":
        assert load[-1].startswith('INSERT INTO "lcr"."regflow_loads"')
    assert_parse_as_redshift(conn.statements)
    # the staged objects stay for the retry
    check_staging_kept(s3, model, staged)

    # the retry succeeds and cleans up
    retry = FakeRedshift(on_execute=CopyChecker(s3, model, staged))
    _load(model, staged, retry, client=s3)
    assert retry.kinds.count("commit") == 2 and "rollback" not in retry.kinds
    assert _keys(s3) == []


@pytest.mark.slow
def test_copy_with_s3_from_environment(
    model: StarModel, staged: RunRef, s3: Any, s3_endpoint: str, monkeypatch: Any
) -> None:
    """Without an explicit client, the loader's S3 client follows REGFLOW_S3_ENDPOINT."""
    monkeypatch.setenv("REGFLOW_S3_ENDPOINT", s3_endpoint)
    conn = FakeRedshift(on_execute=CopyChecker(s3, model, staged))
    _load(model, staged, conn)  # no client: S3Staging(target.staging, region=target.region)
    assert COPY_DEAL in conn.statements
    assert _keys(s3) == []


# ------------------------------------------------------------------------- upsert path
@pytest.mark.slow
def test_upsert_path(model: StarModel, staged: RunRef, s3: Any) -> None:
    conn = FakeRedshift()
    report = _load(model, staged, conn, client=NoS3(), method="upsert")
    assert report.method == "upsert"
    assert _keys(s3) == []
    assert not any(s.startswith("COPY") for s in conn.statements)

    (_, _), (load, end) = conn.transactions()
    assert end == "commit" and load[-1].startswith('INSERT INTO "lcr"."regflow_loads"')
    assert "'upsert'" in load[-1]
    sent: dict[str, list[Any]] = {t.name: [] for t in model.tables}
    statements = 0
    for kind, sql, params in conn.events:
        if kind != "execute" or not sql.startswith('INSERT INTO "stg_'):
            assert params is None
            continue
        m = re.match(r'INSERT INTO "stg_(\w+)" \(([^)]*)\) VALUES \(', sql)
        assert m, sql[:100]
        t = model.table(m.group(1))
        assert m.group(2) == ", ".join(f'"{c.name}"' for c in t.staged)
        assert params is not None and len(params) % len(t.staged) == 0
        rows = len(params) // len(t.staged)
        assert 1 <= rows <= REDSHIFT.max_statement_rows == 500
        assert sql == S.insert_staging(REDSHIFT, t, rows)
        assert sql.count("(%s") == rows and sql.count("%s") == rows * len(t.staged)
        sent[t.name] += params
        statements += 1

    deal = model.table("fact_lcr_deal")
    n_deal = staged.metadata(star_table_name("lcr_star", deal.name))["rows"]
    assert n_deal == 10_000
    assert statements >= n_deal // 500
    for t in model.tables:
        names = [c.name for c in t.staged]
        table = pq.ParquetDataset(
            [str(f) for f in staged_files(staged, "lcr_star", t.name)], partitioning=None
        ).read(columns=names)
        expected = [
            v
            for row in zip(*[table.column(n).to_pylist() for n in names], strict=True)
            for v in row
        ]
        assert sent[t.name] == expected, t.name  # every row, every value, in order
    assert any(isinstance(v, Decimal) for v in sent["fact_lcr_deal"])
    assert any(isinstance(v, dt.date) for v in sent["fact_lcr_deal"])
    assert_parse_as_redshift(conn.statements)


# ------------------------------------------------------------------------- errors
@pytest.mark.slow
def test_copy_without_iam_role(model: StarModel, staged: RunRef, s3: Any) -> None:
    conn = FakeRedshift()
    connects: list[int] = []
    with pytest.raises(ConfigError, match=r"\?iam_role=arn:aws:iam::<account>:role/<name>"):
        _load(model, staged, conn, client=s3, iam_role=None, connects=connects)
    assert connects == [] and conn.events == []  # found before any upload or connection
    assert _keys(s3) == []
    with pytest.raises(ConfigError, match="iam_role"):
        copy_sql(REDSHIFT, "stg_fact_lcr_deal", f"s3://{BUCKET}/x.manifest", "")


@pytest.mark.slow
def test_copy_without_staging(model: StarModel, staged: RunRef) -> None:
    conn = FakeRedshift()
    connects: list[int] = []
    with pytest.raises(ConfigError, match=r"\?staging=s3://bucket/prefix.*load: upsert"):
        _load(model, staged, conn, staging=None, connects=connects)
    assert connects == [] and conn.events == []


@pytest.mark.slow
def test_upsert_needs_neither_staging_nor_iam_role(model: StarModel, staged: RunRef) -> None:
    conn = FakeRedshift()
    _load(model, staged, conn, method="upsert", staging=None, iam_role=None)
    assert conn.kinds.count("commit") == 2


@pytest.mark.slow
def test_existing_table_with_other_columns(model: StarModel, staged: RunRef) -> None:
    conn = FakeRedshift(columns={"fact_lcr_deal": ["date_key", "deal_id"]})
    with pytest.raises(ConfigError, match=r"lcr\.fact_lcr_deal needs a new column 'entity_key'"):
        _load(model, staged, conn, method="upsert")
    assert conn.kinds[-2:] == ["rollback", "close"] and "commit" not in conn.kinds


@pytest.mark.slow
def test_identifiers_are_quoted_and_checked(
    model: StarModel, staged: RunRef, project: Path
) -> None:
    d = REDSHIFT
    assert d.q("LCR Deal") == '"LCR Deal"'
    assert d.qn("lcr_bi", "Level 2B Cap Adjustment") == '"lcr_bi"."Level 2B Cap Adjustment"'
    for bad in ('a"b', 'x"; DROP TABLE lcr.fact_lcr_deal; --', "a\x00b", "a\nb", "", "x" * 128):
        with pytest.raises(ConfigError, match="is not allowed in SQL"):
            d.q(bad)

    # a business name from YAML holding a quote never gets past the compiler (file:line)
    spec = project / "pipelines" / "lcr.yaml"
    text = spec.read_text()
    assert "      lcr: LCR\n" in text
    spec.write_text(text.replace("      lcr: LCR\n", "      lcr: 'LCR \"ratio\"'\n"))
    with pytest.raises(SpecError, match=r"label 'LCR \"ratio\"' may hold only"):
        build_plan(spec)

    # a schema name with a quote never gets past the compiler
    spec.write_text(text.replace("    load: auto\n", "    load: auto\n    schema: 'lcr\"x'\n"))
    with pytest.raises(SpecError, match="warehouse schema"):
        build_plan(spec)


def test_redshift_literal_escaping(model: StarModel) -> None:
    d, pg = REDSHIFT, get_dialect("postgresql")
    tricky = "O'Brien \\ C:\\new\\table '' \\'"
    assert d.literal("O'Brien") == "'O''Brien'"
    assert d.literal("a\\b") == "'a\\\\b'"  # Redshift reads a backslash as an escape
    assert pg.literal("a\\b") == "'a\\b'"  # PostgreSQL (standard strings) does not
    assert d.literal(tricky) == "'O''Brien \\\\ C:\\\\new\\\\table '''' \\\\'''"
    for dialect, read in ((d, "redshift"), (pg, "postgres")):
        lit = sqlglot.parse_one(f"SELECT {dialect.literal(tricky)}", read=read).expressions[0]
        assert isinstance(lit, exp.Literal) and lit.is_string and lit.this == tricky
    with pytest.raises(ConfigError, match="NUL"):
        d.literal("a\x00b")
    assert d.literal(None) == "NULL" and d.literal(True) == "TRUE" and d.literal(7) == "7"
    assert d.literal(Decimal("1.50")) == "1.50" and d.literal(0.25) == "0.25"
    assert d.literal(dt.date(2026, 3, 31)) == "DATE '2026-03-31'"
    assert d.literal(dt.datetime(2026, 4, 1, 2, 3, 4, 999)) == "TIMESTAMP '2026-04-01 02:03:04'"

    # a run id and hashes with quotes and backslashes in the load record
    record = S.load_record(
        d,
        model,
        cob=dt.date(2026, 3, 31),
        run_id="manual__2026-03-31 'x' \\y",
        spec_hash="s",
        adjustment_set_hash="a",
        method="copy",
        table_rows="t=1",
        rows=1,
        loaded_at=dt.datetime(2026, 4, 1),
    ).sql
    values = sqlglot.parse_one(record, read="redshift").find(exp.Values)
    assert values is not None
    got = [e.this for e in values.expressions[0].expressions if isinstance(e, exp.Literal)]
    assert "manual__2026-03-31 'x' \\y" in got
    # the manifest URL and role of a COPY go through the same escaping
    sql = copy_sql(d, "stg_x", "s3://b/k'.manifest", "arn:aws:iam::1:role/a\\b")
    assert sql == (
        "COPY \"stg_x\" FROM 's3://b/k''.manifest' IAM_ROLE 'arn:aws:iam::1:role/a\\\\b' "
        "FORMAT AS PARQUET MANIFEST"
    )
    assert_parse_as_redshift([sql])
