"""A source's primary keys: null keys fail the read, repeated keys are named."""

from __future__ import annotations

from typing import TYPE_CHECKING

from regflow.errors import DataError
from regflow.plan.model import PlanSource
from regflow.runtime.sources.schema import sql_text
from regflow.runtime.spark_sql import quote_name

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


# ------------------------------------------------------------------ primary keys
# A row's lineage id is a hash of its primary key: a null key gives no id of its own (the hash
# skips nulls), and a repeated key repeats the id. A null key fails the job that reads the row
# (a filter in the read, no extra pass); repeated keys are found when written data holds a
# lineage id twice, and then traced back here (:func:`duplicate_keys`).


def _key_text(src: PlanSource) -> list[str]:
    """SQL pieces (for concat) spelling a row's primary key as ``k1=v1, k2=v2``."""
    out: list[str] = []
    for i, k in enumerate(src.primary_key):
        out.append(sql_text(f"{', ' if i else ''}{k}="))
        out.append(f"coalesce(CAST({quote_name(k)} AS STRING), 'null')")
    return out


def require_keys(df: DataFrame, src: PlanSource) -> DataFrame:
    """``df``, failing the job that reads a row whose primary key has a null."""
    if not src.primary_key:
        return df
    null = " OR ".join(f"{quote_name(k)} IS NULL" for k in src.primary_key)
    message = ", ".join(
        [
            sql_text(
                f"[regflow:node={src.name}] source '{src.name}' has a row with a null primary "
                f"key ({', '.join(src.primary_key)}): "
            ),
            *_key_text(src),
            sql_text(
                ". Every row needs its key, which is its lineage id: fill it in the source "
                "data, or fix the declared primary_key"
            ),
        ]
    )
    return df.where(f"CASE WHEN {null} THEN raise_error(concat({message})) ELSE true END")


def duplicate_keys(df: DataFrame, src: PlanSource, limit: int = 5) -> list[tuple[str, int]]:
    """Up to ``limit`` primary keys the source ``df`` holds more than once, spelled
    ``k1=v1, k2=v2``, with how many rows have each (a Spark job: only on the way to
    failing)."""
    key = ", ".join(_key_text(src))
    rows = (
        df.groupBy(*src.primary_key)
        .count()
        .where("count > 1")
        .orderBy(*src.primary_key)
        .limit(limit)
        .selectExpr(f"concat({key}) AS k", "count")
        .collect()
    )
    return [(r["k"], int(r["count"])) for r in rows]


def duplicate_keys_error(
    src: PlanSource, dups: list[tuple[str, int]], *, pipeline: str, cob: str
) -> DataError:
    shown = "; ".join(f"{k} ({n} rows)" for k, n in dups)
    return DataError(
        f"source '{src.name}' has duplicate primary keys ({', '.join(src.primary_key)}): "
        f"{shown}{' ...' if len(dups) >= 5 else ''}. Each row's key is its lineage id and must "
        "be unique: de-duplicate the source data, or fix the declared primary_key",
        pipeline=pipeline,
        node=src.name,
        cob=cob,
    )
