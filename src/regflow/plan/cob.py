"""The cob a run computes when it is not given one: the spec's ``cob`` rule.

A scheduled run (and a manual one without a ``cob`` param) is stamped with the date it runs
on. ``rule: run_date`` (the default) computes that date; ``rule: previous_business_day``
computes the last business day before it: Monday to Friday, except the spec's ``holidays``.
A 06:00 weekday schedule then computes the close of business it follows: a Monday run
computes the Friday before it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from regflow.errors import ConfigError

RUN_DATE = "run_date"
PREVIOUS_BUSINESS_DAY = "previous_business_day"


def parse_cob(value: str | dt.date, what: str = "cob") -> dt.date:
    """The one place a cob becomes a date: from the CLI's ``--cob``, a DAG run's ``cob``
    param, a spark-submit argument or a stored run. A ``datetime`` gives its date."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        raise ConfigError(
            f"{what} {str(value)!r} is not a date: use YYYY-MM-DD, e.g. 2026-03-31"
        ) from None


def is_business_day(day: dt.date, holidays: frozenset[dt.date]) -> bool:
    return day.weekday() < 5 and day not in holidays


def cob_of_run(run_date: dt.date, rule: str, holidays: Iterable[str | dt.date] = ()) -> dt.date:
    """The cob a run on ``run_date`` computes under ``rule``."""
    if rule == RUN_DATE:
        return run_date
    if rule != PREVIOUS_BUSINESS_DAY:
        raise ValueError(f"unknown cob rule {rule!r}")  # (the spec validates it)
    off = frozenset(parse_cob(h, "holiday") for h in holidays)
    day = run_date - dt.timedelta(days=1)
    while not is_business_day(day, off):
        day -= dt.timedelta(days=1)
    return day


def describe(rule: str, holidays: Iterable[str]) -> str:
    """The rule in words, for the DAG docs and ``regflow plan``."""
    if rule == RUN_DATE:
        return "the date the run is stamped with (rule `run_date`, the default)"
    days = list(holidays)
    off = f", except {len(days)} holiday(s): {', '.join(days)}" if days else ""
    return (
        "the business day before the date the run is stamped with "
        f"(rule `previous_business_day`: Monday to Friday{off})"
    )
