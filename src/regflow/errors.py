"""One error hierarchy for everything regflow reports to a user.

A :class:`SpecError` carries structured :class:`Problem` entries, each pointing into a
YAML file (``file.yaml:line:col``), so that every problem of a spec is reported at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Location:
    """A place in a source file (1-based line and column)."""

    file: str
    line: int | None = None
    col: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.file
        if self.col is None:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Problem:
    """One problem found in a spec or rule file."""

    message: str
    location: Location | None = None
    key_path: str = ""
    context: str = ""  # the offending line(s) with a caret under the bad value
    hint: str = ""  # the suggested fix
    severity: str = "error"  # error | warning

    def format(self) -> str:
        head = f"{self.location}: " if self.location else ""
        where = f" (at {self.key_path})" if self.key_path else ""
        label = "warning: " if self.severity == "warning" else "error: "
        parts = [f"{head}{label}{self.message}{where}"]
        if self.context:
            parts.append(self.context)
        if self.hint:
            parts.append(f"  hint: {self.hint}")
        return "\n".join(parts)


def in_file_order(problems: Iterable[Problem]) -> list[Problem]:
    """``problems`` by file, then line and column, as an author reads them (stable: the
    problems at one place keep their order; those without a place come first)."""

    def key(p: Problem) -> tuple[str, int, int]:
        loc = p.location
        return ("", 0, 0) if loc is None else (loc.file, loc.line or 0, loc.col or 0)

    return sorted(problems, key=key)


class RegflowError(Exception):
    """Root of every error regflow raises for a user mistake or a failed run."""


class ConfigError(RegflowError):
    """Bad configuration: environment, command line or connection."""


class PlanChangedError(ConfigError):
    """The spec, a rule file or the code changed after the DAG was parsed, and the plan the
    DAG was built from is no longer in the plan cache: the task refuses to run another plan.
    ``current`` is the plan the files give now."""

    def __init__(self, message: str, current: Any = None):
        super().__init__(message)
        self.current = current


class SpecError(RegflowError):
    """A pipeline spec is invalid. Carries every problem found, not just the first."""

    label = "pipeline spec"

    def __init__(self, problems: Iterable[Problem]):
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__(self.render())

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    def render(self) -> str:
        errors = [p for p in self.problems if p.severity == "error"]
        n = len(errors)
        head = f"{n} error{'s' if n != 1 else ''} in {self.label}"
        return head + ":\n" + "\n".join(p.format() for p in self.problems)


class AdjustmentError(SpecError):
    """Adjustment rules are invalid (schema, fields, types, approval, dates, duplicates)."""

    label = "adjustment rules"


class PlanError(RegflowError):
    """The spec is valid YAML but cannot be compiled into a plan."""


class OperatorError(RegflowError):
    """An operator is badly registered (duplicate name, bad declaration)."""


class RunError(RegflowError):
    """A run failed. Names the pipeline, node and cob, and keeps the original cause."""

    def __init__(
        self,
        message: str,
        *,
        pipeline: str | None = None,
        node: str | None = None,
        cob: str | None = None,
    ):
        self.pipeline = pipeline
        self.node = node
        self.cob = cob
        where = ", ".join(
            f"{k}={v}" for k, v in (("pipeline", pipeline), ("node", node), ("cob", cob)) if v
        )
        super().__init__(f"[{where}] {message}" if where else message)


class UserCodeError(RunError):
    """An operator (user code) crashed. The cause is chained as ``__cause__``."""


class LineageError(RunError):
    """An operator dropped or duplicated the lineage id of its rows."""


class DataError(RunError):
    """Input data violates its contract (missing FX rate, duplicate keys, missing source)."""


class WarehouseError(RunError):
    """The warehouse refused a load or a command; carries the database's own message."""


class StorageError(RegflowError):
    """Reading or writing the storage root failed, or the requested output does not exist."""


class ConcurrentRunError(RunError):
    """Another run of the same (pipeline, cob) is active: this one is refused, not queued."""
