"""The adjustment rule file, exactly as the contract in the product design describes it."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from decimal import Decimal
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from regflow.adjust.identity import IDENTITY_HINT, identity_problem, same_person
from regflow.core.types import SpecValueError

RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
OPERATORS = ("=", "!=", "in", "not in", ">", ">=", "<", "<=", "between", "is null", "is not null")
OPERATIONS = ("set", "add", "multiply")
Value = str | int | float | bool | dt.date | Decimal | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Strict):
    """``field operator value``; conditions of a rule are ANDed, with SQL null semantics."""

    field: str
    operator: Literal[
        "=", "!=", "in", "not in", ">", ">=", "<", "<=", "between", "is null", "is not null"
    ]
    value: Value | list[Value] = None

    @model_validator(mode="after")
    def _shape(self) -> Condition:
        op, v = self.operator, self.value
        if op in ("is null", "is not null"):
            if v is not None:
                raise ValueError(f"'{op}' takes no value; remove 'value'")
        elif op in ("in", "not in"):
            if not isinstance(v, list) or not v:
                raise ValueError(f"'{op}' needs a non-empty list, e.g. value: [A, B]")
        elif op == "between":
            if not isinstance(v, list) or len(v) != 2:
                raise ValueError("'between' needs two bounds: value: [low, high]")
            lo, hi = v
            try:
                if lo is None or hi is None or lo > hi:  # type: ignore[operator]
                    raise ValueError(f"'between' bounds must be ordered: {lo} > {hi}")
            except TypeError:
                raise ValueError("'between' bounds must be two comparable values") from None
        elif isinstance(v, list):
            raise ValueError(f"'{op}' compares with one value, not a list")
        elif v is None:
            raise ValueError(f"'{op}' needs a value (use 'is null' to test for null)")
        return self


class Adjustment(_Strict):
    """``field operation value``: set the value, or add to / multiply a numeric field."""

    field: str
    operation: Literal["set", "add", "multiply"]
    value: Value

    @model_validator(mode="after")
    def _numeric(self) -> Adjustment:
        if self.operation in ("add", "multiply") and (
            isinstance(self.value, bool) or not isinstance(self.value, int | float | Decimal)
        ):
            raise ValueError(f"'{self.operation}' needs a number, got {self.value!r}")
        return self


class Approval(_Strict):
    requested_by: str
    approved_by: str
    timestamp: dt.datetime
    ticket: str | None = None

    # Field validators (not a model validator), so that each error points at its key.
    @field_validator("requested_by", "approved_by")
    @classmethod
    def _identity(cls, v: str, info: ValidationInfo) -> str:
        why = identity_problem(v)
        if why is not None:
            raise SpecValueError(f"{info.field_name} {v!r} {why}", hint=IDENTITY_HINT)
        return unicodedata.normalize("NFKC", v)

    @field_validator("approved_by")
    @classmethod
    def _maker_checker(cls, v: str, info: ValidationInfo) -> str:
        requested_by = info.data.get("requested_by")
        if requested_by is not None and same_person(requested_by, v):
            raise ValueError(
                f"maker-checker: approved_by '{v}' must be a different person "
                f"than requested_by '{requested_by}'"
            )
        return v


class AdjustmentRule(_Strict):
    rule_id: str
    pipeline: str
    stage: str = Field(description="the node id to splice at")
    position: Literal["after", "before"] = "after"
    conditions: tuple[Condition, ...] = ()
    adjustments: tuple[Adjustment, ...]
    effective_date: dt.date
    expiry_date: dt.date | None = None
    approval: Approval
    reason: str = Field(min_length=1)

    @field_validator("rule_id")
    @classmethod
    def _rule_id(cls, v: str) -> str:
        if not RULE_ID.match(v):
            raise ValueError(f"rule_id '{v}' may use letters, digits, '.', '_' and '-' only")
        return v

    # Field validators (not model validators), so that errors point at the offending key.
    @field_validator("adjustments")
    @classmethod
    def _some_adjustment(cls, v: tuple[Adjustment, ...]) -> tuple[Adjustment, ...]:
        # Not Field(min_length=1): pydantic then also reports "at least 1 item" for a tuple
        # whose only item is invalid.
        if not v:
            raise ValueError("a rule needs at least one adjustment")
        return v

    @field_validator("expiry_date")
    @classmethod
    def _dates(cls, v: dt.date | None, info: ValidationInfo) -> dt.date | None:
        effective = info.data.get("effective_date")
        if v is not None and effective is not None and effective > v:
            raise ValueError(f"effective_date {effective} is after expiry_date {v}")
        return v

    def applies_on(self, cob: dt.date) -> tuple[bool, str]:
        if cob < self.effective_date:
            return False, f"not yet effective (effective_date {self.effective_date})"
        if self.expiry_date is not None and cob > self.expiry_date:
            return False, f"expired (expiry_date {self.expiry_date})"
        return True, ""

    def runtime_dict(self) -> dict[str, Any]:
        """What the plan and the runtime need (approval kept for the audit trail)."""
        return self.model_dump(mode="json")
