"""The storage's one filesystem abstraction and its commit protocol, on both backends: a
local folder and S3 (a real moto server on loopback, the ``s3_server`` fixture).

Not proven here: AWS's own S3 (moto implements the same conditional-write API, including
``If-None-Match: *`` and ``If-Match``) and IAM policies (moto allows every call).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from regflow.errors import ConfigError, StorageError
from regflow.runtime.parquet import write_parquet_table
from regflow.storage import (
    RUN_SUCCESS_FILE,
    RunRef,
    commit_attempt,
    fs,
    latest_run,
    new_attempt,
    publish_run,
    read_node,
    resolve_root,
    s3client,
)
from regflow.storage.commit import move_latest, read_latest
from regflow.storage.fs import S3Path

COB = "2026-03-31"


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    """A storage root on each backend."""
    if request.param == "local":
        return tmp_path / "storage"
    server = request.getfixturevalue("s3_server")
    return S3Path(server.new_bucket(), "regflow/storage")


# -- the primitives -----------------------------------------------------------------------


def test_put_if_absent_never_overwrites(root):
    path = root / "p" / "_MARK"
    assert fs.put_if_absent(path, b"first")
    assert not fs.put_if_absent(path, b"second")
    assert path.read_bytes() == b"first"
    # only the object itself: no temporary file left beside it
    assert [p.name for p in path.parent.iterdir()] == ["_MARK"]


def test_put_if_match_refuses_a_stale_tag(root):
    path = root / "_LATEST"
    assert fs.read_with_tag(path) is None
    assert not fs.put_if_match(path, b"x", "any-tag")  # nothing to match: not created
    assert not path.exists()
    fs.put_if_absent(path, b"v1")
    data, tag1 = fs.read_with_tag(path)  # type: ignore[misc]
    assert data == b"v1"
    assert fs.put_if_match(path, b"v2", tag1)
    assert not fs.put_if_match(path, b"v3", tag1)  # moved since tag1 was read
    data, tag2 = fs.read_with_tag(path)  # type: ignore[misc]
    assert data == b"v2" and tag2 != tag1
    assert not fs.delete_if_match(path, tag1)
    assert fs.delete_if_match(path, tag2) and not path.exists()


def test_a_delete_if_match_on_s3_is_conditional_at_the_server(s3_server, monkeypatch):
    """The object changes between delete_if_match's read of its tag and its delete (a
    claim taken over in that window): the delete itself carries ``If-Match``, so the new
    object survives. (Before, the read was the only check and the delete was plain.)"""
    path = S3Path(s3_server.new_bucket(), "regflow/_ACTIVE")
    fs.put_if_absent(path, b"ours")
    _, ours = fs.read_with_tag(path)  # type: ignore[misc]
    real_get = s3client.get

    def get_then_taken_over(bucket: str, key: str):
        seen = real_get(bucket, key)
        assert fs.put_if_match(path, b"theirs", ours)  # another run takes it over now
        return seen

    monkeypatch.setattr(s3client, "get", get_then_taken_over)
    assert not fs.delete_if_match(path, ours)
    monkeypatch.undo()
    assert path.read_bytes() == b"theirs"


def test_concurrent_writers_exactly_one_wins(root):
    n = 8
    start = threading.Barrier(n)
    created: list[int] = []
    swapped: list[int] = []
    fs.put_if_absent(root / "cas", b"v0")
    _, tag0 = fs.read_with_tag(root / "cas")  # type: ignore[misc]

    def writer(i: int) -> None:
        start.wait()
        if fs.put_if_absent(root / "marker", str(i).encode()):
            created.append(i)
        if fs.put_if_match(root / "cas", str(i).encode(), tag0):
            swapped.append(i)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(created) == 1 and (root / "marker").read_text() == str(created[0])
    assert len(swapped) == 1 and (root / "cas").read_text() == str(swapped[0])


def test_listing_and_removal(root):
    for key in ("a/x.parquet", "a/y.parquet", "a/sub/z", "b"):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(b"1")
    assert [p.name for p in fs.glob(root / "a", "*.parquet")] == ["x.parquet", "y.parquet"]
    assert (root / "a").is_dir() and (root / "a" / "sub").is_dir()
    assert not (root / "b").is_dir() and (root / "b").exists()
    assert fs.size(root / "a" / "x.parquet") == 1
    fs.rmtree(root / "a")
    assert not (root / "a").exists() and (root / "b").exists()
    with pytest.raises(FileNotFoundError):
        (root / "a" / "x.parquet").read_bytes()


def test_s3_urls_are_validated(monkeypatch):
    assert resolve_root("s3://my-bucket/some/prefix/") == S3Path("my-bucket", "some/prefix")
    monkeypatch.setenv("REGFLOW_STORAGE", "s3://my-bucket")
    assert resolve_root() == S3Path("my-bucket", "")
    for bad, why in (
        ("s3://My_Bucket/x", "not a valid S3 bucket name"),
        ("s3://b/x", "not a valid S3 bucket name"),
        ("s3://bucket/a/../b", r"'\.' and '\.\.' are not allowed"),
    ):
        with pytest.raises(ConfigError, match=why):
            resolve_root(bad)
    assert fs.spark_uri(S3Path("bkt", "a/b")) == "s3a://bkt/a/b"


# -- the commit protocol ----------------------------------------------------------------------


def _write(run: RunRef, node: str, values: list[int], **meta: object) -> object:
    attempt = new_attempt(run, node)
    write_parquet_table(pa.table({"v": values}), attempt)
    metadata = {"rows": len(values), "node_hash": "h", "input_hashes": {}, **meta}
    return commit_attempt(run, node, attempt, metadata)


def test_a_reader_trusts_only_a_marker(root):
    run = RunRef(root, "p", COB, "r1")
    attempt = new_attempt(run, "n")  # a killed write: data, metadata, no marker
    write_parquet_table(pa.table({"v": [9]}), attempt)
    assert not run.is_complete("n")
    with pytest.raises(StorageError, match="no complete output 'n'"):
        read_node(run, "n")
    _write(run, "n", [1, 2])
    assert read_node(run, "n").column("v").to_pylist() == [1, 2]
    assert attempt.exists()  # (left for gc; never read)


def test_a_retry_keeps_the_first_commit(root):
    run = RunRef(root, "p", COB, "r1")
    first = _write(run, "n", [1, 2])
    assert _write(run, "n", [1, 2, 3]) == first  # same hashes: the committed output stands
    assert read_node(run, "n").column("v").to_pylist() == [1, 2]
    with pytest.raises(StorageError, match="start a new run"):
        _write(run, "n", [5], node_hash="changed")
    attempts = [p.name for p in run.node_root("n").iterdir()]
    assert sorted(attempts) == ["_SUCCESS", first.name]  # type: ignore[attr-defined]


def test_latest_moves_by_compare_and_swap(root):
    a, b, c = (RunRef(root, "p", COB, r) for r in ("a", "b", "c"))
    publish_run(a, {"x": 1})
    assert latest_run(root, "p", COB).run_id == "a"
    seen = read_latest(b)  # b starts publishing, then c moves _LATEST meanwhile
    publish_run(c, {"x": 3})
    with pytest.raises(StorageError, match="moved from a to c"):
        move_latest(b, {"x": 2}, seen)
    assert latest_run(root, "p", COB).run_id == "c"
    assert json.loads((c.cob_dir / "_LATEST").read_bytes())["run_id"] == "c"
    assert (c.run_dir / RUN_SUCCESS_FILE).exists()


def test_reuse_by_reference_reads_the_base_rows(root):
    base = RunRef(root, "p", COB, "base")
    data = _write(base, "n", [4, 5, 6])
    run = RunRef(root, "p", COB, "next")
    commit_attempt(run, "n", new_attempt(run, "n"), {"rows": 3, "reused_from": "base"}, data)
    assert run.node_dir("n") == data
    assert read_node(run, "n").column("v").to_pylist() == [4, 5, 6]
    assert run.metadata("n")["reused_from"] == "base"
    # the base run's own marker and reports may go: the reference names its data
    (base.node_root("n") / "_SUCCESS").unlink()
    assert read_node(run, "n").column("v").to_pylist() == [4, 5, 6]
    marker = json.loads((run.node_root("n") / "_SUCCESS").read_bytes())
    assert marker["data"] == f"p/cob={COB}/run=base/n/{data.name}"  # type: ignore[attr-defined]


_KILLED_WRITER = """
import sys
import pyarrow as pa
from regflow.runtime.parquet import write_parquet_table
from regflow.storage import RunRef, commit_attempt, new_attempt, resolve_root

run = RunRef(resolve_root(sys.argv[1]), "p", "2026-03-31", "r1")
attempt = new_attempt(run, "n")
write_parquet_table(pa.table({"v": list(range(100))}), attempt)
commit_attempt(run, "n", attempt, {"rows": 100, "node_hash": "h", "input_hashes": {}})
print("committed")
"""


def test_a_kill_before_the_marker_leaves_nothing_committed(root):
    url = str(root)
    env = {**os.environ, "REGFLOW_FAULT": "commit:n@kill"}
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, url], env=env, capture_output=True, text=True
    )
    assert killed.returncode == -9, killed.stderr  # SIGKILL, between metadata and marker
    run = RunRef(root, "p", COB, "r1")
    left = [p for p in run.node_root("n").iterdir()]
    assert [p.name.split("=")[0] for p in left] == ["attempt"]  # data and metadata only
    assert (left[0] / "_regflow.json").exists() and fs.glob(left[0], "*.parquet")
    assert not run.is_complete("n")
    with pytest.raises(StorageError):
        read_node(run, "n")
    env.pop("REGFLOW_FAULT")
    rerun = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, url], env=env, capture_output=True, text=True
    )
    assert rerun.returncode == 0 and "committed" in rerun.stdout, rerun.stderr
    assert read_node(run, "n").column("v").to_pylist() == list(range(100))
    assert run.node_dir("n") != left[0]  # the rerun's own attempt, not the killed one


def test_local_and_s3_share_one_layout(tmp_path, s3_server):
    """The same writes give the same keys on both backends (local storage exercises the
    protocol S3 uses)."""
    local = tmp_path / "s"
    remote = S3Path(s3_server.new_bucket(), "s")
    names = []
    for root in (local, remote):
        run = RunRef(root, "p", COB, "r1")
        _write(run, "n", [1])
        publish_run(run, {"x": 1})
        names.append(
            sorted(
                p.name if "attempt=" not in p.name else "attempt=*"
                for d in (run.run_dir, run.node_root("n"), run.cob_dir)
                for p in d.iterdir()
            )
        )
    assert names[0] == names[1]
    assert isinstance(local, Path)


def test_the_claim_is_created_refused_taken_over_and_released_on_both(root):
    from regflow.errors import ConcurrentRunError
    from regflow.storage import claim

    a, b, c = (RunRef(root, "p", COB, r) for r in ("a", "b", "c"))
    said: list[str] = []
    assert claim.acquire(a, in_task=False, log=said.append)["run_id"] == "a"
    with pytest.raises(ConcurrentRunError, match="run a of this cob is active"):
        claim.acquire(b, in_task=False)
    assert claim.holds(a) and not claim.release(b) and claim.release(a)
    assert not (root / "p" / f"cob={COB}" / "_ACTIVE").exists()
    # a dead holder's claim (a heartbeat long past, another host) is taken over, once
    dead = {
        "run_id": "b",
        "host": "elsewhere",
        "pid": None,
        "heartbeat": "2020-01-01T00:00:00+00:00",
    }
    fs.put_if_absent(claim.claim_path(b), json.dumps(dead).encode())
    took = claim.acquire(c, in_task=False, log=said.append)
    assert took["taken_over_from"] == "b" and claim.holds(c)
    assert said and "taking over the claim of run b" in said[-1]
    with pytest.raises(ConcurrentRunError, match="run c of this cob is active"):
        claim.acquire(a, in_task=False)


def test_a_missing_bucket_is_a_clear_storage_error(s3_server) -> None:
    """An S3 request that fails for another reason than its condition (here: no such
    bucket) is a StorageError naming the object and the fix, never a raw botocore error."""
    from regflow.errors import StorageError
    from regflow.storage import latest_run, resolve_root
    from regflow.storage.fs import put_if_absent

    root = resolve_root("s3://regflow-no-such-bucket/storage")
    with pytest.raises(StorageError, match=r"NoSuchBucket.*create the bucket"):
        put_if_absent(root / "x" / "_SUCCESS", b"{}")
    with pytest.raises(StorageError, match="s3://regflow-no-such-bucket/"):
        latest_run(root, "lcr", "2026-03-31")


def test_an_output_in_the_layout_before_attempts_stays_readable(tmp_path) -> None:
    """Storage written before the attempt protocol (data and ``_regflow.json`` in the node's
    folder, an empty ``_SUCCESS``) reads as committed: an upgrade keeps old runs readable,
    exportable and reusable (the demo's second run reads the first one's metadata)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from regflow.storage import RunRef, read_node

    run = RunRef(tmp_path, "lcr", "2026-03-31", "old")
    node = run.node_root("weigh")
    node.mkdir(parents=True)
    pq.write_table(pa.table({"deal_id": ["d1", "d2"], "amount": [1, 2]}), node / "part-0.parquet")
    (node / "_regflow.json").write_text(json.dumps({"rows": 2, "node_hash": "h"}))
    (node / "_SUCCESS").write_text("")

    assert run.is_complete("weigh")
    assert run.node_dir("weigh") == node
    assert run.metadata("weigh") == {"rows": 2, "node_hash": "h"}
    assert read_node(run, "weigh").to_pydict() == {"deal_id": ["d1", "d2"], "amount": [1, 2]}
