"""Messages and docstrings that send the user somewhere send them to a place that exists."""

from __future__ import annotations

import importlib
import re
import textwrap
from pathlib import Path

import pytest

from regflow.errors import ConfigError, SpecError
from regflow.plan.compiler import compile_file

ROOT = Path(__file__).resolve().parent.parent

OPS = """
from regflow import operator
from regflow.spec.types import Schema


@operator("hint_no_lineage", schema=lambda inputs, params: Schema.of({"item_id": "string"}))
def no_lineage(df, params, ctx):
    return df.select("item_id")
"""

SPEC = """
pipeline: hints
params: {data_root: .}
sources:
  items:
    path: "{data_root}/items"
    primary_key: [item_id]
    schema: {item_id: string, v: bigint}
  other:
    path: "{data_root}/other"
    primary_key: [other_id, item_id]
    schema: {other_id: string, item_id: string}
nodes:
  - id: stripped
    op: hint_no_lineage
    inputs: [items]
  - id: kept
    op: filter
    inputs: [stripped]
    where: "item_id <> 'x'"
"""


def test_an_input_without_lineage_names_that_input_in_the_hint(tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "operators").mkdir()
    (tmp_path / "operators" / "hint_ops.py").write_text(textwrap.dedent(OPS))
    spec = tmp_path / "pipelines" / "hints.yaml"
    spec.write_text(SPEC)
    with pytest.raises(SpecError) as err:
        compile_file(spec)
    [problem] = [p for p in err.value.errors if "has no lineage column" in p.message]
    assert problem.message == "input 'stripped' has no lineage column"
    assert problem.hint == "the op of 'stripped' must declare an output schema with _lineage_id"


def _resolves(dotted: str) -> bool:
    """``regflow.a.b.name``: the longest importable module prefix has the rest as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def _references(text: str) -> set[str]:
    return set(re.findall(r"\bregflow(?:\.[A-Za-z_][A-Za-z0-9_]*)+", text))


def test_what_op_authors_are_pointed_at_exists() -> None:
    from regflow.ops import registry

    doc = registry.operator.__doc__ or ""
    named = _references(doc) | _references((ROOT / "docs" / "operators.md").read_text())
    named.discard(registry.ENTRY_POINT_GROUP)  # "regflow.operators": a name, not a module
    assert "regflow.runtime.lineage.add_rollup" in named  # the rollup helper is named
    missing = sorted(name for name in named if not _resolves(name))
    assert not missing, f"op authors are pointed at names that do not exist: {missing}"


def test_unsupported_storage_url_points_at_the_page_that_says_so(tmp_path: Path) -> None:
    from regflow.storage import resolve_root

    with pytest.raises(ConfigError) as err:
        resolve_root("gs://bank/regflow", project=tmp_path)
    message = str(err.value)
    assert "use a local path, file:// or s3://bucket/prefix" in message
    page = re.search(r"docs/[a-z_]+\.md", message)
    assert page is not None
    text = (ROOT / page.group(0)).read_text()
    # the cited page says which storage URLs there are
    assert "`s3://bucket/prefix`" in text and "a local folder" in text
