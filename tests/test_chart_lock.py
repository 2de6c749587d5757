"""``helm/Chart.lock``: written here without the chart repositories, and checked by Helm.

The lock pins each dependency of ``helm/Chart.yaml`` to one version, and its ``digest`` is
Helm's hash of the Chart.yaml dependencies and the locked ones (``resolver.HashReq`` in
Helm's Go source: ``"sha256:" + sha256(json.Marshal([2][]*chart.Dependency{req, lock}))``).
``helm dependency build`` refuses a lock whose digest does not match ("out of sync") before
it fetches anything. This machine cannot reach the chart repositories, so:

* :func:`hash_req` computes the digest in Python, independently of Helm;
* ``test_hash_req_is_helms`` checks it against Helm's own: Helm's Go SDK (helm-python-sdk)
  runs ``helm dependency update`` on a copy of the chart whose repositories point to a
  chart repository served on loopback (stub charts of the same names and versions), and
  the digest Helm writes must be ours; ``helm dependency build`` then accepts a lock we
  write and fetches exactly the locked versions;
* ``test_committed_lock_matches_chart_yaml`` checks the committed lock against Chart.yaml.

Does not prove: that the locked versions are the newest the real repositories offer (the
lock pins ``airflow`` 1.18.0, the lowest version ``^1.18.0`` allows, known to exist; a
``helm dependency update`` with network may pick a newer one and rewrite the lock) or that
the real charts' archives download (``dependency build`` fails here at the fetch).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm  # the test-k8s extra, installed by `make test`
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm"
# chart.Dependency's JSON fields in Go declaration order; name and repository have no
# omitempty, the others are left out when empty (Go's zero value)
DEPENDENCY_FIELDS = (
    "name",
    "version",
    "repository",
    "condition",
    "tags",
    "enabled",
    "import-values",
    "alias",
)
STUBS = (("airflow", "1.17.0"), ("airflow", "1.18.0"), ("spark-operator", "2.5.0-rc.0"))


def _go_dependency(dep: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in DEPENDENCY_FIELDS:
        value = dep.get(key)
        if key in ("name", "repository"):
            out[key] = value or ""
        elif value:
            out[key] = value
    return out


def hash_req(req: list[dict[str, Any]], lock: list[dict[str, Any]]) -> str:
    """Helm's ``resolver.HashReq``: the SHA-256 of Go's ``json.Marshal`` of [req, lock]
    (compact, fields in struct order, ``<``, ``>`` and ``&`` escaped as Go does)."""
    data = json.dumps(
        [[_go_dependency(d) for d in req], [_go_dependency(d) for d in lock]],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        data = data.replace(char, escaped)
    return "sha256:" + hashlib.sha256(data.encode()).hexdigest()


def _satisfies(version: str, constraint: str) -> bool:
    """The two constraint forms Chart.yaml uses: ``^X.Y.Z`` and an exact version."""
    if constraint.startswith("^"):
        low = [int(p) for p in constraint[1:].split(".")]
        got = [int(p) for p in version.split(".")]
        return got[0] == low[0] and got >= low
    return version == constraint


def _dependencies(chart: Path) -> list[dict[str, Any]]:
    return yaml.safe_load((chart / "Chart.yaml").read_text())["dependencies"]


def test_committed_lock_matches_chart_yaml() -> None:
    """Chart.lock locks every Chart.yaml dependency, in order, from its repository, at a
    version its constraint allows, and its digest is Helm's hash of both lists."""
    req = _dependencies(CHART)
    lock = yaml.safe_load((CHART / "Chart.lock").read_text())
    locked = lock["dependencies"]
    assert [(d["name"], d["repository"]) for d in locked] == [
        (d["name"], d["repository"]) for d in req
    ]
    for want, got in zip(req, locked, strict=True):
        assert set(got) == {"name", "repository", "version"}
        assert _satisfies(got["version"], want["version"]), (got, want)
    assert lock["digest"] == hash_req(req, locked)


@pytest.fixture
def chart_repo(tmp_path) -> Iterator[str]:
    """A chart repository on loopback with stub charts named and versioned as the real
    dependencies (and an older airflow, so the resolver has a choice)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name, version in STUBS:
        src = tmp_path / "src" / f"{name}-{version}" / name
        (src / "templates").mkdir(parents=True)
        (src / "Chart.yaml").write_text(
            yaml.safe_dump({"apiVersion": "v2", "name": name, "version": version})
        )
        helm.package(src, destination=repo)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(repo))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    helm.repo_index_generate(repo, base_url=url)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


def _local_copy(chart: Path, dest: Path, url: str) -> Path:
    """The chart with both dependencies' repositories replaced by ``url``."""
    shutil.copytree(chart, dest, ignore=shutil.ignore_patterns("Chart.lock", "charts"))
    meta = yaml.safe_load((dest / "Chart.yaml").read_text())
    for dep in meta["dependencies"]:
        dep["repository"] = url
    (dest / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return dest


def test_hash_req_is_helms(tmp_path, chart_repo) -> None:
    """Helm's own ``dependency update`` writes the digest :func:`hash_req` computes, and
    ``dependency build`` accepts a lock written with it (and refuses a wrong digest)."""
    updated = _local_copy(CHART, tmp_path / "updated" / "regflow", chart_repo)
    helm.dependency_update(updated)
    helms = yaml.safe_load((updated / "Chart.lock").read_text())
    assert [(d["name"], d["version"]) for d in helms["dependencies"]] == [
        ("airflow", "1.18.0"),
        ("spark-operator", "2.5.0-rc.0"),
    ]
    assert helms["digest"] == hash_req(_dependencies(updated), helms["dependencies"])

    ours = _local_copy(CHART, tmp_path / "ours" / "regflow", chart_repo)
    committed = yaml.safe_load((CHART / "Chart.lock").read_text())
    locked = [{**d, "repository": chart_repo} for d in committed["dependencies"]]
    lock = {"dependencies": locked, "digest": hash_req(_dependencies(ours), locked)}
    (ours / "Chart.lock").write_text(yaml.safe_dump({**lock, "generated": committed["generated"]}))
    helm.dependency_build(ours)
    assert sorted(p.name for p in (ours / "charts").iterdir()) == sorted(
        f"{d['name']}-{d['version']}.tgz" for d in locked
    )
    assert {d["name"]: d["status"] for d in helm.dependency_list(ours)} == {
        "airflow": "ok",
        "spark-operator": "ok",
    }

    wrong = {**lock, "digest": "sha256:" + "0" * 64, "generated": committed["generated"]}
    (ours / "Chart.lock").write_text(yaml.safe_dump(wrong))
    with pytest.raises(helm.HelmRepoError, match="out of sync"):
        helm.dependency_build(ours)


def test_helm_accepts_the_committed_lock(tmp_path) -> None:
    """On the real chart, ``helm dependency build`` passes the lock check and stops only
    at fetching the repositories (none reachable here); with a dependency changed in
    Chart.yaml and the lock not updated, it refuses the lock."""
    chart = tmp_path / "regflow"
    shutil.copytree(CHART, chart, ignore=shutil.ignore_patterns("charts"))
    locked = yaml.safe_load((CHART / "Chart.lock").read_text())["dependencies"]
    try:
        helm.dependency_build(chart)
    except helm.HelmRepoError as exc:  # no network to the repositories (as here)
        assert "out of sync" not in str(exc)
        assert "index.yaml" in str(exc)  # the repository index it could not read
    else:  # where they are reachable: it fetched exactly the locked versions
        assert sorted(p.name for p in (chart / "charts").iterdir()) == sorted(
            f"{d['name']}-{d['version']}.tgz" for d in locked
        )

    text = (chart / "Chart.yaml").read_text()
    (chart / "Chart.yaml").write_text(text.replace('"^1.18.0"', '"^1.19.0"'))
    with pytest.raises(helm.HelmRepoError, match="out of sync"):
        helm.dependency_build(chart)
