"""The package graph: the import-linter contracts of pyproject.toml hold for this checkout.

They say which layer may import which (``cli`` at the top, ``core`` and ``errors`` at the
bottom), that no two packages and no two modules of one package import each other in a
cycle, that only the runtime imports pyspark and only render and the CLI import airflow.
`make lint` runs the same contracts (``lint-imports``); this test makes CI's `make test`
check them too. Function-local imports count: hiding an import in a function does not hide
a cycle.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("importlinter", reason="import-linter is in the dev extra")

_RUN = (
    "import sys; from importlinter.cli import lint_imports; "
    "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"
)


def test_import_contracts_hold():
    # this checkout's sources, whatever regflow the venv has installed
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", _RUN], cwd=ROOT, env=env, capture_output=True, text=True
    )
    report = done.stdout + done.stderr
    assert "Contracts: 4 kept, 0 broken." in report, report
    assert done.returncode == 0, report
