"""Where the runtime's progress lines go: the task log by default, the terminal under
``regflow run`` (which sends Airflow's own chatter to a log file)."""

from __future__ import annotations

import sys
from typing import TextIO

_SINK: TextIO | None = None


def set_sink(stream: TextIO | None) -> None:
    global _SINK
    _SINK = stream


def log(message: str) -> None:
    stream = _SINK or sys.stdout
    print(message, file=stream, flush=True)
    if _SINK is not None and _SINK is not sys.stdout:
        print(message, flush=True)  # keep it in the task log too
