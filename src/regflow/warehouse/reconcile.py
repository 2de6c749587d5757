"""Does the warehouse hold, for each cob, the run storage serves (``_LATEST``)? And if not,
bring it there.

Storage's ``_LATEST`` is the commit point of a run (``render/publish.py``): the warehouse
transaction commits right after it. A process killed between the two leaves storage one run
ahead, with the warehouse still on the cob's previous successful run; that shows here (the
run id the cob's facts carry differs from ``_LATEST``), and :func:`reconcile_cob` reloads
``_LATEST``'s run, whose staged star stays complete in storage. A cob with no successful run
at all keeps no facts in the warehouse.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from regflow.errors import StorageError
from regflow.plan.cob import parse_cob
from regflow.plan.model import Plan
from regflow.storage import RUN_SUCCESS_FILE, RunRef, latest_run
from regflow.storage.fs import Location
from regflow.warehouse import sql as S
from regflow.warehouse.model import DATE_KEY, StarModel, star_model
from regflow.warehouse.targets import Target

MIXED = "(mixed)"


@dataclass(frozen=True)
class CobState:
    """One star's cob: the run storage serves and the run the warehouse's facts come from
    (None: no successful run / no facts)."""

    pipeline: str
    node: str
    cob: str
    storage_run: str | None
    warehouse_run: str | None

    @property
    def agree(self) -> bool:
        return self.storage_run == self.warehouse_run

    def describe(self) -> str:
        where = f"{self.pipeline}.{self.node} cob {self.cob}"
        if self.agree:
            return f"{where}: warehouse and storage on run {self.storage_run}"
        st = self.storage_run or "no successful run"
        wh = self.warehouse_run or "no facts"
        return f"{where}: DISAGREE: storage serves {st}, the warehouse holds {wh}"


def star_nodes(plan: Plan) -> list[str]:
    return [n.id for n in plan.star_nodes()]


def _table_exists(cur: Any, d: Any, schema: str, table: str) -> bool:
    cur.execute(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = "
        f"{d.literal(schema)} AND table_name = {d.literal(table)}"
    )
    return bool(int(cur.fetchone()[0]))


def warehouse_runs(
    conn: Any, target: Target, model: StarModel, cob: str | None = None
) -> dict[str, str]:
    """Per cob (or only ``cob``), the run id the star's facts carry (:data:`MIXED` if its
    facts disagree)."""
    d = target.dialect
    where = ""
    if cob is not None:  # the date key leads the facts' sort key: a range scan
        where = f" WHERE {d.q(DATE_KEY)} = {int(parse_cob(cob).strftime('%Y%m%d'))}"
    cur = conn.cursor()
    out: dict[str, set[str]] = {}
    try:
        for t in model.facts:
            if not _table_exists(cur, d, model.schema, t.name):
                continue
            cur.execute(
                f"SELECT {d.q(DATE_KEY)}, MIN({d.q('run_id')}), MAX({d.q('run_id')}) "
                f"FROM {d.qn(model.schema, t.name)}{where} GROUP BY {d.q(DATE_KEY)}"
            )
            for key, lo, hi in cur.fetchall():
                k = str(key)
                cob = f"{k[:4]}-{k[4:6]}-{k[6:8]}"
                out.setdefault(cob, set()).update({str(lo), str(hi)})
    finally:
        conn.rollback()
    return {cob: runs.pop() if len(runs) == 1 else MIXED for cob, runs in out.items()}


def storage_run(root: Location, pipeline: str, cob: str) -> str | None:
    try:
        return latest_run(root, pipeline, cob).run_id
    except StorageError:
        return None


def status(plan: Plan, root: Location, target: Target, cob: str | None = None) -> list[CobState]:
    """Every cob of every star of ``plan`` that storage or the warehouse knows (or ``cob``)."""
    states = []
    conn = target.connect()
    try:
        for node in star_nodes(plan):
            model = star_model(plan, node)
            held = warehouse_runs(conn, target, model, cob)
            cobs = set(held)
            cobs |= {
                d.name.removeprefix("cob=")
                for d in (root / plan.pipeline).glob("cob=*")
                if d.is_dir()
            }
            for c in sorted(cobs):
                if cob is not None and c != cob:
                    continue
                states.append(
                    CobState(
                        plan.pipeline, node, c, storage_run(root, plan.pipeline, c), held.get(c)
                    )
                )
            if cob is not None and not any(s.node == node for s in states):
                states.append(CobState(plan.pipeline, node, cob, None, None))
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    return states


def _remove_cob(target: Target, model: StarModel, plan: Plan, cob: str) -> None:
    """Delete a cob's facts (no successful run serves it), recording it in the load log."""
    d = target.dialect
    day = parse_cob(cob)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    conn = target.connect()
    try:
        cur = conn.cursor()
        cur.execute(S.merge(d, model, day, now)[0].sql)  # the loads' lock, in their order
        for t in model.facts:
            cur.execute(
                f"DELETE FROM {d.qn(model.schema, t.name)} WHERE {d.q(DATE_KEY)} = "
                f"{int(day.strftime('%Y%m%d'))}"
            )
        record = S.load_record(
            d,
            model,
            cob=day,
            run_id="",
            spec_hash=plan.data_hash,
            adjustment_set_hash=plan.adjustment_set_hash,
            method="removed",
            table_rows="",
            rows=0,
            loaded_at=now,
        )
        cur.execute(record.sql)
        conn.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def reconcile_cob(
    plan: Plan,
    root: Location,
    target: Target,
    state: CobState,
    log: Callable[[str], None] = print,
) -> str:
    """Bring the warehouse to ``state.storage_run`` for one star and cob; the caller holds the
    cob's claim. Returns what was done."""
    from regflow.warehouse.loader import load_star

    model = star_model(plan, state.node)
    if state.storage_run is None:
        _remove_cob(target, model, plan, state.cob)
        done = f"removed the facts of run {state.warehouse_run} (no successful run serves it)"
    else:
        run = RunRef(root, plan.pipeline, state.cob, state.storage_run)
        summary = json.loads((run.run_dir / RUN_SUCCESS_FILE).read_text())
        load_star(
            model,
            target,
            run,
            spec_hash=str(summary.get("spec_hash") or plan.data_hash),
            adjustment_set_hash=str(summary.get("adjustment_set_hash") or plan.adjustment_set_hash),
            log=log,
        )
        done = f"reloaded run {state.storage_run} (was {state.warehouse_run or 'no facts'})"
    log(f"reconciled {state.pipeline}.{state.node} cob {state.cob}: {done}")
    return done
