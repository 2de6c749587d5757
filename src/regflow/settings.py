"""regflow's settings: every ``REGFLOW_*`` environment variable, read and checked in one place.

:func:`current` resolves the settings from the environment once (and again only if a
``REGFLOW_*`` variable changes, which a deployment never does but a test may). A bad value is
a :class:`~regflow.errors.ConfigError` naming the variable and the fix, raised when the
settings are first resolved, never deep inside a run.

The CLI sets per-invocation values (``--storage``, ``--warehouse``, ``--project``,
``--allow-empty-replace``) with :func:`configure` (for the rest of the process) or
:func:`override` (a ``with`` block): the tasks ``regflow run`` executes in-process through
``dag.test`` see them through :func:`current`. Nothing writes ``os.environ``. A child process
that needs them (a spark-submit'ed stage, an Airflow worker) is given :meth:`Settings.as_env`
as its environment.

Bottom layer: the standard library and :mod:`regflow.errors` only (no pyspark, no airflow).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from regflow.errors import ConfigError

ENGINES = ("auto", "spark", "driver")
# where a DAG's stages run: in the Airflow worker (local Spark) or as SparkApplications
EXECUTORS = ("local", "kubernetes")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Settings:
    """Every regflow setting; the field's ``env`` metadata names its variable."""

    storage: str | None = field(default=None, metadata={"env": "REGFLOW_STORAGE"})
    warehouse: str | None = field(default=None, metadata={"env": "REGFLOW_WAREHOUSE"})
    warehouse_dir: str | None = field(default=None, metadata={"env": "REGFLOW_WAREHOUSE_DIR"})
    # a secret: never in repr(), logs or describe()
    warehouse_password: str | None = field(
        default=None, repr=False, metadata={"env": "REGFLOW_WAREHOUSE_PASSWORD", "secret": True}
    )
    allow_empty_replace: bool = field(
        default=False, metadata={"env": "REGFLOW_ALLOW_EMPTY_REPLACE"}
    )
    project: str | None = field(default=None, metadata={"env": "REGFLOW_PROJECT"})
    run_pid: int | None = field(default=None, metadata={"env": "REGFLOW_RUN_PID"})
    claim_ttl: float = field(default=900.0, metadata={"env": "REGFLOW_CLAIM_TTL"})
    debug: bool = field(default=False, metadata={"env": "REGFLOW_DEBUG"})
    spark_master: str | None = field(default=None, metadata={"env": "REGFLOW_SPARK_MASTER"})
    driver_memory: str = field(default="4g", metadata={"env": "REGFLOW_DRIVER_MEMORY"})
    driver_java_options: str | None = field(
        default=None, metadata={"env": "REGFLOW_DRIVER_JAVA_OPTIONS"}
    )
    shuffle_partitions: int = field(default=8, metadata={"env": "REGFLOW_SHUFFLE_PARTITIONS"})
    cache_dir: str | None = field(default=None, metadata={"env": "REGFLOW_CACHE_DIR"})
    k8s_config: str | None = field(default=None, metadata={"env": "REGFLOW_K8S_CONFIG"})
    s3_endpoint: str | None = field(default=None, metadata={"env": "REGFLOW_S3_ENDPOINT"})
    # the S3A jars `make test` fetches (scripts/fetch_jars.py); default <checkout>/.regflow/jars
    jars_dir: str | None = field(default=None, metadata={"env": "REGFLOW_JARS_DIR"})
    engine: str = field(default="auto", metadata={"env": "REGFLOW_ENGINE"})
    executor: str = field(default="local", metadata={"env": "REGFLOW_EXECUTOR"})

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise _bad("engine", self.engine, f"one of {', '.join(ENGINES)}")
        if self.executor not in EXECUTORS:
            raise _bad("executor", self.executor, f"one of {', '.join(EXECUTORS)}")
        if not self.claim_ttl > 0:
            raise _bad("claim_ttl", self.claim_ttl, "a positive number of seconds, e.g. 900")
        if self.shuffle_partitions < 1:
            raise _bad("shuffle_partitions", self.shuffle_partitions, "a whole number >= 1")
        if self.run_pid is not None and self.run_pid < 1:
            raise _bad("run_pid", self.run_pid, "a process id (a positive whole number)")

    def as_env(self) -> dict[str, str]:
        """The ``REGFLOW_*`` variables that give a child process these settings (the values
        that differ from the defaults); merge them over the child's base environment."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or value == f.default:
                continue
            text = ("1" if value else "0") if isinstance(value, bool) else str(value)
            out[f.metadata["env"]] = text
        return out

    def describe(self) -> dict[str, str]:
        """Variable -> value for display, secrets redacted."""
        return {
            k: "***" if k == "REGFLOW_WAREHOUSE_PASSWORD" else v for k, v in self.as_env().items()
        }


def variable(name: str) -> str:
    """The environment variable of the setting ``name``."""
    return str(_FIELDS[name].metadata["env"])


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _bad(name: str, value: object, want: str) -> ConfigError:
    shown = "***" if _FIELDS[name].metadata.get("secret") else repr(value)
    return ConfigError(
        f"{variable(name)}={shown} is not valid: expected {want}; "
        f"fix or unset {variable(name)} (see docs/operations.md, 'Settings')"
    )


def _parse(name: str, raw: str) -> Any:
    kind = _FIELDS[name].type
    if kind == "bool":
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise _bad(name, raw, "1 or 0 (true/false, yes/no)")
    if kind in ("int", "int | None"):
        try:
            return int(raw.strip())
        except ValueError:
            raise _bad(name, raw, "a whole number") from None
    if kind == "float":
        try:
            return float(raw.strip())
        except ValueError:
            raise _bad(name, raw, "a number of seconds, e.g. 900") from None
    if name in ("engine", "executor"):  # a mode, as `regflow plan` prints it
        return raw.strip().lower()
    return raw


def from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings an environment gives (an empty variable counts as unset)."""
    environ = os.environ if environ is None else environ
    values = {}
    for name, f in _FIELDS.items():
        raw = environ.get(f.metadata["env"])
        if raw:
            values[name] = _parse(name, raw)
    return Settings(**values)


_cache: tuple[tuple[str | None, ...], Settings] | None = None
_configured: dict[str, Any] = {}
_overrides: list[dict[str, Any]] = []
_ENV_NAMES = tuple(f.metadata["env"] for f in _FIELDS.values())


def _snapshot() -> tuple[str | None, ...]:
    """The settings' variables as the environment has them now: a few lookups (a DAG parse
    asks for the settings hundreds of times; scanning the whole environment each time cost
    5% of it)."""
    get = os.environ.get
    return tuple(get(name) for name in _ENV_NAMES)


def current() -> Settings:
    """This process's settings: the environment's, with :func:`configure` and the innermost
    :func:`override` blocks applied on top."""
    global _cache
    snap = _snapshot()
    if _cache is None or _cache[0] != snap:
        _cache = (snap, from_env())
    base = _cache[1]
    changes = dict(_configured)
    for layer in _overrides:
        changes.update(layer)
    return dataclasses.replace(base, **changes) if changes else base


def _checked(changes: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(changes) - set(_FIELDS))
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(unknown)}")  # a programming error
    out = {k: v for k, v in changes.items() if v is not None}
    dataclasses.replace(current(), **out)  # validate now, where the value is given
    return out


def configure(**changes: Any) -> Settings:
    """Set values for the rest of the process (the CLI's per-invocation flags); a None
    value leaves the setting as it is."""
    _configured.update(_checked(changes))
    return current()


@contextlib.contextmanager
def override(**changes: Any) -> Iterator[Settings]:
    """Set values for a ``with`` block (a None value leaves the setting as it is)."""
    _overrides.append(_checked(changes))
    try:
        yield current()
    finally:
        _overrides.pop()


def reset() -> None:
    """Forget the resolved settings and every configure/override (for tests)."""
    global _cache
    _cache = None
    _configured.clear()
    _overrides.clear()
