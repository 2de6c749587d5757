"""What the CLI's verbs share: the project root, a pipeline's spec, parsed arguments, the
storage root. Light imports only: every verb module imports this one to build the parser."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from regflow import settings
from regflow.errors import ConfigError
from regflow.plan.cob import parse_cob as cob_date
from regflow.project import project_root
from regflow.storage.fs import Location

# what `add_subparsers` returns: each verb module's `add_<verb>` adds its parser to it
if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subcommands = argparse._SubParsersAction


def project_dir() -> Path:
    """The project root without a spec: ``$REGFLOW_PROJECT``, else the nearest folder from
    the current one upwards with a ``pipelines/`` folder (see :mod:`regflow.project`)."""
    return project_root()


def resolve_spec(pipeline: str) -> Path:
    """A pipeline id (``lcr`` -> ``pipelines/lcr.yaml``) or a path to a spec."""
    path = Path(pipeline)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"no spec file at {path}")
        return path.resolve()
    for ext in (".yaml", ".yml"):
        cand = project_dir() / "pipelines" / f"{pipeline}{ext}"
        if cand.is_file():
            return cand
    folder = project_dir() / "pipelines"
    known = sorted(p.stem for p in folder.glob("*.y*ml")) if folder.is_dir() else []
    raise ConfigError(
        f"no pipeline '{pipeline}' in {folder}"
        + (f"; known pipelines: {', '.join(known)}" if known else "")
    )


def pipeline_id(arg: str) -> str:
    """The pipeline id a spec declares (parsing only: stored outputs need no compile)."""
    from regflow.spec.loader import load_spec

    return load_spec(resolve_spec(arg)).spec.pipeline


def parse_cob(text: str) -> str:
    return cob_date(text, "--cob").isoformat()


def parse_params(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param '{pair}' must look like key=value")
        out[key.strip()] = value
    return out


def storage_root(url: str | None, project: Path | None = None) -> Location:
    """``--storage``, ``$REGFLOW_STORAGE``, else ``project``'s (default: the current
    project's) ``.regflow/storage``."""
    from regflow.storage import resolve_root

    return resolve_root(url, project=project)


def use_warehouse(url: str | None) -> None:
    """`--warehouse` wins over $REGFLOW_WAREHOUSE; the in-process tasks read the settings."""
    settings.configure(warehouse=url)
