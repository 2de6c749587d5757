"""The tests reach the engines through the execution policy (the ``engine`` fixture), never by
patching a module's thresholds or a class's private methods (issue 19): a test that did would
exercise a configuration no deployment can have."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# monkeypatch.setattr(<target>, "<name>", ...) with a private name or a SHOUTED module constant
PATCH = re.compile(r"""monkeypatch\.setattr\(\s*[\w.]+\s*,\s*["'](_\w+|[A-Z][A-Z0-9_]+)["']""")


def patched_privates(text: str) -> list[str]:
    return [m.group(1) for m in PATCH.finditer(text)]


def test_the_pattern_finds_what_it_forbids():
    assert patched_privates('monkeypatch.setattr(executor, "LOCAL_CHECK_MAX_ROWS", 0)') == [
        "LOCAL_CHECK_MAX_ROWS"
    ]
    assert patched_privates('monkeypatch.setattr(star.StarBuilder, "_rules_by_row", f)') == [
        "_rules_by_row"
    ]
    assert patched_privates('monkeypatch.setattr(os, "getpid", f)') == []


def test_no_test_patches_a_private_or_a_module_threshold():
    found = {
        f"{path.name}: {name}"
        for path in sorted(TESTS.glob("test_*.py"))
        if path.name != Path(__file__).name
        for name in patched_privates(path.read_text())
    }
    assert not found, (
        "tests patch privates or module thresholds; pass an ExecutionPolicy (the `engine` "
        f"fixture) or use a public seam instead: {sorted(found)}"
    )
