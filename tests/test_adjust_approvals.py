"""`regflow adjustments check --approvers-from github`: approval is what the pull request's
reviews prove, not what the YAML claims.

The review is read from a real HTTP server on 127.0.0.1 that serves GitHub-shaped JSON
(paginated like the REST API), and from the same documents in a file (``--reviews-json``).
"""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from regflow.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
HEAD, OLD, C1, C2 = "a" * 40, "b" * 40, "c" * 40, "d" * 40
RULE_PATH = "adjustments/lcr/ADJ-2026-0004.yaml"
TOKEN = "ghs_T0kenThatMustNotBePrinted"
RULE = """\
rule_id: ADJ-2026-0004
pipeline: lcr
stage: weigh
conditions:
  - {{field: legal_entity, operator: "=", value: LE001}}
adjustments:
  - {{field: weighted_amount, operation: multiply, value: 1.1}}
effective_date: 2026-01-01
approval:
  requested_by: {requested_by}
  approved_by: {approved_by}
  timestamp: 2026-01-02T09:00:00Z
reason: approvals test
"""
APPROVED_BY_LINE = 11  # (1-based) where errors about approved_by point, column 16


def project_with_rule(root: Path, requested_by="alice-analyst", approved_by="bob-checker"):
    for name in ("pipelines", "operators"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "adjustments" / "lcr", root / "adjustments" / "lcr")
    rule = root / RULE_PATH
    rule.write_text(RULE.format(requested_by=requested_by, approved_by=approved_by))
    return rule


def review(login: str, state: str, commit: str = HEAD) -> dict[str, Any]:
    return {"user": {"login": login}, "state": state, "commit_id": commit}


def documents(
    reviews: list[dict[str, Any]],
    author: str = "alice-analyst",
    commits: list[tuple[str, str | None]] | None = None,
) -> dict[str, Any]:
    """GitHub-shaped documents of pull request #7, changing the new rule file."""
    commits = commits if commits is not None else [(C1, author)]
    return {
        "pull": {"number": 7, "user": {"login": author}, "head": {"sha": HEAD}},
        "reviews": reviews,
        "files": [{"filename": RULE_PATH, "status": "added"}],
        "commits": [
            {
                "sha": sha,
                "author": {"login": who} if who else None,
                "files": [{"filename": RULE_PATH}],
            }
            for sha, who in commits
        ],
    }


class FakeGitHub:
    """A real HTTP server on loopback answering the REST endpoints the check calls, list
    endpoints in pages of one item linked by ``Link: rel="next"``; it records every request
    with the token it carried."""

    def __init__(self, docs: dict[str, Any], status: int = 200):
        self.docs, self.status = docs, status
        self.requests: list[tuple[str, str | None]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append((self.path, self.headers.get("Authorization")))
                body, link, code = owner.answer(self.path)
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                if link:
                    self.send_header("Link", link)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, path: str) -> tuple[Any, str | None, int]:
        if self.status != 200:
            return {"message": "Not Found"}, None, self.status
        base, _, query = path.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        page = int(params.get("page", 1))
        pull = "/repos/acme/risk/pulls/7"
        lists = {
            f"{pull}/reviews": self.docs["reviews"],
            f"{pull}/files": self.docs["files"],
            f"{pull}/commits": [
                {"sha": c["sha"], "author": c["author"]} for c in self.docs["commits"]
            ],
        }
        if base == pull:
            return self.docs["pull"], None, 200
        if base in lists:
            items = lists[base]
            more = page < len(items)
            link = f'<{self.url}{base}?per_page=100&page={page + 1}>; rel="next"' if more else None
            return items[page - 1 : page], link, 200
        for c in self.docs["commits"]:
            if base == f"/repos/acme/risk/commits/{c['sha']}":
                return {"sha": c["sha"], "files": c["files"]}, None, 200
        return {"message": "Not Found"}, None, 404

    def __enter__(self) -> FakeGitHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def check(project: Path, files: list[Path], source: str, docs, monkeypatch, tmp_path, capsys):
    """Run the check with the review from ``source`` (http or file); (exit code, output)."""
    monkeypatch.setenv("REGFLOW_PROJECT", str(project))
    args = ["adjustments", "check", *map(str, files), "--storage", str(tmp_path / "no-runs")]
    (tmp_path / "no-runs").mkdir(exist_ok=True)
    if source == "file":
        path = tmp_path / "reviews.json"
        path.write_text(json.dumps(docs))
        code = main([*args, "--reviews-json", str(path)])
        return code, capsys.readouterr()
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/risk")
    with FakeGitHub(docs) as gh:
        monkeypatch.setenv("GITHUB_API_URL", gh.url)
        code = main([*args, "--approvers-from", "github", "--pr", "7"])
    assert gh.requests and all(auth == f"Bearer {TOKEN}" for _, auth in gh.requests)
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err
    return code, out


SOURCES = ["http", "file"]


def error_at(report: str, where: str) -> str:
    """The error line of ``report`` located at ``where``."""
    lines = [line for line in report.splitlines() if line.startswith(f"{where}: error: ")]
    assert len(lines) == 1, report
    return lines[0]


@pytest.mark.parametrize("source", SOURCES)
def test_the_named_approver_approving_the_head_commit_passes(tmp_path, monkeypatch, capsys, source):
    rule = project_with_rule(tmp_path / "p")
    docs = documents(
        [review("bob-checker", "COMMENTED"), review("Bob-Checker", "APPROVED"),
         review("carol", "COMMENTED")]
    )  # fmt: skip
    code, out = check(rule.parents[2], [rule], source, docs, monkeypatch, tmp_path, capsys)
    assert code == 0, out.out
    assert "✅ valid" in out.out


def test_every_page_is_read_and_the_token_goes_with_every_request(tmp_path, monkeypatch, capsys):
    """The approval sits on the second page of reviews: it counts only if pages are followed."""
    rule = project_with_rule(tmp_path / "p")
    docs = documents([review("carol", "APPROVED"), review("bob-checker", "APPROVED")])
    monkeypatch.setenv("REGFLOW_PROJECT", str(rule.parents[2]))
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/risk")
    with FakeGitHub(docs) as gh:
        monkeypatch.setenv("GITHUB_API_URL", gh.url)
        argv = ["adjustments", "check", str(rule), "--approvers-from", "github", "--pr", "7"]
        assert main([*argv, "--storage", str(tmp_path)]) == 0
    paths = [p for p, _ in gh.requests]
    assert "/repos/acme/risk/pulls/7/reviews?per_page=100&page=2" in paths
    assert f"/repos/acme/risk/commits/{C1}" in paths
    assert {auth for _, auth in gh.requests} == {f"Bearer {TOKEN}"}
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err


REFUSED = {
    "not a reviewer": (
        documents([review("carol", "APPROVED")]),
        {},
        "approved_by 'bob-checker' has not approved pull request #7 (approved on its head "
        "commit aaaaaaa: carol)",
    ),
    "no review at all": (documents([]), {}, "has not approved pull request #7 (approved on"),
    "approved an earlier commit": (
        documents([review("bob-checker", "APPROVED", OLD)]),
        {},
        "approved commit bbbbbbb of pull request #7, not its head aaaaaaa",
    ),
    "changes requested after approving": (
        documents([review("bob-checker", "APPROVED"), review("bob-checker", "CHANGES_REQUESTED")]),
        {},
        "has not approved pull request #7",
    ),
    "approval dismissed": (
        documents([review("bob-checker", "APPROVED"), review("bob-checker", "DISMISSED")]),
        {},
        "has not approved pull request #7",
    ),
    "the pull request's author": (
        documents([review("carol", "APPROVED")], author="bob-checker"),
        {"requested_by": "carol"},
        "maker-checker: approved_by 'bob-checker' is the author of pull request #7",
    ),
    "wrote a commit of the file": (
        documents(
            [review("bob-checker", "APPROVED")],
            commits=[(C1, "alice-analyst"), (C2, "bob-checker")],
        ),
        {},
        "maker-checker: approved_by 'bob-checker' wrote commit ddddddd that changes this file",
    ),
    "a commit of unknown author": (
        documents([review("bob-checker", "APPROVED")], commits=[(C1, "alice-analyst"), (C2, None)]),
        {},
        "commit ddddddd changes this file but has no GitHub author",
    ),
}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_an_approval_the_review_does_not_prove_is_refused(
    tmp_path, monkeypatch, capsys, case, source
):
    docs, names, message = REFUSED[case]
    rule = project_with_rule(tmp_path / "p", **names)
    code, out = check(rule.parents[2], [rule], source, docs, monkeypatch, tmp_path, capsys)
    assert code == 1
    assert message in error_at(out.out, f"{rule}:{APPROVED_BY_LINE}:16"), out.out


@pytest.mark.parametrize("source", SOURCES)
def test_a_changed_rule_file_is_checked_even_when_not_named(tmp_path, monkeypatch, capsys, source):
    """The pull request's files come from the code host: leaving the new rule out of the
    FILES argument does not leave it unchecked; unchanged rules are not checked against it."""
    rule = project_with_rule(tmp_path / "p")
    sample = rule.parent / "ADJ-2026-0001.yaml"  # approved by b.checker, in an earlier PR
    docs = documents([review("carol", "APPROVED")])
    code, out = check(rule.parents[2], [sample], source, docs, monkeypatch, tmp_path, capsys)
    assert code == 1
    assert "approved_by 'bob-checker' has not" in error_at(out.out, f"{rule}:{APPROVED_BY_LINE}:16")
    assert f"{sample}:" not in out.out


def test_a_requester_who_wrote_nothing_is_a_warning(tmp_path, monkeypatch, capsys):
    rule = project_with_rule(tmp_path / "p", requested_by="dave")
    docs = documents([review("bob-checker", "APPROVED")])
    code, out = check(rule.parents[2], [rule], "file", docs, monkeypatch, tmp_path, capsys)
    assert code == 0
    assert f"{rule}:10:17: warning: requested_by 'dave' is neither the author" in out.out


def test_api_errors_and_a_missing_token_say_why_without_the_token(tmp_path, monkeypatch, capsys):
    rule = project_with_rule(tmp_path / "p")
    monkeypatch.setenv("REGFLOW_PROJECT", str(rule.parents[2]))
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/risk")
    argv = ["adjustments", "check", str(rule), "--approvers-from", "github", "--pr", "7"]
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    assert main(argv) == 1
    assert "needs a token in GITHUB_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    with FakeGitHub(documents([]), status=404) as gh:
        monkeypatch.setenv("GITHUB_API_URL", gh.url)
        assert main(argv) == 1
    err = capsys.readouterr().err
    assert "GitHub API GET /repos/acme/risk/pulls/7 answered 404" in err
    assert "hint: check the repository and the pull request number" in err
    assert TOKEN not in err and "Traceback" not in err


def test_the_token_is_not_sent_to_another_host(tmp_path):
    from regflow.adjust.github import GitHubClient
    from regflow.errors import ConfigError

    with FakeGitHub(documents([])) as gh:
        client = GitHubClient(gh.url, TOKEN)
        with pytest.raises(ConfigError, match="another host"):
            client._get_url("http://127.0.0.2:9/steal")
    assert gh.requests == []


def test_the_shipped_workflow_verifies_approvals_from_the_review():
    import yaml

    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "adjustments.yml").read_text())
    triggers = wf.get("on", wf.get(True))  # (YAML 1.1 reads a bare `on` as true)
    assert {"pull_request", "pull_request_review"} <= set(triggers)
    steps = wf["jobs"]["check"]["steps"]
    check = next(s for s in steps if "adjustments check" in s.get("run", ""))
    assert "--approvers-from github" in check["run"] and "--pr" in check["run"]
    assert check["env"]["GITHUB_TOKEN"] == "${{ github.token }}"
    # no expression is pasted into a shell script (file names and logins come from the author)
    assert all("${{" not in s.get("run", "") for s in steps)
    assert "/adjustments/" in (ROOT / ".github" / "CODEOWNERS").read_text()


def test_the_pull_request_comes_from_the_actions_event(tmp_path, monkeypatch, capsys):
    """In a pull_request or pull_request_review job, GITHUB_EVENT_PATH names the PR."""
    rule = project_with_rule(tmp_path / "p")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"action": "submitted", "pull_request": {"number": 7}}))
    monkeypatch.setenv("REGFLOW_PROJECT", str(rule.parents[2]))
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/risk")
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    with FakeGitHub(documents([review("bob-checker", "APPROVED")])) as gh:
        monkeypatch.setenv("GITHUB_API_URL", gh.url)
        argv = ["adjustments", "check", str(rule), "--approvers-from", "github"]
        assert main([*argv, "--storage", str(tmp_path)]) == 0
    assert gh.requests[0][0] == "/repos/acme/risk/pulls/7"
    monkeypatch.delenv("GITHUB_EVENT_PATH")
    assert main([*argv, "--storage", str(tmp_path)]) == 1
    assert "which pull request? give --pr N" in capsys.readouterr().err
