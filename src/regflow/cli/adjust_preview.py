"""The impact preview of ``regflow adjustments check``.

The preview recomputes, for the cob's latest successful run, only the stages the run's reuse
rule (``storage/reuse.py``) cannot take from it (reusing every other stored output), then
compares the pipeline's final outputs before and after.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from regflow.adjust.loader import LoadedRule
from regflow.errors import StorageError
from regflow.plan.splice import spliced_at
from regflow.spec.models import LINEAGE_COLUMN
from regflow.storage.fs import Location


def preview(
    spec: Path,
    project: Path,
    rules: list[LoadedRule],
    cob: str,
    storage: Location,
    log: Any = print,
) -> dict[str, Any]:
    """Recompute what the rules change for ``cob`` and compare the final outputs."""
    from regflow.adjust.models import AdjustmentRule
    from regflow.core.yamlpos import SourceMap
    from regflow.plan.build import build_plan_with_rules
    from regflow.plan.compiler import compile_file
    from regflow.runtime.executor import run_stage, run_variables
    from regflow.runtime.policy import deployment_policy
    from regflow.runtime.sources import fingerprint, resolve_source_path
    from regflow.storage import RUN_SUCCESS_FILE, RunRef, latest_run
    from regflow.storage.reuse import reusable_stages

    pipeline = compile_file(spec).pipeline
    try:
        before = latest_run(storage, pipeline, cob)
    except StorageError as exc:
        return {"skipped": True, "reason": str(exc)}
    summary = json.loads((before.run_dir / RUN_SUCCESS_FILE).read_text())
    params = summary.get("params") or {}
    # The run's own rules, with the rules under review added or replacing theirs by rule_id.
    merged: dict[str, LoadedRule] = {}
    for d in summary.get("rules") or []:
        rule = AdjustmentRule.model_validate(d)
        merged[rule.rule_id] = LoadedRule(
            Path(str(before.run_dir)), rule, SourceMap(str(before.run_dir), "")
        )
    for r in rules:
        merged[r.rule.rule_id] = r
    plan = build_plan_with_rules(spec, list(merged.values()), label=f"run {before.run_id} + PR")
    variables = run_variables(plan, cob, params)

    def source_state(name: str) -> tuple[str, str]:
        path, files = resolve_source_path(plan.source(name), variables)
        return str(path), fingerprint(files)

    # the run's own rule: a stage is taken from the base run only when nothing it depends on
    # changed (its node, the params, its sources' files, the regflow version, its upstream)
    why_not = reusable_stages(plan, before, params=params, source_state=source_state)
    reuse = {s for s, why in why_not.items() if why is None}
    scratch_root = Path(tempfile.mkdtemp(prefix="regflow-preview-"))
    after = RunRef(scratch_root, plan.pipeline, cob, "preview")
    reports = []
    for stage in plan.stages:
        if plan.node(stage.id).lineage == "sink":
            continue  # a preview compares figures; it stages nothing for the warehouse
        if stage.id in reuse:
            log(f"  reusing stage {stage.id} from run {before.run_id} (unchanged)")
            continue
        log(f"  recomputing stage {stage.id}: {why_not[stage.id]}")
        reports.append(
            run_stage(
                plan,
                stage.id,
                cob=cob,
                run_id="preview",
                root=scratch_root,
                params=params,
                input_runs=[before],
                log=log,
                policy=deployment_policy(),
            )
        )
    ids = {r.rule.rule_id for r in rules}
    matched = [a for rep in reports for a in rep.adjustments if a["rule_id"] in ids]
    # the reported figures: final outputs of the calculation (what only a warehouse star reads)
    calc = [s for s in plan.stages if plan.node(s.id).lineage != "sink"]
    sinks = [s.id for s in calc if not any(s.id in t.upstream for t in calc)]
    old_sinks = _sinks_of(before)
    changes = {}
    for sink in sinks:
        new_run = after if after.is_complete(sink) else before
        base_name = sink if before.is_complete(sink) else _base_sink(sink, old_sinks)
        if base_name is None:
            continue
        changes[sink] = compare(_read(before, base_name), _read(new_run, sink))
    shutil.rmtree(scratch_root, ignore_errors=True)  # a preview is a report, not a run
    return {
        "skipped": False,
        "pipeline": plan.pipeline,
        "cob": cob,
        "base_run": before.run_id,
        "reused_stages": sorted(reuse),
        "recomputed_stages": [r.stage for r in reports],
        "rules": matched,
        "changes": changes,
        "adjustment_set_hash": plan.adjustment_set_hash,
    }


def _sinks_of(run: Any) -> list[str]:
    return [p.name for p in run.run_dir.iterdir() if p.is_dir() and "." not in p.name]


def _base_sink(sink: str, old: list[str]) -> str | None:
    base = (spliced_at(sink) or (sink, ""))[0]
    return base if base in old else None


def _read(run: Any, node: str) -> list[dict[str, Any]]:
    from regflow.storage import read_node

    return read_node(run, node).to_pylist()


def compare(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row key (the non-numeric columns), every numeric column that changed."""
    if not after:
        return []
    rows = before + after
    cols = [c for c in after[0] if c != LINEAGE_COLUMN]
    numeric = [
        c
        for c in cols
        if any(
            isinstance(r.get(c), int | float | Decimal) and not isinstance(r.get(c), bool)
            for r in rows
        )
    ]
    keys = [c for c in cols if c not in numeric]

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(str(r.get(k)) for k in keys)

    old = {key(r): r for r in before}
    out = []
    for r in sorted(after, key=key):
        prev = old.get(key(r), {})
        for c in numeric:
            a, b = prev.get(c), r.get(c)
            if a != b:
                delta = None if a is None or b is None else b - a
                out.append(
                    {
                        **{k: str(r.get(k)) for k in keys},
                        "measure": c,
                        "before": a,
                        "after": b,
                        "change": delta,
                    }
                )
    return out
