"""The Spark half of ``star_schema``: stage one Parquet table per dimension and fact.

Each table is stored under the run as ``<node>.<table>`` (Parquet, metadata, success marker),
which is the batch the warehouse loader lands. Surrogate keys are deterministic:
``xxhash64(dimension, natural key[, valid_from])``, never ``monotonically_increasing_id``.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import operator
from typing import TYPE_CHECKING, Any

from regflow.errors import DataError
from regflow.ops.star import StarParams, resolve_input
from regflow.plan.model import Plan, PlanNode
from regflow.runtime.adjust_ops import matched_rules_sql, tag_masks_type
from regflow.runtime.builtin_ops import node_tag
from regflow.runtime.driver.audit import rules_by_row
from regflow.runtime.parquet import parquet_dataset, parquet_files
from regflow.runtime.persist import Writer
from regflow.runtime.policy import Declined
from regflow.runtime.sources import quote_name, schema_ddl, spark_type
from regflow.spec.models import LINEAGE_COLUMN
from regflow.storage.fs import Location, spark_uri
from regflow.warehouse.model import (
    DATE_COLUMNS,
    DATE_KEY,
    UNKNOWN_KEY,
    StarModel,
    Table,
    star_model,
    star_table_name,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

_NULL_MARK = "\u0000null"


def date_rows(cob: dt.date) -> list[tuple[Any, ...]]:
    """The calendar of the cob's whole year: PowerBI's date table needs whole years."""
    out = []
    day = dt.date(cob.year, 1, 1)
    while day.year == cob.year:
        last = calendar.monthrange(day.year, day.month)[1]
        out.append(
            (
                int(day.strftime("%Y%m%d")),
                day,
                day.year,
                (day.month - 1) // 3 + 1,
                day.month,
                calendar.month_name[day.month],
                f"{day.year}-{day.month:02d}",
                day.day,
                day.isoweekday(),
                calendar.day_name[day.weekday()],
                day.weekday() < 5,
                day.day == last,
                day.day == last and day.month in (3, 6, 9, 12),
                day.month == 12 and day.day == 31,
            )
        )
        day += dt.timedelta(days=1)
    return out


def _cast(name: str, t: str) -> Column:
    from pyspark.sql import functions as F

    return F.col(name).cast(spark_type(t)).alias(name)


def _hash_attrs(cols: list[str]) -> Column:
    from pyspark.sql import functions as F

    if not cols:
        return F.lit(0).cast("bigint")
    return F.xxhash64(*[F.coalesce(F.col(c).cast("string"), F.lit(_NULL_MARK)) for c in cols])


def _any_null(cols: list[str]) -> Column:
    from pyspark.sql import functions as F

    return functools.reduce(operator.or_, [F.col(c).isNull() for c in cols])


def _fail(node: str, message: Column) -> Column:
    from pyspark.sql import functions as F

    return F.raise_error(F.concat(F.lit(node_tag(node) + " "), message))


class StarBuilder:
    def __init__(self, writer: Writer, node: PlanNode, frames: dict[str, DataFrame]):
        self.writer, self.node, self.frames = writer, node, frames
        self.plan: Plan = writer.plan
        self.params = StarParams.model_validate(node.params)
        self.model: StarModel = star_model(self.plan, node)
        self.cob = writer.run.cob_date
        self.spark: SparkSession = writer.spark

    def _frame(self, name: str) -> DataFrame:
        real = resolve_input(name, self.node.inputs)
        assert real is not None, name  # the compiler checked it
        return self.frames[real]

    def run(self) -> None:
        for t in self.model.tables:
            df = self.build(t)
            self.writer.store(
                self.node,
                star_table_name(self.node.id, t.name),
                df,
                kind="star",
                keys=list(t.dedupe_keys),
                unique_ids=False,
            )

    def build(self, t: Table) -> DataFrame:
        if t.kind == "date":
            return self._date(t)
        if t.kind == "dim":
            return self._dimension(t)
        return self._fact(t)

    # ---------------------------------------------------------------- dimensions
    def _date(self, t: Table) -> DataFrame:
        ddl = ", ".join(
            f"`{c.name}` {spark_type(c.type)}"
            for c in t.staged
            if c.name == DATE_KEY or c.name in dict(DATE_COLUMNS)
        )
        return self.spark.createDataFrame(date_rows(self.cob), ddl).coalesce(1)

    def _dimension(self, t: Table) -> DataFrame:
        from pyspark.sql import functions as F

        d = self.params.dimensions[t.logical]
        assert d.from_ is not None
        src = self._frame(d.from_)
        nk = list(t.natural_key)
        attrs = list(d.attributes)
        types = {c.name: c.type for c in t.staged}
        base = src.select(*[_cast(c, types[c]) for c in [*nk, *attrs]]).distinct()
        if d.members:
            rows = [tuple(m.get(c) for c in [*nk, *attrs]) for m in d.members]
            extra = self.spark.createDataFrame(rows, base.schema)
            base = base.unionByName(extra.join(base.select(*nk), nk, "left_anti"))
        key_parts: list[Column] = [F.lit(t.logical), *[F.col(c) for c in nk]]
        if t.scd2:
            base = base.withColumn("valid_from", F.lit(self.cob))
            key_parts.append(F.col("valid_from"))
        tag = f"dimension '{t.logical}'"
        nk_text = ", ".join(nk)
        checked = base.where(  # fails inside the Spark job: no extra pass
            F.when(
                _any_null(nk),
                _fail(self.node.id, F.lit(f"{tag}: a row has a null natural key ({nk_text})")),
            ).otherwise(F.lit(True))
        )
        out = checked.select(
            F.xxhash64(*key_parts).alias(t.key),
            *nk,
            *attrs,
            *(["valid_from"] if t.scd2 else []),
            _hash_attrs(attrs).alias("row_hash"),
            F.lit(self.writer.identity["run_id"]).alias("run_id"),
        ).coalesce(1)
        self._check_keys(t, out, nk)
        return out

    def _check_keys(self, t: Table, df: DataFrame, nk: list[str]) -> None:
        """One member per natural key, one surrogate key per member, never the unknown key."""
        from pyspark.sql import functions as F

        row = df.agg(
            F.count(F.lit(1)).alias("rows"),
            F.countDistinct(*[F.col(c) for c in nk]).alias("members"),
            F.countDistinct(t.key).alias("keys"),
            F.sum(F.when(F.col(t.key) == UNKNOWN_KEY, 1).otherwise(0)).alias("unknown"),
        ).collect()[0]
        kw = {"pipeline": self.plan.pipeline, "node": self.node.id, "cob": self.writer.run.cob}
        if row["rows"] != row["members"]:
            dup = df.groupBy(*nk).count().where(F.col("count") > 1).limit(1).collect()[0]
            example = ", ".join(f"{c}={dup[c]}" for c in nk)
            raise DataError(
                f"dimension '{t.logical}': natural key {example} has different attributes in "
                f"different rows; a dimension member must be described once per cob",
                **kw,
            )
        if row["rows"] != row["keys"] or row["unknown"]:
            raise DataError(
                f"dimension '{t.logical}': surrogate key collision (xxhash64); rename the "
                "dimension to change the hash seed",
                **kw,
            )

    # ---------------------------------------------------------------- facts
    def _fact(self, t: Table) -> DataFrame:
        from pyspark.sql import functions as F

        f = self.params.facts[t.logical]
        src = self._frame(f.from_)
        name = resolve_input(f.from_, self.node.inputs) or f.from_
        tags: dict[str, dict[str, Any]] = {}
        if f.adjusted_flags:
            src, tags = self._with_tag_masks(name, src)
        date = F.col(f.date)
        cob_key = int(self.cob.strftime("%Y%m%d"))
        grain_null = _any_null(list(t.grain))
        grain = ", ".join(t.grain)
        guard = (
            F.when(
                grain_null,
                _fail(
                    self.node.id,
                    F.lit(f"fact '{t.logical}': a row has a null grain column ({grain})"),
                ),
            )
            .when(
                date != F.lit(self.cob),
                _fail(
                    self.node.id,
                    F.concat(
                        F.lit(f"fact '{t.logical}': a row is dated "),
                        date.cast("string"),
                        F.lit(f", not the cob {self.cob}; a load replaces exactly one cob"),
                    ),
                ),
            )
            .otherwise(F.lit(cob_key))
        )
        cols: list[Column] = []
        for c in t.staged:
            if c.name == DATE_KEY:
                cols.append(guard.cast("int").alias(DATE_KEY))
            elif c.name == "lineage_id":
                cols.append(F.col(LINEAGE_COLUMN).alias("lineage_id"))
            elif c.name in ("is_adjusted", "adjustment_rules"):
                continue  # from the audit, below
            elif c.name in self.writer.identity:  # run_id, spec_hash, adjustment_set_hash
                cols.append(F.lit(self.writer.identity[c.name]).alias(c.name))
            else:
                cols.append(_cast(c.name, c.type))
        out = src.select(*cols, *[F.col(quote_name(c)) for c in tags])
        if f.adjusted_flags:
            out = self._with_flags(out, name, tags)
        return out.select(*[c.name for c in t.staged])

    def _with_tag_masks(
        self, name: str, src: DataFrame
    ) -> tuple[DataFrame, dict[str, dict[str, Any]]]:
        """``src`` (the frame of ``name``) and the audit columns it carries. When this stage
        reads ``name`` from storage and its files keep audit columns (the metadata's
        ``audit_tags``: column -> adjust node and rule ids), it is read again with them,
        reduced to their masks (the read leaves the values they hold out); else as is."""
        run = self.writer.stored.read_from(name)
        meta = run.metadata(name) if run is not None else {}
        tags: dict[str, dict[str, Any]] = meta.get("audit_tags", {})
        if run is None or not tags:
            return src, {}
        masks = [(c, tag_masks_type(tag["rules"])) for c, tag in tags.items()]
        ddl = schema_ddl([*meta["schema"], *masks])
        return self.spark.read.schema(ddl).parquet(spark_uri(run.node_dir(name))), tags

    def _with_flags(self, df: DataFrame, name: str, tags: dict[str, dict[str, Any]]) -> DataFrame:
        """``is_adjusted`` / ``adjustment_rules``: the rules that changed each row, from the
        audit columns ``df`` carries (``tags``, see :meth:`_with_tag_masks`: no join), and
        from the audits of the other adjustments upstream (joined by lineage id)."""
        from pyspark.sql import functions as F

        carried = {tag["node"] for tag in tags.values()}
        folders = []
        for adj in self._adjustments_upstream(name):
            run = self.writer.stored.run_of(f"{adj}.audit")
            if run is not None and adj not in carried:
                folders.append(
                    (run.node_dir(f"{adj}.audit"), int(run.metadata(f"{adj}.audit")["rows"]))
                )
        own = matched_rules_sql({c: tag["rules"] for c, tag in tags.items()})
        if not folders:
            rules = F.expr(own)
        else:
            joined = self._rules_by_row([f for f, _ in folders], sum(n for _, n in folders))
            df = df.join(F.broadcast(joined), "lineage_id", "left")
            rules = F.col("adjustment_rules")
            if tags:  # both: one sorted list
                none = "CAST(array() AS ARRAY<STRING>)"
                rules = F.expr(
                    "nullif(array_join(array_sort(concat("
                    f"coalesce(split(adjustment_rules, ','), {none}), "
                    f"coalesce(split({own}, ','), {none}))), ','), '')"
                )
        return df.withColumn("adjustment_rules", rules).withColumn(
            "is_adjusted", F.col("adjustment_rules").isNotNull()
        )

    def _rules_by_row(self, folders: list[Location], rows: int) -> DataFrame:
        """The rules that changed each row, from the audits in ``folders`` (``rows`` in
        all): ``lineage_id``, ``adjustment_rules`` (sorted ids, comma-separated). Audits
        hold the changed rows only: up to the policy's ``flags_max_rows`` they are read and
        grouped on the driver (no Spark job), beyond by Spark."""
        from pyspark.sql import functions as F

        schema = "lineage_id bigint, adjustment_rules string"
        files = {folder: parquet_files(folder) for folder in folders}
        written = [folder for folder in folders if files[folder]]  # (no file: no row changed)
        if not written:
            return self.spark.createDataFrame([], schema)
        step = f"adjusted flags of {self.node.id} from {', '.join(f.parent.name for f in written)}"
        table: Any = self.writer.policy.decline("flags_max_rows", rows)
        if table is None:
            paths = [p for folder in written for p in files[folder]]
            audit = parquet_dataset(paths).read(columns=[LINEAGE_COLUMN, "rule_id"])
            table = rules_by_row(audit)
        self.writer.note(step, table if isinstance(table, Declined) else None)
        if not isinstance(table, Declined):
            return self.spark.createDataFrame(table, schema=schema)
        audits = [
            self.spark.read.parquet(spark_uri(folder)).select(
                F.col(LINEAGE_COLUMN).alias("lineage_id"), "rule_id"
            )
            for folder in written
        ]
        union = functools.reduce(lambda a, b: a.unionByName(b), audits)
        return union.groupBy("lineage_id").agg(
            F.array_join(F.array_sort(F.collect_set("rule_id")), ",").alias("adjustment_rules")
        )

    def _adjustments_upstream(self, name: str) -> list[str]:
        """The adjust nodes whose audits can name rows of ``name``: upstream of it, up to
        the nearest aggregates (an aggregate's rows get lineage ids of their own, so an
        audit of the rows it summed never matches them; rowwise, union and rollup
        operators keep their input rows' ids)."""
        seen: set[str] = set()
        out: list[str] = []
        todo = [name]
        while todo:
            cur = todo.pop()
            if cur in seen or self.plan.is_source(cur):
                continue
            seen.add(cur)
            pn = self.plan.node(cur)
            if self.plan.op_of(cur).applies_rules:
                out.append(cur)
            if pn.lineage != "aggregate":
                todo.extend(pn.inputs)
        return sorted(out)


def run_star(writer: Writer, node: PlanNode, frames: dict[str, DataFrame]) -> None:
    StarBuilder(writer, node, frames).run()
