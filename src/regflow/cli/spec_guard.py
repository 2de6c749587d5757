"""Refuse a run whose pipeline id already has successful runs from another spec file.

Two spec files that declare one pipeline id (a copy in another checkout, a renamed file)
and publish into one storage replace each other's ``_LATEST``: exports, previews and the
warehouse then mix figures of different specs. Each run's summary records its spec file
(relative to its project root), the root and the file's hash; ``regflow run`` compares the
latest successful run of every cob with the spec it is about to run.
"""

from __future__ import annotations

import json
from pathlib import Path

from regflow.errors import ConfigError
from regflow.storage import LATEST_FILE, fs
from regflow.storage.fs import Location


def other_spec_runs(storage: Location, pipeline: str, identity: dict[str, str]) -> list[dict]:
    """The cobs' latest successful runs of ``pipeline`` under ``storage`` that came from
    another spec file (or the same path in another project), newest cob first. Runs whose
    summary predates the record are not counted."""
    found = []
    for cob_dir in reversed(fs.glob(storage / pipeline, "cob=*")):
        latest = cob_dir / LATEST_FILE
        try:
            summary = json.loads(latest.read_text())
        except (OSError, ValueError):  # (no _LATEST: FileNotFoundError)
            continue
        if "spec_file" not in summary:
            continue
        if (summary["spec_file"], summary.get("project")) != (
            identity["spec_file"],
            identity["project"],
        ):
            found.append(summary)
    return found


def check_spec_owner(
    storage: Location, pipeline: str, identity: dict[str, str], *, allow: bool = False
) -> None:
    """Raise ``ConfigError`` when ``pipeline`` already has runs in ``storage`` from another
    spec file; with ``allow``, say so and go on."""
    others = other_spec_runs(storage, pipeline, identity)
    if not others:
        return
    first = others[0]
    theirs = Path(first.get("project") or ".") / first["spec_file"]
    ours = Path(identity["project"]) / identity["spec_file"]
    what = (
        f"pipeline '{pipeline}' already has successful runs in {storage} from another spec "
        f"file: {theirs} (e.g. cob {first.get('cob')}, run {first.get('run_id')}; "
        f"{len(others)} cob(s) in all); this run's spec is {ours}"
    )
    if allow:
        print(f"warning: {what}; running anyway (--allow-other-spec)", flush=True)
        return
    raise ConfigError(
        f"{what}. Publishing would replace that spec's latest runs (_LATEST) and mix the "
        "figures of two specs. Run the spec of that project (from its folder, or with "
        "REGFLOW_PROJECT), give this one its own storage (--storage), or pass "
        "--allow-other-spec to publish anyway."
    )
