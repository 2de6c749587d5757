"""Compiled plans cached by content hash, so Airflow's frequent DAG parses stay cheap.

The key covers the spec text, regflow's version and compiler code, and the project's operator
files: editing any of them recompiles. A cache that cannot be written (read-only image) is
simply skipped.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from regflow import __version__
from regflow.plan.model import Plan
from regflow.spec.loader import project_dir_of


def cache_dir(project_dir: Path) -> Path:
    from regflow.project import default_plan_cache
    from regflow.settings import current

    env = current().cache_dir
    return Path(env) if env else default_plan_cache(project_dir)


@functools.cache
def _code_digest() -> str:
    """regflow's own compiler code (spec, ops, plan), once per process: a plan compiled by
    other code is stale even within one version (editable installs, upgrades in place)."""
    h = hashlib.sha256()
    pkg = Path(__file__).resolve().parent.parent
    for sub in ("spec", "ops", "plan", "adjust"):
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
    if cached.exists():
        try:
            return Plan.from_json(cached.read_text())
        except (ValueError, KeyError, TypeError):
            pass  # stale format: recompile
    plan = build_plan(spec_path, folder)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(plan.to_json())
        os.replace(tmp, cached)
    except OSError:
        pass
    return plan
