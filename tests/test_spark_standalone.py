"""The stage entrypoint against a Spark standalone cluster started here on 127.0.0.1.

A master and two workers (one core, 1 GB each) from pyspark's own ``spark-class``, every
process with its own work and scratch folders: the driver (``python -m
regflow.render.stage_main``, ``REGFLOW_SPARK_MASTER=spark://...``, as the SparkApplication's
driver runs it) runs each LCR stage in turn, and its tasks run in executor processes the
workers start, never in the driver's JVM (a ``spark://`` master has no local executor).
Every stored output must equal, row for row, an in-process run of the same stages.

What it proves: no step relies on running in the driver's process (its memory, its Python
objects, a broadcast or accumulator the executors cannot see) or on the driver's scratch
folders (spill, shuffle, ``spark.local.dir``); the executors' shuffle files are in their
workers' own folders, and what the executors write is read back only through the declared
storage.

What it does not prove: that the storage works across machines. The executors run on this
machine, so they share its filesystem: a write to a path outside the declared storage (the
driver's temp folder, say) would still be visible to the driver here. On separate machines
that only holds for shared storage (S3). Nor anything about Kubernetes pods, or about
executors that are lost mid-stage.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from regflow.demo.data import generate_demo_data
from regflow.plan.compiler import compile_file
from regflow.runtime.executor import run_stage
from regflow.runtime.policy import ExecutionPolicy
from regflow.storage import RunRef, safe_run_id

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
COB = "2026-03-31"
RAW_RUN_ID = "manual__2026-03-31T18:00:00+00:00"
WORKERS = 2


def _spark_class() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "bin" / "spark-class"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _master_state(ui_port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json", timeout=5) as r:
        return json.loads(r.read())


class Cluster:
    """A standalone master and its workers, each a process group of its own."""

    def __init__(self, base: Path):
        self.base = base
        self.procs: list[subprocess.Popen[bytes]] = []
        self.port, self.ui_port = _free_port(), _free_port()
        self.url = f"spark://127.0.0.1:{self.port}"

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = (self.base / f"{name}.log").open("wb")
        self.procs.append(
            subprocess.Popen(
                [str(_spark_class()), *args],
                env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the worker's executors are in its group
            )
        )

    def start(self) -> None:
        master = self.base / "master"
        master.mkdir()
        self._start(
            "master",
            [
                *("org.apache.spark.deploy.master.Master", "--host", "127.0.0.1"),
                *("--port", str(self.port), "--webui-port", str(self.ui_port)),
            ],
            {"SPARK_LOCAL_DIRS": str(master)},
        )
        for i in range(WORKERS):
            work = self.worker_dir(i)
            (work / "local").mkdir(parents=True)
            self._start(
                f"worker{i}",
                [
                    *("org.apache.spark.deploy.worker.Worker", self.url, "--host", "127.0.0.1"),
                    *("--port", str(_free_port()), "--webui-port", str(_free_port())),
                    *("--cores", "1", "--memory", "1g", "--work-dir", str(work / "work")),
                ],
                {"SPARK_WORKER_DIR": str(work / "work"), "SPARK_LOCAL_DIRS": str(work / "local")},
            )
        deadline = time.monotonic() + 90
        while True:
            for p in self.procs:
                if p.poll() is not None:
                    raise AssertionError(f"a cluster process ended: {self.logs()}")
            try:
                alive = [w for w in _master_state(self.ui_port)["workers"] if w["state"] == "ALIVE"]
            except OSError:
                alive = []
            if len(alive) == WORKERS:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the workers did not register: {self.logs()}")
            time.sleep(0.5)

    def worker_dir(self, i: int) -> Path:
        return self.base / f"worker{i}"

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
            for p in sorted(self.base.glob("*.log"))
        )

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    base = tmp_path / "cluster"
    base.mkdir()
    c = Cluster(base)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _rows_digest(path: Path) -> tuple[int, str]:
    """Row count and SHA-256 of an output's rows, in a canonical order (schema included)."""
    table = pq.read_table(path)
    rows = sorted(json.dumps(r, sort_keys=True, default=str) for r in table.to_pylist())
    h = hashlib.sha256(str(table.schema).encode())
    for row in rows:
        h.update(row.encode() + b"\n")
    return table.num_rows, h.hexdigest()


def test_lcr_stages_on_a_standalone_cluster_equal_the_in_process_run(
    project, tmp_path, spark, cluster
) -> None:
    data = tmp_path / "data"
    generate_demo_data(data, cob=dt.date.fromisoformat(COB), deals=2000, entities=3, seed=11)
    spec = project / "pipelines" / "lcr.yaml"
    plan = compile_file(spec)
    stages = [s.id for s in plan.stages]
    assert stages == ["weigh", "entity_buckets", "entity_lcr", "lcr_star"]
    policy = ExecutionPolicy.for_mode("spark")  # every step a Spark job, on the executors

    local = RunRef(tmp_path / "in-process", "lcr", COB, safe_run_id(RAW_RUN_ID))
    want = {}
    for stage in stages:
        report = run_stage(
            plan,
            stage,
            cob=COB,
            run_id=local.run_id,
            root=local.root,
            params={"data_root": str(data)},
            spark=spark,
            log=lambda _m: None,
            policy=policy,
        )
        want.update({o.name: _rows_digest(Path(o.path)) for o in report.outputs})

    storage = tmp_path / "storage"
    driver_tmp = tmp_path / "driver-tmp"  # the driver's scratch, no executor's
    driver_tmp.mkdir()
    env = {
        **os.environ,
        "REGFLOW_SPARK_MASTER": cluster.url,
        "REGFLOW_STORAGE": str(storage),
        "REGFLOW_ENGINE": "spark",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOCAL_DIRS": str(driver_tmp),
        "TMPDIR": str(driver_tmp),
        "PYSPARK_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    got = {}
    for stage in stages:
        proc = subprocess.run(
            [
                *(sys.executable, "-m", "regflow.render.stage_main", "--spec", str(spec)),
                *("--stage", stage, "--cob", COB, "--run-id", RAW_RUN_ID),
                *("--param", f"data_root={data}"),
            ],
            env=env,
            cwd=project,
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:] + cluster.logs()
        assert f"spark master: {cluster.url}" in proc.stderr.splitlines()
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        for o in report["outputs"]:
            assert Path(o["path"]).is_relative_to(storage), o
            got[o["name"]] = _rows_digest(Path(o["path"]))

    assert got == want
    assert got["weigh"][0] == 2000  # every deal, weighed
    # each stage was one application, with an executor on every worker (its own folder)
    apps = {a["name"]: a for a in _master_state(cluster.ui_port)["completedapps"]}
    assert len(_master_state(cluster.ui_port)["completedapps"]) == len(stages), apps
    for i in range(WORKERS):
        work = cluster.worker_dir(i) / "work"
        executors = sorted(work.glob("app-*/*/stderr"))
        assert len(executors) == len(stages), (i, executors)
