"""A PowerBI semantic model for a star, as TMDL (the text format of PowerBI Projects).

:func:`tmdl_files` turns a :class:`~regflow.warehouse.model.StarModel` into the files of a
``.SemanticModel/definition/`` folder::

    database.tmdl            compatibility level
    model.tmdl               model options, the table references, the query order
    expressions.tmdl         the M parameters ``Server`` and ``Database``
    relationships.tmdl       one relationship per fact key (many-to-one, single direction)
    tables/<Table>.tmdl      columns, measures and the import partition of each table

The model reads the PowerBI views (schema ``model.bi_schema``, e.g. ``lcr_bi``; one view per
table, named by its business label, with business column names), never the star's tables:

- tables and columns carry the business labels; ``sourceColumn`` is the view's column;
- surrogate keys, lineage ids, and the fact columns that repeat a dimension (the fact's
  date and the natural keys its dimension keys were looked up from) are hidden, so reports
  slice through the dimensions, which filter every fact;
- relationships go from each fact's key columns to the dimensions' keys: many-to-one,
  filtering one direction (dimension -> fact);
- the date dimension is marked as the date table (``dataCategory: Time``, ``isKey`` on its
  ``Date`` column); the relationships use the integer ``Date Key``, which a marked date
  table allows;
- each additive measure column gets one ``Total <label>`` measure (``SUM``) and
  ``summarizeBy: sum``; ratios, factors and ``double`` measures (e.g. ``lcr``) are not
  additive: ``summarizeBy: none`` and no measure (recompute a ratio from its summed parts,
  and mind that a consolidated ratio is not always a ratio of sums);
- lineage tags and relationship names are UUIDs derived (uuid5) from the star's internal
  table and column names: regeneration is byte-stable, and renaming a business label keeps
  the tags, so PowerBI reports follow the rename.

Data types: ``decimal(p,s)`` with at most 4 decimals and 15 integer digits becomes PowerBI's
fixed decimal (``decimal``, exact); wider decimals become ``double``.

Partitions import the views from Amazon Redshift (``AmazonRedshift.Database(Server,
Database)``). ``source="postgresql"`` writes the same model reading PostgreSQL
(``PostgreSQL.Database(Server, Database)``) instead, e.g. for the local warehouse.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

from regflow.core.types import decimal_ps
from regflow.errors import PlanError
from regflow.warehouse.model import StarModel, Table, WColumn, bi_columns

COMPATIBILITY_LEVEL = 1567
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://regflow/powerbi")
SOURCES = ("redshift", "postgresql")
DEFAULT_SERVER = {
    "redshift": "example-cluster.abc123xyz789.eu-west-1.redshift.amazonaws.com:5439",
    "postgresql": "localhost:5432",
}
DEFAULT_DATABASE = {"redshift": "dev", "postgresql": "postgres"}

# Words that make a measure column non-additive (a ratio, a factor, a price...).
NON_ADDITIVE_WORDS = frozenset(
    {
        "ratio",
        "ratios",
        "factor",
        "factors",
        "rate",
        "rates",
        "pct",
        "percent",
        "percentage",
        "lcr",
        "nsfr",
        "weight",
        "price",
        "multiplier",
        "coefficient",
    }
)
_DATE_SORT = {"month_name": "month", "day_name": "day_of_week"}  # date table: sort by
_BARE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FILE_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f]')


# ------------------------------------------------------------------------------- names
def tmdl_name(name: str) -> str:
    """An object name in TMDL: bare when it is a plain identifier, else single-quoted."""
    if _BARE_NAME.match(name):
        return name
    return "'" + name.replace("'", "''") + "'"


def dax_column(table: str, column: str) -> str:
    return "'" + table.replace("'", "''") + "'[" + column.replace("]", "]]") + "]"


def m_string(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def lineage_tag(m: StarModel, *parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join((m.pipeline, m.node, *parts))))


def file_name(label: str) -> str:
    return _FILE_UNSAFE.sub("_", label).strip(" .") or "table"


# ------------------------------------------------------------------------------- types
def tmdl_type(t: str) -> str:
    ps = decimal_ps(t)
    if ps:
        precision, scale = ps
        return "decimal" if scale <= 4 and precision - scale <= 15 else "double"
    return {
        "string": "string",
        "boolean": "boolean",
        "date": "dateTime",
        "timestamp": "dateTime",
        "int": "int64",
        "bigint": "int64",
        "double": "double",
    }.get(t, "string")


def is_numeric(t: str) -> bool:
    return t in ("int", "bigint", "double") or decimal_ps(t) is not None


def is_additive(c: WColumn) -> bool:
    """A fact measure that sums: numeric, not ``double``, not named like a ratio/factor."""
    if c.role != "measure" or not is_numeric(c.type) or c.type == "double":
        return False
    return not any(w in NON_ADDITIVE_WORDS for w in c.name.lower().split("_"))


def format_string(c: WColumn) -> str:
    if c.type == "date":
        return "yyyy-mm-dd"
    if c.type == "timestamp":
        return "yyyy-mm-dd hh:nn:ss"
    if c.type in ("int", "bigint"):
        return "0"
    if is_additive(c):
        return "#,0.00"
    ps = decimal_ps(c.type)
    if ps:
        scale = min(ps[1], 6)
        return "0." + "0" * scale if scale else "0"
    if c.type == "double":
        return "0.0000"
    return ""


# ------------------------------------------------------------------------------- the model
def _label(c: WColumn) -> str:
    return c.label or c.name


def hidden(t: Table, c: WColumn) -> bool:
    """Keys and bookkeeping (the model's flags), and the fact columns a dimension holds."""
    if c.hidden:
        return True
    if t.kind == "fact":
        repeated = {t.date_column, *(n for fk in t.fks for n in fk.natural)}
        return c.name in repeated
    return False


def measures(m: StarModel) -> dict[tuple[str, str], str]:
    """(fact table, column) -> measure name, unique in the model and against every column."""
    columns = {_label(c) for t in m.tables for c in bi_columns(t)}
    wanted = [
        (t, c, f"Total {_label(c)}") for t in m.facts for c in bi_columns(t) if is_additive(c)
    ]
    counts: dict[str, int] = {}
    for _, _, name in wanted:
        counts[name] = counts.get(name, 0) + 1
    out: dict[tuple[str, str], str] = {}
    for t, c, name in wanted:
        final = name if counts[name] == 1 and name not in columns else f"{name} ({t.label})"
        if final in columns or final in out.values():
            raise PlanError(
                f"star '{m.node}': the PowerBI measure name '{final}' is taken; rename a "
                "column under the star's 'labels:'"
            )
        out[(t.name, c.name)] = final
    return out


def _check_names(m: StarModel) -> None:
    labels = [t.label for t in m.tables]
    files = [file_name(x).lower() for x in labels]
    dup = {x for x in files if files.count(x) > 1}
    if dup or len(set(labels)) != len(labels):
        raise PlanError(
            f"star '{m.node}': PowerBI table names {', '.join(labels)} repeat (ignoring case and "
            "characters not allowed in file names); set distinct 'label:'s"
        )


def _column(m: StarModel, t: Table, c: WColumn) -> list[str]:
    name = _label(c)
    out = [f"\tcolumn {tmdl_name(name)}", f"\t\tdataType: {tmdl_type(c.type)}"]
    if hidden(t, c):
        out.append("\t\tisHidden")
    if t.kind == "date" and c.name in t.natural_key:
        out.append("\t\tisKey")
    fmt = format_string(c)
    if fmt:
        out.append(f"\t\tformatString: {fmt}")
    out.append(f"\t\tlineageTag: {lineage_tag(m, t.name, 'column', c.name)}")
    out.append(f"\t\tsummarizeBy: {'sum' if is_additive(c) else 'none'}")
    out.append(f"\t\tsourceColumn: {name}")
    sort_by = _DATE_SORT.get(c.name, "") if t.kind == "date" else ""
    if any(x.name == sort_by for x in t.columns):
        out.append(f"\t\tsortByColumn: {tmdl_name(_label(t.column(sort_by)))}")
    out += ["", "\t\tannotation SummarizationSetBy = User"]
    if c.type == "date":
        out += ["", "\t\tannotation UnderlyingDateTimeDataType = Date"]
    return [*out, ""]


def m_source(m: StarModel, view: str, source: str = "redshift") -> list[str]:
    """The partition's M query: the view ``view`` of schema ``m.bi_schema``."""
    if source == "redshift":
        return [
            "let",
            "    Source = AmazonRedshift.Database(Server, Database),",
            f"    Schema = Source{{[Name={m_string(m.bi_schema)}]}}[Data],",
            f"    View = Schema{{[Name={m_string(view)}]}}[Data]",
            "in",
            "    View",
        ]
    if source == "postgresql":
        return [
            "let",
            "    Source = PostgreSQL.Database(Server, Database),",
            f"    View = Source{{[Schema={m_string(m.bi_schema)}, Item={m_string(view)}]}}[Data]",
            "in",
            "    View",
        ]
    raise ValueError(f"unknown PowerBI source '{source}'; use one of {', '.join(SOURCES)}")


def _description(t: Table, m: StarModel) -> str:
    where = f'{m.bi_schema}."{t.label}" (from {m.schema}.{t.name})'
    if t.kind == "fact":
        return f"/// Fact, one row per {', '.join(t.grain)}. Reads {where}."
    if t.kind == "date":
        return f"/// The date table (marked). Reads {where}."
    history = "; one row per version (SCD2)" if t.scd2 else ""
    return f"/// Dimension{history}. Reads {where}."


def table_tmdl(m: StarModel, t: Table, source: str = "redshift") -> str:
    lines = [_description(t, m), f"table {tmdl_name(t.label)}"]
    lines.append(f"\tlineageTag: {lineage_tag(m, t.name)}")
    if t.kind == "date":
        lines.append("\tdataCategory: Time")
    lines.append("")
    names = measures(m)
    for c in bi_columns(t):
        measure = names.get((t.name, c.name))
        if measure:
            lines += [
                f"\tmeasure {tmdl_name(measure)} = SUM({dax_column(t.label, _label(c))})",
                "\t\tformatString: #,0.00",
                f"\t\tlineageTag: {lineage_tag(m, t.name, 'measure', c.name)}",
                "",
            ]
    for c in bi_columns(t):
        lines += _column(m, t, c)
    lines += [f"\tpartition {tmdl_name(t.label)} = m", "\t\tmode: import", "\t\tsource ="]
    lines += [f"\t\t\t\t{x}" for x in m_source(m, t.label, source)]
    lines += ["", "\tannotation PBI_ResultType = Table", ""]
    return "\n".join(lines)


def relationships(m: StarModel) -> list[tuple[str, str, str, str, str]]:
    """(name, fact table, fact column, dimension table, dimension key column), by label."""
    out = []
    date = next(t for t in m.tables if t.kind == "date")
    for f in m.facts:
        links = [(date, date.key, date.key)] + [
            (m.table(fk.dim_table), fk.column, fk.dim_key) for fk in f.fks
        ]
        for dim, col, key in links:
            out.append(
                (
                    lineage_tag(m, "relationship", f.name, col),
                    f.label,
                    _label(f.column(col)),
                    dim.label,
                    _label(dim.column(key)),
                )
            )
    return out


def relationships_tmdl(m: StarModel) -> str:
    lines = []
    for name, ft, fc, dt, dc in relationships(m):
        lines += [
            f"relationship {name}",
            "\tcrossFilteringBehavior: oneDirection",
            f"\tfromColumn: {tmdl_name(ft)}.{tmdl_name(fc)}",
            f"\ttoColumn: {tmdl_name(dt)}.{tmdl_name(dc)}",
            "",
        ]
    return "\n".join(lines)


def expressions_tmdl(m: StarModel, source: str = "redshift") -> str:
    what = "Amazon Redshift endpoint, host:port" if source == "redshift" else "PostgreSQL host:port"
    params = [
        ("Server", DEFAULT_SERVER[source], f"The {what}."),
        ("Database", DEFAULT_DATABASE[source], "The database holding the star."),
    ]
    lines = []
    for name, value, doc in params:
        lines += [
            f"/// {doc} Change it under Transform data > Edit parameters (Desktop) or the "
            "semantic model's settings (service).",
            f'expression {name} = {m_string(value)} meta [IsParameterQuery=true, Type="Text", '
            "IsParameterQueryRequired=true]",
            f"\tlineageTag: {lineage_tag(m, 'expression', name)}",
            "",
            "\tannotation PBI_ResultType = Text",
            "",
        ]
    return "\n".join(lines)


def model_tmdl(m: StarModel) -> str:
    order = ["Server", "Database", *(t.label for t in m.tables)]
    lines = [
        "model Model",
        "\tculture: en-US",
        "\tdefaultPowerBIDataSourceVersion: powerBI_V3",
        "\tsourceQueryCulture: en-US",
        "\tdataAccessOptions",
        "\t\tlegacyRedirects",
        "\t\treturnErrorValuesAsNull",
        "",
        "annotation __PBI_TimeIntelligenceEnabled = 0",
        "",
        f"annotation PBI_QueryOrder = {json.dumps(order, separators=(',', ':'))}",
        "",
        *(f"ref table {tmdl_name(t.label)}" for t in m.tables),
        "",
    ]
    return "\n".join(lines)


def tmdl_files(m: StarModel, source: str = "redshift") -> dict[str, str]:
    """The ``definition/`` folder of the star's semantic model: relative path -> text."""
    if source not in SOURCES:
        raise ValueError(f"unknown PowerBI source '{source}'; use one of {', '.join(SOURCES)}")
    _check_names(m)
    files = {
        "database.tmdl": f"database\n\tcompatibilityLevel: {COMPATIBILITY_LEVEL}\n",
        "model.tmdl": model_tmdl(m),
        "expressions.tmdl": expressions_tmdl(m, source),
        "relationships.tmdl": relationships_tmdl(m),
    }
    for t in m.tables:
        files[f"tables/{file_name(t.label)}.tmdl"] = table_tmdl(m, t, source)
    return files


PBISM = json.dumps({"version": "4.0", "settings": {}}, indent=2) + "\n"


def write_tmdl(m: StarModel, out_dir: Path | str, source: str = "redshift") -> list[Path]:
    """Write the TMDL files under ``out_dir`` (the ``definition`` folder); returns them."""
    out = Path(out_dir)
    written = []
    for rel, text in tmdl_files(m, source).items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
        written.append(path)
    return written
