"""Compiled plans cached by content hash, so Airflow's frequent DAG parses stay cheap.

The key covers the spec text, regflow's version and compiler code, and the project's operator
files: editing any of them recompiles. A cache that cannot be written (read-only image) is
simply skipped.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from pathlib import Path

from regflow import __version__
from regflow.plan.model import Plan
from regflow.project import default_plan_cache
from regflow.settings import current
from regflow.spec.loader import project_dir_of


def cache_dir(project_dir: Path) -> Path:
    env = current().cache_dir
    return Path(env) if env else default_plan_cache(project_dir)


@functools.cache
def _code_digest() -> str:
    """regflow's own compiler code (core, spec, ops, plan, adjust), once per process: a plan
    compiled by other code is stale even within one version (editable installs, upgrades in
    place)."""
    h = hashlib.sha256()
    pkg = Path(__file__).resolve().parent.parent
    for sub in ("core", "spec", "ops", "plan", "adjust"):
        for f in sorted((pkg / sub).glob("*.py")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _operators_digest(project_dir: Path) -> str:
    h = hashlib.sha256()
    ops = project_dir / "operators"
    if ops.is_dir():
        for f in sorted(ops.glob("*.py")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _rules_digest(folder: Path | None, spec_path: Path) -> str:
    """The adjustment folder's identity: its path and every rule file's name and content.

    Without an explicit folder, every pipeline folder under ``adjustments/`` counts: the
    pipeline id is only known after parsing, and a cache lookup must not parse.
    """
    h = hashlib.sha256()
    root = folder if folder is not None else project_dir_of(spec_path) / "adjustments"
    h.update(str(root.resolve()).encode())
    if root.is_dir():
        for f in sorted([*root.rglob("*.yaml"), *root.rglob("*.yml")]):
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def plan_key(spec_path: Path, text: str | None = None, adjustments: Path | None = None) -> str:
    text = text if text is not None else spec_path.read_text(encoding="utf-8")
    project = project_dir_of(spec_path)
    h = hashlib.sha256()
    for part in (
        __version__,
        _code_digest(),
        str(spec_path.resolve()),
        text,
        _operators_digest(project),
        _rules_digest(adjustments, spec_path),
    ):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def load_plan(
    spec_path: Path | str, *, adjustments: Path | str | None = None, use_cache: bool = True
) -> Plan:
    """Compile a spec with its adjustment rules, or load the compiled plan from the cache.

    Raises ``SpecError`` (or ``AdjustmentError``) with every problem.
    """
    from regflow.plan.build import build_plan

    spec_path = Path(spec_path)
    folder = Path(adjustments) if adjustments is not None else None
    if not use_cache:
        return build_plan(spec_path, folder)
    text = spec_path.read_text(encoding="utf-8")
    key = plan_key(spec_path, text, folder)
    cached = cache_dir(project_dir_of(spec_path)) / f"{key}.json"
    pin_file = cached.with_suffix(".pin")  # the plan's pin beside it: a DAG parse needs it
    if cached.exists():
        try:
            plan = Plan.from_json(cached.read_text())
        except (ValueError, KeyError, TypeError):
            pass  # stale format: recompile
        else:
            with contextlib.suppress(OSError):  # (an older cache: computed when asked)
                _remember_pin(plan, pin_file.read_text().strip())
            return plan
    plan = build_plan(spec_path, folder)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        for path, content in ((pin_file, plan_pin(plan)), (cached, plan.to_json())):
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(content)
            os.replace(tmp, path)
    except OSError:
        pass
    return plan


# ---------------------------------------------------------------------------- pinned plans
_PIN = "_regflow_pin"  # where a plan object keeps its pin once known (not a dataclass field)


def _remember_pin(plan: Plan, pin: str) -> None:
    if pin:
        object.__setattr__(plan, _PIN, pin)


def plan_pin(plan: Plan) -> str:
    """The key of exactly this compiled plan: ``<rules>-<plan>``, the first 12 hex digits of
    the rule set's hash and 16 of the whole plan's JSON (the spec, the rules, and any change
    of regflow or of an operator that changes the plan). Computed once per compiled plan:
    the plan cache keeps it beside the plan (a DAG parse reads it, instead of serialising
    the plan again)."""
    known = getattr(plan, _PIN, None)
    if known:
        return str(known)
    import dataclasses

    # where the files lie is not what the plan does: a SparkApplication's image compiles the
    # same plan from another path
    bare = dataclasses.replace(plan, file="", adjustments_dir=None)
    whole = hashlib.sha256(bare.to_json().encode()).hexdigest()[:16]
    pin = f"{plan.adjustment_set_hash[:12]}-{whole}"
    _remember_pin(plan, pin)
    return pin


def _pinned_file(spec_path: Path | str, pin: str) -> Path:
    return cache_dir(project_dir_of(Path(spec_path))) / "pinned" / f"{pin}.json"


def pin_plan(plan: Plan) -> str:
    """Keep ``plan`` in the cache under its :func:`plan_pin` (a DAG's tasks then run exactly
    the plan the DAG was built from, whatever changes after); return the pin. A cache that
    cannot be written is skipped: the tasks then refuse a changed plan instead."""
    pin = plan_pin(plan)
    path = _pinned_file(plan.file, pin)
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(plan.to_json())
            os.replace(tmp, path)
        except OSError:
            pass
    return pin


def _what_changed(pin: str, now: str) -> str:
    was, new = pin.split("-"), now.split("-")
    if len(was) != 2:
        return "the plan"
    if was[0] != new[0]:
        return "a rule file"
    return "the spec (or the regflow or operator code it compiles with)"


def load_pinned(
    spec_path: Path | str, *, adjustments: Path | str | None = None, pin: str | None = None
) -> Plan:
    """The plan with key ``pin`` (None: the plan the files give now): from the pinned cache
    when it is there, else compiled, if the files still give it. Otherwise a
    :class:`~regflow.errors.PlanChangedError` saying what changed and the fix."""
    from regflow.errors import PlanChangedError

    if pin is not None:
        path = _pinned_file(spec_path, pin)
        try:
            plan = Plan.from_json(path.read_text())
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not kept (or unreadable): compile and compare
        else:
            if plan_pin(plan) == pin:
                return plan
    plan = load_plan(spec_path, adjustments=adjustments)
    if pin is None:
        return plan
    now = plan_pin(plan)
    if now == pin:
        return plan
    what = _what_changed(pin, now)
    raise PlanChangedError(
        f"[{plan.pipeline}] {what} changed after the DAG was parsed (the DAG was built from plan "
        f"{pin}, the files now give {now}) and the DAG's plan is no longer in the plan cache "
        f"({path.parent}): this task refuses to run a plan the DAG does not show; to fix: wait "
        "for Airflow to re-parse the DAG, then trigger the run again",
        current=plan,
    )
