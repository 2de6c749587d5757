"""Sources on S3: a spec source whose path renders to ``s3://bucket/prefix`` is found by
listing the prefix (its ``cob=`` partitions and data files), fingerprinted by its objects'
sizes and ETags, checked for rows from the Parquet footers over the S3 API, and read by Spark
through ``s3a://``, against the real moto server of the ``s3_server`` fixture.

Does not prove: AWS S3 itself (moto stands in; its ETags are MD5s as AWS's are for
single-part uploads), a cluster's executors (local mode).
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import COB
from runtime_helpers import run_all_stages

from regflow.errors import DataError
from regflow.plan.build import build_plan
from regflow.plan.compiler import compile_file
from regflow.project import run_params
from regflow.runtime import s3a
from regflow.runtime.executor import run_variables
from regflow.runtime.reuse import why_not_reuse
from regflow.runtime.sources import EmptySourceError, fingerprint, resolve_source_path
from regflow.storage import RunRef, publish_run, read_node


def upload(s3_server, local: Path, bucket: str, prefix: str) -> list[str]:
    """Every file under ``local`` to ``s3://bucket/prefix/...`` (same relative keys)."""
    client, keys = s3_server.client(), []
    for f in sorted(p for p in local.rglob("*") if p.is_file()):
        key = f"{prefix}/{f.relative_to(local).as_posix()}"
        client.put_object(Bucket=bucket, Key=key, Body=f.read_bytes())
        keys.append(key)
    return keys


@pytest.fixture()
def s3_data(s3_server, lcr_data) -> str:
    """The LCR demo data (the ``lcr_data`` files, byte for byte) at ``s3://<bucket>/data``."""
    bucket = s3_server.new_bucket("src")
    assert upload(s3_server, lcr_data, bucket, "data")
    return f"s3://{bucket}/data"


def _variables(plan, data_root: str, cob: str = COB.isoformat()) -> dict:
    return run_variables(plan, cob, {"data_root": data_root})


def test_a_source_on_s3_resolves_its_cob_partition_and_files_like_the_local_copy(
    s3_server, lcr_data, s3_data, project
):
    plan = compile_file(project / "pipelines" / "lcr.yaml")
    src = plan.source("deals")
    _, local_files = resolve_source_path(src, _variables(plan, str(lcr_data)))
    path, files = resolve_source_path(src, _variables(plan, s3_data))
    assert str(path) == f"{s3_data}/deals/cob={COB.isoformat()}"
    assert local_files and [str(f).removeprefix(s3_data) for f in files] == [
        str(f).removeprefix(str(lcr_data)) for f in local_files
    ]
    # the same bytes on S3 as locally, yet another fingerprint rule (size + ETag, no download)
    assert fingerprint(files) != fingerprint(local_files)


def test_a_missing_cob_partition_on_s3_fails_as_clearly_as_locally(
    s3_server, lcr_data, s3_data, project
):
    plan = compile_file(project / "pipelines" / "lcr.yaml")
    src = plan.source("deals")
    errors = []
    for root in (str(lcr_data), s3_data):
        with pytest.raises(EmptySourceError) as info:
            resolve_source_path(src, _variables(plan, root, "2026-04-30"), pipeline="lcr")
        errors.append(str(info.value))
    local, remote = errors
    assert f"{s3_data}/deals/cob=2026-04-30 does not exist" in remote
    assert f"cobs present: {COB.isoformat()}" in remote
    assert remote.replace(s3_data, "ROOT") == local.replace(str(lcr_data), "ROOT")
    # no data at all under the prefix: the error names where it looked
    bucket = s3_data.removeprefix("s3://").split("/")[0]
    with pytest.raises(DataError, match=rf"looked for s3://{bucket}/nothing/deals/cob="):
        resolve_source_path(src, _variables(plan, f"s3://{bucket}/nothing"), pipeline="lcr")


def test_the_fingerprint_of_a_source_on_s3_follows_its_objects(s3_server, s3_data, project):
    plan = compile_file(project / "pipelines" / "lcr.yaml")
    src = plan.source("deals")
    _, files = resolve_source_path(src, _variables(plan, s3_data))
    before = fingerprint(files)
    client = s3_server.client()
    obj = files[0]
    body = client.get_object(Bucket=obj.bucket, Key=obj.key)["Body"].read()
    client.put_object(Bucket=obj.bucket, Key=obj.key, Body=body)  # the same bytes again
    assert fingerprint(resolve_source_path(src, _variables(plan, s3_data))[1]) == before
    client.put_object(Bucket=obj.bucket, Key=obj.key, Body=body + b"\0")  # other bytes
    assert fingerprint(resolve_source_path(src, _variables(plan, s3_data))[1]) != before


@pytest.fixture()
def s3_spark(s3_server, spark):
    s3a.require_jars()  # never skip: fail with the command that fetches them
    return spark


def _rows(run: RunRef, name: str) -> list:
    return sorted(read_node(run, name).to_pylist(), key=repr)


@pytest.mark.slow
def test_the_lcr_on_s3_sources_equals_the_local_copy_and_a_changed_object_is_not_reused(
    s3_server, s3_spark, project, lcr_data, s3_data, tmp_path
):
    plan = build_plan(project / "pipelines" / "lcr.yaml", tmp_path / "no-rules")
    cob = COB.isoformat()
    local = RunRef(tmp_path / "local", "lcr", cob, "r1")
    remote = RunRef(tmp_path / "remote", "lcr", cob, "r1")
    local_params, params = {"data_root": str(lcr_data)}, {"data_root": s3_data}
    run_all_stages(plan, local.root, "r1", s3_spark, local_params)
    reports = run_all_stages(plan, remote.root, "r1", s3_spark, params)

    names = sorted(p.name for p in local.run_dir.iterdir() if p.name[0] != "_")
    assert {"entity_buckets", "entity_lcr"} <= set(names)
    assert names == sorted(p.name for p in remote.run_dir.iterdir() if p.name[0] != "_")
    for name in names:  # every output, checkpoint and audit: the same rows
        assert _rows(remote, name) == _rows(local, name), name
        assert remote.metadata(name)["rows"] == local.metadata(name)["rows"], name
    # the sources were read from S3 (not some local fallback), every deal of the cob
    read = {n: s for r in reports for n, s in r.to_dict().get("sources", {}).items()}
    assert read["deals"]["path"] == f"{s3_data}/deals/cob={cob}"
    assert read["deals"]["location"] == f"{s3_data}/deals/cob={cob}"
    deals_file = next((lcr_data / "deals" / f"cob={cob}").glob("*.parquet"))
    deals = pq.read_table(deals_file)
    assert read["deals"]["rows_at_most"] == deals.num_rows

    # incremental reuse: an unchanged S3 source is reused, a rewritten object is not
    publish_run(remote, {"params": params, "adjustment_set_hash": plan.adjustment_set_hash})
    new = RunRef(remote.root, "lcr", cob, "r2")
    first = next(s for s in plan.stages if "deals" in s.sources)

    def why():
        return why_not_reuse(plan, first, new, remote, run_variables(plan, cob, params), params)

    assert why() is None
    i = deals.schema.get_field_index("amount")
    amounts = deals.column(i).to_pylist()
    amounts[0] = (amounts[0] or 0) * 10 + 1_000_000  # a late correction of one deal
    fixed = deals.set_column(
        i, deals.schema.field(i), pa.array(amounts, deals.schema.field(i).type)
    )
    sink = pa.BufferOutputStream()
    pq.write_table(fixed, sink)
    bucket = s3_data.removeprefix("s3://").split("/")[0]
    key = f"data/{deals_file.relative_to(lcr_data).as_posix()}"
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=sink.getvalue().to_pybytes())
    assert re.fullmatch(r"source 'deals' changed since run r1: its files differ", why() or "")


def test_an_s3_data_root_param_is_kept_as_it_is(tmp_path):
    """A path param is resolved against the project root when relative; ``s3://`` is no
    relative path (``Path`` would make it ``<root>/s3:/bucket/data``)."""
    got = run_params(
        {"data_root": "s3://bank-data/lcr"},
        declared={"data_root": "./data"},
        source_paths=["{data_root}/deals"],
        root=tmp_path,
        pipeline="lcr",
    )
    assert got == {"data_root": "s3://bank-data/lcr"}


def test_a_bad_bucket_in_a_source_path_names_the_source_not_the_storage(project):
    """An invalid bucket in ``data_root`` is refused before any request, and the error says
    it is the source's path (not the storage URL the user did not set)."""
    from regflow.errors import ConfigError

    plan = compile_file(project / "pipelines" / "lcr.yaml")
    with pytest.raises(ConfigError) as info:
        resolve_source_path(plan.source("deals"), _variables(plan, "s3://Bad_Bucket/data"))
    message = str(info.value)
    assert "source 'deals' path 's3://Bad_Bucket/data/deals'" in message
    assert "not a valid S3 bucket name" in message and "storage URL" not in message
