"""The storage layout: ``{root}/{pipeline}/cob={cob}/run={run_id}/{node}/``, on a local folder
or an S3 prefix (:mod:`regflow.storage.fs`, the one filesystem abstraction).

The commit protocol needs no rename and no hard link (S3 has neither; docs/storage.md):
each write of a node goes to a new, immutable attempt prefix ``{node}/attempt=<id>/`` (the
Parquet data and ``_regflow.json``), and the node's marker ``{node}/_SUCCESS``, naming the
attempt, is written last by a conditional put that never overwrites one. A reader trusts
only a marker and reads the attempt it names; an unmarked attempt (a killed write) is
invisible and ``regflow gc`` removes it. A reused output's marker names the base run's data
prefix instead of copying it. Pure Python: the runtime writes the Parquet with Spark, the
CLI reads it with pyarrow.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regflow.errors import ConfigError, StorageError
from regflow.plan.cob import parse_cob
from regflow.storage import fs
from regflow.storage.fs import Location, S3Path

META_FILE = "_regflow.json"
SUCCESS_FILE = "_SUCCESS"
RUN_SUCCESS_FILE = "_RUN_SUCCESS"
LATEST_FILE = "_LATEST"
ATTEMPT_PREFIX = "attempt="
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_run_id(run_id: str) -> str:
    """Airflow run ids contain ':' and '+', which Hadoop paths reject."""
    return _SAFE.sub("_", run_id).strip("_") or "run"


def resolve_root(url: str | None = None, project: Path | None = None) -> Location:
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
    elif raw.startswith("s3://"):
        return S3Path.parse(raw)
    elif "://" in raw:
        raise ConfigError(
            f"storage URL '{raw}' is not supported: use a local path, file:// or"
            " s3://bucket/prefix (docs/storage.md)"
        )
    return Path(raw).expanduser().resolve()


@dataclass(frozen=True)
class RunRef:
    """Where one run of a pipeline for one cob keeps its outputs."""

    root: Location
    pipeline: str
    cob: str
    run_id: str

    @property
    def cob_date(self) -> dt.date:
        """The cob as a date (``cob`` is its ISO text, the storage partition's name)."""
        return parse_cob(self.cob)

    @property
    def cob_dir(self) -> Location:
        return self.root / self.pipeline / f"cob={self.cob}"

    @property
    def run_dir(self) -> Location:
        return self.cob_dir / f"run={self.run_id}"

    def node_root(self, node: str) -> Location:
        """The prefix of ``node``'s attempts and its marker."""
        return self.run_dir / node

    def marker(self, node: str) -> dict[str, Any] | None:
        """``node``'s commit marker (which attempt, where its data is), or None.

        An empty marker is the layout regflow wrote before the attempt protocol (local
        storage only): the data and ``_regflow.json`` in the node's folder itself, promoted
        there by a rename. It reads as committed data in place (``attempt`` empty), so runs
        written before an upgrade stay readable, reusable and exportable."""
        try:
            text = (self.node_root(node) / SUCCESS_FILE).read_text()
        except FileNotFoundError:
            return None
        if not text.strip():
            return {"attempt": "", "data": self.relative(self.node_root(node))}
        return dict(json.loads(text))

    def node_dir(self, node: str) -> Location:
        """The committed data of ``node`` (the attempt its marker names, or the base run's
        data a reused output refers to); StorageError if none is committed."""
        marker = self.marker(node)
        if marker is None:
            raise StorageError(
                f"no committed output '{node}' in run {self.run_id} of {self.pipeline} for cob"
                f" {self.cob} (no marker {self.node_root(node) / SUCCESS_FILE})"
            )
        return self.root / str(marker["data"])

    def stage_report(self, stage: str) -> Location:
        return self.run_dir / "_stages" / f"{stage}.json"

    def is_complete(self, node: str) -> bool:
        return (self.node_root(node) / SUCCESS_FILE).exists()

    def metadata(self, node: str) -> dict[str, Any]:
        marker = self.marker(node)
        if marker is None:
            raise StorageError(f"no complete output for node '{node}' in {self.run_dir}")
        folder = self.node_root(node)
        if marker["attempt"]:  # (empty: the layout before attempts, see marker())
            folder = folder / str(marker["attempt"])
        return dict(json.loads((folder / META_FILE).read_text()))

    def relative(self, path: Location) -> str:
        """``path`` relative to the storage root (what markers record)."""
        return path.relative_to(self.root).as_posix()  # type: ignore[arg-type]


def new_attempt(run: RunRef, node: str) -> Location:
    """A new, unique attempt prefix for a write of ``node`` (nothing is created)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return run.node_root(node) / f"{ATTEMPT_PREFIX}{stamp}-{uuid.uuid4().hex[:12]}"


def commit_attempt(
    run: RunRef,
    node: str,
    attempt: Location,
    metadata: dict[str, Any],
    data: Location | None = None,
) -> Location:
    """Commit ``attempt`` as ``node``'s output: its metadata, then the marker, by a put that
    never overwrites one. ``data``: where the data is when not in ``attempt`` (a reused
    output: the base run's committed data). Returns the committed data's location.

    If the node is already committed (a retry of the same run), the first commit stands: it
    is kept when its node and input hashes equal this attempt's (this attempt is discarded),
    else this raises :class:`StorageError` (start a new run)."""
    from regflow.storage.faults import fault_point

    fault_point(f"data:{node}")  # (the data is in place; no metadata, no marker yet)
    _write_json(attempt / META_FILE, metadata)
    fault_point(f"commit:{node}")
    marker = {"attempt": attempt.name, "data": run.relative(data or attempt)}
    if fs.put_if_absent(run.node_root(node) / SUCCESS_FILE, _json(marker)):
        return data or attempt
    first = run.metadata(node)
    discard(attempt)
    same = ("node_hash", "input_hashes")
    if any(first.get(k) != metadata.get(k) for k in same):
        raise StorageError(
            f"output '{node}' of run {run.run_id} ({run.pipeline}, cob {run.cob}) was already"
            f" committed by an earlier attempt with other node or input hashes; a committed"
            f" output is never replaced: start a new run (a new run id) to recompute it"
        )
    return run.node_dir(node)


def discard(tmp: Location) -> None:
    """Remove an attempt, and locally its node's folder if nothing else is left in it."""
    fs.rmtree(tmp)
    if isinstance(tmp, Path):
        with contextlib.suppress(OSError):
            tmp.parent.rmdir()  # (only if empty)


def discard_uncommitted(run: RunRef, node: str, attempt: Location) -> None:
    """Remove ``attempt`` of ``node`` unless it is the committed one."""
    marker = run.marker(node)
    if marker is None or marker.get("attempt") != attempt.name:
        discard(attempt)


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True, default=str).encode()


def _write_json(path: Location, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_json(data))


def write_json_atomic(path: Location, data: Any) -> None:
    """Write (or replace) a JSON report: locally a temporary file replaced into place, on S3
    a plain put (atomic there). Not for markers: see :func:`put_json_if_absent`."""
    if isinstance(path, S3Path):
        _write_json(path, data)
        return
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_bytes(_json(data))
    os.replace(tmp, path)


def put_json_if_absent(path: Location, data: Any) -> bool:
    return fs.put_if_absent(path, _json(data))


def publish_run(run: RunRef, summary: dict[str, Any]) -> None:
    """Mark a run complete and make it the cob's latest good run."""
    from regflow.storage.commit import mark_success, move_latest, read_latest

    mark_success(run, summary)
    move_latest(run, summary, read_latest(run))


def iter_runs(root: Location, pipeline: str, cob: str) -> Iterator[RunRef]:
    cob_dir = root / pipeline / f"cob={cob}"
    if not cob_dir.is_dir():
        return
    for d in fs.glob(cob_dir, "run=*"):
        yield RunRef(root, pipeline, cob, d.name[len("run=") :])


def latest_run(root: Location, pipeline: str, cob: str) -> RunRef:
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
    return max(done, key=lambda r: fs.mtime(r.run_dir / RUN_SUCCESS_FILE))


def latest_cob(root: Location, pipeline: str) -> str | None:
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

    if not run.is_complete(node):
        raise StorageError(
            f"run {run.run_id} of {run.pipeline} for cob {run.cob} has no complete output "
            f"'{node}' (looked in {run.node_root(node)})"
        )
    path = run.node_dir(node)
    files = fs.glob(path, "*.parquet")
    if not files:
        raise StorageError(f"output '{node}' in {path} has no Parquet files")
    # partitioning=None: the cob=/run= folders of the layout are not data columns
    filesystem = fs.arrow(path)[0]
    dataset = pq.ParquetDataset(
        [fs.arrow(f)[1] for f in files], partitioning=None, filesystem=filesystem
    )
    # An adjusted output's files also keep its rows' audit tags (the metadata's
    # ``audit_tags``): regflow's own columns, not the output's.
    hidden = set(run.metadata(node).get("audit_tags", {}))
    return dataset.read(columns=[c for c in dataset.schema.names if c not in hidden])
