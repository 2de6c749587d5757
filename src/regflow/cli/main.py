"""The ``regflow`` command line: parse (``parser.py``, one module per verb), run the verb's
handler, and turn any error into a message and an exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from regflow import settings
from regflow.cli.parser import build_parser
from regflow.errors import RegflowError


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:  # --project before anything resolves a default (a bad REGFLOW_* is said here)
        settings.configure(project=args.project)
        return int(args.handler(args) or 0)
    except RegflowError as exc:
        print(f"regflow: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `regflow export ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("regflow: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # never a raw traceback: the cause, the fix, where the rest is
        if args.debug or getattr(args, "verbose", False) or settings.current().debug:
            raise
        return _unexpected(exc, args)


DEBUG_ENV = "REGFLOW_DEBUG"


def _unexpected(exc: Exception, args: argparse.Namespace) -> int:
    """Say an unexpected error's cause and fix in a few lines, and write its traceback to a
    log file (the project's ``.regflow/logs``, else the temp folder)."""
    import datetime as dt
    import os
    import tempfile
    import traceback
    from pathlib import Path

    from regflow.failures import explain

    why = explain(exc)
    text = "".join(traceback.format_exception(exc))
    stamp = f"{dt.datetime.now():%Y%m%dT%H%M%S}-{os.getpid()}"
    where = None
    candidates = []
    try:
        from regflow.project import project_root

        candidates.append(project_root() / ".regflow" / "logs")
    except Exception:  # (no project: the temp folder will do)
        pass
    candidates.append(Path(tempfile.gettempdir()))
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"regflow-error-{stamp}.log"
            path.write_text(f"regflow {' '.join(sys.argv[1:])}\n\n{text}")
            where = path
            break
        except OSError:
            continue
    sub = getattr(args, f"{args.command.replace('-', '_')}_command", None)
    command = f"{args.command} {sub}" if sub else args.command
    print(f"regflow: {command} failed: {why.cause}", file=sys.stderr)
    print(f"  to fix: {why.fix}", file=sys.stderr)
    if where is not None:
        print(f"  traceback: {where} (or rerun with --debug)", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
