"""A source's identity, to tell whether a stored stage read the same data."""

from __future__ import annotations

import hashlib
from pathlib import Path


def fingerprint(files: list[Path]) -> str:
    """Content identity of a snapshot: file names, sizes and modification times."""
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]
