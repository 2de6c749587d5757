"""What the code host proves about a pull request, and the rules it changes checked against it.

A rule's ``approval`` block is a claim written by its author. The pull request's reviews are
not: only the reviewer can approve, and the code host records who did, on which commit. So
for every rule file a pull request changes, the check requires that

- ``approved_by`` approved the pull request, on its head commit (an approval of an earlier
  commit does not cover what was pushed after it), and that this approval still stands;
- ``approved_by`` is not the pull request's author, nor the author of a commit that changes
  the file (and every such commit has a known author);

and warns when ``requested_by`` wrote none of it. The review is read from the code host's API
(:mod:`regflow.adjust.github`) or from a file holding the same documents (``--reviews-json``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regflow.adjust.identity import canonical
from regflow.adjust.loader import LoadedRule
from regflow.errors import ConfigError, Problem

# A reviewer's standing decision is their latest review in one of these states
DECISIVE = ("APPROVED", "CHANGES_REQUESTED", "DISMISSED")


@dataclass(frozen=True)
class Commit:
    sha: str
    author: str | None  # the code-host login; None when the commit's email is linked to none
    files: tuple[str, ...]


@dataclass(frozen=True)
class PullRequestReview:
    """A pull request as the code host records it."""

    number: int
    author: str
    head_sha: str
    approvals: dict[str, str]  # canonical login -> the commit its standing approval is on
    logins: dict[str, str]  # canonical login -> the login as the code host spells it
    changed_files: tuple[str, ...]
    commits: tuple[Commit, ...] = field(default=())

    @property
    def approvers(self) -> list[str]:
        """Who approved the head commit."""
        return sorted(self.logins[k] for k, sha in self.approvals.items() if sha == self.head_sha)

    def changes(self, rel: str) -> bool:
        return _matching(rel, self.changed_files) is not None

    def commits_changing(self, rel: str) -> list[Commit]:
        return [c for c in self.commits if _matching(rel, c.files) is not None]


def _matching(rel: str, files: Iterable[str]) -> str | None:
    """The repository path in ``files`` that is ``rel`` (a path relative to the project,
    which may sit in a sub-folder of the repository)."""
    for f in files:
        if f == rel or f.endswith("/" + rel):
            return f
    return None


def _login(user: Any) -> str | None:
    return user.get("login") if isinstance(user, dict) and user.get("login") else None


def review_from_documents(docs: dict[str, Any]) -> PullRequestReview:
    """A :class:`PullRequestReview` from the code host's documents: ``pull`` (GET
    /pulls/{n}), ``reviews`` (GET /pulls/{n}/reviews), ``files`` (GET /pulls/{n}/files) and
    ``commits`` (GET /commits/{sha} of each commit of GET /pulls/{n}/commits)."""
    try:
        pull = docs["pull"]
        number, head = int(pull["number"]), str(pull["head"]["sha"])
        author = _login(pull.get("user"))
        if author is None:
            raise KeyError("pull.user.login")
        approvals: dict[str, str] = {}
        logins: dict[str, str] = {}
        # reviews come oldest first; a reviewer's latest decisive review stands
        for rv in docs.get("reviews") or []:
            who, state = _login(rv.get("user")), str(rv.get("state", "")).upper()
            if who is None or state not in DECISIVE:
                continue  # a comment does not change a decision
            key = canonical(who)
            logins[key] = who
            if state == "APPROVED":
                approvals[key] = str(rv.get("commit_id"))
            else:
                approvals.pop(key, None)
        changed = tuple(
            str(f["filename"]) for f in docs.get("files") or [] if f.get("status") != "removed"
        )
        commits = tuple(
            Commit(
                str(c["sha"]),
                _login(c.get("author")),
                tuple(
                    name
                    for f in c.get("files") or []
                    for name in (f.get("filename"), f.get("previous_filename"))
                    if name
                ),
            )
            for c in docs.get("commits") or []
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"the pull request's review documents are incomplete: {exc!r} is missing or "
            "malformed\n  hint: give pull, reviews, files and commits as the GitHub REST API "
            "returns them"
        ) from None
    return PullRequestReview(number, author, head, approvals, logins, changed, commits)


def load_review_json(path: Path) -> PullRequestReview:
    """``--reviews-json FILE``: the documents of :func:`review_from_documents` in one file."""
    try:
        docs = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the review documents {path}: {exc}") from None
    if not isinstance(docs, dict):
        raise ConfigError(f"{path} must hold a JSON object with pull, reviews, files, commits")
    return review_from_documents(docs)


def verify_approvals(
    rules: list[LoadedRule], review: PullRequestReview, project: Path
) -> list[Problem]:
    """The problems of every rule in ``rules`` whose file the pull request changes."""
    out: list[Problem] = []
    short = review.head_sha[:7]
    for r in rules:
        try:
            rel = r.path.resolve().relative_to(project.resolve()).as_posix()
        except ValueError:
            continue  # not in the repository: not part of the pull request
        if not review.changes(rel):
            continue
        approval = r.rule.approval
        approver = canonical(approval.approved_by)
        pr = f"pull request #{review.number}"
        if approver == canonical(review.author):
            out.append(
                r.problem(
                    f"maker-checker: approved_by '{approval.approved_by}' is the author of {pr}",
                    "approval",
                    "approved_by",
                    hint="a reviewer other than the author approves the pull request",
                )
            )
            continue
        commits = review.commits_changing(rel)
        wrote = [c.sha[:7] for c in commits if c.author and canonical(c.author) == approver]
        if wrote:
            out.append(
                r.problem(
                    f"maker-checker: approved_by '{approval.approved_by}' wrote commit "
                    f"{', '.join(wrote)} that changes this file",
                    "approval",
                    "approved_by",
                    hint="a person who changed the rule cannot approve it; ask another reviewer",
                )
            )
        unknown = [c.sha[:7] for c in commits if c.author is None]
        if unknown:
            out.append(
                r.problem(
                    f"commit {', '.join(unknown)} changes this file but has no GitHub "
                    "author: whether the approver wrote it cannot be checked",
                    "approval",
                    "approved_by",
                    hint="commit with an email address linked to the author's account",
                )
            )
        standing = review.approvals.get(approver)
        if standing is None:
            who = ", ".join(review.approvers) or "nobody yet"
            out.append(
                r.problem(
                    f"approved_by '{approval.approved_by}' has not approved {pr} "
                    f"(approved on its head commit {short}: {who})",
                    "approval",
                    "approved_by",
                    hint="the person named in approved_by approves the pull request; write "
                    "their code-host login",
                )
            )
        elif standing != review.head_sha:
            out.append(
                r.problem(
                    f"approved_by '{approval.approved_by}' approved commit {standing[:7]} of "
                    f"{pr}, not its head {short}: the approval does not cover later pushes",
                    "approval",
                    "approved_by",
                    hint="the approver reviews and approves the pull request again",
                )
            )
        makers = {canonical(review.author)} | {canonical(c.author) for c in commits if c.author}
        if canonical(approval.requested_by) not in makers:
            out.append(
                r.problem(
                    f"requested_by '{approval.requested_by}' is neither the author of {pr} "
                    "nor of a commit that changes this file",
                    "approval",
                    "requested_by",
                    severity="warning",
                    hint="write the requester's code-host login, or say in 'reason' who asked",
                )
            )
    return out
