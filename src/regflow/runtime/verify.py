"""Verification of what a stage computes: the plan's schema, custom ops' lineage ids, and
unique lineage ids in everything it persists (naming where duplicates first appear).

Checks of written data run on the driver (:mod:`regflow.runtime.driver.checks`) when the
execution policy allows, else by Spark jobs; both give the same answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regflow.errors import LineageError
from regflow.ops import registry
from regflow.plan.model import Plan, PlanNode, Stage
from regflow.runtime.driver.checks import (
    not_rollup_totals,
    stored_duplicate_ids,
    stored_foreign_ids,
    stored_lineage_ids,
)
from regflow.runtime.lineage import duplicate_ids, foreign_ids, rollup_lineage_id
from regflow.runtime.parquet import parquet_files, parquet_rows
from regflow.runtime.persist import StoredFrames
from regflow.runtime.policy import Declined, ExecutionPolicy
from regflow.runtime.sources import duplicate_keys, duplicate_keys_error
from regflow.spec.models import LINEAGE_COLUMN
from regflow.storage import RunRef
from regflow.storage.fs import Location, S3Path, spark_uri

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

# lineage id types the driver reads and compares exactly as Spark does
_LOCAL_ID_TYPES = frozenset({"long", "integer", "short", "byte", "string"})


class Verifier:
    """The checks of one stage's run. ``frames``: the stage's frames so far (the runner's,
    read to find where duplicates first appear); ``note``: reports which engine checked."""

    def __init__(
        self,
        plan: Plan,
        stage: Stage,
        run: RunRef,
        spark: SparkSession,
        policy: ExecutionPolicy,
        frames: Mapping[str, DataFrame],
        stored: StoredFrames,
        note: Callable[[str, Declined | None], None],
    ):
        self.plan, self.stage, self.run, self.spark = plan, stage, run, spark
        self.policy, self.frames, self.stored, self.note = policy, frames, stored, note

    def _kw(self) -> dict[str, str]:
        return {"pipeline": self.plan.pipeline, "cob": self.run.cob}

    def check_schema(self, node: PlanNode, out: DataFrame) -> None:
        if not node.schema.known:
            return
        missing = [c for c in node.schema.names if c not in out.columns]
        if missing:
            raise LineageError(
                f"output lacks column(s) {', '.join(missing)} that the plan expects "
                f"(the op's schema rule and its function disagree)",
                node=node.id,
                **self._kw(),
            )

    # ------------------------------------------------------------------ custom ops
    def custom(
        self, node: PlanNode, inp: DataFrame, out: DataFrame
    ) -> Callable[[Location, int], None] | None:
        """A custom row-wise op must not invent, replace or duplicate lineage ids.

        When the output is persisted and the input is stored data (or rows computed on the
        driver), the check is returned to run on the written files before they are
        promoted (pyarrow: no Spark job); else it runs now, with Spark.
        """
        input_dir = self.stored.paths.get(node.inputs[0])
        local = self.stored.local_ids.get(node.inputs[0])
        if node.persisted and local is not None:
            return lambda written, rows: self._custom_written(node, local, written, rows)
        if node.persisted and input_dir is not None:
            return lambda written, rows: self._custom_written(node, input_dir, written, rows)
        self._custom_spark(node, inp, out)
        return None

    def _custom_written(
        self, node: PlanNode, input_ids: Location | Any, written: Location, rows: int
    ) -> None:
        """:meth:`custom` on the written output and the input's lineage ids: the stored
        input's folder, or the ids of an input computed on the driver."""
        step = f"check the ids of {node.id}"
        if isinstance(input_ids, (Path, S3Path)):
            input_dir = input_ids
            why = self.policy.decline("check_max_rows", max(rows, parquet_rows(input_dir)))
            if why is not None:
                self.note(step, why)
                inp = self.spark.read.parquet(spark_uri(input_dir))
                self._custom_spark(node, inp, self.spark.read.parquet(spark_uri(written)))
                return
            input_ids = stored_lineage_ids(parquet_files(input_dir))
        self.note(step, None)
        out_ids = stored_lineage_ids(parquet_files(written))
        foreign = stored_foreign_ids(out_ids, input_ids)
        bad = out_ids.filter(foreign).to_pylist()
        if bad and node.lineage == "rollup":
            ckpt = parquet_files(self.run.node_dir(f"{node.id}.lineage"))
            bad = not_rollup_totals(parquet_files(written), ckpt, _rollup_by(node), foreign)
        if bad:
            self._raise_foreign(node, bad)
        dups = stored_duplicate_ids(parquet_files(written))
        if dups:
            self._raise_custom_duplicates(node, dups)

    def _custom_spark(self, node: PlanNode, inp: DataFrame, out: DataFrame) -> None:
        new = out
        if node.lineage == "rollup":
            by = _rollup_by(node)
            new = out.where(out[LINEAGE_COLUMN] != rollup_lineage_id(node.id, by))
        bad = foreign_ids(new, inp)
        if bad:
            self._raise_foreign(node, bad)
        dups = duplicate_ids(out)
        if dups:
            self._raise_custom_duplicates(node, dups)

    def _raise_foreign(self, node: PlanNode, bad: list[Any]) -> None:
        raise LineageError(
            f"operator '{node.op}' returned rows whose lineage ids are not in its input "
            f"(e.g. {bad[0]}); it must carry '{LINEAGE_COLUMN}' through unchanged",
            node=node.id,
            **self._kw(),
        )

    def _raise_custom_duplicates(self, node: PlanNode, dups: list[Any]) -> None:
        self._raise_source_duplicates()  # repeated source keys are not the operator's doing
        raise LineageError(
            f"operator '{node.op}' duplicated rows: lineage id {dups[0]} occurs more than "
            "once. Row-wise operators must return each input row at most once.",
            node=node.id,
            **self._kw(),
        )

    # ------------------------------------------------------------------ unique ids
    def check_unique(
        self, node: PlanNode, name: str, written: Location, rows: int, schema: StructType
    ) -> None:
        """Fail if a lineage id occurs more than once in the just-written data, naming
        where the duplicates first appear.

        Read back with pyarrow (no Spark job: milliseconds for small outputs, well under a
        second for a million rows); outputs too large for the driver are checked by Spark.
        """
        id_type = schema[LINEAGE_COLUMN].dataType.typeName()
        why = (
            Declined(f"lineage ids of type {id_type}")
            if id_type not in _LOCAL_ID_TYPES
            else self.policy.decline("check_max_rows", rows)
        )
        self.note(f"check the ids of {name}", why)
        if why is None:
            dups = stored_duplicate_ids(parquet_files(written))
        else:
            dups = duplicate_ids(self.spark.read.schema(schema).parquet(spark_uri(written)))
        if dups:
            self._raise_duplicates(node, dups)

    def _raise_source_duplicates(self) -> None:
        """Fail naming the keys, if a source this stage read holds a primary key twice."""
        for name in self.stage.sources:
            if name in self.frames and duplicate_ids(self.frames[name], 1):
                src = self.plan.source(name)
                keys = duplicate_keys(self.frames[name], src)
                raise duplicate_keys_error(
                    src, keys or [("(keys that hash alike)", 2)], **self._kw()
                )

    def _raise_duplicates(self, node: PlanNode, dups: list[int]) -> None:
        """Find where duplicates first appear: a source with repeated keys, or a node."""
        self._raise_source_duplicates()
        for nid in self.stage.nodes:
            if nid in self.frames and duplicate_ids(self.frames[nid], 1):
                raise LineageError(
                    f"node '{nid}' duplicates rows: lineage id {dups[0]} occurs more than once",
                    node=nid,
                    **self._kw(),
                )
        raise LineageError(
            f"duplicate lineage ids in the output of '{node.id}' (e.g. {dups[0]})",
            node=node.id,
            **self._kw(),
        )


def _rollup_by(node: PlanNode) -> list[str]:
    """A rollup op's ``rollup_by``, defaults included (as its checkpoint was written)."""
    params = registry.get(node.op).params.model_validate(node.params)
    return list(getattr(params, "rollup_by", []) or [])
