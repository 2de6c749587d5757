"""The generated sql/ folder: up to date, valid Redshift SQL, and a sound PowerBI model.

The TMDL checks parse the generated files with a small indentation-based reader written
here (no PowerBI tooling on CI), then check the model's structure: data types, relationships
fact -> dimension (many-to-one, single direction), the marked date table, unique lineage
tags, hidden keys, measures over additive columns only, and partitions reading the views.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from regflow.plan.build import build_plan
from regflow.warehouse.generate import generated_files, write_generated
from regflow.warehouse.model import StarModel, bi_columns, star_model
from regflow.warehouse.powerbi import tmdl_files

ROOT = Path(__file__).resolve().parent.parent
DEFINITION = ROOT / "sql" / "powerbi" / "lcr" / "definition"
TMDL_TYPES = {"string", "int64", "double", "decimal", "dateTime", "boolean"}
OBJECT_KINDS = {
    "database",
    "model",
    "table",
    "column",
    "measure",
    "partition",
    "relationship",
    "expression",
    "annotation",
    "ref",
    "hierarchy",
    "level",
    "variation",
    "cultureInfo",
    "role",
}


@pytest.fixture(scope="module")
def lcr_model() -> StarModel:
    return star_model(build_plan(ROOT / "pipelines" / "lcr.yaml"), "lcr_star")


# ------------------------------------------------------------------------------ (a) up to date
def test_checked_in_sql_is_up_to_date():
    stale = write_generated(ROOT, check=True)
    assert stale == [], (
        "sql/ is out of date with the pipeline specs; run `regflow sql` and commit the result. "
        f"Missing, stale or extra: {', '.join(map(str, stale))}"
    )


def test_check_reports_stale_and_extra_files_and_write_fixes_them(tmp_path):
    for name in ("pipelines", "adjustments", "operators", "sql"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, tmp_path / name)
    write_generated(tmp_path)  # fresh, whatever the state of the checked-in copy
    assert write_generated(tmp_path, check=True) == []
    redshift = tmp_path / "sql" / "redshift" / "lcr.sql"
    redshift.write_text(redshift.read_text() + "-- edited by hand\n")
    extra = tmp_path / "sql" / "powerbi" / "lcr" / "definition" / "tables" / "Old.tmdl"
    extra.write_text("table Old\n")
    missing = tmp_path / "sql" / "powerbi" / "lcr" / "definition" / "relationships.tmdl"
    missing.unlink()
    stale = write_generated(tmp_path, check=True)
    assert set(stale) == {p.relative_to(tmp_path) for p in (redshift, extra, missing)}
    assert extra.exists() and not missing.exists()  # check writes nothing
    assert set(write_generated(tmp_path)) == set(stale)
    assert not extra.exists() and missing.exists()
    assert write_generated(tmp_path, check=True) == []


# ------------------------------------------------------------------------------ (b) Redshift SQL
def _statements(path: Path) -> list[tuple[str, str]]:
    """(step name, statement) of a generated script: ``-- name`` then ``sql;``."""
    text = path.read_text()
    parts = re.split(r"(?m)^-- (.+)\n", text.split("\n\n", 1)[1])
    assert parts[0].strip() == ""
    out = []
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        body = body.strip()
        assert body.endswith(";"), f"step '{name}' does not end with ';'"
        out.append((name, body[:-1]))
    return out


@pytest.mark.parametrize(("folder", "read"), [("redshift", "redshift"), ("postgresql", "postgres")])
def test_every_generated_statement_parses(folder, read):
    files = sorted((ROOT / "sql" / folder).glob("*.sql"))
    assert files, f"no sql/{folder}/*.sql"
    for path in files:
        steps = _statements(path)
        assert len(steps) >= 10
        for name, sql in steps:
            parsed = sqlglot.parse(sql, read=read, error_level=sqlglot.ErrorLevel.RAISE)
            assert len(parsed) == 1, f"{path.name} step '{name}' holds {len(parsed)} statements"
            tree = parsed[0]
            assert tree is not None
            if isinstance(tree, exp.Command):  # sqlglot's fallback for what it cannot parse
                assert sql.lstrip().upper().startswith("LOCK "), (
                    f"{path.name} step '{name}' only parsed as an opaque command: {sql[:80]}"
                )


def test_redshift_file_has_the_star_and_bi_views(lcr_model):
    sql = (ROOT / "sql" / "redshift" / "lcr.sql").read_text()
    for t in lcr_model.tables:
        assert f'CREATE TABLE IF NOT EXISTS "lcr"."{t.name}"' in sql
    for v in lcr_model.bi_views:
        assert f'CREATE OR REPLACE VIEW "lcr_bi"."{v.name}"' in sql
    assert "WITH NO SCHEMA BINDING" in sql and "DISTSTYLE" in sql


# ------------------------------------------------------------------------------ TMDL reader
@dataclass
class Obj:
    kind: str
    name: str
    file: str
    line: int
    depth: int
    value: str = ""  # what follows '=' on the declaration line (DAX, M, annotation value)
    props: dict[str, str | bool] = field(default_factory=dict)
    children: list[Obj] = field(default_factory=list)

    def all(self, kind: str) -> list[Obj]:
        return [c for c in self.children if c.kind == kind]


def read_name(text: str) -> tuple[str, str]:
    """A TMDL name at the start of ``text`` (quoted with '' escapes, or bare); the rest."""
    if text.startswith("'"):
        i, out = 1, []
        while True:
            j = text.index("'", i)
            if text[j + 1 : j + 2] == "'":
                out.append(text[i : j + 1])
                i = j + 2
                continue
            out.append(text[i:j])
            return "".join(out), text[j + 1 :]
    m = re.match(r"[^\s.=:']+", text)
    assert m, f"no name in {text!r}"
    return m.group(0), text[m.end() :]


def read_ref(text: str) -> tuple[str, str]:
    """``Table.Column`` (each part quoted or bare)."""
    table, rest = read_name(text.strip())
    assert rest.startswith("."), f"not a Table.Column reference: {text!r}"
    column, rest = read_name(rest[1:])
    assert rest.strip() == "", f"trailing text in reference {text!r}"
    return table, column


def parse_tmdl(path: Path) -> list[Obj]:
    lines = path.read_text(encoding="utf-8").split("\n")
    roots: list[Obj] = []
    stack: list[Obj] = []
    i = 0
    while i < len(lines):
        raw = lines[i]
        i += 1
        if not raw.strip():
            continue
        depth = len(raw) - len(raw.lstrip("\t"))
        content = raw[depth:]
        where = f"{path.name}:{i}"
        assert not content.startswith(" "), f"{where}: indented with spaces"
        assert content == content.rstrip(), f"{where}: trailing whitespace"
        if content.startswith("///"):
            continue
        while stack and stack[-1].depth >= depth:
            stack.pop()
        parent = stack[-1] if stack else None
        expected = parent.depth + 1 if parent else 0
        assert depth == expected, f"{where}: indented {depth}, expected {expected}"

        def body(after: str, deeper: int, where: str = where) -> str:
            """The value after '=': the rest of the line, or the lines indented at least
            ``deeper`` (deeper than the properties of the object the expression belongs to)."""
            nonlocal i
            if after.strip():
                return after.strip()
            block = []
            while i < len(lines) and (
                not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip("\t")) >= deeper
            ):
                block.append(lines[i])
                i += 1
            text = "\n".join(block).strip("\n")
            assert text, f"{where}: '=' with no expression"
            return text

        word = re.match(r"[A-Za-z_]+", content)
        assert word, f"{where}: cannot read {content!r}"
        kw, rest = word.group(0), content[word.end() :]
        if rest.startswith(":"):  # property: value
            assert parent is not None, f"{where}: property outside an object"
            parent.props[kw] = rest[1:].strip()
            continue
        if rest.startswith(" =") or rest == " =":  # property = expression
            assert parent is not None, f"{where}: expression property outside an object"
            parent.props[kw] = body(rest.split("=", 1)[1], depth + 1)
            continue
        if kw in OBJECT_KINDS:
            rest = rest.strip()
            if kw == "ref":
                sub, rest = rest.split(" ", 1)
                name, tail = read_name(rest)
                obj = Obj(f"ref {sub}", name, path.name, i, depth)
            elif kw in ("database", "model") and not rest:
                obj = Obj(kw, "", path.name, i, depth)
                tail = ""
            else:
                name, tail = read_name(rest)
                obj = Obj(kw, name, path.name, i, depth)
            tail = tail.strip()
            if tail.startswith("="):
                obj.value = body(tail[1:], depth + 2)
            else:
                assert not tail, f"{where}: unexpected {tail!r}"
        else:  # a flag (isHidden) or an option group (dataAccessOptions)
            assert not rest.strip(), f"{where}: unknown line {content!r}"
            assert parent is not None, f"{where}: flag outside an object"
            parent.props[kw] = True
            obj = Obj("flag", kw, path.name, i, depth)
        if parent is None:
            roots.append(obj)
        else:
            parent.children.append(obj)
        stack.append(obj)
    return roots


# ------------------------------------------------------------------------------ TMDL validator
NON_ADDITIVE = re.compile(r"\b(LCR|Factor|Ratio|Rate)\b", re.IGNORECASE)


def validate_tmdl(folder: Path, m: StarModel) -> list[str]:
    """Every structural problem of the semantic model in ``folder`` (empty when sound)."""
    problems: list[str] = []
    for name in ("database.tmdl", "model.tmdl", "relationships.tmdl", "expressions.tmdl"):
        if not (folder / name).is_file():
            problems.append(f"missing {name}")
    if problems:
        return problems
    (database,) = parse_tmdl(folder / "database.tmdl")
    if database.kind != "database" or "compatibilityLevel" not in database.props:
        problems.append("database.tmdl: no database with a compatibilityLevel")
    model_roots = parse_tmdl(folder / "model.tmdl")
    refs = {o.name for o in model_roots if o.kind == "ref table"}
    if not any(o.kind == "model" for o in model_roots):
        problems.append("model.tmdl: no model object")

    tables: dict[str, Obj] = {}
    for path in sorted((folder / "tables").glob("*.tmdl")):
        roots = parse_tmdl(path)
        if [o.kind for o in roots] != ["table"]:
            problems.append(f"{path.name}: must hold exactly one table")
            continue
        if roots[0].name in tables:
            problems.append(f"table {roots[0].name} declared twice")
        tables[roots[0].name] = roots[0]
    if refs != set(tables):
        problems.append(f"model.tmdl refs {sorted(refs)} but tables are {sorted(tables)}")
    wanted = {t.label for t in m.tables}
    if set(tables) != wanted:
        problems.append(f"tables {sorted(tables)}, expected {sorted(wanted)}")

    tags: dict[str, str] = {}

    def tag(obj: Obj, what: str) -> None:
        value = obj.props.get("lineageTag")
        if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f-]{36}", value):
            problems.append(f"{what}: no lineageTag")
            return
        if value in tags:
            problems.append(f"{what}: lineageTag {value} repeats that of {tags[value]}")
        tags[value] = what

    columns: dict[tuple[str, str], Obj] = {}
    measure_names: list[str] = []
    for tname, t in tables.items():
        tag(t, f"table {tname}")
        view = next((v for v in m.bi_views if v.name == tname), None)
        view_cols = {out for _, _, out in view.select} if view else set()
        mt = next((x for x in m.tables if x.label == tname), None)
        for c in t.all("column"):
            what = f"column {tname}[{c.name}]"
            if (tname, c.name) in columns:
                problems.append(f"{what} declared twice")
            columns[(tname, c.name)] = c
            tag(c, what)
            if c.props.get("dataType") not in TMDL_TYPES:
                problems.append(f"{what}: dataType {c.props.get('dataType')!r} not allowed")
            if c.props.get("sourceColumn") not in view_cols:
                problems.append(f"{what}: sourceColumn is not a column of the view")
            if c.props.get("summarizeBy") not in ("none", "sum"):
                problems.append(f"{what}: summarizeBy {c.props.get('summarizeBy')!r}")
            if c.props.get("summarizeBy") == "sum" and (
                NON_ADDITIVE.search(c.name) or c.props.get("dataType") == "int64"
            ):
                problems.append(f"{what}: sums a non-additive column")
            if "sortByColumn" in c.props:
                sort_by, _ = read_name(str(c.props["sortByColumn"]))
                if sort_by not in {x.name for x in t.all("column")}:
                    problems.append(f"{what}: sortByColumn {sort_by} is not a column")
        if mt is not None:  # the model's hidden flags (keys, lineage ids) are honoured
            for wc in bi_columns(mt):
                c2 = columns.get((tname, wc.label or wc.name))
                if c2 is None:
                    problems.append(f"column {tname}[{wc.label or wc.name}] missing")
                elif wc.hidden and c2.props.get("isHidden") is not True:
                    problems.append(f"column {tname}[{c2.name}] is a key but not hidden")
        for ms in t.all("measure"):
            what = f"measure {tname}[{ms.name}]"
            tag(ms, what)
            measure_names.append(ms.name)
            ref = re.fullmatch(r"SUM\('((?:[^']|'')+)'\[((?:[^\]]|\]\])+)\]\)", ms.value)
            if not ref:
                problems.append(f"{what}: not a SUM of a column: {ms.value}")
                continue
            col = columns.get((ref.group(1).replace("''", "'"), ref.group(2).replace("]]", "]")))
            if col is None:
                problems.append(f"{what}: sums a column that does not exist")
            elif col.props.get("summarizeBy") != "sum":
                problems.append(f"{what}: sums {col.name}, which is not additive")
        parts = t.all("partition")
        if len(parts) != 1:
            problems.append(f"table {tname}: {len(parts)} partitions")
        for p in parts:
            src = str(p.props.get("source", ""))
            if p.props.get("mode") != "import":
                problems.append(f"table {tname}: partition mode {p.props.get('mode')!r}")
            if p.value != "m":
                problems.append(f"table {tname}: partition is not M")
            for needle in (
                "AmazonRedshift.Database(Server, Database)",
                f'[Name="{m.bi_schema}"]',
                f'[Name="{tname}"]',
            ):
                if needle not in src:
                    problems.append(f"table {tname}: partition source lacks {needle}")
    dup = {x for x in measure_names if measure_names.count(x) > 1}
    clash = set(measure_names) & {c for _, c in columns}
    if dup or clash:
        problems.append(f"measure names repeat or clash with columns: {sorted(dup | clash)}")

    # relationships: fact -> dimension key, many-to-one, one direction; one per fact key
    facts = {t.label for t in m.facts}
    dims = {t.label: t for t in m.dimensions}
    rels = parse_tmdl(folder / "relationships.tmdl")
    names = [r.name for r in rels]
    if len(set(names)) != len(names):
        problems.append("relationship names repeat")
    seen: set[tuple[str, str]] = set()
    from_tables: set[str] = set()
    to_tables: set[str] = set()
    for r in rels:
        what = f"relationship {r.name}"
        if r.kind != "relationship":
            problems.append(f"relationships.tmdl: unexpected {r.kind}")
            continue
        try:
            ft, fc = read_ref(str(r.props["fromColumn"]))
            tt, tc = read_ref(str(r.props["toColumn"]))
        except (KeyError, AssertionError, ValueError) as e:
            problems.append(f"{what}: bad fromColumn/toColumn ({e})")
            continue
        from_tables.add(ft)
        to_tables.add(tt)
        fcol, tcol = columns.get((ft, fc)), columns.get((tt, tc))
        if fcol is None or tcol is None:
            problems.append(f"{what}: {ft}[{fc}] -> {tt}[{tc}] names a missing column")
            continue
        if ft not in facts or tt not in dims:
            problems.append(f"{what}: {ft} -> {tt} is not fact -> dimension")
            continue
        dim = dims[tt]
        key = dim.column(dim.key)
        if tc != (key.label or key.name):
            problems.append(f"{what}: goes to {tt}[{tc}], not the dimension's key")
        if r.props.get("crossFilteringBehavior", "oneDirection") != "oneDirection":
            problems.append(f"{what}: filters both directions")
        if r.props.get("fromCardinality", "many") != "many":
            problems.append(f"{what}: from side is not many")
        if r.props.get("toCardinality", "one") != "one":
            problems.append(f"{what}: to side is not one")
        if r.props.get("isActive", "true") != "true":
            problems.append(f"{what}: inactive")
        if fcol.props.get("dataType") != tcol.props.get("dataType"):
            problems.append(f"{what}: joins {fcol.props.get('dataType')} to a different type")
        for c, side in ((fcol, ft), (tcol, tt)):
            if c.props.get("isHidden") is not True:
                problems.append(f"{what}: key column {side}[{c.name}] is not hidden")
        if (ft, fc) in seen:
            problems.append(f"{what}: {ft}[{fc}] has two relationships")
        seen.add((ft, fc))
    if from_tables & to_tables:
        problems.append(f"tables on both ends of relationships: {sorted(from_tables & to_tables)}")
    for f in m.facts:
        keys = [f.column(n) for n in ("date_key", *(fk.column for fk in f.fks))]
        for k in keys:
            if (f.label, k.label or k.name) not in seen:
                problems.append(f"fact {f.label}: key {k.label} has no relationship")

    # the marked date table
    marked = [t for t in tables.values() if t.props.get("dataCategory") == "Time"]
    date = next(t for t in m.tables if t.kind == "date")
    if [t.name for t in marked] != [date.label]:
        problems.append(f"date tables marked: {[t.name for t in marked]}, want {date.label}")
    for t in marked:
        is_key = [c for c in t.all("column") if c.props.get("isKey") is True]
        if [(c.name, c.props.get("dataType")) for c in is_key] != [("Date", "dateTime")]:
            problems.append(f"date table {t.name}: key columns {[c.name for c in is_key]}")

    # parameters
    exprs = {e.name: e for e in parse_tmdl(folder / "expressions.tmdl") if e.kind == "expression"}
    for name in ("Server", "Database"):
        param = exprs.get(name)
        if param is None or "IsParameterQuery=true" not in param.value:
            problems.append(f"expressions.tmdl: no M parameter {name}")
        else:
            tag(param, f"expression {name}")
    return problems


# ------------------------------------------------------------------------------ (c) TMDL
def test_checked_in_tmdl_is_a_sound_star(lcr_model):
    assert validate_tmdl(DEFINITION, lcr_model) == []


def test_tmdl_facts(lcr_model):
    deal = parse_tmdl(DEFINITION / "tables" / "LCR Deal.tmdl")[0]
    entity = parse_tmdl(DEFINITION / "tables" / "LCR Entity.tmdl")[0]
    assert {ms.name for ms in entity.all("measure")} >= {"Total HQLA", "Total Net Outflows"}
    assert "Total LCR" not in {ms.name for ms in entity.all("measure")}
    assert "Total Factor" not in {ms.name for ms in deal.all("measure")}
    cols = {c.name: c.props for c in entity.all("column")}
    assert cols["LCR"]["summarizeBy"] == "none" and cols["LCR"]["dataType"] == "double"
    assert cols["HQLA"]["summarizeBy"] == "sum"
    assert cols["Entity Key"]["isHidden"] is True
    rels = parse_tmdl(DEFINITION / "relationships.tmdl")
    assert len(rels) == sum(1 + len(f.fks) for f in lcr_model.facts) == 5


def _corrupt(tmp_path: Path, file: str, old: str, new: str) -> Path:
    folder = tmp_path / "definition"
    shutil.copytree(DEFINITION, folder)
    path = folder / file
    text = path.read_text()
    assert old in text, f"{old!r} not in {file}"
    path.write_text(text.replace(old, new, 1))
    return folder


@pytest.mark.parametrize(
    ("file", "old", "new", "problem"),
    [
        (
            "relationships.tmdl",
            "crossFilteringBehavior: oneDirection",
            "crossFilteringBehavior: bothDirections",
            "filters both directions",
        ),
        (
            "relationships.tmdl",
            "toColumn: Entity.'Entity Key'",
            "toColumn: Entity.Colour",
            "names a missing column",
        ),
        (
            "relationships.tmdl",
            "toColumn: Entity.'Entity Key'",
            "toColumn: 'LCR Entity'.'Entity Key'",
            "not fact -> dimension",
        ),
        ("tables/Date.tmdl", "\tdataCategory: Time\n", "", "date tables marked"),
        ("tables/Date.tmdl", "\t\tisKey\n", "", "key columns"),
        ("tables/Entity.tmdl", "dataType: int64\n\t\tisHidden", "dataType: int64", "is not hidden"),
        ("tables/Entity.tmdl", "dataType: string", "dataType: text", "not allowed"),
        (
            "tables/LCR Entity.tmdl",
            "summarizeBy: none\n\t\tsourceColumn: LCR\n",
            "summarizeBy: sum\n\t\tsourceColumn: LCR\n",
            "non-additive",
        ),
        ("tables/LCR Deal.tmdl", "\t\tmode: import", "\t\tmode: directQuery", "partition mode"),
        ("tables/LCR Deal.tmdl", "\tcolumn Currency\n", "  column Currency\n", "spaces"),
    ],
)
def test_validator_catches(tmp_path, lcr_model, file, old, new, problem):
    folder = _corrupt(tmp_path, file, old, new)
    try:
        found = validate_tmdl(folder, lcr_model)
    except AssertionError as e:  # the reader itself refuses malformed files
        found = [str(e)]
    assert any(problem in p for p in found), found


def test_validator_catches_repeated_lineage_tags(tmp_path, lcr_model):
    text = (DEFINITION / "tables" / "Entity.tmdl").read_text()
    tags = re.findall(r"lineageTag: (\S+)", text)
    folder = _corrupt(tmp_path, "tables/Entity.tmdl", tags[2], tags[1])
    assert any("repeats" in p for p in validate_tmdl(folder, lcr_model))


# ------------------------------------------------------------------------------ (d) determinism
def test_generation_is_deterministic(lcr_model):
    assert generated_files(ROOT) == generated_files(ROOT)
    again = star_model(build_plan(ROOT / "pipelines" / "lcr.yaml"), "lcr_star")
    assert tmdl_files(lcr_model) == tmdl_files(again)


def test_lineage_tags_survive_a_label_change(lcr_model):
    """Tags derive from internal names: renaming a business label keeps reports bound."""
    t = lcr_model.table("dim_lcr_category")
    renamed = dataclasses.replace(
        lcr_model,
        tables=tuple(
            dataclasses.replace(x, label="Category") if x is t else x for x in lcr_model.tables
        ),
    )
    before = tmdl_files(lcr_model)["tables/LCR Category.tmdl"]
    after = tmdl_files(renamed)["tables/Category.tmdl"]
    assert re.findall(r"lineageTag: (\S+)", before) == re.findall(r"lineageTag: (\S+)", after)
    assert "table Category" in after
