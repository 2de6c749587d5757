"""Unit tests of the spec layer's small parts: YAML with positions, types, expressions, and
the JSON Schema that ``regflow schema`` publishes for editors."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import jsonschema
import pytest

from regflow.cli.main import main
from regflow.core.yamlpos import SourceMap, YamlSyntaxError, format_path, load_yaml
from regflow.errors import Problem
from regflow.ops.exprs import ExprError, check_expression, infer_type, referenced_columns
from regflow.spec.types import (
    Column,
    Schema,
    TypeParseError,
    decimal_ps,
    is_numeric,
    normalize_type,
)

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ yamlpos: positions
TEXT = """\
pipeline: p
sources:
  deals:
    primary_key: [deal_id, cob]
nodes:
  - id: a
    inputs:
      - deals
  - {id: b, op: calc}
"""


def test_positions_of_values_and_keys() -> None:
    data, smap = load_yaml(TEXT, "p.yaml")
    assert data["nodes"][1] == {"id": "b", "op": "calc"}
    assert smap.values[("pipeline",)] == (1, 11)
    assert smap.keys[("sources", "deals")] == (3, 3)
    assert smap.values[("sources", "deals")] == (4, 5)  # the mapping starts at its first key
    assert smap.values[("sources", "deals", "primary_key", 1)] == (4, 28)
    assert smap.values[("nodes", 0, "inputs", 0)] == (8, 9)
    assert smap.keys[("nodes", 1, "op")] == (9, 13)
    assert smap.values[("nodes", 1, "op")] == (9, 17)


def test_position_falls_back_to_the_nearest_known_parent() -> None:
    _, smap = load_yaml(TEXT, "p.yaml")
    # a missing key: point at the mapping that lacks it
    assert smap.position(("nodes", 0, "op")) == (6, 5)
    assert smap.position(("sources", "deals", "schema", "x")) == (3, 3)
    assert smap.position(("nowhere",)) == (1, 1)
    assert str(smap.location(("pipeline",))) == "p.yaml:1:11"


def test_context_puts_a_caret_under_the_value() -> None:
    _, smap = load_yaml(TEXT, "p.yaml")
    ctx = smap.context(("sources", "deals", "primary_key", 1))
    assert ctx.splitlines() == [
        "   4 |     primary_key: [deal_id, cob]",
        " " * (len("   4 | ") + 27) + "^",
    ]
    problem = smap.problem("bad", ("sources", "deals", "primary_key", 1), hint="fix it")
    assert problem == Problem(
        "bad", problem.location, "sources.deals.primary_key[1]", ctx, "fix it"
    )
    assert problem.format().splitlines()[0] == (
        "p.yaml:4:28: error: bad (at sources.deals.primary_key[1])"
    )


def test_format_path() -> None:
    assert format_path(()) == ""
    assert format_path(("nodes", 3, "inputs", 0)) == "nodes[3].inputs[0]"
    assert format_path(("sources", "deals", "schema")) == "sources.deals.schema"


def test_empty_document() -> None:
    data, smap = load_yaml("# only a comment\n", "e.yaml")
    assert data is None
    assert isinstance(smap, SourceMap)


# ------------------------------------------------------------------ yamlpos: duplicates
DUP = "a: 1\nb:\n  c: 2\n  c: 3\n"


def test_duplicate_keys_raise_by_default() -> None:
    with pytest.raises(YamlSyntaxError) as info:
        load_yaml(DUP, "d.yaml")
    problem = info.value.problem
    assert str(problem.location) == "d.yaml:4:3"
    assert problem.key_path == "b.c"
    assert "duplicate key 'c' (first at line 3)" in problem.message
    assert problem.hint


def test_duplicate_keys_can_be_collected_keeping_the_first() -> None:
    problems: list[Problem] = []
    data, smap = load_yaml(DUP + "b2:\n  x: 1\n  x: 2\n", "d.yaml", problems=problems)
    assert data == {"a": 1, "b": {"c": 2}, "b2": {"x": 1}}
    assert [str(p.location) for p in problems] == ["d.yaml:4:3", "d.yaml:7:3"]
    assert smap.keys[("b", "c")] == (3, 3)  # the first entry keeps its position


def test_syntax_error_points_at_the_bad_line() -> None:
    with pytest.raises(YamlSyntaxError) as info:
        load_yaml("a:\n  b: 1\n c: 2\n", "s.yaml")
    problem = info.value.problem
    assert str(problem.location) == "s.yaml:3:2"
    assert problem.message.startswith("invalid YAML: ")
    assert problem.context.splitlines()[0] == "   3 |  c: 2"


def test_unclosed_quote_points_where_it_opened() -> None:
    with pytest.raises(YamlSyntaxError) as info:
        load_yaml('a: 1\nb: "open\nc: 2\n', "q.yaml")
    assert str(info.value.problem.location) == "q.yaml:2:4"
    assert '   2 | b: "open' in info.value.problem.context


# ------------------------------------------------------------------ yamlpos: YAML 1.2 booleans
@pytest.mark.parametrize("word", ["on", "off", "yes", "no", "y", "n", "On", "YES", "Off"])
def test_yaml_11_booleans_stay_strings(word: str) -> None:
    data, _ = load_yaml(f"{word}: {word}\n", "b.yaml")
    assert data == {word: word}


@pytest.mark.parametrize(
    "word,value", [("true", True), ("false", False), ("True", True), ("FALSE", False)]
)
def test_yaml_12_booleans(word: str, value: bool) -> None:
    data, _ = load_yaml(f"x: {word}\n", "b.yaml")
    assert data == {"x": value}


def test_join_on_is_a_key() -> None:
    data, smap = load_yaml("on: [currency]\nhow: left\n", "j.yaml")
    assert data == {"on": ["currency"], "how": "left"}
    assert smap.values[("on", 0)] == (1, 6)


def test_other_scalars() -> None:
    data, _ = load_yaml("d: 2024-01-31\ni: 3\nf: 1.5\nn: null\ns: '2024-01-31'\n", "s.yaml")
    assert data == {"d": dt.date(2024, 1, 31), "i": 3, "f": 1.5, "n": None, "s": "2024-01-31"}


# ------------------------------------------------------------------ types
@pytest.mark.parametrize(
    "text,canonical",
    [
        ("string", "string"),
        ("STR", "string"),
        ("varchar", "string"),
        ("text", "string"),
        ("bool", "boolean"),
        ("integer", "int"),
        ("long", "bigint"),
        ("float", "double"),
        ("float64", "double"),
        ("datetime", "timestamp"),
        (" Date ", "date"),
        ("decimal(20,2)", "decimal(20,2)"),
        ("DECIMAL( 38 , 10 )", "decimal(38,10)"),
        ("decimal(1,0)", "decimal(1,0)"),
        ("decimal(38,38)", "decimal(38,38)"),
    ],
)
def test_normalize_type(text: str, canonical: str) -> None:
    assert normalize_type(text) == canonical


@pytest.mark.parametrize(
    "text,message",
    [
        ("decimal(39,2)", "needs 1 <= precision <= 38"),
        ("decimal(0,0)", "needs 1 <= precision <= 38"),
        ("decimal(10,11)", "scale <= precision"),
        ("decimal", "needs a precision and scale"),
        ("decimal(10)", "unknown type"),
        ("money", "unknown type 'money'"),
        ("decimal(20", "unknown type"),  # what `{a: decimal(20,2)}` leaves after YAML's comma
    ],
)
def test_bad_types(text: str, message: str) -> None:
    with pytest.raises(TypeParseError) as info:
        normalize_type(text)
    assert message in str(info.value)
    assert info.value.hint


def test_unquoted_decimal_in_a_flow_mapping_gets_a_quoting_hint() -> None:
    with pytest.raises(TypeParseError) as info:
        normalize_type("decimal(20")
    assert "quote" in info.value.hint


def test_numeric_and_decimal_helpers() -> None:
    assert is_numeric("int") and is_numeric("decimal(20,2)") and is_numeric("decimal")
    assert not is_numeric("string") and not is_numeric("date")
    assert decimal_ps("decimal(20,2)") == (20, 2)
    assert decimal_ps("double") is None


def test_schema_operations() -> None:
    s = Schema.of({"a": "int", "b": "str"})
    assert s.names == ("a", "b") and s.type_of("b") == "string" and "a" in s
    s2 = s.with_columns([Column("c", "date"), Column("a", "double")])
    assert s2.to_dict() == {"a": "double", "b": "string", "c": "date"}  # replaced in place
    assert s2.select(["c", "a"]).names == ("a", "c")
    assert not Schema.unknown().known
    assert not Schema.unknown().with_columns([Column("x")]).known
    with pytest.raises(KeyError):
        s.type_of("zz")


# ------------------------------------------------------------------ expressions
@pytest.mark.parametrize(
    "expr,columns",
    [
        ("amount * usd_rate", ["amount", "usd_rate"]),
        ("b * c + a + b", ["b", "c", "a"]),  # order of appearance, no duplicates
        ("product_type in ('CASH', 'BOND') and not encumbered", ["product_type", "encumbered"]),
        ("'literal' || name", ["name"]),
        ("coalesce(x, 0) > `odd col`", ["x", "odd col"]),
        ("count(*)", []),
        ("transform(xs, x -> x + y)", ["xs", "y"]),  # lambda parameters are not columns
        ("aggregate(xs, 0, (acc, x) -> acc + x * w)", ["xs", "w"]),
        ("exists(xs, x -> x > limit_value)", ["xs", "limit_value"]),
        # a lambda parameter only hides the column inside its own lambda
        ("amount + size(transform(xs, amount -> amount + k))", ["amount", "xs", "k"]),
        ("case when a > 0 then b else c end", ["a", "b", "c"]),
        ("date_add(cob_date, 30)", ["cob_date"]),
    ],
)
def test_referenced_columns(expr: str, columns: list[str]) -> None:
    assert referenced_columns(expr) == columns


@pytest.mark.parametrize(
    "expr",
    [
        "amount >",
        "amount * (usd_rate",
        "case when a then 1",
        "",
        "   ",
        "amount usd_rate",
        "x = = 1",
    ],
)
def test_bad_expressions(expr: str) -> None:
    with pytest.raises(ExprError):
        referenced_columns(expr)


def test_parse_errors_speak_the_users_terms() -> None:
    with pytest.raises(ExprError) as info:
        referenced_columns("amount >")
    assert "sqlglot" not in str(info.value)
    assert "operand is missing" in str(info.value)


SCHEMA = Schema.of(
    {
        "amount": "decimal(20,2)",
        "qty": "int",
        "name": "string",
        "cob": "date",
        "flag": "boolean",
        "rate": "double",
    }
)


def test_check_expression() -> None:
    assert check_expression("amount * rate", SCHEMA) == []
    [(message, hint)] = check_expression("amout * rate", SCHEMA)
    assert message == "unknown column 'amout' in expression 'amout * rate'"
    assert hint == "did you mean 'amount'?"
    [(_, hint)] = check_expression("zzz > 1", SCHEMA)
    assert hint.startswith("available columns: amount, qty")
    # with an unknown schema only syntax is checked
    assert check_expression("whatever > 1", Schema.unknown()) == []
    [(message, _)] = check_expression("whatever >", Schema.unknown())
    assert message.startswith("cannot parse expression")


@pytest.mark.parametrize(
    "expr,typ",
    [
        ("amount", "decimal(20,2)"),  # a column keeps its exact type
        ("cast(qty as decimal(10,3))", "decimal(10,3)"),
        ("cast(name as date)", "date"),
        ("cast(qty as long)", "bigint"),
        ("amount * 2", "decimal(22,2)"),  # Spark: decimal(20,2) * decimal(1,0)
        ("qty + 1", "int"),
        ("rate * qty", "double"),
        ("qty > 1 and flag", "boolean"),
        ("name is null", "boolean"),
        ("upper(name)", "string"),
        ("cob", "date"),
        ("no_such_function_xyz(qty)", "unknown"),
        ("amount >", "unknown"),
    ],
)
def test_infer_type(expr: str, typ: str) -> None:
    assert infer_type(expr, SCHEMA) == typ


# ------------------------------------------------------------------ regflow schema
@pytest.fixture()
def spec_schema(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> dict:
    monkeypatch.setenv("REGFLOW_PROJECT", str(ROOT))  # so the project's lcr_caps is known
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def _plain(path: Path) -> object:
    data, _ = load_yaml(path.read_text(encoding="utf-8"), str(path))
    return data


def test_schema_validates_the_lcr_spec(spec_schema: dict) -> None:
    jsonschema.validate(_plain(ROOT / "pipelines" / "lcr.yaml"), spec_schema)


def test_schema_validates_the_golden_specs(spec_schema: dict) -> None:
    golden = sorted((ROOT / "tests" / "fixtures" / "golden").glob("*.yaml"))
    assert golden
    for path in golden:
        jsonschema.validate(_plain(path), spec_schema)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.update(ownr="x"),  # top level
        lambda d: d["sources"]["deals"].update(colums={"a": "int"}),  # a source
        lambda d: d["nodes"][0].update(descripton="x"),  # a node's common keys
        lambda d: d["nodes"][1].update(colums={"a": "1"}),  # a calc's settings
        lambda d: d["nodes"][0].update(op="no_such_op"),
        lambda d: d["nodes"][0].pop("inputs"),
        lambda d: d["sources"]["deals"].update(format="xlsx"),
    ],
)
def test_schema_rejects_bad_specs(spec_schema: dict, edit) -> None:
    data = _plain(ROOT / "pipelines" / "lcr.yaml")
    assert isinstance(data, dict)
    edit(data)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, spec_schema)
