"""Read a plan's sources for one cob, and give every row its lineage id."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regflow.errors import DataError
from regflow.plan.model import PlanSource
from regflow.runtime.lineage import source_lineage_id
from regflow.spec.models import LINEAGE_COLUMN
from regflow.spec.types import Schema

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def spark_type(t: str) -> str:
    """Our type names are Spark DDL names, except ``unknown``."""
    return "string" if t == "unknown" else t


def render_path(template: str, variables: dict[str, Any]) -> str:
    return template.format_map({k: "" if v is None else str(v) for k, v in variables.items()})


def resolve_source_path(src: PlanSource, variables: dict[str, Any]) -> tuple[Path, list[Path]]:
    """Find a source's data for the cob.

    Tries, in order: ``<path>/cob=<cob>/`` (a cob partition), ``<path>`` (a folder or file),
    ``<path>.<format>`` (a single file). Returns the path and the data files behind it.
    """
    base = Path(render_path(src.path, variables))
    cob = variables["cob"]
    candidates = [base / f"cob={cob}", base, base.with_name(f"{base.name}.{src.format}")]
    for cand in candidates:
        if cand.is_dir():
            files = sorted(
                p
                for p in cand.rglob(f"*.{src.format}")
                if not any(part.startswith((".", "_")) for part in p.relative_to(cand).parts)
            )
            if files:
                return cand, files
        elif cand.is_file():
            return cand, [cand]
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(
        f"source '{src.name}': no {src.format} data found (looked for {tried}). "
        "Check the data_root param (--param data_root=DIR) and the cob."
    )


def fingerprint(files: list[Path]) -> str:
    """Content identity of a snapshot: file names, sizes and modification times."""
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def read_source(
    spark: SparkSession, src: PlanSource, variables: dict[str, Any], *, pipeline: str
) -> tuple[DataFrame, dict[str, Any]]:
    """The source as a DataFrame with ``_lineage_id``, plus facts for the run's metadata."""
    from pyspark.sql import functions as F

    cob = str(variables["cob"])
    path, files = resolve_source_path(src, variables)
    declared = Schema(
        tuple(c for c in src.schema.columns if c.name != LINEAGE_COLUMN), known=src.schema.known
    )
    reader = spark.read
    if src.format == "csv":
        opts = {"header": "true", **{k: str(v) for k, v in src.options.items()}}
        reader = reader.options(**opts)
        if declared.known:
            reader = reader.schema(
                ", ".join(f"`{c.name}` {spark_type(c.type)}" for c in declared.columns)
            )
        df = reader.csv(str(path))
    else:
        df = reader.options(**{k: str(v) for k, v in src.options.items()}).parquet(str(path))
    if declared.known:
        missing = [c.name for c in declared.columns if c.name not in df.columns]
        if missing:
            raise DataError(
                f"source '{src.name}' at {path} lacks declared column(s) {', '.join(missing)}; "
                f"it has {', '.join(df.columns)}",
                pipeline=pipeline,
                node=src.name,
                cob=cob,
            )
        # Cast to the declared types (e.g. decimal scale), and keep only declared columns.
        df = df.select(
            *[F.col(c.name).cast(spark_type(c.type)).alias(c.name) for c in declared.columns]
        )
    if src.cob_column:
        df = df.where(F.col(src.cob_column) == F.lit(cob).cast("date"))
    df = df.withColumn(LINEAGE_COLUMN, source_lineage_id(src.name, cob, src.primary_key))
    facts = {"path": str(path), "files": len(files), "fingerprint": fingerprint(files)}
    return df, facts
