"""The error boundary of a stage's steps: an exception from Spark or an operator becomes a
:class:`~regflow.errors.RunError` naming the pipeline, the node (the one whose expression
failed, when Spark says which) and the cob."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from regflow.errors import DataError, RunError, UserCodeError
from regflow.plan.model import Plan, Stage
from regflow.runtime import spark_errors

_NODE_TAG = re.compile(r"\[regflow:node=([a-z0-9_]+)\]\s*([^\n]*)")
# what Spark appends to the message of a raise_error
_SQLSTATE = re.compile(r"\s*SQLSTATE: \w+\s*$")


def wrap_error(
    exc: Exception,
    node: str,
    user_code: bool,
    plan: Plan,
    stage: Stage,
    cob: str,
    sources: Mapping[str, Mapping[str, Any]],
) -> RunError:
    """``exc``, raised at ``node``, as the error to report (``sources``: what the stage
    read, see ``StageReport.sources``)."""
    text = str(exc)
    m = _NODE_TAG.search(text)
    kw = {"pipeline": plan.pipeline, "cob": cob}
    if m:
        return DataError(_SQLSTATE.sub("", m.group(2)).strip(), node=m.group(1), **kw)
    failure = spark_errors.describe(text)
    if failure is not None and failure.is_data:
        return _data_failure(failure, node, plan, stage, cob, sources)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    first = spark_errors.strip_advice(first) if "spark.sql.ansi" in first else first
    if user_code:
        return UserCodeError(f"operator failed: {type(exc).__name__}: {first}", node=node, **kw)
    return RunError(f"{type(exc).__name__}: {first}", node=node, **kw)


def _data_failure(
    failure: spark_errors.SparkFailure,
    node: str,
    plan: Plan,
    stage: Stage,
    cob: str,
    sources: Mapping[str, Mapping[str, Any]],
) -> DataError:
    """A Spark data error (a bad value, an overflow, a corrupt file), located: at the node
    of this stage whose expression is the failing SQL fragment, else ``node``."""
    kw = {"pipeline": plan.pipeline, "cob": cob}
    if failure.file is not None:
        source = next(
            (
                name
                for name, facts in sources.items()
                if failure.file.startswith(str(facts.get("path", "\0")))
            ),
            node if plan.is_source(node) else None,
        )
        what = f"source '{source}': {failure.message}" if source else failure.message
        return DataError(what, node=source or node, **kw)
    blamed = _node_of_expression(plan, stage.nodes, failure.fragment)
    what = failure.message
    if failure.fragment:
        what = f"expression '{failure.fragment}' failed: {what}"
    if failure.fix:
        what = f"{what.rstrip('. ')}. {failure.fix}"
    return DataError(what, node=blamed or node, **kw)


def _node_of_expression(plan: Plan, nodes: Sequence[str], fragment: str | None) -> str | None:
    """The first of ``nodes`` whose params hold the SQL ``fragment`` (whitespace aside)."""
    if not fragment:
        return None

    def texts(value: Any) -> Iterator[str]:
        if isinstance(value, str):
            yield " ".join(value.split())
        elif isinstance(value, Mapping):
            for v in value.values():
                yield from texts(v)
        elif isinstance(value, list | tuple):
            for v in value:
                yield from texts(v)

    want = fragment.lower()
    for nid in nodes:
        if any(want in t.lower() for t in texts(plan.node(nid).params)):
            return nid
    return None
