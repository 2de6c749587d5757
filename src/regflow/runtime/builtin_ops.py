"""The Spark half of the built-in ops. Each is a small pure function:
DataFrame(s) plus validated params in, DataFrame out.

Data checks (a join without a match, a row no classify rule matches) are raised from
inside the Spark job with ``raise_error`` in a filter, so they cost no extra pass over the
data. Their message starts with ``[regflow:node=<id>]`` so the executor can name the node.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from regflow.errors import DataError
from regflow.ops.builtin import (
    AggregateParams,
    CalcParams,
    ClassifyParams,
    FilterParams,
    JoinParams,
    UnionParams,
)
from regflow.runtime.driver.aggregate import GROUP_ID_COLUMN
from regflow.runtime.driver.checks import repeated_keys
from regflow.runtime.lineage import group_lineage_id
from regflow.runtime.sources import quote_name, spark_type
from regflow.spec.models import LINEAGE_COLUMN

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from regflow.runtime.context import OpContext


def node_tag(node: str) -> str:
    return f"[regflow:node={node}]"


def _assert_rows(df: DataFrame, failing: Column, message: Column) -> DataFrame:
    """Fail the Spark job with ``message`` on the first row where ``failing`` holds."""
    from pyspark.sql import functions as F

    return df.where(F.when(failing, F.raise_error(message)).otherwise(F.lit(True)))


def calc(inputs: list[DataFrame], p: CalcParams, ctx: OpContext) -> DataFrame:
    """New or replaced columns, computed in order (a later column may use an earlier one)."""
    from pyspark.sql import functions as F

    df = inputs[0]
    for name, expr, typ in p.items():
        col = F.expr(expr)
        df = df.withColumn(name, col.cast(spark_type(typ)) if typ else col)
    return df


def filter_rows(inputs: list[DataFrame], p: FilterParams, ctx: OpContext) -> DataFrame:
    """Keep the rows for which ``where`` is true (null counts as false, as in SQL)."""
    from pyspark.sql import functions as F

    return inputs[0].where(F.expr(p.where))


def join(inputs: list[DataFrame], p: JoinParams, ctx: OpContext) -> DataFrame:
    """Enrich the left rows with lookup columns; the left lineage id is kept.

    The lookup's keys must be unique (else rows would be duplicated). A lookup the runtime
    knows to have at most ``broadcast_max_keys`` rows (``ctx.input_rows``, the policy's) is
    broadcast with
    the check built in (the broadcast job fails on a repeated key: no extra Spark job); any
    other lookup is checked up front. With ``require_match`` (the default) a left row
    without a lookup row fails the run, naming its key. Without it, the unmatched rows are
    counted in the job that computes the join (``DataFrame.observe``: no extra pass), then
    kept (``how: left``) or dropped (``how: inner``).
    """
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    left, right = inputs
    pairs = p.pairs()
    right_keys = [r for _, r in pairs]
    take = (
        p.columns
        if p.columns is not None
        else [
            c
            for c in right.columns
            if c not in right_keys and c != LINEAGE_COLUMN and c not in left.columns
        ]
    )
    rows = ctx.input_rows[1] if len(ctx.input_rows) > 1 else None
    policy = ctx.policy
    if policy.allows("broadcast_max_keys", rows):
        right, broadcast = _with_key_check(right, right_keys, ctx), True
    else:
        n_keys = _check_keys_up_front(right, right_keys, ctx)
        broadcast = policy.allows("broadcast_max_keys", n_keys)
    marker = "__regflow_matched"
    renamed = {r: f"__rk_{i}" for i, r in enumerate(right_keys)}
    r = right.selectExpr(
        *[f"{quote_name(k)} AS {renamed[k]}" for k in right_keys],
        *[quote_name(c) for c in take],
        f"true AS {marker}",
    )
    cond = None
    for lk, rk in pairs:
        c = left[lk] == r[renamed[rk]]
        cond = c if cond is None else cond & c
    if broadcast:  # a lookup: ship it to every executor, no shuffle
        r = F.broadcast(r)
    out = left.join(r, cond, "left")  # (inner: the unmatched rows are counted, then dropped)
    unmatched = F.expr(f"{marker} IS NULL")
    if p.require_match:
        msg = F.concat(
            F.lit(f"{node_tag(ctx.node)} no match in '{ctx.inputs[1]}' for "),
            _describe_keys([lk for lk, _ in pairs], null="null"),
            F.lit(
                f" (a row of '{ctx.inputs[0]}'); add the missing '{ctx.inputs[1]}' row, or set "
                "require_match: false on the join if it is partial by design"
            ),
        )
        out = _assert_rows(out, unmatched, msg)
    else:
        seen = Observation()  # (a unique name)
        out = out.observe(
            seen,
            F.count(F.lit(1)).alias("rows"),
            F.count_if(unmatched).alias("unmatched"),
        )
        what = {"join": ctx.node, "left": ctx.inputs[0], "lookup": ctx.inputs[1], "how": p.how}
        ctx.observations.append((what, seen))
        if p.how == "inner":
            out = out.where(~unmatched)
    return out.drop(marker, *renamed.values())


def _duplicate_keys_text(ctx: OpContext) -> tuple[str, str]:
    """The duplicate lookup key error: its text before and after the keys."""
    return (
        f"join lookup '{ctx.inputs[1]}' has duplicate keys (",
        "); each left row must match at most one lookup row",
    )


def _describe_keys(keys: Sequence[str], *, null: str) -> Column:
    """``key=value, ...`` of a row's ``keys`` as a string, a null value written as ``null``."""
    from pyspark.sql import functions as F

    return F.concat_ws(
        ", ",
        *[
            F.concat(
                F.lit(f"{k}="), F.coalesce(F.expr(f"CAST({quote_name(k)} AS STRING)"), F.lit(null))
            )
            for k in keys
        ],
    )


def _with_key_check(right: DataFrame, keys: list[str], ctx: OpContext) -> DataFrame:
    """``right`` failing, in the job that computes it, on a key that occurs more than once.

    The error is the up-front check's (naming one repeated key). Read as one partition (a
    lookup of at most ``broadcast_max_keys`` rows), the rows are counted per key without a
    shuffle. Grouping is Spark's, as in the join: NaN equals NaN, nulls form one key. Spark
    may first drop lookup rows no left row can match (e.g. a null key, or a value the left
    input is filtered to exclude): those cannot duplicate a left row.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    count = "__regflow_key_rows"
    counted = right.coalesce(1).withColumn(count, F.count(F.lit(1)).over(Window.partitionBy(*keys)))
    head, tail = _duplicate_keys_text(ctx)
    msg = F.concat(
        F.lit(f"{node_tag(ctx.node)} {head}"),
        _describe_keys(keys, null="None"),
        F.lit(tail),
    )
    return _assert_rows(counted, F.expr(f"{count} > 1"), msg).drop(count)


def _check_keys_up_front(right: DataFrame, keys: list[str], ctx: OpContext) -> int:
    """Fail if the lookup ``right`` repeats a key (Spark jobs); returns its number of keys."""
    dups, n_keys = _lookup_duplicates(right, keys, ctx)
    if dups:
        described = "; ".join(
            ", ".join(f"{k}={v}" for k, v in zip(keys, d, strict=True)) for d in dups
        )
        head, tail = _duplicate_keys_text(ctx)
        raise DataError(
            f"{head}{described}{tail}",
            pipeline=ctx.pipeline,
            node=ctx.node,
            cob=ctx.cob,
        )
    return n_keys


def _lookup_duplicates(
    right: DataFrame, keys: list[str], ctx: OpContext
) -> tuple[list[tuple[Any, ...]], int]:
    """Up to 3 keys that occur more than once in ``right``, and its number of keys.

    A lookup of up to the policy's ``key_check_max_rows`` rows is checked on the driver
    from its key columns (one small Spark job); a larger one by a Spark aggregation.
    """
    from pyspark.sql import functions as F

    step = f"check the keys of {ctx.inputs[1]} for {ctx.node}"
    limit = ctx.policy.key_check_max_rows
    if limit >= 0:
        rows = right.select(*keys).limit(min(limit, 2**31 - 2) + 1).collect()
        if len(rows) <= limit:
            ctx.engines.append({"step": step, "engine": "driver"})
            return repeated_keys(rows)
    why = f"over {limit:,} rows (key_check_max_rows)"
    if limit < 0:  # (never on the driver: engine mode spark)
        why = f"engine mode '{ctx.policy.mode}'"
    ctx.engines.append({"step": step, "engine": "spark", "why": why})
    counts_df = right.groupBy(*keys).count()
    stats = counts_df.agg(F.count("*").alias("keys"), F.max("count").alias("most")).first()
    n_keys, most = (stats["keys"], stats["most"]) if stats else (0, 0)
    if most and most > 1:
        found = counts_df.where(F.col("count") > 1).limit(3).collect()
        return [tuple(r[k] for k in keys) for r in found], n_keys
    return [], n_keys


def classify(inputs: list[DataFrame], p: ClassifyParams, ctx: OpContext) -> DataFrame:
    """Ordered decision table: the first rule whose ``when`` is true sets ``output``.

    The rule conditions are evaluated once per row: one CASE chain yields the position of
    the first matching rule, and the output value and the rule id are looked up from it.
    With ``on_no_match: error`` the chain raises from its ELSE branch (a separate check of
    its result would make Spark evaluate every condition a second time).
    """
    from pyspark.sql import functions as F

    df = inputs[0]
    typ = spark_type(p.type)
    values = [_typed_lit(r.value, typ) for r in p.rules]
    ids = [F.lit(r.id or f"#{i + 1}") for i, r in enumerate(p.rules)]
    if p.on_no_match == "error":
        msg = F.concat(
            F.lit(f"{node_tag(ctx.node)} no classify rule matches the row with lineage id "),
            F.expr(f"CAST({quote_name(LINEAGE_COLUMN)} AS STRING)"),
            F.lit("; add a rule or a default, or set on_no_match: default"),
        )
        otherwise = F.raise_error(msg).cast("int")
    else:  # one position past the rules: the default, and no rule id
        otherwise = F.lit(len(p.rules))
        values.append(_typed_lit(p.default, typ))
        ids.append(F.lit(None).cast("string"))
    tmp = "__regflow_rule"
    staged = df.withColumn(tmp, _first_match([F.expr(r.when) for r in p.rules], otherwise))
    # The position is never null nor out of range (Spark 4's generated code for an array
    # lookup at a null position fails or returns the wrong element).
    new = {p.output: F.array(*values)[F.col(tmp)]}
    if p.rule_column:
        new[p.rule_column] = F.array(*ids)[F.col(tmp)]
    # as withColumn would place them, in one projection
    cols = [new.pop(c).alias(c) if c in new else quote_name(c) for c in df.columns]
    return staged.select(*cols, *[v.alias(k) for k, v in new.items()])


def _first_match(conditions: Sequence[Column], otherwise: Column) -> Column:
    """``CASE WHEN conditions[0] THEN 0 WHEN conditions[1] THEN 1 ... ELSE otherwise END``.

    Chained on the JVM columns: PySpark's ``Column.when`` records the Python call site on
    every call (several JVM round trips each), which for a decision table of dozens of
    rules costs more than the rest of the plan. The expression is the same.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.classic.column import Column as ClassicColumn

    chain = _jvm_column(F.when(conditions[0], 0))
    for i, cond in enumerate(conditions[1:], start=1):
        chain = chain.when(_jvm_column(cond), i)
    return ClassicColumn(chain.otherwise(_jvm_column(otherwise)))


def _jvm_column(col: Column) -> Any:
    """The JVM column behind a (classic) PySpark column."""
    return col._jc


def _typed_lit(value: Any, typ: str) -> Column:
    """``value`` as a literal of Spark type ``typ`` (a string is one already: no cast)."""
    from pyspark.sql import functions as F

    if typ == "string" and isinstance(value, str):
        return F.lit(value)
    return F.lit(value).cast(typ)


def union(inputs: list[DataFrame], p: UnionParams, ctx: OpContext) -> DataFrame:
    """Stack inputs by column name."""
    out = inputs[0]
    for df in inputs[1:]:
        out = out.unionByName(df, allowMissingColumns=p.allow_missing_columns)
    return out


# ------------------------------------------------------------------------ aggregate
def aggregate_contributions(
    df: DataFrame, p: AggregateParams, extra: Sequence[str] = (), *, node: str | None = None
) -> DataFrame:
    """The narrow lineage checkpoint: group key, member lineage id, and each row's
    contribution to each measure (null where the row does not contribute).

    With ``node``, also the lineage id of the aggregated row each member contributes to
    (``_lineage_group_id``): a drill-through from a reported row is a filter on it.
    """
    from pyspark.sql import functions as F

    cols: list[Column | str] = [*p.group_by, LINEAGE_COLUMN]  # names: no Column calls
    if node is not None:
        cols.append(group_lineage_id(node, p.group_by).alias(GROUP_ID_COLUMN))
    for name, m in p.measures.items():
        expr = F.expr(m.expr)
        if m.func == "count":
            expr = F.when(expr.isNotNull(), F.lit(1).cast("bigint"))
        contrib = F.when(F.expr(m.where), expr) if m.where else expr
        if m.type:
            contrib = contrib.cast(spark_type(m.type))
        cols.append(contrib.alias(name))
    return df.select(*cols, *extra)


def aggregate_finish(checkpoint: DataFrame, p: AggregateParams, node: str) -> DataFrame:
    """Aggregate the checkpointed contributions: the reported figures are sums of exactly
    the rows a drill-through shows."""
    from pyspark.sql import functions as F

    aggs = []
    for name, m in p.measures.items():
        c = name
        if m.func in ("sum", "count"):
            agg = F.coalesce(F.sum(c), F.lit(0).cast(checkpoint.schema[name].dataType))
            if m.func == "count":
                agg = F.coalesce(F.sum(c), F.lit(0)).cast("bigint")
        elif m.func == "min":
            agg = F.min(c)
        else:
            agg = F.max(c)
        aggs.append(agg.alias(name))
    out = checkpoint.groupBy(*p.group_by).agg(*aggs)
    out = out.withColumn(LINEAGE_COLUMN, group_lineage_id(node, p.group_by))
    return out.select(*p.group_by, LINEAGE_COLUMN, *p.measures.keys())


BUILTIN_IMPLS: dict[str, Callable[..., DataFrame]] = {
    "calc": calc,
    "filter": filter_rows,
    "join": join,
    "classify": classify,
    "union": union,
}
