"""The warehouse load takes its files from ``s3://`` storage (the real moto server of the
``s3_server`` fixture; the embedded PostgreSQL): both load paths, the same warehouse rows as
from local storage.

Does not prove: Redshift's COPY from S3 (mocked elsewhere: tests/test_warehouse_redshift.py).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from regflow.storage.fs import S3Path
from tests.warehouse_helpers import database, embedded_server, load, mini_plan, query, stage

pytest.importorskip("psycopg")

COB = dt.date(2026, 3, 31)
MEMBERS = {"LE1": ("Bank One", "GB"), "LE2": ("Bank Two", "DE")}
DEALS = [(f"D{i:03d}", f"LE{1 + i % 2}", Decimal(i) / 4) for i in range(40)]


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory):
    yield from embedded_server(tmp_path_factory)


def _warehouse(uri: str) -> list[tuple]:
    return query(
        uri,
        "SELECT f.deal_id, f.cob_date, f.amount, e.legal_entity, e.entity_name "
        "FROM mini.fact_position f JOIN mini.dim_entity e USING (entity_key) ORDER BY 1",
    )


@pytest.mark.parametrize("method", ["upsert", "copy"])
def test_a_load_from_s3_storage_equals_a_load_from_local_storage(
    s3_server, pg_server, tmp_path, method
):
    plan = mini_plan(tmp_path)
    local = stage(plan, tmp_path / "storage", COB, MEMBERS, DEALS, run_id="r1")
    remote_root = S3Path(s3_server.new_bucket("wh"), "storage")
    remote = stage(plan, remote_root, COB, MEMBERS, DEALS, run_id="r1")
    assert s3_server.keys(remote_root.bucket)  # (staged on S3, not locally)
    got = []
    for run in (local, remote):
        db = database(pg_server)
        uri, target = next(db)
        try:
            load(plan, run, target, method=method)
            got.append(_warehouse(uri))
        finally:
            db.close()
    assert got[0] == got[1]
    assert len(got[1]) == 40 and sum(r[2] for r in got[1]) == sum(a for _, _, a in DEALS)
