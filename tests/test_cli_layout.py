"""The CLI's shape (issue 19): one small module per verb, and a parser that imports no
third-party package (``regflow --help`` and a mistyped flag answer at once)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CLI = Path(__file__).resolve().parent.parent / "src" / "regflow" / "cli"
HEAVY = ("pyspark", "airflow", "pydantic", "pyarrow", "pandas", "numpy", "yaml", "psycopg")


def test_no_cli_module_is_over_200_lines():
    sizes = {f.name: len(f.read_text().splitlines()) for f in sorted(CLI.glob("*.py"))}
    assert "parser.py" in sizes and "common.py" in sizes
    assert {name: n for name, n in sizes.items() if n > 200} == {}


def test_building_the_parser_imports_no_third_party_package():
    code = (
        "import contextlib, io, json, sys\n"
        "from regflow.cli.main import main\n"
        "for argv in (['--help'], ['run', '--help'], ['warehouse', 'query', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = json.loads(out)
    assert "regflow.cli.parser" in loaded and "regflow.cli.warehouse" in loaded
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY]
    assert heavy == []
