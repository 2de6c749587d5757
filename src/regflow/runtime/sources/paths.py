"""Where a source's data is for a cob: its path, its files and its cob partitions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from regflow.errors import DataError
from regflow.plan.model import PlanSource
from regflow.storage.fs import Location, S3Path


def render_path(template: str, variables: dict[str, Any]) -> str:
    return template.format_map({k: "" if v is None else str(v) for k, v in variables.items()})


def source_base(rendered: str, project_dir: Any = None, name: str = "") -> Location:
    """A rendered source path as a location: ``s3://bucket/prefix`` an :class:`S3Path`
    (listed and read through :mod:`regflow.storage.fs`), else a local path (relative to the
    project root ``project_dir`` when relative). ``name``: the source's, for errors."""
    if rendered.startswith("s3://"):
        return S3Path.parse(rendered, f"source '{name}' path" if name else "source path")
    base = Path(rendered)
    if not base.is_absolute() and project_dir:
        base = Path(project_dir) / base
    return base


def resolve_source_path(
    src: PlanSource, variables: dict[str, Any], *, pipeline: str | None = None
) -> tuple[Location, list[Location]]:
    """Find a source's data for the cob.

    A folder with ``cob=YYYY-MM-DD/`` subfolders is partitioned by cob: only
    ``<path>/cob=<cob>/`` is read, and a missing or empty one is no data for the cob (never
    a fallback to the other cobs' files). Otherwise tries ``<path>`` (a folder or file),
    then ``<path>.<format>`` (a single file). Returns the path and the data files behind it:
    none only for an empty cob partition of a source that allows it (``allow_empty``).
    A relative path is relative to the project root (``project_dir``), wherever the process
    runs. A path ``s3://bucket/prefix`` is the same on S3: its partitions and files are
    found by listing the prefix.
    """
    base = source_base(render_path(src.path, variables), variables.get("project_dir"), src.name)
    cob = str(variables["cob"])
    part = base / f"cob={cob}"
    if part.is_dir() or (base.is_dir() and any(p.is_dir() for p in base.glob("cob=*"))):
        files = _data_files(part, src.format) if part.is_dir() else []
        if files or src.allow_empty:
            return part, files
        state = "is empty" if part.is_dir() else "does not exist"
        cobs = [c for c in cob_partitions(base, src.format) if c != cob]
        raise EmptySourceError(src.name, cob, f"{part} {state}", cobs, pipeline=pipeline)
    cands: tuple[Location, ...] = (base, base.with_name(f"{base.name}.{src.format}"))
    for cand in cands:
        if cand.is_dir():
            files = _data_files(cand, src.format)
            if files:
                return cand, files
        elif cand.is_file():
            return cand, [cand]
    tried = ", ".join(str(c) for c in (part, base, base.with_name(f"{base.name}.{src.format}")))
    raise DataError(
        f"source '{src.name}': no {src.format} data found (looked for {tried}). "
        "Check the data_root param (--param data_root=DIR) and the cob.",
        pipeline=pipeline,
        node=src.name,
        cob=cob,
    )


def _data_files(folder: Location, fmt: str) -> list[Location]:
    if isinstance(folder, S3Path):  # every object under the prefix, at any depth
        prefix = f"{folder.key}/" if folder.key else ""
        found: list[Location] = [
            S3Path(folder.bucket, key)
            for key, _, _ in folder.walk_keys()
            if key.endswith(f".{fmt}")
            and not any(part.startswith((".", "_")) for part in key[len(prefix) :].split("/"))
        ]
        return sorted(found, key=str)
    local: list[Location] = []
    local.extend(
        sorted(
            p
            for p in folder.rglob(f"*.{fmt}")
            if not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts)
        )
    )
    return local


def cob_partitions(base: Location, fmt: str) -> list[str]:
    """The cobs of a partitioned source folder that hold data files (``cob=*/``)."""
    if not base.is_dir():
        return []
    return sorted(
        p.name.removeprefix("cob=")
        for p in base.glob("cob=*")
        if p.is_dir() and _data_files(p, fmt)
    )


class EmptySourceError(DataError):
    """A source has no rows for the run's cob (and does not say ``allow_empty: true``)."""

    def __init__(
        self, source: str, cob: str, why: str, cobs: Sequence[str], *, pipeline: str | None
    ):
        self.source, self.cobs = source, list(cobs)
        shown = ", ".join(cobs[-10:]) if cobs else "none"
        more = f" (and {len(cobs) - 10} earlier)" if len(cobs) > 10 else ""
        super().__init__(
            f"source '{source}' has no rows for cob {cob}: {why}; cobs present: {shown}{more}. "
            "Check --cob and the data_root param (--param data_root=DIR), or set "
            "'allow_empty: true' on the source if an empty cob is expected.",
            pipeline=pipeline,
            node=source,
            cob=cob,
        )
