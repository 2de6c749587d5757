"""No secret in any output: one redaction for every connection URL, and a filter for text
that may echo one (a driver's error message).

A URL's credentials run from ``//`` to the *last* ``@`` (a password may hold an unencoded
``@`` or ``/``); the user, possibly empty, runs to the first ``:``. Every password regflow
reads from a URL or a connection is also remembered for the life of the process, so that
:func:`scrub` removes it from any text, however the text came to hold it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from urllib.parse import quote, unquote

MASK = "***"
_URL = re.compile(r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]*)://([^\s'\"<>`]*)")
_SECRET_PARAM = re.compile(
    r"(?i)((?:[a-z0-9_]*)(?:password|passwd|pwd|secret|token|credential|api_?key"
    r"|access_?key|session_?key)[a-z0-9_]*=)([^&\s'\"]*)"
)
_FRAGMENT_SPLIT = re.compile(r"[@/:?#&=\s]+")
_MIN_FRAGMENT = 4  # shorter pieces of a secret are masked only where the whole secret is

_known: set[str] = set()
_lock = threading.Lock()


@dataclass(frozen=True)
class UrlParts:
    scheme: str
    user: str | None  # None: no credentials; "" an empty user (``postgresql://:pw@host``)
    password: str | None  # None: no password given
    rest: str  # host[:port][/path][?query]


def split_url(url: str) -> UrlParts | None:
    """``scheme://[user[:password]@]rest``, with credentials up to the last ``@``."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", url, re.S)
    if m is None:
        return None
    scheme, rest = m.groups()
    at = rest.rfind("@")
    if at < 0:
        return UrlParts(scheme, None, None, rest)
    user, sep, password = rest[:at].partition(":")
    return UrlParts(scheme, user, password if sep else None, rest[at + 1 :])


def redact(url: str) -> str:
    """``url`` for display: the password masked (``scheme://user:***@host``), and secret
    query parameters (``password=``, ``token=``, ...) too."""
    parts = split_url(url)
    if parts is None:
        return _SECRET_PARAM.sub(rf"\1{MASK}", url)
    rest = _SECRET_PARAM.sub(rf"\1{MASK}", parts.rest)
    if parts.user is None:
        return f"{parts.scheme}://{rest}"
    cred = parts.user if parts.password is None else f"{parts.user}:{MASK}"
    return f"{parts.scheme}://{cred}@{rest}"


def normalise_url(url: str) -> str:
    """``url`` with its user and password percent-encoded, so that a driver (libpq) reads the
    credentials regflow reads, not a host made of the password's tail. Also remembers the
    password (see :func:`scrub`)."""
    parts = split_url(url)
    if parts is None or parts.user is None:
        return url
    user = quote(unquote(parts.user), safe="")
    if parts.password is None:
        return f"{parts.scheme}://{user}@{parts.rest}"
    remember_secret(parts.password)
    password = quote(unquote(parts.password), safe="")
    return f"{parts.scheme}://{user}:{password}@{parts.rest}"


def remember_secret(secret: str | None) -> None:
    """Mask ``secret`` (and its encoded and decoded forms) in everything :func:`scrub` sees."""
    if not secret:
        return
    with _lock:
        for form in {secret, unquote(secret), quote(unquote(secret), safe="")}:
            if form:
                _known.add(form)


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with every URL redacted and every known secret masked: the remembered ones
    and ``secrets``, whole, and their pieces between URL delimiters of at least 4 characters
    (what a driver echoes when it split a URL differently)."""
    text = _URL.sub(lambda m: redact(m.group(0)), text)
    text = _SECRET_PARAM.sub(rf"\1{MASK}", text)
    with _lock:
        known = set(_known)
    known |= {s for s in secrets if s}
    pieces = {p for s in known for p in _FRAGMENT_SPLIT.split(s) if len(p) >= _MIN_FRAGMENT}
    for s in sorted(known | pieces, key=len, reverse=True):
        text = text.replace(s, MASK)
    return text
