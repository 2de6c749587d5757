"""Named fault points for tests of the commit protocol (``REGFLOW_FAULT``), inert otherwise.

``REGFLOW_FAULT=<point>@<action>[,...]``; actions: ``raise`` (a RuntimeError), ``kill``
(SIGKILL of the running process: under ``regflow run`` that is the whole run), and
``wait:<file>`` (create ``<file>.reached``, then wait until ``<file>`` exists: lets a test
hold a run at a point without any timing). Points: ``stage:<task id>`` and
``load:<star>`` at the start of those tasks, ``publish:loaded`` (the warehouse merged, not
committed; storage not published), ``publish:published`` (storage published, the warehouse
not yet committed), ``publish:commit`` (just before the warehouse commit), ``data:<output>``
(storage: an output's data is written and checked, its metadata and marker not yet) and
``commit:<output>`` (its data and metadata are written, its marker not yet).

Here, below every layer that has fault points; ``regflow.render.faults`` re-exports it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

FAULT_ENV = "REGFLOW_FAULT"
WAIT_LIMIT_SECONDS = 900


def fault_point(point: str) -> None:
    for item in filter(None, (os.environ.get(FAULT_ENV) or "").split(",")):
        name, _, action = item.strip().partition("@")
        if name != point:
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action.startswith("wait:"):
            gate = Path(action[len("wait:") :])
            Path(f"{gate}.reached").write_text(str(os.getpid()))
            deadline = time.monotonic() + WAIT_LIMIT_SECONDS
            while not gate.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"fault injected at {point} ({FAULT_ENV})")
