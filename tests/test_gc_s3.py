"""`regflow gc` on s3:// storage (issue 20): the retention policy of local storage, over a
real S3 API (moto on loopback), without Spark.

The storage content is built with the storage API (attempts committed by their markers,
runs published, a claim, a reused output referring to another run's data) on S3 and, for the
comparison, the same content in a local folder whose files get the objects' LastModified as
their modification times: the same policy must remove the same relative paths from both and
keep the same runs. S3 objects cannot be backdated, so "old" and "young" are two phases of
the build a few seconds apart, and the grace lies between them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

OLD_COB, NEW_COB = "2026-03-30", "2026-03-31"
GAP = 2.5  # seconds between the old and the young phase of the build


def _output(run, node: str, rows: int, *, data=None) -> None:
    """``node``'s output in ``run``, committed as a stage commits it: the Parquet in a fixed
    attempt, then its metadata and marker (``data``: a reused output's base data)."""
    from regflow.storage import commit_attempt, fs

    attempt = run.node_root(node) / "attempt=a1"
    if data is None:
        table = pa.table(
            {"legal_entity": [f"LE{i:03d}" for i in range(rows)], "n": list(range(rows))}
        )
        if isinstance(attempt, Path):
            attempt.mkdir(parents=True, exist_ok=True)
        filesystem, where = fs.arrow(attempt / "part-00000.parquet")
        pq.write_table(table, where, filesystem=filesystem)
    meta = {"node_hash": node, "input_hashes": {}, "rows": rows}
    commit_attempt(run, node, attempt, meta, data=data)


def _run(root, cob: str, run_id: str, rows: int, *, publish: bool):
    from regflow.storage import RunRef, publish_run, write_json_atomic

    run = RunRef(root, "lcr", cob, run_id)
    _output(run, "entity_lcr", rows)
    write_json_atomic(run.stage_report("entity_lcr"), {"stage": "entity_lcr"})
    if publish:
        publish_run(run, {"run_id": run_id})
    return run


def _put(path, data: bytes) -> None:
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def build_old(root) -> None:
    """What runs and kills leave, long ago: per cob a latest run and superseded ones, a failed
    run, a dead run holding the claim, a killed write and a temporary file in the latest
    run, and a latest run that reused an output of the superseded run by reference."""
    from regflow.storage import RunRef, fs
    from regflow.storage.claim import claim_path

    for run_id, rows in (("r30_a", 30), ("r30_b", 20), ("r30_latest", 10)):
        _run(root, OLD_COB, run_id, rows, publish=True)
    _run(root, OLD_COB, "r30_failed", 40, publish=False)
    sup = _run(root, NEW_COB, "r31_a", 60, publish=True)
    latest = RunRef(root, "lcr", NEW_COB, "r31_latest")
    _output(latest, "entity_lcr", 50)
    _output(latest, "reused_lcr", 60, data=sup.node_dir("entity_lcr"))
    from regflow.storage import publish_run

    publish_run(latest, {"run_id": "r31_latest"})
    active = _run(root, NEW_COB, "r31_active", 80, publish=False)
    claim = {"run_id": "r31_active", "host": "elsewhere", "pid": None}
    assert fs.put_if_absent(claim_path(active), json.dumps(claim).encode())
    killed = latest.node_root("weigh") / "attempt=killed"
    _put(killed / "part-00000.parquet", os.urandom(900))
    _put(latest.run_dir / ".entity_lcr.json.tmp-0123abcd", b"{}")


def build_young(root) -> None:
    """A run killed a moment ago (within the grace: it may still be writing)."""
    _run(root, NEW_COB, "r31_young", 70, publish=False)


def _upload(client, bucket: str, key: str, size: int) -> str:
    """An incomplete multipart upload of one part (what a killed S3A committer leaves)."""
    up = client.create_multipart_upload(Bucket=bucket, Key=key)
    client.upload_part(
        Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=1, Body=os.urandom(size)
    )
    return str(up["UploadId"])


@pytest.fixture()
def s3(s3_server):
    """The content on S3 (old phase, then ``GAP`` seconds later the young one), with two
    incomplete multipart uploads: one in the killed write, one in the active run (moto
    reports every upload as initiated on 2010-11-10T20:48:33Z, so no upload can be young
    here; see the test of the uploads' grace). ``grace(now)``: an age between the two
    phases' ages at ``now``."""
    from regflow.storage import resolve_root

    bucket = s3_server.new_bucket()
    root = resolve_root(f"s3://{bucket}/storage")
    client = s3_server.client()
    build_old(root)
    base = "storage/lcr/cob=2026-03-31"
    uploads = {
        "killed": _upload(client, bucket, f"{base}/run=r31_latest/weigh/attempt=killed/p1", 5000),
        "active": _upload(client, bucket, f"{base}/run=r31_active/weigh/attempt=x/p1", 6000),
    }
    time.sleep(GAP)
    young_start = time.time()
    build_young(root)

    def grace(now: float) -> float:
        """Young ones' ages at ``now`` are below, old ones' above. S3 (and moto) keep
        LastModified to the second, which makes an object look up to a second older: 1.5 s
        more than the young phase's age (half a second for the gc to start), GAP - 1.5 s
        below the old phase's."""
        return now - young_start + 1.5

    return {"root": root, "bucket": bucket, "grace": grace, "uploads": uploads}


def _grace(s3) -> str:
    """``--grace`` for a gc started now."""
    return f"{s3['grace'](time.time()):.3f}s"


def _local_twin(tmp_path: Path, s3_server, bucket: str) -> Path:
    """The same content in a local folder, every file with its object's LastModified (and
    every folder older than everything), so ages are the same on both."""
    root = tmp_path / "storage"
    build_old(root)
    build_young(root)
    stamps = {}
    pages = s3_server.client().get_paginator("list_objects_v2")
    for page in pages.paginate(Bucket=bucket, Prefix="storage/"):
        for o in page.get("Contents", []):
            stamps[o["Key"].removeprefix("storage/")] = o["LastModified"].timestamp()
    for path in sorted(root.rglob("*"), reverse=True):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not path.name.endswith(".lock"):
            assert rel in stamps, f"{rel} is on local storage only"
            os.utime(path, (stamps[rel], stamps[rel]))
        else:  # folders (S3 has none) and the local lock files
            os.utime(path, (1e9, 1e9))
    return root


def _gc(capsys, root, *args: str) -> str:
    from regflow.cli.main import main

    capsys.readouterr()
    code = main(["gc", "--storage", str(root), *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _listed(out: str, root) -> set[str]:
    prefix = f"{root}/"
    return {p.removeprefix(prefix) for p in re.findall(r"^(?:would )?remove (\S+)  \(", out, re.M)}


OLD_SUP = "lcr/cob=2026-03-30/run=r30_a"
FAILED = "lcr/cob=2026-03-30/run=r30_failed"
KILLED = "lcr/cob=2026-03-31/run=r31_latest/weigh/attempt=killed"
TEMP = "lcr/cob=2026-03-31/run=r31_latest/.entity_lcr.json.tmp-0123abcd"
UPLOAD = f"{KILLED}/p1"


def test_gc_on_s3_plans_the_same_removals_and_kept_runs_as_locally(s3, s3_server, tmp_path, capsys):
    from regflow.storage.gc import plan_gc

    local = _local_twin(tmp_path, s3_server, s3["bucket"])
    before = s3_server.keys(s3["bucket"])
    out_s3 = _gc(capsys, s3["root"], "--dry-run", "--grace", _grace(s3))
    out_local = _gc(capsys, local, "--dry-run", "--grace", _grace(s3))
    # the policy's removals: a superseded run beyond --keep-runs 1, the failed run, the killed
    # write, the temporary file; on S3 also the old multipart upload outside the active run
    assert _listed(out_local, local) == {OLD_SUP, FAILED, KILLED, TEMP}
    assert _listed(out_s3, s3["root"]) == {OLD_SUP, FAILED, KILLED, TEMP, UPLOAD}
    assert "incomplete multipart upload" in out_s3
    # a dry run changes nothing (and aborts nothing)
    assert s3_server.keys(s3["bucket"]) == before
    uploads = s3_server.client().list_multipart_uploads(Bucket=s3["bucket"])["Uploads"]
    assert len(uploads) == 2
    # the bytes it would free: the removed objects' sizes and the upload's part, from the
    # test's own listing
    sizes = {}
    pages = s3_server.client().get_paginator("list_objects_v2")
    for page in pages.paginate(Bucket=s3["bucket"], Prefix="storage/"):
        sizes.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    gone = [
        n
        for k, n in sizes.items()
        if any(
            k == f"storage/{p}" or k.startswith(f"storage/{p}/")
            for p in (OLD_SUP, FAILED, KILLED, TEMP)
        )
    ]
    expected = sum(gone) + 5000
    assert f"would free {expected / 1024:.1f} KB" in out_s3
    # the same removals and the same kept runs (with the same reasons), through the API, at
    # the same moment, for either --keep-runs
    now = time.time()
    for keep_runs in (1, 0):  # (--keep-runs 0: only the protected runs are kept)
        plans = {}
        for loc in (s3["root"], local):
            report = plan_gc(loc, keep_runs=keep_runs, now=now, grace_seconds=s3["grace"](now))
            plans[str(loc)] = (
                sorted(
                    (str(r.path).removeprefix(f"{loc}/"), r.reason, r.bytes)
                    for r in report.removals
                    if r.upload is None
                ),
                sorted((str(p).removeprefix(f"{loc}/"), why) for p, why in report.kept),
            )
        assert plans[str(s3["root"])] == plans[str(local)]
    kept = plans[str(local)][1]
    assert {p for p, _ in kept} == {
        "lcr/cob=2026-03-30/run=r30_latest",
        "lcr/cob=2026-03-31/run=r31_latest",
        "lcr/cob=2026-03-31/run=r31_active",
        "lcr/cob=2026-03-31/run=r31_young",
    }


def test_gc_on_s3_removes_by_policy_and_the_kept_runs_still_read(s3, s3_server, capsys):
    from regflow.storage import RunRef, latest_run, read_node

    bucket, root = s3["bucket"], s3["root"]
    attempt = "storage/lcr/cob=2026-03-31/run=r31_a/entity_lcr/attempt=a1"
    shared = f"{attempt}/part-00000.parquet"
    data = s3_server.client().get_object(Bucket=bucket, Key=shared)["Body"].read()
    out = _gc(capsys, root, "--keep-runs", "0", "--grace", _grace(s3))
    keys = s3_server.keys(bucket)
    # removed: no object left under the removed prefixes
    for prefix in (OLD_SUP, "lcr/cob=2026-03-30/run=r30_b", FAILED, KILLED):
        assert not [k for k in keys if k.startswith(f"storage/{prefix}/")], prefix
    assert f"storage/{TEMP}" not in keys
    # r31_a is no run any more (its markers and reports went) ...
    sup = "storage/lcr/cob=2026-03-31/run=r31_a"
    kept = [f"{attempt}/_regflow.json", f"{attempt}/part-00000.parquet"]
    assert [k for k in keys if k.startswith(f"{sup}/")] == kept
    assert f"/{sup}/_RUN_SUCCESS  (superseded published run" in out
    # ... but the data the latest run refers to stays, never listed, and still reads
    assert "attempt=a1  (" not in out
    assert s3_server.client().get_object(Bucket=bucket, Key=shared)["Body"].read() == data
    latest = latest_run(root, "lcr", NEW_COB)
    assert latest.run_id == "r31_latest"
    assert read_node(latest, "reused_lcr").num_rows == 60
    assert read_node(latest, "entity_lcr").num_rows == 50
    assert read_node(latest_run(root, "lcr", OLD_COB), "entity_lcr").num_rows == 10
    # the active and the young run are untouched
    for run_id, rows in (("r31_active", 80), ("r31_young", 70)):
        assert read_node(RunRef(root, "lcr", NEW_COB, run_id), "entity_lcr").num_rows == rows
    # the multipart uploads: the killed write's aborted, the active run's kept
    left = s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["UploadId"] for u in left] == [s3["uploads"]["active"]]
    assert f"/{UPLOAD}  (incomplete multipart upload" in out
    # a second gc (the rest of r31_a now an old unpublished prefix) keeps the data too
    _gc(capsys, root, "--keep-runs", "0", "--grace", _grace(s3))
    assert s3_server.keys(bucket, sup + "/") == kept
    assert read_node(latest, "reused_lcr").num_rows == 60


def test_gc_on_s3_keeps_multipart_uploads_younger_than_the_grace(s3_server):
    """The grace on an upload's initiation time. moto reports every upload as initiated on
    2010-11-10T20:48:33Z (whatever the clock), so "now" is set relative to that."""
    from regflow.storage import resolve_root
    from regflow.storage.gc import plan_gc

    bucket = s3_server.new_bucket()
    root = resolve_root(f"s3://{bucket}/storage")
    _run(root, NEW_COB, "r_latest", 3, publish=True)
    key = "storage/lcr/cob=2026-03-31/run=r_killed/weigh/attempt=k/p1"
    _upload(s3_server.client(), bucket, key, 4000)
    _upload(s3_server.client(), bucket, "elsewhere/p1", 4000)  # (not under the storage root)
    initiated = dt.datetime(2010, 11, 10, 20, 48, 33, tzinfo=dt.UTC).timestamp()
    day = 24 * 3600.0

    def uploads(now: float) -> list[tuple[str, int]]:
        report = plan_gc(root, now=now, grace_seconds=day)
        return [(str(r.path), r.bytes) for r in report.removals if r.upload is not None]

    assert uploads(initiated + day - 60) == []
    assert uploads(initiated + day + 60) == [(f"s3://{bucket}/{key}", 4000)]


def _count_requests(operation: str) -> list[dict]:
    """The parameters of every ``operation`` request regflow's S3 client sends from now on
    (botocore's own event hook: the requests really go to the server)."""
    from regflow.storage import s3client

    seen: list[dict] = []
    s3client.client().meta.events.register(
        f"provide-client-params.s3.{operation}", lambda params, **_: seen.append(dict(params))
    )
    return seen


def _failed_run_of(s3_server, bucket: str, n: int) -> str:
    failed = "st/lcr/cob=2026-03-31/run=r_failed/entity_lcr/attempt=a1"
    client = s3_server.client()
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: client.put_object(
                    Bucket=bucket, Key=f"{failed}/part-{i:05d}.parquet", Body=b"x" * 10
                ),
                range(n),
            )
        )
    return failed


def test_gc_on_s3_lists_and_deletes_in_pages_of_1000(s3_server, capsys):
    """A failed run of 1,203 objects goes entirely: the listing takes two pages (1,000 keys
    a ListObjectsV2 request), DeleteObjects two batches (at most 1,000 keys each)."""
    from regflow.storage import resolve_root

    bucket = s3_server.new_bucket()
    root = resolve_root(f"s3://{bucket}/st")
    _run(root, NEW_COB, "r_latest", 3, publish=True)
    _failed_run_of(s3_server, bucket, 1203)
    total = len(s3_server.keys(bucket, "st/"))
    listings = _count_requests("ListObjectsV2")
    deletes = _count_requests("DeleteObjects")
    out = _gc(capsys, root, "--grace", "0s")
    assert "run=r_failed  (unpublished run" in out and "freed 11.7 KB" in out  # 1,203 x 10 B
    assert s3_server.keys(bucket, "st/lcr/cob=2026-03-31/run=r_failed/") == []
    assert s3_server.keys(bucket, "st/lcr/cob=2026-03-31/run=r_latest/") != []
    assert [len(d["Delete"]["Objects"]) for d in deletes] == [1000, 203]
    # the full listing of the root: ceil(keys / 1000) pages (the other listings are
    # one-page checks: the root and the pipeline exist)
    full = [p for p in listings if p.get("Prefix") == "st/" and "MaxKeys" not in p]
    assert len(full) == -(-total // 1000) == 2


def test_gc_on_s3_names_the_objects_it_could_not_delete(s3_server, capsys):
    """Objects S3 refuses to delete (here a bucket policy denies it on the failed run's
    reports) are a StorageError naming them and the fix; the rest is deleted."""
    from regflow.cli.main import main
    from regflow.storage import resolve_root

    bucket = s3_server.new_bucket()
    root = resolve_root(f"s3://{bucket}/st")
    _run(root, NEW_COB, "r_latest", 3, publish=True)
    _run(root, NEW_COB, "r_failed", 4, publish=False)
    reports = "st/lcr/cob=2026-03-31/run=r_failed/_stages"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:DeleteObject",
                "Resource": f"arn:aws:s3:::{bucket}/{reports}/*",
            }
        ],
    }
    s3_server.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    capsys.readouterr()
    assert main(["gc", "--storage", str(root), "--grace", "0s"]) == 1
    err = capsys.readouterr().err
    assert f"S3 could not delete 1 object(s): s3://{bucket}/{reports}/entity_lcr.json" in err
    assert "AccessDenied" in err and "grant the role the permissions" in err
    assert s3_server.keys(bucket, "st/lcr/cob=2026-03-31/run=r_failed/") == [
        f"{reports}/entity_lcr.json"
    ]


def test_gc_of_a_missing_bucket_or_an_empty_prefix_is_a_clear_error(s3_server, capsys):
    from regflow.cli.main import main

    assert main(["gc", "--storage", "s3://regflow-no-such-bucket/storage", "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert "NoSuchBucket" in err and "create the bucket 'regflow-no-such-bucket'" in err
    bucket = s3_server.new_bucket()
    assert main(["gc", "--storage", f"s3://{bucket}/nothing-here"]) == 1
    err = capsys.readouterr().err
    assert f"nothing stored under s3://{bucket}/nothing-here" in err and "--storage" in err


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_killed_write_in_a_removed_run_is_listed_and_counted_once(backend, s3_server, tmp_path):
    """A superseded run whose data the latest run refers to goes part by part; an unmarked
    attempt in it is one of those parts, and is not listed (and its bytes counted) again as a
    leftover of a killed write."""
    from regflow.storage import RunRef, publish_run, resolve_root
    from regflow.storage.gc import plan_gc

    if backend == "s3":
        root = resolve_root(f"s3://{s3_server.new_bucket()}/storage")
    else:
        root = tmp_path / "storage"
    sup = _run(root, NEW_COB, "r_a", 5, publish=True)
    _put(sup.node_root("entity_lcr") / "attempt=killed" / "part-00000.parquet", b"k" * 700)
    latest = RunRef(root, "lcr", NEW_COB, "r_latest")
    _output(latest, "reused_lcr", 5, data=sup.node_dir("entity_lcr"))
    publish_run(latest, {"run_id": "r_latest"})
    report = plan_gc(root, keep_runs=0, now=time.time() + 3 * 24 * 3600)
    paths = [str(r.path).removeprefix(f"{root}/") for r in report.removals]
    assert sorted(paths) == sorted(set(paths))
    killed = "lcr/cob=2026-03-31/run=r_a/entity_lcr/attempt=killed"
    assert [r.bytes for r in report.removals if str(r.path).endswith(killed)] == [700]
