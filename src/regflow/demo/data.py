"""Synthetic, deterministic input data for the LCR reference pipeline.

The generator writes the layout the reference calculation (simplified BCBS 238 LCR) reads::

    root/deals/cob=YYYY-MM-DD/part-00000.parquet   (at most ``max_rows_per_part`` rows each)
    root/fx_rates/cob=YYYY-MM-DD/part-00000.parquet
    root/entities.parquet

What is drawn is data, packaged with regflow: the deal scenarios (``demo/scenarios.csv``), the
currencies, products, ratings and entity profiles (``demo/tables.yaml``) and the BCBS 238
factor table (``reference/lcr_categories.csv``), read by :mod:`regflow.demo.tables`.  How it is
drawn and calibrated is :mod:`regflow.demo.deals`; Arrow building and atomic writing is
:mod:`regflow.demo.arrow_io`.

Only numpy, pyarrow and PyYAML are used (this module is imported by the CLI); 1,000,000 deals
take a few seconds.  The output is byte-identical for identical arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from regflow.demo import deals as _deals
from regflow.demo.arrow_io import write_file_atomic, write_partition
from regflow.demo.deals import DEALS_SCHEMA, ENTITIES_SCHEMA, FX_RATES_SCHEMA
from regflow.demo.tables import load_tables

__all__ = [
    "CURRENCIES",
    "DEALS_SCHEMA",
    "ENTITIES_SCHEMA",
    "FX_RATES_SCHEMA",
    "MAX_ROWS_PER_PART",
    "DemoDataSummary",
    "generate_demo_data",
]

#: Default maximum number of rows in one ``deals`` Parquet part file.
MAX_ROWS_PER_PART = 500_000

#: The currencies of the generated deals and FX rates (``demo/tables.yaml``).
CURRENCIES: tuple[str, ...] = load_tables().currencies


@dataclass(frozen=True)
class DemoDataSummary:
    """What :func:`generate_demo_data` wrote."""

    root: Path
    cob: date
    deals: int
    entities: int
    currencies: tuple[str, ...]
    files: tuple[Path, ...]


def generate_demo_data(
    root: Path,
    *,
    cob: date,
    deals: int = 10_000,
    entities: int = 5,
    seed: int = 42,
    progress: Callable[[str], None] | None = None,
    max_rows_per_part: int = MAX_ROWS_PER_PART,
) -> DemoDataSummary:
    """Write deterministic synthetic LCR input data for ``cob`` under ``root``.

    An existing partition of the same COB is replaced; other COBs are left alone.
    ``entities.parquet`` is rewritten.  The deals are split into Parquet parts of at most
    ``max_rows_per_part`` rows.  Returns a summary listing every file written.
    """
    if deals < 1:
        raise ValueError(f"deals must be >= 1, got {deals}")
    if not 1 <= entities <= 999:
        raise ValueError(f"entities must be between 1 and 999, got {entities}")
    if max_rows_per_part < 1:
        raise ValueError(f"max_rows_per_part must be >= 1, got {max_rows_per_part}")

    def report(message: str) -> None:
        if progress is not None:
            progress(message)

    tables = load_tables()
    root = Path(root)
    rng = np.random.default_rng(seed)
    cob_tag = f"cob={cob.isoformat()}"

    entity_ids = [f"LE{i + 1:03d}" for i in range(entities)]
    rates = _deals.fx_rates(tables, rng)
    fx_table = _deals.fx_table(tables, cob, rates)
    entities_table = _deals.entities_table(tables, entity_ids)
    report(f"generating {deals} deals for {entities} entities, cob {cob.isoformat()}")
    deals_table = _deals.deals_table(tables, rng, cob, deals, entity_ids, rates)

    files: list[Path] = []
    parts = [
        deals_table.slice(offset, max_rows_per_part)
        for offset in range(0, deals_table.num_rows, max_rows_per_part)
    ]
    written = 0

    def deal_written(rows: int) -> None:
        nonlocal written
        written += rows
        report(f"deals: {written}/{deals} rows written")

    files += write_partition(root / "deals" / cob_tag, parts, on_part=deal_written)
    files += write_partition(root / "fx_rates" / cob_tag, [fx_table])
    report(f"fx_rates: {fx_table.num_rows} rows written")
    entities_path = root / "entities.parquet"
    write_file_atomic(entities_table, entities_path)
    files.append(entities_path)
    report(f"entities: {entities_table.num_rows} rows written")

    return DemoDataSummary(
        root=root,
        cob=cob,
        deals=deals,
        entities=entities,
        currencies=tables.currencies,
        files=tuple(files),
    )
