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

The age of a folder is that of the newest file in it (on S3, which has no folders: the
newest object under the prefix), so a run still writing is young. An output another run
reused is referred to by that run's marker (:mod:`regflow.runtime.reuse`): data a kept run
refers to is never removed; of a removed run it stays, and only its other files go.

One code path for local and ``s3://`` storage: the plan is made from one listing of the
root (:func:`regflow.storage.fs.list_all`: a walk, or one paginated ``ListObjectsV2``), then
fresh reads of each cob's ``_LATEST`` and ``_ACTIVE`` and of the markers it needs. On S3,
:func:`collect` deletes the objects listed when planning (``DeleteObjects``, 1,000 a
request), and incomplete multipart uploads (a killed S3A committer's) older than ``grace``,
outside the active runs, are aborted and reported like removals.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from regflow.storage import ATTEMPT_PREFIX, LATEST_FILE, RUN_SUCCESS_FILE, SUCCESS_FILE, fs
from regflow.storage.claim import ACTIVE_FILE
from regflow.storage.fs import Location, S3Path

_TEMP = re.compile(r"^\..+\.(tmp|old)-[0-9a-f]+$")
_ATTEMPT = re.compile(rf"^{re.escape(ATTEMPT_PREFIX)}")


@dataclass(frozen=True)
class Removal:
    path: Location
    reason: str
    bytes: int  # what removing it frees (files shared by hard link with kept ones: not counted)
    # on S3: the objects to delete (listed when planning), or the upload to abort
    keys: tuple[str, ...] = field(default=(), repr=False, compare=False)
    upload: fs.Upload | None = field(default=None, repr=False, compare=False)


@dataclass
class GcReport:
    removals: list[Removal] = field(default_factory=list)
    kept: list[tuple[Location, str]] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.removals)


@dataclass(eq=False)
class _Node:
    """A file or folder (locally), an object or prefix (S3), from one listing
    (:func:`regflow.storage.fs.list_all`)."""

    path: Location
    rel: str
    entry: fs.Entry | None = None  # None: a prefix with no object (or folder) of its own
    children: dict[str, _Node] = field(default_factory=dict)
    _newest: float | None = None

    @property
    def name(self) -> str:
        return self.rel.rsplit("/", 1)[-1]

    def is_dir(self) -> bool:
        return bool(self.children) or (self.entry is not None and self.entry.folder)

    def child(self, name: str) -> _Node | None:
        return self.children.get(name)

    def dirs(self, prefix: str) -> list[_Node]:
        """The sub-folders whose name starts with ``prefix``, by name."""
        return [c for n, c in sorted(self.children.items()) if n.startswith(prefix) and c.is_dir()]

    def newest(self) -> float:
        """The age of a folder is that of its newest file (S3: its newest object)."""
        if self._newest is None:
            times = [c.newest() for c in self.children.values()]
            if self.entry is not None:
                times.append(self.entry.mtime)
            self._newest = max(times, default=0.0)
        return self._newest

    def entries(self) -> Iterator[fs.Entry]:
        """Every file or object here and below (not folders)."""
        if self.entry is not None and not self.entry.folder:
            yield self.entry
        for c in self.children.values():
            yield from c.entries()

    def keys(self) -> Iterator[str]:
        """On S3: every object key here and below (folder markers too)."""
        if self.entry is not None and self.entry.key:
            yield self.entry.key
        for c in self.children.values():
            yield from c.keys()


def _tree(root: Location, pipeline: str | None) -> _Node:
    """``root`` (only ``root/pipeline`` if given) from one listing."""
    top = _Node(root, "")
    base = f"{pipeline}/" if pipeline else ""
    for e in fs.list_all(root / pipeline if pipeline else root):
        node = top
        for part in f"{base}{e.rel}".split("/"):
            if not part:
                continue
            nxt = node.children.get(part)
            if nxt is None:
                rel = f"{node.rel}/{part}" if node.rel else part
                nxt = node.children[part] = _Node(root / rel, rel)
            node = nxt
        if node.entry is None or not e.folder:  # (an object and a folder marker: the object)
            node.entry = e
    return top


def _read_run_id(path: Location) -> str | None:
    try:
        return str(json.loads(path.read_text())["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _under(rel: str, parent: str) -> bool:
    return rel.startswith(f"{parent}/")


def plan_gc(
    root: Location,
    *,
    pipeline: str | None = None,
    keep_runs: int = 1,
    keep_cobs: int | None = None,
    grace_seconds: float = 24 * 3600,
    now: float | None = None,
) -> GcReport:
    """What :func:`collect` would remove under ``root`` (nothing is changed): one listing of
    ``root`` (or ``root/pipeline``), then reads of the cobs' ``_LATEST`` and ``_ACTIVE`` and
    of the markers of the kept runs and of the nodes with attempts."""
    now = time.time() if now is None else now
    tree = _tree(root, pipeline)
    report = GcReport()
    chosen: list[tuple[_Node, str]] = []
    protected: set[str] = set()  # data a kept run refers to (root-relative)
    active_runs: set[str] = set()
    markers: dict[str, dict[str, object] | None] = {}  # a node's marker, read once
    if pipeline:
        top = tree.child(pipeline)
        pipelines = [top] if top is not None else []
    else:
        pipelines = tree.dirs("")
    for pdir in pipelines:
        if not pdir.is_dir() or pdir.name.startswith("."):
            continue
        cobs = list(reversed(pdir.dirs("cob=")))
        published_cobs = [c for c in cobs if any(r.child(RUN_SUCCESS_FILE) for r in c.dirs("run="))]
        recent = set(published_cobs if keep_cobs is None else published_cobs[:keep_cobs])
        for cob_dir in cobs:
            # read now, not from the listing: a run that claimed or published since is kept
            latest = _read_run_id(cob_dir.path / LATEST_FILE)
            active = _read_run_id(cob_dir.path / ACTIVE_FILE)
            if active is not None:
                active_runs.add(f"{cob_dir.rel}/run={active}")
            superseded: list[tuple[float, str, _Node]] = []
            for run_dir in cob_dir.dirs("run="):
                run_id = run_dir.name.removeprefix("run=")
                if run_id == latest:
                    report.kept.append((run_dir.path, "the cob's _LATEST"))
                    continue
                if run_id == active:
                    report.kept.append((run_dir.path, "holds the cob's claim (_ACTIVE)"))
                    continue
                marker = run_dir.child(RUN_SUCCESS_FILE)
                if marker is not None:
                    superseded.append((marker.newest(), run_dir.rel, run_dir))
                    continue
                age = now - run_dir.newest()
                if age > grace_seconds:
                    chosen.append((run_dir, f"unpublished run (failed or killed), {_age(age)} old"))
                else:
                    report.kept.append((run_dir.path, "unpublished, within the grace period"))
            superseded.sort(key=lambda t: (t[0], t[1]), reverse=True)
            keep = keep_runs if cob_dir in recent else 0
            for i, (_, _, run_dir) in enumerate(superseded):
                if i < keep:
                    report.kept.append(
                        (run_dir.path, "superseded published run within --keep-runs")
                    )
                else:
                    why = "within --keep-runs" if cob_dir in recent else "beyond --keep-cobs"
                    chosen.append((run_dir, f"superseded published run, not {why}"))
            # data a kept run of the cob refers to (a reused output) outlives its own run
            gone = {id(n) for n, _ in chosen}
            kept_runs = [d for d in cob_dir.dirs("run=") if id(d) not in gone]
            referenced = _referenced(kept_runs, markers)
            protected |= referenced
            chosen = [
                (part, why)
                for node, why in chosen
                for part in (_removable(node, referenced) if id(node) in gone else [node])
            ]
        # leftovers of killed writes, anywhere under the pipeline but the active runs
        taken = {n.rel for n, _ in chosen}
        todo = [pdir]
        while todo:
            here = todo.pop()
            if here.rel in taken or here.rel in active_runs:
                continue
            for name, child in sorted(here.children.items()):
                if not _TEMP.match(name) and not (
                    child.is_dir() and _unmarked(here, name, markers)
                ):
                    continue
                if child.rel in protected or child.rel in taken:  # (taken: a removed run's part)
                    continue
                age = now - child.newest()
                if age > grace_seconds:
                    chosen.append((child, f"leftover temporary write, {_age(age)} old"))
            todo += [
                c
                for n, c in sorted(here.children.items(), reverse=True)
                if c.is_dir()
                and not _TEMP.match(n)
                and not _ATTEMPT.match(n)
                and c.rel not in taken
            ]
    freed = _freed([n for n, _ in chosen])
    report.removals = [
        Removal(n.path, why, freed[i], keys=tuple(n.keys())) for i, (n, why) in enumerate(chosen)
    ]
    # incomplete multipart uploads (S3: a killed Spark job's S3A committer leaves them)
    scope = root / pipeline if pipeline else root
    for up in fs.pending_uploads(scope):
        rel = up.key[len(_key(root)) :].lstrip("/") if _key(root) else up.key
        if any(rel == a or _under(rel, a) for a in active_runs):
            continue
        age = now - up.initiated
        if age > grace_seconds:
            report.removals.append(
                Removal(
                    root / rel,
                    f"incomplete multipart upload {up.upload_id[:16]}, {_age(age)} old",
                    up.size,
                    upload=up,
                )
            )
    return report


def _key(root: Location) -> str:
    return root.key if isinstance(root, S3Path) else ""


def _freed(nodes: list[_Node]) -> list[int]:
    """Bytes each removal frees: a local file's bytes count only when every hard link to it
    goes (S3 has no hard links: an object's size)."""

    def ident(e: fs.Entry) -> object:  # (a local file's inode, an S3 object's key)
        return e.link[:2] if e.link else e.key or id(e)

    links: dict[object, int] = {}
    for n in nodes:
        for e in n.entries():
            links[ident(e)] = links.get(ident(e), 0) + 1
    counted: set[object] = set()
    out = []
    for n in nodes:
        total = 0
        for e in n.entries():
            nlink = e.link[2] if e.link else 1
            if links[ident(e)] >= nlink and ident(e) not in counted:
                counted.add(ident(e))
                total += e.size
        out.append(total)
    return out


def _marker(
    node_dir: _Node, cache: dict[str, dict[str, object] | None]
) -> dict[str, object] | None:
    """``node_dir``'s ``_SUCCESS``, read once (None: none, or unreadable)."""
    if node_dir.rel not in cache:
        try:
            cache[node_dir.rel] = dict(json.loads((node_dir.path / SUCCESS_FILE).read_text()))
        except FileNotFoundError:
            cache[node_dir.rel] = None
        except (OSError, ValueError, TypeError):
            cache[node_dir.rel] = {}  # (unreadable, or the layout before attempts)
    return cache[node_dir.rel]


def _referenced(runs: list[_Node], cache: dict[str, dict[str, object] | None]) -> set[str]:
    """The data prefixes (root-relative) the committed outputs of ``runs`` name (their own,
    or a reused run's)."""
    out: set[str] = set()
    for run_dir in runs:
        for node_dir in run_dir.children.values():
            if node_dir.child(SUCCESS_FILE) is None:
                continue
            marker = _marker(node_dir, cache)
            if marker and "data" in marker:
                out.add(str(marker["data"]).strip("/"))
    return out


def _removable(node: _Node, referenced: set[str]) -> list[_Node]:
    """``node``, or, when it holds data in ``referenced``, everything in it but that data."""
    if node.rel in referenced:
        return []
    if not any(_under(r, node.rel) for r in referenced):
        return [node]
    return [p for _, c in sorted(node.children.items()) for p in _removable(c, referenced)]


def _unmarked(node_dir: _Node, name: str, cache: dict[str, dict[str, object] | None]) -> bool:
    """Whether ``node_dir/name`` is an attempt its node's marker does not name."""
    if not _ATTEMPT.match(name):
        return False
    marker = _marker(node_dir, cache)
    if marker is None:
        return True
    return "attempt" in marker and str(marker["attempt"]) != name


def collect(report: GcReport) -> None:
    """Remove what ``report`` lists: locally the files and folders; on S3 the objects listed
    when planning (``DeleteObjects``, 1,000 a request; an object written since stays for the
    next gc) and the incomplete multipart uploads (``AbortMultipartUpload``)."""
    by_bucket: dict[str, list[str]] = {}
    for r in report.removals:
        if isinstance(r.path, Path):
            if r.path.is_dir() and not r.path.is_symlink():
                shutil.rmtree(r.path)
            else:
                r.path.unlink(missing_ok=True)
        elif r.upload is None:
            by_bucket.setdefault(r.path.bucket, []).extend(r.keys)
    for bucket, keys in by_bucket.items():
        fs.delete_keys(bucket, keys)
    for r in report.removals:
        if isinstance(r.path, S3Path) and r.upload is not None:
            fs.abort_upload(r.path.bucket, r.upload)


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
