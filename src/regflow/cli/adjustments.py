"""``regflow adjustments check``: validate rules and preview their impact for a pull request
(validation: ``adjust_check.py``; preview: ``adjust_preview.py``; report:
``adjust_report.py``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from regflow.cli.common import Subcommands, parse_cob, project_dir, resolve_spec, storage_root
from regflow.errors import ConfigError


def add_adjustments(sub: Subcommands) -> None:
    a = sub.add_parser("adjustments", help="adjustment rules")
    asub = a.add_subparsers(dest="adjustments_command", required=True, metavar="COMMAND")
    ac = asub.add_parser("check", help="validate rules and preview their impact (for PR CI)")
    ac.add_argument("files", nargs="*", help="rule files to check (default: every rule)")
    ac.add_argument("--pipeline", help="only rules of this pipeline")
    ac.add_argument(
        "--cob",
        help="preview on this cob's latest successful run (default: the latest cob with one)",
    )
    ac.add_argument("--storage")
    ac.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    ac.add_argument("--author", help="the pull request's author: may not approve the rule")
    ac.add_argument(
        "--approvers-from",
        choices=["github"],
        help="check every rule file the pull request changes against its reviews: approved_by "
        "must have approved the head commit and written none of it (GITHUB_TOKEN, "
        "GITHUB_REPOSITORY, and the PR of GITHUB_EVENT_PATH or --pr)",
    )
    ac.add_argument("--pr", type=int, help="the pull request number (with --approvers-from)")
    ac.add_argument("--repo", help="owner/name (with --approvers-from; default $GITHUB_REPOSITORY)")
    ac.add_argument(
        "--reviews-json",
        metavar="FILE",
        help="the pull request's GitHub documents (pull, reviews, files, commits) from a file "
        "instead of the API (implies --approvers-from github)",
    )
    ac.add_argument("--out", help="also write the report to this file (e.g. a PR comment)")
    a.set_defaults(handler=cmd_adjustments)


def cmd_adjustments(args: argparse.Namespace) -> int:
    from regflow.cli.adjust_check import validate_rules
    from regflow.cli.adjust_preview import preview
    from regflow.cli.adjust_report import as_json, markdown

    files = [Path(f) for f in args.files] or None
    for f in files or []:
        if not f.exists():
            raise ConfigError(f"no such rule file: {f}")
    check = validate_rules(
        project_dir(), files, pipeline=args.pipeline, author=args.author, review=_review(args)
    )
    previews = []
    if check.errors:
        previews.append({"skipped": True, "reason": "the rules are invalid"})
    else:
        from regflow.storage import latest_cob

        storage = storage_root(args.storage)
        for name in sorted({r.rule.pipeline for r in check.rules}):
            rules = [r for r in check.rules if r.rule.pipeline == name]
            # Without --cob: the figures last reported, the latest cob with a good run.
            cob = parse_cob(args.cob) if args.cob else latest_cob(storage, name)
            if cob is None:
                previews.append(
                    {
                        "skipped": True,
                        "reason": f"no successful run of '{name}' under {storage}: nothing to "
                        "compare with (run the pipeline first, or set REGFLOW_STORAGE to where "
                        "its runs are published)",
                    }
                )
                continue
            which = "" if args.cob else " (its latest cob with a successful run; --cob to choose)"
            print(
                f"previewing {len(rules)} rule(s) on {name}, cob {cob}{which} ...",
                file=sys.stderr,
            )
            previews.append(
                preview(
                    resolve_spec(name),
                    project_dir(),
                    rules,
                    cob,
                    storage,
                    log=lambda m: print(m, file=sys.stderr),
                )
            )
    report = as_json(check, previews) if args.json else markdown(check, previews)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    return 1 if check.errors else 0


def _review(args: argparse.Namespace) -> Any:
    """The pull request's review as the code host records it (--approvers-from github)."""
    if args.reviews_json:
        from regflow.adjust.review import load_review_json

        return load_review_json(Path(args.reviews_json))
    if args.approvers_from == "github":
        from regflow.adjust.github import review_from_environment

        return review_from_environment(args.pr, args.repo, log=lambda m: print(m, file=sys.stderr))
    if args.pr is not None or args.repo is not None:
        raise ConfigError("--pr and --repo go with --approvers-from github")
    return None
