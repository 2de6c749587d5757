"""A Kubernetes API stub on loopback: just what the cncf-kubernetes provider's
``SparkKubernetesOperator`` (and its ``KubernetesHook`` / ``PodManager``) calls, plus a
spark-operator that turns each created ``SparkApplication`` into a driver pod.

Endpoints: create / get (and ``/status``) / delete ``sparkapplications`` in
``sparkoperator.k8s.io/v1beta2``; list pods by label and field selector, get, patch and
delete a pod, read (and follow) a pod's log; list events.

Every ``SparkApplication`` it receives is validated against the vendored CRD, made strict as in
``test_k8s_manifests.py`` (an unknown field is an error, where a real API server would prune it
silently): an invalid one is refused with 422 and kept in :attr:`KubeStub.invalid`.

The "driver" of an application is a function the test gives (:attr:`KubeStub.driver`), run in
a thread when the application is created: it gets the manifest and an ``emit(line)`` for the
pod log, and returns the exit code. The application moves SUBMITTED -> RUNNING (the driver pod
started) -> COMPLETED or FAILED (its exit code), as a spark-operator reports it.

What it is not: the real API server (no auth, no admission, no watch, no resourceVersion
semantics), nor the real spark-operator (no executors, no Spark submission, no pod restarts).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import jsonschema
import yaml
from test_k8s_manifests import CRD, _strict

GROUP = "sparkoperator.k8s.io"
VERSION = "v1beta2"
DRIVER_CONTAINER = "spark-kubernetes-driver"

Driver = Callable[[dict[str, Any], Callable[[str], None]], int]


def crd_validator() -> jsonschema.Draft7Validator:
    docs = [d for d in yaml.safe_load_all(CRD.read_text()) if d]
    (version,) = [v for v in docs[0]["spec"]["versions"] if v["name"] == VERSION]
    return jsonschema.Draft7Validator(_strict(version["schema"]["openAPIV3Schema"]))


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _selected(labels: dict[str, str], selector: str) -> bool:
    """A label selector of ``k=v``, ``k==v``, ``k!=v``, ``k`` and ``!k`` terms."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _field_selected(pod: dict[str, Any], selector: str) -> bool:
    fields = {
        "status.phase": pod["status"]["phase"],
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": pod["metadata"]["namespace"],
    }
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if fields.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if fields.get(key) != value:
                return False
    return True


class KubeStub:
    """The server and its state; use as a context manager."""

    def __init__(self, driver: Driver | None = None) -> None:
        self.driver: Driver = driver or (lambda app, emit: 0)
        self.validator = crd_validator()
        self.lock = threading.RLock()
        self.apps: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.logs: dict[tuple[str, str], list[str]] = {}
        self.received: list[dict[str, Any]] = []  # every SparkApplication POSTed, as sent
        self.invalid: list[tuple[dict[str, Any], list[str]]] = []
        self.deleted: list[str] = []  # SparkApplications deleted, by name
        self.states: dict[str, list[str]] = {}  # name -> the states it went through
        self.requests: list[tuple[str, str]] = []
        self.log_follows: dict[str, int] = {}  # pod name -> follow requests of its log
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> KubeStub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "stub", "cluster": {"server": self.url}}],
                    "users": [{"name": "stub", "user": {}}],
                    "contexts": [
                        {
                            "name": "stub",
                            "context": {"cluster": "stub", "user": "stub", "namespace": namespace},
                        }
                    ],
                    "current-context": "stub",
                }
            )
        )
        return path

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the stub waited {timeout}s; requests: {self.requests[-20:]}")
            time.sleep(0.1)

    # -- the spark-operator ------------------------------------------------------------------

    def _set_state(self, key: tuple[str, str], state: str, error: str = "") -> None:
        app = self.apps.get(key)
        if app is None:
            return
        app["status"] = {
            "applicationState": {"state": state, **({"errorMessage": error} if error else {})},
            "driverInfo": {"podName": f"{key[1]}-driver"},
        }
        self.states.setdefault(key[1], []).append(state)

    def _submit(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        app = copy.deepcopy(body)
        app["metadata"].update(uid=f"uid-{name}", creationTimestamp=_now(), resourceVersion="1")
        key = (ns, name)
        pod_name = f"{name}-driver"
        spec = body["spec"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": ns,
                "uid": f"uid-{pod_name}",
                "creationTimestamp": _now(),
                "labels": {
                    **(spec["driver"].get("labels") or {}),
                    "spark-role": "driver",
                    "sparkoperator.k8s.io/app-name": name,
                    "sparkoperator.k8s.io/launched-by-spark-operator": "true",
                },
            },
            "spec": {
                "containers": [{"name": DRIVER_CONTAINER, "image": spec["image"]}],
                "restartPolicy": "Never",
                "serviceAccountName": spec["driver"].get("serviceAccount"),
            },
            "status": {"phase": "Pending"},
        }
        with self.lock:
            self.apps[key] = app
            self._set_state(key, "SUBMITTED")
            self.pods[(ns, pod_name)] = pod
            self.logs[(ns, pod_name)] = []
        threading.Thread(target=self._run_driver, args=(key, pod_name, app), daemon=True).start()
        # the driver pod is running before the create call returns (no wait in the stub)
        self.wait_for(lambda: pod["status"]["phase"] != "Pending", timeout=30)
        return app

    def _run_driver(self, key: tuple[str, str], pod_name: str, app: dict[str, Any]) -> None:
        ns = key[0]
        pod = self.pods[(ns, pod_name)]
        started = _now()
        status = {
            "name": DRIVER_CONTAINER,
            "image": app["spec"]["image"],
            "imageID": "",
            "ready": True,
            "restartCount": 0,
            "started": True,
            "state": {"running": {"startedAt": started}},
        }
        with self.lock:
            pod["status"] = {
                "phase": "Running",
                "startTime": started,
                "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [status],
            }
            self._set_state(key, "RUNNING")

        def emit(line: str) -> None:
            with self.lock:
                self.logs[(ns, pod_name)].append(line)

        try:
            code = self.driver(copy.deepcopy(app), emit)
        except Exception as exc:  # a broken test driver: a failed pod, visibly
            emit(f"stub driver crashed: {exc!r}")
            code = 99
        with self.lock:
            status.update(
                ready=False,
                started=False,
                state={
                    "terminated": {
                        "exitCode": code,
                        "reason": "Completed" if code == 0 else "Error",
                        "startedAt": started,
                        "finishedAt": _now(),
                    }
                },
            )
            pod["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
            if code == 0:
                self._set_state(key, "COMPLETED")
            else:
                self._set_state(key, "FAILED", f"driver container failed with ExitCode: {code}")

    # -- HTTP --------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one response per connection: a log stream ends

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _not_found(self, what: str) -> None:
                self._send(
                    404,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "reason": "NotFound",
                        "message": f"{what} not found",
                        "code": 404,
                    },
                )

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"null")

            def _route(self, method: str) -> None:
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                parts = url.path.strip("/").split("/")
                with stub.lock:
                    stub.requests.append((method, self.path))
                try:
                    if parts[:3] == ["apis", GROUP, VERSION] and parts[5:6] == [
                        "sparkapplications"
                    ]:
                        self._apps(method, parts[4], parts[6:])
                    elif parts[:2] == ["api", "v1"] and parts[4:5] == ["pods"]:
                        self._pods(method, parts[3], parts[5:], query)
                    elif parts[:2] == ["api", "v1"] and parts[4:5] == ["events"]:
                        self._send(
                            200,
                            {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": []},
                        )
                    else:
                        self._not_found(url.path)
                except BrokenPipeError:
                    pass

            def _apps(self, method: str, ns: str, rest: list[str]) -> None:
                if method == "POST" and not rest:
                    body = self._body()
                    with stub.lock:
                        stub.received.append(copy.deepcopy(body))
                    errors = [
                        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
                        for e in stub.validator.iter_errors(body)
                    ]
                    if errors:
                        with stub.lock:
                            stub.invalid.append((body, errors))
                        self._send(
                            422,
                            {
                                "kind": "Status",
                                "status": "Failure",
                                "reason": "Invalid",
                                "message": "; ".join(errors),
                                "code": 422,
                            },
                        )
                        return
                    if (ns, body["metadata"]["name"]) in stub.apps:
                        self._send(409, {"kind": "Status", "reason": "AlreadyExists", "code": 409})
                        return
                    self._send(201, stub._submit(ns, body))
                    return
                key = (ns, rest[0]) if rest else None
                app = stub.apps.get(key) if key else None
                if app is None:
                    self._not_found(f"sparkapplications {rest}")
                    return
                if method == "GET":
                    with stub.lock:
                        self._send(200, copy.deepcopy(app))
                elif method == "DELETE":
                    with stub.lock:
                        del stub.apps[key]
                        stub.deleted.append(key[1])
                        stub.pods.pop((ns, f"{key[1]}-driver"), None)
                    self._send(200, {"kind": "Status", "status": "Success", "code": 200})
                else:
                    self._send(405, {"kind": "Status", "code": 405})

            def _pods(self, method: str, ns: str, rest: list[str], query: dict[str, str]) -> None:
                if not rest and method == "GET":
                    with stub.lock:
                        items = [
                            copy.deepcopy(p)
                            for (pns, _), p in stub.pods.items()
                            if pns == ns
                            and _selected(p["metadata"]["labels"], query.get("labelSelector", ""))
                            and _field_selected(p, query.get("fieldSelector", ""))
                        ]
                    self._send(
                        200,
                        {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items},
                    )
                    return
                key = (ns, rest[0]) if rest else None
                pod = stub.pods.get(key) if key else None
                if pod is None:
                    self._not_found(f"pods {rest}")
                    return
                if rest[1:] == ["log"]:
                    self._log(key, query)
                elif method == "GET":
                    with stub.lock:
                        self._send(200, copy.deepcopy(pod))
                elif method == "PATCH":
                    patch = self._body() or {}
                    with stub.lock:
                        labels = (patch.get("metadata") or {}).get("labels") or {}
                        pod["metadata"]["labels"].update(labels)
                        self._send(200, copy.deepcopy(pod))
                elif method == "DELETE":
                    with stub.lock:
                        del stub.pods[key]
                    self._send(200, {"kind": "Status", "status": "Success", "code": 200})
                else:
                    self._send(405, {"kind": "Status", "code": 405})

            def _log(self, key: tuple[str, str], query: dict[str, str]) -> None:
                follow = query.get("follow", "").lower() == "true"
                stamps = query.get("timestamps", "").lower() == "true"
                with stub.lock:
                    stub.log_follows[key[1]] = stub.log_follows.get(key[1], 0) + int(follow)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                sent = 0
                while True:
                    with stub.lock:
                        lines = list(stub.logs.get(key, []))
                        pod = stub.pods.get(key)
                        done = pod is None or pod["status"]["phase"] in ("Succeeded", "Failed")
                    for line in lines[sent:]:
                        stamp = (
                            dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ ")
                            if stamps
                            else ""
                        )
                        self.wfile.write(f"{stamp}{line}\n".encode())
                    self.wfile.flush()
                    sent = len(lines)
                    if done or not follow:
                        return
                    time.sleep(0.1)

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_DELETE(self) -> None:
                self._route("DELETE")

            def do_PATCH(self) -> None:
                self._route("PATCH")

        return Handler
