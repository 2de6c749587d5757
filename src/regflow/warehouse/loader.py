"""Land a staged star in the warehouse: stage, then merge, in one transaction.

The order of a load:

1. DDL (its own short transaction, idempotent): schema, tables, unknown members, views.
2. One transaction: create temporary staging tables; fill them (COPY: ``COPY FROM STDIN``
   on PostgreSQL, ``COPY ... FORMAT AS PARQUET MANIFEST`` from S3 on Redshift; upsert:
   multi-row INSERTs); lock the targets (one fixed order, so two loaders never deadlock);
   de-duplicate each batch on its keys and merge (dimensions first, SCD2 where declared,
   then the facts of the cob are replaced); record the load; commit.

A failure anywhere rolls the transaction back: readers keep seeing the previous state, and a
retry starts over. Two cobs loading at once queue on the table locks and never interfere.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from regflow.errors import ConfigError, DataError, StorageError, WarehouseError
from regflow.plan.cob import parse_cob
from regflow.settings import current
from regflow.storage import RunRef, fs
from regflow.storage.fs import Location
from regflow.warehouse import sql as S
from regflow.warehouse.migrate import check_columns, existing_schema
from regflow.warehouse.model import StarModel, Table, star_table_name
from regflow.warehouse.s3stage import S3Staging, StagedTable, copy_sql, require_iam_role
from regflow.warehouse.targets import Target

# `load: auto` upserts a batch whose every table has at most this many rows, and COPYs larger
# ones; `upsert_max_rows:` on the star overrides it. The defaults come from measurements
# (docs/benchmarks.md, section 4): on PostgreSQL the COPY path was faster at every size
# measured (1K to 1M rows), so auto always COPYs there; on Redshift, where upserts run at
# ~1.1K rows/s (the seed design: 50K rows by JDBC in 45 s) and a COPY costs a fixed few
# seconds (S3 listing, a cluster commit) before its ~55K rows/s, the break-even is near 10K.
DEFAULT_UPSERT_MAX_ROWS = {"postgresql": 0, "redshift": 10_000}
COPY_BATCH_ROWS = 200_000
UNIQUE_CHECK_MAX_ROWS = 50_000_000
ALLOW_EMPTY_ENV = "REGFLOW_ALLOW_EMPTY_REPLACE"
DRIVER_MODULES = (
    "psycopg",
    "redshift_connector",
)  # their errors become WarehouseErrors  # above, de-duplicate in SQL without a check in memory

Fault = Callable[[str], None]


def default_log(message: str) -> None:
    print(message, flush=True)


@dataclass
class LoadReport:
    pipeline: str
    node: str
    cob: str
    run_id: str
    target: str
    method: str
    tables: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "stage": f"load_{self.node}",
            "cob": self.cob,
            "run_id": self.run_id,
            "target": self.target,
            "method": self.method,
            "seconds": round(self.seconds, 3),
            "outputs": [
                {"name": t, "kind": "warehouse", "rows": n, "seconds": 0, "path": ""}
                for t, n in self.tables.items()
            ],
            "steps": self.steps,
            "sources": {},
            "adjustments": [],
        }


def staged_dir(run: RunRef, node: str, table: str) -> Location:
    return run.node_dir(star_table_name(node, table))


def parquet_file(path: Location) -> Any:
    """A staged Parquet file opened through storage's filesystem (local or S3)."""
    import pyarrow.parquet as pq

    filesystem, where = fs.arrow(path)
    return pq.ParquetFile(where, filesystem=filesystem)


def staged_files(run: RunRef, node: str, table: str) -> list[Location]:
    if not run.is_complete(star_table_name(node, table)):
        raise StorageError(
            f"staged table '{table}' is missing in {run.run_dir}; run the '{node}' stage first"
        )
    return fs.glob(staged_dir(run, node, table), "*.parquet")


def choose_method(
    model: StarModel, rows: dict[str, int], method: str | None, dialect: str = "postgresql"
) -> str:
    chosen = method or model.load
    if chosen not in ("auto", "copy", "upsert"):
        raise ConfigError(f"load method must be auto, copy or upsert, not '{chosen}'")
    if chosen != "auto":
        return chosen
    limit = model.upsert_max_rows
    if limit is None:
        limit = DEFAULT_UPSERT_MAX_ROWS.get(dialect, 0)
    return "upsert" if max(rows.values(), default=0) <= limit else "copy"


class Loader:
    def __init__(
        self,
        model: StarModel,
        target: Target,
        run: RunRef,
        *,
        spec_hash: str,
        adjustment_set_hash: str,
        log: Callable[[str], None] = default_log,
        fault: Fault | None = None,
        s3: S3Staging | None = None,
        allow_empty_replace: bool | None = None,
    ):
        self.model, self.target, self.run = model, target, run
        self.d = target.dialect
        self.spec_hash, self.adjustment_set_hash = spec_hash, adjustment_set_hash
        self.log = log
        self.fault = fault or (lambda step: None)
        self.s3 = s3
        self.cob = parse_cob(run.cob)
        if allow_empty_replace is None:
            allow_empty_replace = current().allow_empty_replace or model.allow_empty_replace
        self.allow_empty_replace = allow_empty_replace
        self._at = "connect"  # the step running, for error messages

    # ------------------------------------------------------------------ entry
    def load(self, method: str | None = None) -> LoadReport:
        t0 = time.perf_counter()
        report, staged_s3 = self._plan_load(method)
        conn = self.target.connect()
        try:
            with self.driver_errors():
                self._ddl(conn)
                self._transaction(conn, report.method, staged_s3, report)
        finally:
            with contextlib.suppress(Exception):  # closing a broken connection
                conn.close()
        self.cleanup(staged_s3)
        report.seconds = time.perf_counter() - t0
        self.log(f"  loaded {self.model.node} in {report.seconds:.1f}s")
        return report

    def begin(self, conn: Any, method: str | None = None) -> tuple[LoadReport, Any]:
        """Stage and merge in an open transaction on ``conn``, and leave it open: the caller
        commits (or rolls back) once the run is published (``render/publish.py``). The DDL
        must have run first (:meth:`prepare`). Returns the report and what :meth:`cleanup`
        removes after the commit."""
        t0 = time.perf_counter()
        report, staged_s3 = self._plan_load(method)
        with self.driver_errors():
            self._transaction(conn, report.method, staged_s3, report, commit=False)
        report.seconds = time.perf_counter() - t0
        return report, staged_s3

    def prepare(self, conn: Any) -> None:
        """The load's DDL (schema, tables, unknown members, views) and column checks, in their
        own short transaction."""
        with self.driver_errors():
            self._ddl(conn)

    @contextlib.contextmanager
    def driver_errors(self) -> Iterator[None]:
        """A database error becomes a WarehouseError naming the step and the database's
        reason, for the CLI and the run's error record."""
        try:
            yield
        except Exception as exc:
            if type(exc).__module__.split(".")[0] not in DRIVER_MODULES:
                raise
            raise WarehouseError(
                f"the load into {self.target.display} failed at '{self._at}' and was rolled "
                f"back (the warehouse is unchanged): {type(exc).__name__}: {exc}".strip(),
                pipeline=self.model.pipeline,
                node=self.model.node,
                cob=self.run.cob,
            ) from exc

    def cleanup(self, staged_s3: Any) -> None:
        if staged_s3 and self.s3 is not None:  # only after a commit (a failed load keeps them)
            try:
                self.s3.cleanup(staged_s3)
            except Exception as exc:
                self.log(f"  warning: staged objects left on S3 after the load: {exc}")

    def _plan_load(self, method: str | None) -> tuple[LoadReport, list[StagedTable]]:
        rows = {
            t.name: int(self.run.metadata(star_table_name(self.model.node, t.name))["rows"])
            for t in self.model.tables
        }
        chosen = choose_method(self.model, rows, method, self.d.name)
        report = LoadReport(
            self.model.pipeline,
            self.model.node,
            self.run.cob,
            self.run.run_id,
            self.target.display,
            chosen,
            rows,
        )
        self.log(
            f"load {self.model.node} -> {self.target.display} schema {self.model.schema} "
            f"({chosen}; {sum(rows.values()):,} rows in {len(rows)} tables)"
        )
        staged_s3: list[StagedTable] = []
        if chosen == "copy" and self.d.name == "redshift":
            staged_s3 = self._stage_s3()
        return report, staged_s3

    # ------------------------------------------------------------------ steps
    def _exec(self, cur: Any, sql: str, params: Any = None) -> None:
        if params is None:
            cur.execute(sql)
        else:
            cur.execute(sql, params)

    def _ddl(self, conn: Any) -> None:
        cur = conn.cursor()
        try:
            lock = self.d.advisory_lock(f"regflow-ddl:{self.model.schema}")
            if lock:  # concurrent first loads must not race on CREATE ... IF NOT EXISTS
                self._exec(cur, lock)
            for step in S.create_steps(self.d, self.model):
                self._at = step.name
                self._exec(cur, step.sql)
            # before anything reads the tables as the spec now makes them (unknown members,
            # views): a changed spec stops here with what to do, and nothing has changed
            self._at = "column check"
            check_columns(self.d, self.model, *existing_schema(cur, self.d, self.model))
            for step in S.fill_steps(self.d, self.model):
                self._at = step.name
                self._exec(cur, step.sql)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    def _refuse_empty_replace(self, cur: Any, step: S.Step, report: LoadReport) -> None:
        """A load never replaces a cob's facts with none, unless told to (an empty batch is
        far more often a missing source than a cob that really has no rows)."""
        fact = step.name.removeprefix("delete ")
        if not step.name.startswith("delete ") or report.tables.get(fact, 1) != 0:
            return
        if self.allow_empty_replace:
            self.log(f"  {fact}: the batch is empty; replacing the cob's rows (allowed)")
            return
        date_key = int(self.cob.strftime("%Y%m%d"))
        self._exec(
            cur,
            f"SELECT COUNT(*) FROM {self.d.qn(self.model.schema, fact)} "
            f"WHERE {self.d.q('date_key')} = {date_key}",
        )
        held = int(cur.fetchone()[0])
        if held:
            raise DataError(
                f"{self.model.schema}.{fact} holds {held:,} rows for cob {self.run.cob}, and "
                f"this load (run {self.run.run_id}) has none: refusing to replace them with "
                "nothing (the warehouse is unchanged). If a source is missing, fix it and "
                "rerun; if the cob really has no rows now, allow it for this load with "
                "`regflow run ... --allow-empty-replace` (REGFLOW_ALLOW_EMPTY_REPLACE=1), or "
                "for good with `allow_empty_replace: true` on the star",
                pipeline=self.model.pipeline,
                node=self.model.node,
                cob=self.run.cob,
            )

    def _transaction(
        self,
        conn: Any,
        method: str,
        staged_s3: list[StagedTable],
        report: LoadReport,
        *,
        commit: bool = True,
    ) -> None:
        cur = conn.cursor()
        loaded_at = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        try:
            unique: set[str] = set()
            if self.d.name == "postgresql":
                # before the first temp table: staging stays in memory, sorts too
                self._exec(cur, "SET LOCAL temp_buffers = '512MB'")
                self._exec(cur, "SET LOCAL work_mem = '256MB'")
            for t in self.model.tables:
                for sql in S.create_staging(self.d, t):
                    self._exec(cur, sql)
            t_stage = time.perf_counter()
            for t in self.model.tables:
                if method == "copy":
                    self._copy(cur, t, staged_s3)
                else:
                    self._upsert(cur, t)
                rows = report.tables[t.name]
                if self.d.name == "postgresql" and t.kind == "fact" and self._unique(t, rows):
                    unique.add(t.name)
                self.fault(f"staging:{t.name}")
            report.steps.append(
                {"step": "staging", "seconds": round(time.perf_counter() - t_stage, 3)}
            )
            self.fault("staged")
            for step in S.merge(self.d, self.model, self.cob, loaded_at, frozenset(unique)):
                t1 = time.perf_counter()
                self._at = step.name
                self._refuse_empty_replace(cur, step, report)
                if step.only_if:
                    self._exec(cur, step.only_if)
                    if not int(cur.fetchone()[0]):
                        continue
                self._exec(cur, step.sql)
                if step.name.startswith("check "):
                    bad = cur.fetchall()
                    if bad:
                        raise DataError(
                            f"{step.name}: surrogate key {bad[0][0]} is used by two members",
                            pipeline=self.model.pipeline,
                            node=self.model.node,
                            cob=self.run.cob,
                        )
                report.steps.append(
                    {"step": step.name, "seconds": round(time.perf_counter() - t1, 3)}
                )
                self.fault(f"merge:{step.name}")
            record = S.load_record(
                self.d,
                self.model,
                cob=self.cob,
                run_id=self.run.run_id,
                spec_hash=self.spec_hash,
                adjustment_set_hash=self.adjustment_set_hash,
                method=method,
                table_rows=",".join(f"{k}={v}" for k, v in report.tables.items()),
                rows=sum(report.tables.values()),
                loaded_at=loaded_at,
            )
            self._exec(cur, record.sql)
            if commit:
                self.fault("commit")
                conn.commit()
        except BaseException:
            conn.rollback()
            raise

    # ------------------------------------------------------------------ staging paths
    def _copy(self, cur: Any, t: Table, staged_s3: list[StagedTable]) -> None:
        if self.d.name == "redshift":
            staged = next(s for s in staged_s3 if s.table == t.name)
            self._exec(
                cur,
                copy_sql(
                    self.d, S.staging_name(t), staged.manifest_url, self.target.iam_role or ""
                ),
            )
            return
        import pyarrow.csv as pacsv

        sql = (
            f"COPY {self.d.q(S.staging_name(t))} ({S.copy_columns(self.d, t)}) "
            "FROM STDIN (FORMAT csv)"
        )
        opts = pacsv.WriteOptions(include_header=False, quoting_style="needed")
        names = [c.name for c in t.staged]
        with cur.copy(sql) as copy:
            for f in staged_files(self.run, self.model.node, t.name):
                for batch in parquet_file(f).iter_batches(COPY_BATCH_ROWS, columns=names):
                    buf = io.BytesIO()
                    pacsv.write_csv(batch, buf, opts)
                    copy.write(buf.getbuffer())

    def _unique(self, t: Table, rows: int) -> bool:
        """Whether the staged batch has one row per grain, checked here with pyarrow (the
        rows pass through this process on PostgreSQL anyway): if so the merge needs no sort to
        de-duplicate; if not, it keeps one row per key (ROW_NUMBER) and says so."""
        import pyarrow.parquet as pq

        files = staged_files(self.run, self.model.node, t.name)
        if not files or rows > UNIQUE_CHECK_MAX_ROWS:
            return False
        paths = [fs.arrow(f)[1] for f in files]
        dataset = pq.ParquetDataset(paths, filesystem=fs.arrow(files[0])[0])
        keys = dataset.read(columns=list(t.grain))
        groups = keys.group_by(list(t.grain)).aggregate([]).num_rows
        if groups != rows:
            self.log(
                f"  {t.name}: {rows - groups:,} duplicate row(s) on ({', '.join(t.grain)}); "
                "keeping one per key"
            )
        return groups == rows

    def _upsert(self, cur: Any, t: Table) -> None:

        names = [c.name for c in t.staged]
        per = max(1, min(self.d.max_statement_rows, 60_000 // max(1, len(names))))
        cur, numbered = _raw_cursor(cur)
        full = S.insert_staging(self.d, t, per, numbered=numbered)
        for f in staged_files(self.run, self.model.node, t.name):
            for batch in parquet_file(f).iter_batches(per * 20, columns=names):
                rows = list(zip(*[batch.column(n).to_pylist() for n in names], strict=True))
                for i in range(0, len(rows), per):
                    chunk = rows[i : i + per]
                    sql = (
                        full
                        if len(chunk) == per
                        else S.insert_staging(self.d, t, len(chunk), numbered=numbered)
                    )
                    self._exec(cur, sql, [v for r in chunk for v in r])

    def _stage_s3(self) -> list[StagedTable]:
        require_iam_role(self.target.iam_role)  # before uploading anything
        if self.s3 is None:
            if not self.target.staging:
                raise ConfigError(
                    "Redshift COPY stages Parquet on S3: add ?staging=s3://bucket/prefix to the "
                    "warehouse URL (or 'regflow_staging' to the Airflow connection's extras), "
                    "or use load: upsert"
                )
            self.s3 = S3Staging(self.target.staging, region=self.target.region)
        prefix = self.s3.run_prefix(self.model.pipeline, self.run.cob, self.run.run_id)
        out = []
        for t in self.model.tables:
            files = staged_files(self.run, self.model.node, t.name)
            out.append(self.s3.upload(t.name, files, prefix))
            self.log(f"  staged {t.name} on s3://{self.s3.bucket}/{prefix}/{t.name}/")
        return out


def _raw_cursor(cur: Any) -> tuple[Any, bool]:
    """A psycopg cursor that takes ``$n`` placeholders as they are, when ``cur`` is psycopg's.

    psycopg caches the ``%s`` -> ``$n`` conversion only for statements up to 4 KB, and a
    multi-row INSERT is tens of KB: converting it again on every execute took 80% of a 50K-row
    upsert (benchmarks/warehouse_load.py). Other drivers (redshift_connector) keep ``%s``.
    """
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg comes with the warehouse extra
        return cur, False
    if isinstance(cur, psycopg.Cursor) and not isinstance(cur, psycopg.RawCursor):
        return psycopg.RawCursor(cur.connection), True
    return cur, False


def load_star(
    model: StarModel,
    target: Target,
    run: RunRef,
    *,
    spec_hash: str,
    adjustment_set_hash: str,
    method: str | None = None,
    log: Callable[[str], None] = default_log,
    fault: Fault | None = None,
    s3: S3Staging | None = None,
    allow_empty_replace: bool | None = None,
) -> LoadReport:
    """Land the star staged by ``run`` in ``target``; the public entry point.

    ``allow_empty_replace``: let an empty fact batch replace a cob that holds rows (default:
    ``$REGFLOW_ALLOW_EMPTY_REPLACE``, else the star's ``allow_empty_replace:``)."""
    return Loader(
        model,
        target,
        run,
        spec_hash=spec_hash,
        adjustment_set_hash=adjustment_set_hash,
        log=log,
        fault=fault,
        s3=s3,
        allow_empty_replace=allow_empty_replace,
    ).load(method)
