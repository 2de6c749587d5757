"""What a stage reports of its run, and the run's identity as its outputs record it.

:func:`run_identity` is the one source of the run-identity columns: an output's metadata,
an audit's rows, a reused output's restamped audit and the star's fact rows all take them
from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regflow.plan.model import Plan
from regflow.spec.loader import project_dir_of
from regflow.storage import RunRef


@dataclass
class OutputReport:
    name: str
    kind: str  # output | lineage
    rows: int
    seconds: float
    path: str


@dataclass
class StageReport:
    pipeline: str
    stage: str
    cob: str
    run_id: str
    seconds: float = 0.0
    outputs: list[OutputReport] = field(default_factory=list)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    adjustments: list[dict[str, Any]] = field(default_factory=list)
    reused_from: str | None = None  # the run whose outputs the stage took, unchanged
    # partial joins (require_match: false): node -> left, lookup, how, rows, unmatched
    joins: dict[str, dict[str, Any]] = field(default_factory=dict)
    # which engine ran each step the driver engine could take: step, engine, why
    engines: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "pipeline": self.pipeline,
            "stage": self.stage,
            "cob": self.cob,
            "run_id": self.run_id,
            "seconds": round(self.seconds, 3),
            "outputs": [vars(o) for o in self.outputs],
            "sources": self.sources,
            "adjustments": self.adjustments,
        }
        if self.reused_from is not None:
            out["reused_from"] = self.reused_from
        if self.joins:
            out["joins"] = self.joins
        if self.engines:
            out["engines"] = self.engines
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageReport:
        return cls(
            d["pipeline"], d["stage"], d["cob"], d["run_id"], float(d.get("seconds", 0.0)),
            [OutputReport(**o) for o in d.get("outputs", [])],
            dict(d.get("sources") or {}), list(d.get("adjustments") or []), d.get("reused_from"),
            dict(d.get("joins") or {}), list(d.get("engines") or []),
        )  # fmt: skip


def run_identity(plan: Plan, run: RunRef, run_meta: Mapping[str, Any]) -> dict[str, str]:
    """What an output (its metadata, an audit's rows, a fact's rows) says of the run that
    wrote it, beside pipeline and cob: the run id, the spec's hash and the adjustment set's
    hash (the run's, else the plan's)."""
    return {
        "run_id": run.run_id,
        "spec_hash": plan.data_hash,
        "adjustment_set_hash": run_meta.get("adjustment_set_hash", plan.adjustment_set_hash),
    }


def identity_columns(plan: Plan, run: RunRef, run_meta: Mapping[str, Any]) -> dict[str, Any]:
    """The run-identity columns an audit's rows start with: name -> (value, Spark type)."""
    return {
        "pipeline": (plan.pipeline, "string"),
        "cob": (run.cob_date, "date"),
        **{k: (v, "string") for k, v in run_identity(plan, run, run_meta).items()},
    }


def run_variables(plan: Plan, cob: str, params: dict[str, Any] | None) -> dict[str, Any]:
    spec_path = Path(plan.file).resolve()
    merged = {**plan.params, **{k: v for k, v in (params or {}).items() if v is not None}}
    return {
        **merged,
        "cob": cob,
        "spec_dir": str(spec_path.parent),
        "project_dir": str(project_dir_of(spec_path)),
    }
