"""Read a pull request's review from the GitHub REST API (for ``--approvers-from github``).

In a GitHub Actions job everything comes from the environment: ``GITHUB_TOKEN`` (sent as a
bearer token, never printed), ``GITHUB_REPOSITORY``, ``GITHUB_API_URL`` and the pull
request's number from the event payload (``GITHUB_EVENT_PATH``). The token is sent to the
API's own host only, also when a page links elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from regflow.adjust.review import PullRequestReview, review_from_documents
from regflow.errors import ConfigError

DEFAULT_API = "https://api.github.com"
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
MAX_PAGES = 30  # 3,000 reviews, files or commits: more is not a pull request anyone reviewed


class GitHubClient:
    def __init__(self, api: str, token: str, timeout: float = 30.0):
        self.api = api.rstrip("/")
        self._token = token
        self.timeout = timeout
        self._netloc = urlsplit(self.api).netloc

    def get(self, path: str) -> Any:
        return self._get_url(f"{self.api}{path}")[0]

    def get_all(self, path: str) -> list[Any]:
        """Every page of a list endpoint (``per_page=100``, following ``Link: rel=next``)."""
        sep = "&" if "?" in path else "?"
        url: str | None = f"{self.api}{path}{sep}per_page=100"
        out: list[Any] = []
        for _ in range(MAX_PAGES):
            if url is None:
                return out
            page, link = self._get_url(url)
            if not isinstance(page, list):
                raise ConfigError(f"GitHub API GET {_path(url)}: expected a list")
            out += page
            m = _NEXT.search(link or "")
            url = m.group(1) if m else None
        raise ConfigError(f"GitHub API GET {path}: more than {MAX_PAGES} pages")

    def _get_url(self, url: str) -> tuple[Any, str | None]:
        if urlsplit(url).netloc != self._netloc:  # the token goes to the API host only
            raise ConfigError(f"GitHub API: refusing to follow a link to another host ({url})")
        req = urllib.request.Request(
            url,
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {self._token}",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "regflow-adjustments-check",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode("utf-8")), resp.headers.get("Link")
        except urllib.error.HTTPError as exc:
            hint = {
                401: "the token is missing or invalid (GITHUB_TOKEN)",
                403: "the token lacks 'pull-requests: read', or the rate limit is reached",
                404: "check the repository and the pull request number",
            }.get(exc.code, "retry; the API may be unavailable")
            raise ConfigError(
                f"GitHub API GET {_path(url)} answered {exc.code} {exc.reason}\n  hint: {hint}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(f"GitHub API GET {_path(url)} failed: {reason}") from None


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def fetch_review(
    client: GitHubClient, repo: str, number: int, *, log: Any = None
) -> PullRequestReview:
    """The documents of :func:`regflow.adjust.review.review_from_documents`, from the API."""
    base = f"/repos/{repo}/pulls/{number}"
    pull = client.get(base)
    reviews = client.get_all(f"{base}/reviews")
    files = client.get_all(f"{base}/files")
    commits = []
    for c in client.get_all(f"{base}/commits"):
        detail = client.get(f"/repos/{repo}/commits/{c['sha']}")  # (the list has no files)
        commits.append({**c, "files": detail.get("files") or []})
    if log is not None:
        log(
            f"pull request #{number} of {repo}: {len(reviews)} review(s), {len(files)} changed "
            f"file(s), {len(commits)} commit(s)"
        )
    return review_from_documents(
        {"pull": pull, "reviews": reviews, "files": files, "commits": commits}
    )


def review_from_environment(
    pr: int | None = None, repo: str | None = None, *, log: Any = None
) -> PullRequestReview:
    """The review of the pull request a GitHub Actions job runs for (or ``pr`` of ``repo``)."""
    token = os.environ.get("GITHUB_TOKEN", "")
    if not token:
        raise ConfigError(
            "--approvers-from github needs a token in GITHUB_TOKEN\n"
            "  hint: in the workflow, env: GITHUB_TOKEN: ${{ github.token }} with "
            "permissions pull-requests: read (offline: --reviews-json FILE)"
        )
    repo = repo or os.environ.get("GITHUB_REPOSITORY", "")
    if not _REPO.match(repo):
        raise ConfigError(
            f"--repo '{repo}' is not owner/name (default: $GITHUB_REPOSITORY)"
            if repo
            else "which repository? give --repo owner/name or set GITHUB_REPOSITORY"
        )
    if pr is None:
        pr = _event_pr_number()
    api = os.environ.get("GITHUB_API_URL") or DEFAULT_API
    return fetch_review(GitHubClient(api, token), repo, pr, log=log)


def _event_pr_number() -> int:
    event = os.environ.get("GITHUB_EVENT_PATH")
    try:
        data = json.loads(Path(event).read_text()) if event else {}
        return int(data["pull_request"]["number"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            "which pull request? give --pr N, or run in a pull_request or "
            "pull_request_review workflow (GITHUB_EVENT_PATH)"
        ) from None
