"""The project root: the one folder every default location and relative path derives from.

The root is, in order:

1. ``--project DIR`` or ``$REGFLOW_PROJECT`` (explicit; wins for every spec);
2. with a spec file, the spec's own project: the nearest folder above the spec that holds a
   ``pipelines/`` folder (``<root>/pipelines/lcr.yaml`` gives ``<root>``), else the spec's
   folder. A spec outside the current project makes its own project the root;
3. without a spec file, the nearest folder from the current one upwards that holds a
   ``pipelines/`` folder, else the current folder.

From it derive storage (``.regflow/storage``), the embedded warehouse
(``.regflow/warehouse``), Airflow's home (``.regflow/airflow``), the plan cache
(``.regflow/cache/plans``), rules (``adjustments/<pipeline>/``) and operators
(``operators/``); explicit flags and environment variables still win. Relative path params
(``data_root``) mean relative to the root, in the CLI and in the Airflow task alike.

Bottom layer: the standard library and :mod:`regflow.errors` only.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from regflow.errors import ConfigError

PROJECT_ENV = "REGFLOW_PROJECT"
STATE_DIR = ".regflow"
# The DAG params that steer a run rather than feed the calculation; set by --cob/--recompute
CONTROL_PARAMS = ("cob", "recompute")
# Params named like this hold a path (as does a param that starts a source's path template)
PATH_SUFFIXES = ("_root", "_dir", "_path", "_file")


def _with_pipelines(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / "pipelines").is_dir():
            return folder
    return None


def project_root(spec: Path | str | None = None) -> Path:
    """The project root (see the module docstring for the precedence)."""
    from regflow.settings import current

    env = current().project
    if env:
        root = Path(env).expanduser().resolve()
        if not root.is_dir():
            raise ConfigError(
                f"the project root {root} (--project / ${PROJECT_ENV}) is not a folder; "
                "point it at the folder that holds pipelines/"
            )
        return root
    if spec is not None:
        folder = Path(spec).resolve().parent
        return _with_pipelines(folder) or folder
    here = Path.cwd().resolve()
    return _with_pipelines(here) or here


def state_dir(root: Path) -> Path:
    """``<root>/.regflow``: storage, warehouse, Airflow home and caches live below it."""
    return root / STATE_DIR


def default_storage(root: Path) -> Path:
    return state_dir(root) / "storage"


def default_warehouse_dir(root: Path) -> Path:
    return state_dir(root) / "warehouse"


def default_airflow_home(root: Path) -> Path:
    return state_dir(root) / "airflow"


def default_plan_cache(root: Path) -> Path:
    return state_dir(root) / "cache" / "plans"


def default_adjustments_dir(root: Path, pipeline: str) -> Path:
    return root / "adjustments" / pipeline


# ---------------------------------------------------------------------------- params
_LEADING_VAR = re.compile(r"^\{([^{}]+)\}")


def path_params(declared: Iterable[str], source_paths: Iterable[str] = ()) -> set[str]:
    """The declared params that hold a path: named ``*_root``, ``*_dir``, ``*_path`` or
    ``*_file``, or the first part of a source's path template (``{data_root}/deals``)."""
    names = set(declared)
    leading = {m.group(1) for p in source_paths if (m := _LEADING_VAR.match(p))}
    return {n for n in names if n.endswith(PATH_SUFFIXES) or n in leading}


def resolve_path(value: str, root: Path) -> str:
    """A path param's value: relative means relative to the project root, never to the
    current folder (the CLI and an Airflow worker then read the same files). An
    ``s3://bucket/prefix`` is kept as it is."""
    if value.startswith("s3://"):
        return value
    path = Path(value).expanduser()
    return str(path) if path.is_absolute() else os.path.normpath(root / path)


def unknown_param_error(name: str, declared: Iterable[str], pipeline: str) -> ConfigError:
    known = sorted(declared)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        fix = f"did you mean '{close[0]}'?"
    elif name in CONTROL_PARAMS:
        fix = f"'{name}' is not a spec param: use --{name}"
    else:
        fix = "declare it under 'params:' in the spec, or drop it"
    listed = ", ".join(known) if known else "none"
    return ConfigError(
        f"unknown param '{name}' for pipeline '{pipeline}': {fix} (its params: {listed})"
    )


def run_params(
    given: Mapping[str, Any],
    *,
    declared: Mapping[str, Any],
    source_paths: Iterable[str],
    root: Path,
    pipeline: str,
) -> dict[str, Any]:
    """``given`` checked against the spec's ``declared`` params (an unknown name is an error
    with a did-you-mean, never silently ignored), with relative path params resolved
    against ``root``. Idempotent, so a run's params compare equal however they came in."""
    for name in given:
        if name not in declared:
            raise unknown_param_error(name, declared, pipeline)
    paths = path_params(declared, source_paths)
    return {
        k: resolve_path(str(v), root) if k in paths and isinstance(v, str) and v else v
        for k, v in given.items()
    }


# ---------------------------------------------------------------------------- spec identity
def spec_identity(spec: Path | str, root: Path | None = None) -> dict[str, str]:
    """Which spec file a run came from: its path relative to the project root (absolute when
    it lies outside), the root, and the file's SHA-256."""
    path = Path(spec).resolve()
    root = root if root is not None else project_root(path)
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = str(path)
    return {
        "spec_file": rel,
        "spec_file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "project": str(root),
    }
