"""The report of ``regflow adjustments check``: markdown for a pull request comment, or
JSON."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from regflow.cli.adjust_check import RuleCheck


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6f}"
    if isinstance(v, Decimal):
        return f"{v:,.2f}"
    return str(v)


def markdown(check: RuleCheck, previews: list[dict[str, Any]]) -> str:
    errors, warnings = check.errors, [p for p in check.problems if p.severity == "warning"]
    status = "❌ invalid" if errors else "✅ valid"
    lines = [
        "## regflow adjustments check",
        "",
        f"**Validation: {status}** — {len(check.rules)} rule(s), {len(errors)} error(s), "
        f"{len(warnings)} warning(s)",
        "",
    ]
    for r in sorted(check.rules, key=lambda x: x.rule.rule_id):
        rule = r.rule
        until = rule.expiry_date or "open-ended"
        ticket = f", {rule.approval.ticket}" if rule.approval.ticket else ""
        lines.append(
            f"- `{rule.rule_id}` ({r.path}): {rule.position} `{rule.stage}` of "
            f"`{rule.pipeline}`, effective {rule.effective_date} .. {until}; requested "
            f"by {rule.approval.requested_by}, approved by {rule.approval.approved_by}"
            f"{ticket}. {rule.reason}"
        )
    if check.problems:
        lines += ["", "```text", *[p.format() for p in check.problems], "```"]
    for pv in previews:
        lines.append("")
        if pv.get("skipped"):
            lines.append(f"**Impact preview skipped:** {pv['reason']}")
            continue
        lines += [
            f"### Impact on `{pv['pipeline']}`, cob {pv['cob']}",
            f"Compared with run `{pv['base_run']}`; recomputed "
            f"{', '.join(pv['recomputed_stages']) or 'nothing'}, reused "
            f"{', '.join(pv['reused_stages']) or 'nothing'}.",
            "",
            "| rule | status | rows matched | note |",
            "|---|---|---:|---|",
        ]
        for a in pv["rules"]:
            lines.append(
                f"| `{a['rule_id']}` | {a['status']} | {a['rows_matched']:,} | "
                f"{a['reason'] or ''} |"
            )
        for sink, rows in pv["changes"].items():
            lines += ["", f"**`{sink}`**", ""]
            if not rows:
                lines.append("No reported figure changes.")
                continue
            keys = [k for k in rows[0] if k not in ("measure", "before", "after", "change")]
            lines.append("| " + " | ".join([*keys, "measure", "before", "after", "change"]) + " |")
            lines.append("|" + "---|" * len(keys) + "---|---:|---:|---:|")
            for row in rows:
                lines.append(
                    "| "
                    + " | ".join(
                        [
                            *(row[k] for k in keys),
                            row["measure"],
                            _fmt(row["before"]),
                            _fmt(row["after"]),
                            _fmt(row["change"]),
                        ]
                    )
                    + " |"
                )
    return "\n".join(lines)


def as_json(check: RuleCheck, previews: list[dict[str, Any]]) -> str:
    data = {
        "valid": not check.errors,
        "rules": [
            {
                "rule_id": r.rule.rule_id,
                "file": str(r.path),
                "pipeline": r.rule.pipeline,
                "stage": r.rule.stage,
                "position": r.rule.position,
            }
            for r in check.rules
        ],
        "problems": [
            {
                "severity": p.severity,
                "message": p.message,
                "location": str(p.location) if p.location else None,
                "hint": p.hint,
            }
            for p in check.problems
        ],
        "previews": previews,
    }
    return json.dumps(data, indent=2, default=str)
