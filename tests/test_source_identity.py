"""A source's identity for the stage-reuse rule: the same in every checkout of the project,
and changed by every change of its data (up to the content-hash size limit)."""

from __future__ import annotations

import os
import shutil

from regflow.runtime.sources import fingerprint, source_location


def _write(path, text: str, mtime_ns: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_a_small_source_is_known_by_its_bytes(tmp_path):
    a = tmp_path / "a" / "ref.csv"
    _write(a, "k,factor\nL2A,0.85\n", 1_700_000_000_000_000_000)
    b = tmp_path / "b" / "ref.csv"  # a copy elsewhere, written later
    _write(b, "k,factor\nL2A,0.85\n", 1_800_000_000_000_000_000)
    assert fingerprint([a]) == fingerprint([b])
    _write(b, "k,factor\nL2A,0.86\n", 1_700_000_000_000_000_000)  # same size, same time
    assert fingerprint([a]) != fingerprint([b])
    c = tmp_path / "c" / "other.csv"  # same bytes under another name
    _write(c, "k,factor\nL2A,0.85\n", 1_700_000_000_000_000_000)
    assert fingerprint([a]) != fingerprint([c])


def test_a_large_source_is_known_by_names_sizes_and_times(tmp_path):
    a = tmp_path / "a" / "part-0.parquet"
    _write(a, "x" * 100, 1_700_000_000_000_000_000)
    b = tmp_path / "b" / "part-0.parquet"
    _write(b, "y" * 100, 1_700_000_000_000_000_000)
    # above the limit: the bytes are not read, so the same name, size and time match...
    assert fingerprint([a], content_max_bytes=99) == fingerprint([b], content_max_bytes=99)
    # ...and a new modification time does not
    os.utime(b, ns=(1_800_000_000_000_000_000, 1_800_000_000_000_000_000))
    assert fingerprint([a], content_max_bytes=99) != fingerprint([b], content_max_bytes=99)
    # at the limit: the bytes
    assert fingerprint([a], content_max_bytes=100) != fingerprint([b], content_max_bytes=100)


def test_a_source_is_placed_relative_to_the_project_when_inside_it(tmp_path):
    project = tmp_path / "project"
    ref = project / "pipelines" / "reference" / "lcr_categories.csv"
    _write(ref, "x\n", 1_700_000_000_000_000_000)
    assert source_location(ref, project) == "pipelines/reference/lcr_categories.csv"
    checkout = tmp_path / "checkout"
    shutil.copytree(project, checkout)
    moved = checkout / "pipelines" / "reference" / "lcr_categories.csv"
    assert source_location(moved, checkout) == source_location(ref, project)
    outside = tmp_path / "lake" / "deals"
    assert source_location(outside, project) == str(outside)
    assert source_location(ref, None) == str(ref)
