"""Names every layer agrees on: ids, column names and the lineage column."""

from __future__ import annotations

import datetime as dt
import re

from regflow.core.types import SpecValueError

ID_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
COLUMN_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,126}$"
_ID = re.compile(ID_PATTERN)
_COLUMN = re.compile(COLUMN_PATTERN)
LINEAGE_COLUMN = "_lineage_id"
RESERVED_PREFIX = "_lineage"
# the node adjustment rules after (before) node X are spliced in as: X__adjusted
# (X__adjusted_before). Built here (the star's ops resolve them); read back by
# regflow.plan.splice.spliced_at.
ADJUSTED_AFTER = "__adjusted"
ADJUSTED_BEFORE = "__adjusted_before"
Scalar = str | int | float | bool | dt.date | None


def _snake(value: str) -> str:
    out = re.sub(r"[^a-z0-9_]+", "_", str(value).lower()).strip("_")
    return out if out[:1].isalpha() else f"x_{out}"


def check_identifier(value: str, what: str = "id") -> str:
    if not _ID.match(value):
        raise SpecValueError(
            f"{what} '{value}' must be lower_snake_case: a letter, then letters, digits or '_' "
            "(at most 63 characters)",
            hint=f"e.g. '{_snake(value)[:63]}'",
        )
    return value


def check_column(value: str) -> str:
    if not _COLUMN.match(value):
        raise SpecValueError(
            f"column name '{value}' must start with a letter or '_' and contain only letters, "
            "digits and '_'",
            hint="rename the column, e.g. '" + re.sub(r"\W+", "_", str(value)).strip("_") + "'",
        )
    if value.startswith(RESERVED_PREFIX):
        raise SpecValueError(
            f"column name '{value}' uses the reserved prefix '{RESERVED_PREFIX}'",
            hint="regflow adds the lineage column itself; rename this one",
        )
    return value


def adjusted_id(node: str, position: str = "after") -> str:
    """The id of the node that applies the rules spliced ``position`` node ``node``."""
    return node + (ADJUSTED_AFTER if position == "after" else ADJUSTED_BEFORE)
