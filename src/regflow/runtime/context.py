"""What an operator may know about the run it is part of."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from regflow.runtime.policy import ExecutionPolicy

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@dataclass(frozen=True)
class OpContext:
    pipeline: str
    node: str
    cob: str
    run_id: str
    inputs: tuple[str, ...]
    variables: dict[str, Any] = field(default_factory=dict)
    spark: SparkSession | None = None
    # Per input, at most how many rows it has, when the runtime knows without a Spark job
    # (a stored output's row count, a source's rows from its files); None when unknown.
    input_rows: tuple[int | None, ...] = ()
    # Counts an op takes in the Spark job that computes its rows (``DataFrame.observe``):
    # (what they count, the Observation). The runtime reads them once the stage's outputs
    # are written and reports them (e.g. a partial join's unmatched rows).
    observations: list[tuple[dict[str, Any], Any]] = field(default_factory=list)
    # Which engine did the op's steps the driver engine may take (step, engine, why): the
    # runtime adds them to the stage report's ``engines``
    engines: list[dict[str, str]] = field(default_factory=list)
    # Where the runtime's steps run (the driver engine or Spark, see runtime/policy.py)
    policy: ExecutionPolicy = field(default_factory=ExecutionPolicy)
