"""The execution policy: which engine computes what, and the thresholds that decide it.

The runtime has two engines. Spark computes everything and is the one that matters at
production scale. The *driver engine* (:mod:`regflow.runtime.driver`) re-implements a few
steps exactly, with pyarrow and numpy on the driver, where the data is small enough that a
Spark job costs more than the work: clustering a lineage checkpoint, finishing an
aggregate, computing an adjustment audit, lineage-id checks, a lookup's key check and the
star's adjusted flags. Each of its steps may decline (:class:`Declined`, with the reason);
Spark then does it.

``mode``:

- ``auto`` (the default): the driver engine takes a step when the data is below the
  thresholds below;
- ``spark``: the driver engine never runs;
- ``driver``: the driver engine takes every step it can (no threshold), still declining
  what it cannot do exactly as Spark does.

Set per deployment with ``REGFLOW_ENGINE`` (see :func:`engine_mode_from_env`), passed to the
runtime explicitly (``run_stage(..., policy=...)``). Pure Python: importable without Spark.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args

from regflow import settings
from regflow.errors import ConfigError

Mode = Literal["auto", "spark", "driver"]
MODES: tuple[str, ...] = get_args(Mode)
ENGINE_ENV = "REGFLOW_ENGINE"

NEVER = -1  # a row limit no data is under: the driver engine declines every time
UNLIMITED = 2**62  # a limit every data is under


@dataclass(frozen=True)
class Declined:
    """A driver-engine step that did not run, and why: Spark does it instead."""

    reason: str


@dataclass(frozen=True)
class ExecutionPolicy:
    """Where each step of a stage runs. Row and byte limits are inclusive."""

    mode: Mode = "auto"
    # written data up to this many rows is checked for lineage ids (duplicates, ids not in
    # the input) on the driver, with pyarrow (8 bytes an id); larger data by a Spark job
    check_max_rows: int = 20_000_000
    # lineage checkpoints up to this many rows and bytes of Parquet are clustered (and
    # their aggregate finished) on the driver; outputs up to this many rows have their
    # audit columns read there
    cluster_max_rows: int = 4_000_000
    cluster_max_bytes: int = 256 << 20
    # an aggregate's checkpoint up to this many rows is summed on the driver
    aggregate_max_rows: int = 10**9
    # an adjust node whose input has at most this many rows is adjusted on the driver's
    # copy of it (its audit computed there, no Spark job)
    adjust_max_rows: int = 100_000
    # audits up to this many rows in all are grouped by row on the driver for the star's
    # adjusted flags (16 bytes a row and the rule ids)
    flags_max_rows: int = 20_000_000
    # a join lookup of up to this many rows has its keys checked on the driver
    key_check_max_rows: int = 100_000
    # Spark plan choices (the same in every mode): stored inputs up to this many rows are
    # read as one partition (no shuffle for a few rows); a lookup known to have at most
    # this many rows is broadcast, its key check inside the broadcast job
    one_partition_max_rows: int = 100_000
    broadcast_max_keys: int = 100_000

    @classmethod
    def for_mode(cls, mode: str) -> ExecutionPolicy:
        """The policy of ``mode`` (auto | spark | driver)."""
        if mode not in MODES:
            raise ConfigError(
                f"unknown execution engine mode {mode!r} (from ${ENGINE_ENV} or the "
                f"settings); use one of: {', '.join(MODES)}"
            )
        auto = cls()
        if mode == "auto":
            return auto
        limit = NEVER if mode == "spark" else UNLIMITED
        return dataclasses.replace(
            auto,
            mode=mode,  # type: ignore[arg-type]
            **{f: limit for f in DRIVER_LIMITS},
        )

    def allows(self, limit: str, amount: int | None) -> bool:
        """Whether ``amount`` (rows or bytes; None: unknown) is within the limit named."""
        return amount is not None and amount <= getattr(self, limit)

    def decline(self, limit: str, amount: int | None, what: str = "rows") -> Declined | None:
        """None when ``amount`` is within the limit ``limit``, else why not."""
        if self.allows(limit, amount):
            return None
        if self.mode == "spark":
            return Declined("engine mode 'spark'")
        if amount is None:
            return Declined(f"{what} unknown")
        return Declined(f"{amount:,} {what} > {limit} {getattr(self, limit):,}")

    def describe(self) -> list[str]:
        """The policy, a line a setting, for ``regflow plan``."""

        def text(value: int) -> str:
            return {NEVER: "never", UNLIMITED: "unlimited"}.get(value, f"{value:,}")

        spark = [f.name for f in dataclasses.fields(self) if f.name not in (*DRIVER_LIMITS, "mode")]
        return [
            f"execution policy: engine mode {self.mode} (${ENGINE_ENV})",
            "  the driver engine takes a step up to:",
            *[f"    {name}: {text(getattr(self, name))}" for name in DRIVER_LIMITS],
            "  Spark plan choices:",
            *[f"    {name}: {text(getattr(self, name))}" for name in spark],
        ]


# the limits of the driver engine (set to NEVER in mode spark, UNLIMITED in mode driver)
DRIVER_LIMITS = (
    "check_max_rows",
    "cluster_max_rows",
    "cluster_max_bytes",
    "aggregate_max_rows",
    "adjust_max_rows",
    "flags_max_rows",
    "key_check_max_rows",
)


def deployment_policy() -> ExecutionPolicy:
    """The execution policy of this deployment: the engine mode of its settings
    (``$REGFLOW_ENGINE``, default ``auto``; checked when the settings are resolved)."""
    return ExecutionPolicy.for_mode(settings.current().engine)
