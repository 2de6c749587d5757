"""``regflow lineage trace``: from a reported figure down to its deals and adjustments."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

from regflow.spec.models import LINEAGE_COLUMN


def print_trace(
    result: Any,
    node: str,
    measure: str | None,
    out: str | None,
    limit: int = 20,
    keys: tuple[str, ...] = (),
) -> None:
    for row in result.figure:
        shown = {k: v for k, v in row.items() if k != LINEAGE_COLUMN}
        if measure and measure in shown:
            labels = [k for k, v in shown.items() if isinstance(v, str) or hasattr(v, "isoformat")]
            shown = {**{k: shown[k] for k in labels}, measure: shown[measure]}
        print(f"{node}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    print("\ntraced through:")
    for step in result.steps:
        print(f"  {step}")
    if result.adjustments:
        print(f"\nadjustments ({len(result.adjustments):,} changed values):")
        by_rule: dict[str, int] = {}
        for a in result.adjustments:
            by_rule[f"{a['rule_id']} {a['position']} {a['stage']}: {a['field']}"] = (
                by_rule.get(f"{a['rule_id']} {a['position']} {a['stage']}: {a['field']}", 0) + 1
            )
        for k, n in sorted(by_rule.items()):
            print(f"  {k} ({n:,} rows)")
    rows = member_rows(result, measure)
    print(f"\n{len(rows):,} source rows behind the figure")
    if out:
        write_csv(rows, out)
        print(f"written to {out}")
    else:
        for r in rows[:limit]:
            show = [
                k
                for k in r
                if k in keys or k.startswith("contribution_") or k in ("source", "adjusted_by")
            ] or list(r)
            print("  " + ", ".join(f"{k}={r[k]}" for k in show if r[k] not in ("", None)))
        if len(rows) > limit:
            print(f"  ... ({len(rows) - limit:,} more; use --out FILE for all)")


def member_rows(result: Any, measure: str | None) -> list[dict[str, Any]]:
    contrib = {}
    if measure:
        contrib = {m[LINEAGE_COLUMN]: m.get(measure) for m in result.contributions}
    adjusted: dict[int, list[str]] = {}
    for a in result.adjustments:
        adjusted.setdefault(a[LINEAGE_COLUMN], []).append(a["rule_id"])
    rows = []
    for source, srows in sorted(result.sources.items()):
        for r in srows:
            lid = r[LINEAGE_COLUMN]
            row = {
                "source": source,
                **{k: v for k, v in r.items() if k != LINEAGE_COLUMN},
                LINEAGE_COLUMN: lid,
            }
            if measure:
                row[f"contribution_{measure}"] = contrib.get(lid)
            row["adjusted_by"] = " ".join(sorted(set(adjusted.get(lid, []))))
            rows.append(row)
    key = f"contribution_{measure}"
    if measure:
        rows.sort(key=lambda r: -(abs(r[key]) if r.get(key) is not None else 0))
    return rows


def write_csv(rows: list[dict[str, Any]], out: str) -> None:
    if not rows:
        Path(out).write_text("")
        return
    stream = open(out, "w", newline="") if out != "-" else sys.stdout  # noqa: SIM115
    writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    if stream is not sys.stdout:
        stream.close()
