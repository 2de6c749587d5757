"""The storage layout: ``{root}/{pipeline}/cob={cob}/run={run_id}/{node}/``.

Each node output holds Parquet data, ``_regflow.json`` (rows, keys, schema, hashes, code
version, run identity) and a ``_SUCCESS`` marker written last. Data is written to a
temporary sibling and promoted by an atomic rename, so no reader sees half a write.
Pure Python: the runtime writes the Parquet with Spark, the CLI reads it with pyarrow.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regflow.errors import ConfigError, StorageError
from regflow.plan.cob import parse_cob

META_FILE = "_regflow.json"
SUCCESS_FILE = "_SUCCESS"
RUN_SUCCESS_FILE = "_RUN_SUCCESS"
LATEST_FILE = "_LATEST"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_run_id(run_id: str) -> str:
    """Airflow run ids contain ':' and '+', which Hadoop paths reject."""
    return _SAFE.sub("_", run_id).strip("_") or "run"


def resolve_root(url: str | None = None, project: Path | None = None) -> Path:
    """The storage root from ``--storage``, then ``REGFLOW_STORAGE`` (relative: to the current
    folder), then the default ``.regflow/storage`` of the project root (``project``, else
    :func:`regflow.project.project_root`)."""
    from regflow.project import default_storage, project_root
    from regflow.settings import current

    raw = url or current().storage or ""
    if not raw:
        return default_storage(project or project_root())
    if raw.startswith("file://"):
        raw = raw[len("file://") :]
    elif "://" in raw:
        raise ConfigError(
            f"storage URL '{raw}' is not supported: use a local path or file://; object"
            " storage (s3://) is not built yet (docs/deploy.md, 'What exists, and what does not"
            " yet')"
        )
    return Path(raw).expanduser().resolve()


@dataclass(frozen=True)
class RunRef:
    """Where one run of a pipeline for one cob keeps its outputs."""

    root: Path
    pipeline: str
    cob: str
    run_id: str

    @property
    def cob_date(self) -> dt.date:
        """The cob as a date (``cob`` is its ISO text, the storage partition's name)."""
        return parse_cob(self.cob)

    @property
    def cob_dir(self) -> Path:
        return self.root / self.pipeline / f"cob={self.cob}"

    @property
    def run_dir(self) -> Path:
        return self.cob_dir / f"run={self.run_id}"

    def node_dir(self, node: str) -> Path:
        return self.run_dir / node

    def stage_report(self, stage: str) -> Path:
        return self.run_dir / "_stages" / f"{stage}.json"

    def is_complete(self, node: str) -> bool:
        return (self.node_dir(node) / SUCCESS_FILE).exists()

    def metadata(self, node: str) -> dict[str, Any]:
        path = self.node_dir(node) / META_FILE
        if not (self.node_dir(node) / SUCCESS_FILE).exists():
            raise StorageError(f"no complete output for node '{node}' in {self.run_dir}")
        return json.loads(path.read_text())


def new_temp_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:12]}"


def promote(tmp: Path, final: Path, metadata: dict[str, Any]) -> None:
    """Write metadata and the success marker into ``tmp``, then swap it into place."""
    write_json_atomic(tmp / META_FILE, metadata)
    (tmp / SUCCESS_FILE).write_text("")
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:12]}"
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def discard(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def publish_run(run: RunRef, summary: dict[str, Any]) -> None:
    """Mark a run complete and make it the cob's latest good run."""
    write_json_atomic(run.run_dir / RUN_SUCCESS_FILE, summary)
    write_json_atomic(run.cob_dir / LATEST_FILE, {"run_id": run.run_id, **summary})


def iter_runs(root: Path, pipeline: str, cob: str) -> Iterator[RunRef]:
    cob_dir = root / pipeline / f"cob={cob}"
    if not cob_dir.is_dir():
        return
    for d in sorted(cob_dir.glob("run=*")):
        yield RunRef(root, pipeline, cob, d.name[len("run=") :])


def latest_run(root: Path, pipeline: str, cob: str) -> RunRef:
    """The cob's latest successful run (a failed or running run never shadows a good one)."""
    latest = root / pipeline / f"cob={cob}" / LATEST_FILE
    if latest.exists():
        run_id = json.loads(latest.read_text())["run_id"]
        ref = RunRef(root, pipeline, cob, run_id)
        if (ref.run_dir / RUN_SUCCESS_FILE).exists():
            return ref
    done = [r for r in iter_runs(root, pipeline, cob) if (r.run_dir / RUN_SUCCESS_FILE).exists()]
    if not done:
        raise StorageError(
            f"no successful run of pipeline '{pipeline}' for cob {cob} under {root}; "
            f"run `regflow run {pipeline} --cob {cob}` first"
        )
    return max(done, key=lambda r: (r.run_dir / RUN_SUCCESS_FILE).stat().st_mtime)


def latest_cob(root: Path, pipeline: str) -> str | None:
    """The latest cob of ``pipeline`` under ``root`` with a successful run, or None."""
    cobs = sorted(
        (d.name.removeprefix("cob=") for d in (root / pipeline).glob("cob=*") if d.is_dir()),
        reverse=True,
    )
    for cob in cobs:
        try:
            latest_run(root, pipeline, cob)
        except StorageError:
            continue
        return cob
    return None


def read_node(run: RunRef, node: str) -> Any:
    """A stored node output as a pyarrow Table (no Spark needed)."""
    import pyarrow.parquet as pq

    path = run.node_dir(node)
    if not run.is_complete(node):
        raise StorageError(
            f"run {run.run_id} of {run.pipeline} for cob {run.cob} has no complete output "
            f"'{node}' (looked in {path})"
        )
    files = sorted(path.glob("*.parquet"))
    if not files:
        raise StorageError(f"output '{node}' in {path} has no Parquet files")
    # partitioning=None: the cob=/run= folders of the layout are not data columns
    dataset = pq.ParquetDataset([str(f) for f in files], partitioning=None)
    # An adjusted output's files also keep its rows' audit tags (the metadata's
    # ``audit_tags``): regflow's own columns, not the output's.
    hidden = set(run.metadata(node).get("audit_tags", {}))
    return dataset.read(columns=[c for c in dataset.schema.names if c not in hidden])
