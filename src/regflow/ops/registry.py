"""The op registry: built-ins, ``@operator``-decorated functions and entry points.

Third-party packages register ops through the ``regflow.operators`` entry-point group;
a project registers its own in ``operators/*.py``. A name may be registered only once:
a second registration from another place is refused with both origins named.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import inspect
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from regflow.errors import OperatorError
from regflow.ops.adjust import ADJUST
from regflow.ops.base import CheckRule, LineageKind, OpDef, OpParams, SchemaRule
from regflow.ops.builtin import BUILTIN_OPS as _BUILTINS
from regflow.ops.star import STAR_SCHEMA

BUILTIN_OPS = (*_BUILTINS, ADJUST, STAR_SCHEMA)

_LOCK = threading.RLock()
_REGISTRY: dict[str, OpDef] = {op.name: op for op in BUILTIN_OPS}
_LOADED_FILES: dict[str, float] = {}
# operator files that failed to import (path -> why) and op names two files claim (name -> why):
# only the pipelines that use their ops fail, and they are told why
_FAILED_FILES: dict[str, str] = {}
_CONFLICTS: dict[str, str] = {}
_ENTRY_POINTS_LOADED = False
ENTRY_POINT_GROUP = "regflow.operators"


class NoParams(OpParams):
    """An op without settings."""


def register(op: OpDef) -> OpDef:
    with _LOCK:
        existing = _REGISTRY.get(op.name)
        same_code = (
            existing is not None and op.fingerprint and (existing.fingerprint == op.fingerprint)
        )
        if op.name in _CONFLICTS:
            raise OperatorError(_CONFLICTS[op.name])
        if existing is not None and existing.origin != op.origin and not same_code:
            error = OperatorError(
                f"operator '{op.name}' is already registered by {existing.origin}; "
                f"refusing the second registration from {op.origin}. Rename one of them."
            )
            error.op_name = op.name  # type: ignore[attr-defined]
            raise error
        _REGISTRY[op.name] = op
        return op


def operator(
    name: str,
    *,
    params: type[OpParams] = NoParams,
    lineage: LineageKind = "rowwise",
    schema: SchemaRule | None = None,
    check: CheckRule | None = None,
    inputs: int | tuple[int, int | None] = 1,
    roundings: str = "",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a custom op.

    The function receives the input DataFrame(s), the validated params and a run context,
    and returns a DataFrame: ``fn(df, params, ctx)`` (several inputs come as positional
    DataFrames). Import pyspark inside the function, never at module level: Airflow imports
    ``operators/`` every time it parses the DAG file.

    ``lineage``: ``rowwise`` ops must return the input's ``_lineage_id`` on every row (the
    framework verifies it); ``rollup`` ops may add total rows built with
    :func:`regflow.runtime.lineage.add_rollup`; ``aggregate`` ops get a lineage checkpoint.
    ``schema(input_schemas, params) -> Schema`` lets the compiler check downstream columns.
    ``roundings``: where the op rounds decimals on purpose (e.g. its divisions), shown by
    ``regflow plan`` (no op may round a decimal without saying so).
    """
    lo, hi = (inputs, inputs) if isinstance(inputs, int) else inputs

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        origin = f"{inspect.getsourcefile(fn) or fn.__module__}:{fn.__name__}"
        try:
            code = inspect.getsource(fn) + repr(params.model_json_schema())
        except (OSError, TypeError):
            code = origin
        register(
            OpDef(
                name=name,
                params=params,
                lineage=lineage,
                min_inputs=lo,
                max_inputs=hi,
                output_schema=schema,
                check=check,
                func=fn,
                doc=inspect.getdoc(fn) or "",
                origin=origin,
                fingerprint=hashlib.sha256(code.encode()).hexdigest(),
                extra={"roundings": roundings} if roundings else {},
            )
        )
        return fn

    return wrap


def get(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(name) from None


def definition(name: str) -> OpDef:
    """The op's definition, for its flags (``carries_audits``, ``main_inputs``, ...). An op
    not registered in this process (a custom op of a plan read from the cache, before its
    operator file is imported) has the defaults, as every ``@operator`` op has."""
    with _LOCK:
        found = _REGISTRY.get(name)
    return found if found is not None else OpDef(name, NoParams)


def suggest(name: str) -> str:
    if name in _CONFLICTS:
        return _CONFLICTS[name]
    failed = import_failures()
    if failed:
        return "it may be defined in an operator file that failed to import; fix it: " + "; ".join(
            failed.values()
        )
    close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    return "known ops: " + ", ".join(sorted(_REGISTRY))


def import_failures(directory: Path | None = None) -> dict[str, str]:
    """The operator files (in ``directory``, or anywhere) that failed to import (path -> why),
    from a tolerant :func:`load_operator_files`: their ops are not registered."""
    with _LOCK:
        if directory is None:
            return dict(_FAILED_FILES)
        where = directory.resolve()
        return {k: v for k, v in _FAILED_FILES.items() if Path(k).parent == where}


def names() -> list[str]:
    return sorted(_REGISTRY)


def load_entry_points(*, again: bool = False) -> None:
    """Import the operator packages installed under the ``regflow.operators`` entry point
    group, once per process (``again``: look again, e.g. after installing one)."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED and not again:
        return
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()  # importing the module runs its @operator decorators
    _ENTRY_POINTS_LOADED = True


def load_operator_files(directory: Path, *, strict: bool = True) -> list[str]:
    """Import every ``*.py`` in ``directory`` (a project's ``operators/``), once per version.

    ``strict=False`` (compiling a spec, running a stage): a file that fails to import
    registers none of its ops and is recorded (:func:`import_failures`) instead of raising,
    so it breaks only the pipelines that use its ops, and they are told why. An op name
    that a second file claims too is refused for every pipeline.
    """
    loaded: list[str] = []
    with _LOCK:  # a failed file since deleted fails nothing any more
        for key in [k for k in _FAILED_FILES if Path(k).parent == directory.resolve()]:
            if not Path(key).is_file():
                del _FAILED_FILES[key]
    if not directory.is_dir():
        return loaded
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        key = str(path.resolve())
        mtime = path.stat().st_mtime
        with _LOCK:
            if _LOADED_FILES.get(key) == mtime:
                continue
            mod_name = f"regflow_project_operators.{path.stem}"
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or spec.loader is None:  # pragma: no cover
                continue
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)
            except (Exception, SystemExit) as exc:  # sys.exit() in a file too
                error = (
                    exc
                    if isinstance(exc, OperatorError)
                    else OperatorError(f"cannot import operator file {path}: {exc}")
                )
                if strict:
                    if error is exc:
                        raise
                    raise error from exc
                sys.modules.pop(mod_name, None)
                _forget_ops_of(path)
                name = getattr(exc, "op_name", None)
                if name is not None:
                    _REGISTRY.pop(name, None)
                    _CONFLICTS[name] = str(error)
                _FAILED_FILES[key] = str(error)
                continue
            _FAILED_FILES.pop(key, None)
            _LOADED_FILES[key] = mtime
            loaded.append(key)
    return loaded


def _forget_ops_of(path: Path) -> None:
    """Unregister the ops a file registered before it failed: none of its ops is usable."""
    target = path.resolve()
    for name, op in list(_REGISTRY.items()):
        file = op.origin.rpartition(":")[0]
        if file and Path(file).resolve() == target:
            del _REGISTRY[name]


def forget_failures() -> None:
    """Forget which operator files failed to load: the next load tries them again and
    reports only what still fails."""
    with _LOCK:
        _FAILED_FILES.clear()


def _reset_for_tests() -> None:
    with _LOCK:
        _REGISTRY.clear()
        _REGISTRY.update({op.name: op for op in BUILTIN_OPS})
        _LOADED_FILES.clear()
        _FAILED_FILES.clear()
        _CONFLICTS.clear()
