"""What `make demo` and `make test` install: no benchmark-only dependency (dag-factory adds
an Airflow plugin and deprecation warnings to every Airflow in its environment)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_dag_factory_comes_only_with_the_bench_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    installed = re.search(
        r"pip install --quiet -e '\.\[([^\]]+)\]'", (ROOT / "Makefile").read_text()
    )
    assert installed is not None
    everyday = [*project["dependencies"]] + [
        d for name in installed.group(1).split(",") for d in extras[name]
    ]
    assert not any(d.startswith("dag-factory") for d in everyday)
    assert any(d.startswith("dag-factory") for d in extras["bench"])
