"""The LCR (simplified BCBS 238) as a plain, hand-written PySpark job: the baseline of
``benchmarks/lineage_overhead.py``.

Written from ``/work/shared/reference/lcr/README.md`` the way a careful engineer would write
it without a framework: one Spark plan from the input files to the result, broadcast joins
with the small lookups, the classification as one CASE WHEN chain, the entity and GROUP rows
in a single aggregation (grouping sets), no lineage ids, no checkpoints, no intermediate
outputs. The README's data checks stay in (a deal without an FX rate or without a category
fails the job) as ``raise_error`` inside the plan, which costs no extra pass; the category
check raises from the CASE chain's ELSE branch, so the 49 conditions are evaluated once.

Decimals are kept from input to output; multiplications come before divisions
(``x * 15 / 85``), since Spark would round ``15 / 85`` to 6 decimals.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import Column, DataFrame, SparkSession

CATEGORIES_CSV = (
    Path(__file__).resolve().parent.parent / "pipelines" / "reference" / ("lcr_categories.csv")
)
AMOUNT = "decimal(38,6)"
OUTPUT = (
    "cob_date",
    "legal_entity",
    "l1",
    "l2a",
    "l2b",
    "adj_15",
    "adj_40",
    "hqla",
    "outflows",
    "inflows",
    "capped_inflows",
    "net_outflows",
    "lcr",
)
BUCKETS = {"L1": "l1", "L2A": "l2a", "L2B": "l2b", "OUTFLOW": "outflows", "INFLOW": "inflows"}

ASSETS = ("CASH", "CB_RESERVE", "GOV_BOND", "CORP_BOND", "COVERED_BOND", "RMBS", "EQUITY")
AA_MINUS_OR_BETTER = ("AAA", "AA+", "AA", "AA-")
A_BAND = ("A+", "A", "A-")
A_PLUS_TO_BBB_MINUS = ("A+", "A", "A-", "BBB+", "BBB", "BBB-")
AA_OR_BETTER = ("AAA", "AA+", "AA")
NFC_SOV_CB = ("NFC", "SOVEREIGN", "CENTRAL_BANK")
RETAIL_SME = ("RETAIL", "SME")
COLLATERAL = ("L1", "L2A", "L2B_RMBS", "L2B_OTHER")


def classification(cob: date) -> Column:
    """README step 1 as one CASE WHEN chain: the first matching condition wins; no match fails."""
    from pyspark.sql import functions as F

    p, cp, rating = F.col("product_type"), F.col("counterparty_type"), F.col("rating")
    collateral = F.col("collateral_level")
    insured, encumbered = F.col("insured"), F.col("encumbered")
    short = F.col("maturity_date").isNull() | (
        F.col("maturity_date") <= F.date_add(F.col("cob_date"), 30)
    )
    rules: list[tuple[Column, str]] = [
        (p.isin(*ASSETS) & encumbered, "NON_HQLA"),
        (p.isin("CASH", "CB_RESERVE"), "L1"),
        ((p == "GOV_BOND") & rating.isin(*AA_MINUS_OR_BETTER), "L1"),
        ((p == "GOV_BOND") & rating.isin(*A_BAND), "L2A"),
        (p.isin("CORP_BOND", "COVERED_BOND") & rating.isin(*AA_MINUS_OR_BETTER), "L2A"),
        ((p == "RMBS") & rating.isin(*AA_OR_BETTER), "L2B_RMBS"),
        ((p == "CORP_BOND") & rating.isin(*A_PLUS_TO_BBB_MINUS), "L2B_CORP"),
        (p == "EQUITY", "L2B_EQUITY"),
        (p.isin(*ASSETS), "NON_HQLA"),
        ((p == "RETAIL_DEPOSIT") & ~short, "RETAIL_TERM"),
        ((p == "RETAIL_DEPOSIT") & insured, "RETAIL_STABLE"),
        (p == "RETAIL_DEPOSIT", "RETAIL_LESS_STABLE"),
        ((p == "SME_DEPOSIT") & ~short, "WHOLESALE_TERM"),
        ((p == "SME_DEPOSIT") & insured, "SME_STABLE"),
        (p == "SME_DEPOSIT", "SME_LESS_STABLE"),
        ((p == "OPERATIONAL_DEPOSIT") & insured, "OPERATIONAL_INSURED"),
        (p == "OPERATIONAL_DEPOSIT", "OPERATIONAL"),
        ((p == "WHOLESALE_DEPOSIT") & ~short, "WHOLESALE_TERM"),
        ((p == "WHOLESALE_DEPOSIT") & cp.isin(*NFC_SOV_CB) & insured, "NFC_INSURED"),
        ((p == "WHOLESALE_DEPOSIT") & cp.isin(*NFC_SOV_CB), "NFC_UNSECURED"),
        (p == "WHOLESALE_DEPOSIT", "FI_UNSECURED"),
        ((p == "REPO") & ~short, "WHOLESALE_TERM"),
        *[((p == "REPO") & (collateral == c), f"SF_{c}") for c in COLLATERAL],
        (p == "REPO", "SF_OTHER"),
    ]
    for product, prefix in (("CREDIT_FACILITY", "CF"), ("LIQUIDITY_FACILITY", "LF")):
        rules += [
            ((p == product) & cp.isin(*RETAIL_SME), f"{prefix}_RETAIL"),
            ((p == product) & cp.isin(*NFC_SOV_CB), f"{prefix}_NFC"),
            ((p == product) & (cp == "BANK"), f"{prefix}_BANK"),
            ((p == product) & (cp == "OTHER_FI"), f"{prefix}_OTHER_FI"),
        ]
    rules += [
        ((p == "REVERSE_REPO") & ~short, "INFLOW_TERM"),
        *[((p == "REVERSE_REPO") & (collateral == c), f"SL_{c}") for c in COLLATERAL],
        (p == "REVERSE_REPO", "SL_OTHER"),
        ((p == "LOAN") & ~short, "INFLOW_TERM"),
        ((p == "LOAN") & cp.isin(*RETAIL_SME), "IN_RETAIL"),
        ((p == "LOAN") & cp.isin("NFC", "SOVEREIGN"), "IN_NFC"),
        ((p == "LOAN") & cp.isin("BANK", "OTHER_FI", "CENTRAL_BANK"), "IN_FI"),
    ]
    expr: Any = None
    for cond, category in rules:
        expr = F.when(cond, category) if expr is None else expr.when(cond, category)
    # A deal no rule matches fails the job. Raising from the ELSE branch keeps the chain
    # evaluated once per row (a separate null-check filter would make Spark evaluate it twice).
    return expr.otherwise(
        F.raise_error(F.concat(F.lit("no LCR category for deal "), F.col("deal_id"))).cast("string")
    )


def _fail_if(df: DataFrame, failing: Column, message: Column) -> DataFrame:
    from pyspark.sql import functions as F

    return df.where(F.when(failing, F.raise_error(message)).otherwise(F.lit(True)))


def lcr_frame(spark: SparkSession, data_root: Path | str, cob: date) -> DataFrame:
    """The result as a lazy DataFrame (one row per entity plus GROUP)."""
    from pyspark.sql import functions as F

    root = Path(data_root)
    cob_s = cob.isoformat()
    deals = spark.read.parquet(str(root / "deals" / f"cob={cob_s}"))
    deals = deals.where(F.col("cob_date") == F.lit(cob_s).cast("date"))
    fx = spark.read.parquet(str(root / "fx_rates" / f"cob={cob_s}")).select(
        "cob_date", "currency", "usd_rate"
    )
    categories = spark.read.csv(
        str(CATEGORIES_CSV),
        header=True,
        schema="lcr_category string, bucket string, factor decimal(5,2), bcbs238_item string",
    ).select("lcr_category", "bucket", "factor")

    df = deals.join(F.broadcast(fx), ["cob_date", "currency"], "left")
    df = _fail_if(
        df,
        F.col("usd_rate").isNull(),
        F.concat(
            F.lit("no FX rate for deal "), F.col("deal_id"), F.lit(" currency "), F.col("currency")
        ),
    )
    df = df.withColumn("amount_usd", F.col("amount") * F.col("usd_rate"))
    df = df.withColumn("lcr_category", classification(cob))
    df = df.join(F.broadcast(categories), "lcr_category", "left")
    df = _fail_if(
        df,
        F.col("factor").isNull(),
        F.concat(F.lit("unknown LCR category "), F.col("lcr_category")),
    )
    df = df.withColumn("weighted_amount", F.col("amount_usd") * F.col("factor"))

    # Entity rows and the GROUP row per cob in one aggregation (grouping sets).
    sums = [
        F.coalesce(F.sum(F.when(F.col("bucket") == b, F.col("weighted_amount"))), F.lit(0))
        .cast(AMOUNT)
        .alias(name)
        for b, name in BUCKETS.items()
    ]
    agg = (
        df.rollup("cob_date", "legal_entity")
        .agg(*sums, F.grouping_id().alias("_gid"))
        .where(F.col("_gid") < 3)  # drop the grand total over all cobs
        .withColumn(
            "legal_entity",
            F.when(F.col("_gid") == 1, F.lit("GROUP")).otherwise(F.col("legal_entity")),
        )
        .drop("_gid")
    )
    return _caps(agg)


def _caps(df: DataFrame) -> DataFrame:
    """README step 3 (BCBS 238 Annex 1): Level 2 caps, HQLA, capped inflows, the ratio."""
    from pyspark.sql import functions as F

    l1, l2a, l2b = F.col("l1"), F.col("l2a"), F.col("l2b")
    outflows, inflows = F.col("outflows"), F.col("inflows")
    zero = F.lit(0).cast(AMOUNT)
    df = df.withColumn(
        "adj_15", F.greatest(l2b - (l1 + l2a) * 15 / 85, l2b - l1 * 15 / 60, zero).cast(AMOUNT)
    )
    df = df.withColumn(
        "adj_40", F.greatest(l2a + l2b - F.col("adj_15") - l1 * 2 / 3, zero).cast(AMOUNT)
    )
    df = df.withColumn("hqla", (l1 + l2a + l2b - F.col("adj_15") - F.col("adj_40")).cast(AMOUNT))
    df = df.withColumn("capped_inflows", F.least(inflows, outflows * 75 / 100).cast(AMOUNT))
    df = df.withColumn("net_outflows", (outflows - F.col("capped_inflows")).cast(AMOUNT))
    df = df.withColumn(
        "lcr",
        F.when(
            F.col("net_outflows") != 0,
            F.col("hqla").cast("double") / F.col("net_outflows").cast("double"),
        ),
    )
    return df.select(*OUTPUT)


def run_handwritten(
    spark: SparkSession, data_root: Path | str, cob: date, out_dir: Path | str
) -> pd.DataFrame:
    """Compute the LCR, write it to ``out_dir`` as Parquet and return it as pandas."""
    import pyarrow.parquet as pq

    lcr_frame(spark, data_root, cob).coalesce(1).write.mode("overwrite").parquet(str(out_dir))
    table = pq.read_table(str(out_dir))
    return table.to_pandas().sort_values("legal_entity").reset_index(drop=True)
