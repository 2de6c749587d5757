"""Who a rule names: ``requested_by``, ``approved_by`` and a pull request's people.

Maker-checker compares people, so a name must have one spelling. An identity is a login in
code-host syntax: after Unicode NFKC (fullwidth ``U+FF41`` becomes ``a``), ASCII letters and digits,
then letters, digits, ``.``, ``_`` or ``-``. Everything else is refused, not repaired: a
zero-width space, a Cyrillic ``U+0430`` that looks like a Latin ``a``, a blank. Two identities are
the same person when their canonical forms (NFKC, case-folded) are equal.
"""

from __future__ import annotations

import re
import unicodedata

IDENTITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ALLOWED = re.compile(r"[A-Za-z0-9._-]")


def _code_point(ch: str) -> str:
    name = unicodedata.name(ch, "")
    if not name:  # a control character, e.g. a tab or a zero-width joiner without a name
        name = {"Cf": "FORMAT CHARACTER", "Cc": "CONTROL CHARACTER"}.get(
            unicodedata.category(ch), "UNNAMED CHARACTER"
        )
    return f"U+{ord(ch):04X} {name}"


def identity_problem(value: str) -> str | None:
    """Why ``value`` is not an identity, naming the offending code points; None if it is."""
    text = unicodedata.normalize("NFKC", value)
    if not text.strip():
        return "is blank" if not value else f"is blank ({_points(value)})"
    bad = [(i, ch) for i, ch in enumerate(text) if not _ALLOWED.fullmatch(ch)]
    if bad:
        shown = ", ".join(f"{_code_point(ch)} at position {i + 1}" for i, ch in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        return f"has characters a login may not use: {shown}{more}"
    if not IDENTITY.match(text):
        if len(text) > 64:
            return f"is {len(text)} characters long (at most 64)"
        return f"must start with a letter or digit, not {_code_point(text[0])}"
    return None


def _points(value: str) -> str:
    return ", ".join(_code_point(ch) for ch in value[:5])


def canonical(value: str) -> str:
    """The form identities are compared in (for a valid identity: NFKC, case-folded)."""
    return unicodedata.normalize("NFKC", value).strip().casefold()


def same_person(a: str, b: str) -> bool:
    return canonical(a) == canonical(b)


IDENTITY_HINT = (
    "write the person's login: ASCII letters and digits, then letters, digits, '.', '_' or "
    "'-' (no spaces, no invisible or look-alike characters)"
)
