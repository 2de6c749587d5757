"""``regflow gc``: remove what runs leave behind, by a retention policy.

Per pipeline and cob (``{root}/{pipeline}/cob={cob}/``), with ``grace`` an age:

* never removed: the run ``_LATEST`` names (what storage serves), the run holding the cob's
  claim ``_ACTIVE`` (running, or dead and about to be taken over), and anything younger
  than ``grace`` that is not a published run;
* a *superseded* published run (``_RUN_SUCCESS``, not ``_LATEST``'s): the ``keep_runs``
  newest per cob are kept, and only in the ``keep_cobs`` newest cobs with a published run
  (``None``: every cob); the rest are removed;
* an *unpublished* run folder (failed, killed, or abandoned mid-write) older than ``grace``
  is removed;
* an unmarked attempt (``{node}/attempt=<id>/`` that the node's ``_SUCCESS`` does not
  name: a write that was killed, or lost to an earlier commit) and a temporary file
  (``.<name>.tmp-*``) older than ``grace`` are removed, wherever they are under the
  pipeline (not inside the active run).

The age of a folder is that of the newest file in it, so a run still writing is young.
An output another run reused is referred to by that run's marker (:mod:`regflow.runtime.
reuse`): data a kept run refers to is never removed; of a removed run it stays, and only
its other files go.

Local storage only: on ``s3://`` storage gc refuses with a clear error (use an S3
lifecycle rule, docs/storage.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from regflow.errors import ConfigError
from regflow.storage import ATTEMPT_PREFIX, LATEST_FILE, RUN_SUCCESS_FILE, SUCCESS_FILE
from regflow.storage.claim import ACTIVE_FILE
from regflow.storage.fs import Location

_TEMP = re.compile(r"^\..+\.(tmp|old)-[0-9a-f]+$")
_ATTEMPT = re.compile(rf"^{re.escape(ATTEMPT_PREFIX)}")


@dataclass(frozen=True)
class Removal:
    path: Path
    reason: str
    bytes: int  # what removing it frees (files shared by hard link with kept ones: not counted)


@dataclass
class GcReport:
    removals: list[Removal] = field(default_factory=list)
    kept: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.removals)


def _files(path: Path) -> Iterator[Path]:
    if path.is_symlink() or path.is_file():
        yield path
        return
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            yield Path(dirpath) / f


def _newest_mtime(path: Path) -> float:
    newest = path.lstat().st_mtime
    for f in _files(path):
        try:
            newest = max(newest, f.lstat().st_mtime)
        except FileNotFoundError:
            continue
    if path.is_dir():
        for dirpath, _, _ in os.walk(path):
            try:
                newest = max(newest, Path(dirpath).lstat().st_mtime)
            except FileNotFoundError:
                continue
    return newest


def _freed(paths: list[Path]) -> dict[Path, int]:
    """Bytes each removal frees: a file's bytes count only when every hard link to it goes."""
    links: dict[tuple[int, int], int] = {}
    stats: dict[Path, list[tuple[tuple[int, int], int, int]]] = {}
    for p in paths:
        entries = []
        for f in _files(p):
            try:
                st = f.lstat()
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            links[key] = links.get(key, 0) + 1
            entries.append((key, st.st_nlink, st.st_size))
        stats[p] = entries
    counted: set[tuple[int, int]] = set()
    out = {}
    for p, entries in stats.items():
        total = 0
        for key, nlink, size in entries:
            if links[key] >= nlink and key not in counted:
                counted.add(key)
                total += size
        out[p] = total
    return out


def _read_run_id(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text())["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def require_local(root: Location) -> Path:
    """``root``, if local; a :class:`ConfigError` for ``s3://`` storage."""
    if not isinstance(root, Path):
        raise ConfigError(
            f"regflow gc works on local storage only, not {root}: on S3, expire superseded"
            " runs and unmarked attempts with a lifecycle rule (docs/storage.md, 'Garbage"
            " collection on S3')"
        )
    return root


def plan_gc(
    root: Location,
    *,
    pipeline: str | None = None,
    keep_runs: int = 1,
    keep_cobs: int | None = None,
    grace_seconds: float = 24 * 3600,
    now: float | None = None,
) -> GcReport:
    """What :func:`collect` would remove under ``root`` (nothing is changed)."""
    root = require_local(root)
    now = time.time() if now is None else now
    report = GcReport()
    chosen: list[tuple[Path, str]] = []
    protected: set[Path] = set()  # data a kept run refers to
    pipelines = [root / pipeline] if pipeline else sorted(p for p in root.iterdir() if p.is_dir())
    for pdir in pipelines:
        if not pdir.is_dir() or pdir.name.startswith("."):
            continue
        cobs = sorted((d for d in pdir.glob("cob=*") if d.is_dir()), reverse=True)
        published_cobs = [c for c in cobs if any(c.glob(f"run=*/{RUN_SUCCESS_FILE}"))]
        recent = set(published_cobs if keep_cobs is None else published_cobs[:keep_cobs])
        for cob_dir in cobs:
            latest = _read_run_id(cob_dir / LATEST_FILE)
            active = _read_run_id(cob_dir / ACTIVE_FILE)
            superseded: list[tuple[float, Path]] = []
            for run_dir in sorted(cob_dir.glob("run=*")):
                run_id = run_dir.name.removeprefix("run=")
                if run_id == latest:
                    report.kept.append((run_dir, "the cob's _LATEST"))
                    continue
                if run_id == active:
                    report.kept.append((run_dir, "holds the cob's claim (_ACTIVE)"))
                    continue
                marker = run_dir / RUN_SUCCESS_FILE
                if marker.exists():
                    superseded.append((marker.stat().st_mtime, run_dir))
                    continue
                age = now - _newest_mtime(run_dir)
                if age > grace_seconds:
                    chosen.append((run_dir, f"unpublished run (failed or killed), {_age(age)} old"))
                else:
                    report.kept.append((run_dir, "unpublished, within the grace period"))
            superseded.sort(reverse=True)
            keep = keep_runs if cob_dir in recent else 0
            for i, (_, run_dir) in enumerate(superseded):
                if i < keep:
                    report.kept.append((run_dir, "superseded published run within --keep-runs"))
                else:
                    why = "within --keep-runs" if cob_dir in recent else "beyond --keep-cobs"
                    chosen.append((run_dir, f"superseded published run, not {why}"))
            # data a kept run of the cob refers to (a reused output) outlives its own run
            gone = {p for p, _ in chosen}
            referenced = _referenced(root, [d for d in cob_dir.glob("run=*") if d not in gone])
            protected |= referenced
            chosen = [
                (part, why)
                for path, why in chosen
                for part in (_removable(path, referenced) if path in gone else [path])
            ]
        # leftovers of killed writes, anywhere under the pipeline but the active runs
        active_runs = {
            cob_dir / f"run={a}"
            for cob_dir in cobs
            if (a := _read_run_id(cob_dir / ACTIVE_FILE)) is not None
        }
        taken = {p for p, _ in chosen}
        for dirpath, dirs, files in os.walk(pdir):
            here = Path(dirpath)
            if here in taken or here in active_runs:
                dirs[:] = []
                continue
            for name in [*dirs, *files]:
                if not _TEMP.match(name) and not (name in dirs and _unmarked(here, name)):
                    continue
                path = here / name
                if path in protected:
                    continue
                age = now - _newest_mtime(path)
                if age > grace_seconds:
                    chosen.append((path, f"leftover temporary write, {_age(age)} old"))
            dirs[:] = [
                d
                for d in dirs
                if not _TEMP.match(d) and not _ATTEMPT.match(d) and here / d not in taken
            ]
    freed = _freed([p for p, _ in chosen])
    report.removals = [Removal(p, why, freed[p]) for p, why in chosen]
    return report


def _referenced(root: Path, runs: list[Path]) -> set[Path]:
    """The data prefixes the committed outputs of ``runs`` name (their own, or a reused
    run's)."""
    out: set[Path] = set()
    for run_dir in runs:
        for marker in run_dir.glob(f"*/{SUCCESS_FILE}"):
            try:
                out.add(root / str(json.loads(marker.read_text())["data"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return out


def _removable(path: Path, referenced: set[Path]) -> list[Path]:
    """``path``, or, when it holds data in ``referenced``, everything in it but that data."""
    if path in referenced:
        return []
    if not any(path in r.parents for r in referenced):
        return [path]
    return [p for child in sorted(path.iterdir()) for p in _removable(child, referenced)]


def _unmarked(node_dir: Path, name: str) -> bool:
    """Whether ``node_dir/name`` is an attempt its node's marker does not name."""
    if not _ATTEMPT.match(name):
        return False
    try:
        return str(json.loads((node_dir / SUCCESS_FILE).read_text())["attempt"]) != name
    except FileNotFoundError:
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def collect(report: GcReport) -> None:
    """Remove what ``report`` lists."""
    for r in report.removals:
        if r.path.is_dir() and not r.path.is_symlink():
            shutil.rmtree(r.path)
        else:
            r.path.unlink(missing_ok=True)


def parse_age(text: str) -> float:
    """``90s``, ``30m``, ``24h``, ``7d`` (a bare number: hours) in seconds."""
    from regflow.errors import ConfigError

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise ConfigError(f"--grace '{text}' is not an age; use e.g. 30m, 24h or 7d")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 3600}[m.group(2)]
    return float(m.group(1)) * unit


def _age(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 60:.0f}m"


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"
