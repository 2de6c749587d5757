"""A lazily created SparkSession, reused by every stage run in the same process."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
from typing import TYPE_CHECKING, Any

from regflow.errors import ConfigError
from regflow.runtime import s3a
from regflow.settings import current

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Decimal +, -, * and sums are exact: Spark keeps every digit of the result's scale and,
# with ANSI on, fails the run when the integer part does not fit (NUMERIC_VALUE_OUT_OF_RANGE)
# instead of rounding each value to 6 decimals as its default precision-loss rule does.
# `regflow validate` types every expression by these rules (regflow.ops.decimals).
EXACT_DECIMALS = {
    "spark.sql.decimalOperations.allowPrecisionLoss": "false",
    "spark.sql.ansi.enabled": "true",
}
# What every regflow session carries, in local mode and in a SparkApplication's sparkConf
# (regflow.render.k8s): one source of truth for both executors.
SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.parquet.compression.codec": "snappy",
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    "spark.sql.sources.partitionOverwriteMode": "static",
    **EXACT_DECIMALS,
}
# Whole-stage code generation fuses a stage's operators into one Java method; for a long stage
# (joins, a decision table, adjustment rules) that method exceeds the 8000 bytes of bytecode
# the JVM's JIT compiles by default, and then runs interpreted, several times slower.
# -XX:-DontCompileHugeMethods lets the JIT compile it (measured: the LCR's main job 1.6x faster
# than the alternative of running such stages operator by operator). Deep expression trees
# (dozens of chained adjustments) need more than the default 1 MB thread stack. These replace
# the JVM options: set REGFLOW_DRIVER_JAVA_OPTIONS to add your own.
DEFAULT_JAVA_OPTIONS = "-Xss16m -XX:-DontCompileHugeMethods"

_LOCK = threading.Lock()
_SESSION: SparkSession | None = None
_SUBMITTED = False


def check_java() -> str:
    """Fail early, and clearly, when no Java 17+ is available (Spark 4 needs it)."""
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java or not os.path.exists(java):
        raise ConfigError(
            "Java 17 or newer is required by Spark but was not found. Install a JDK "
            "(e.g. `apt-get install openjdk-17-jre-headless`) or set JAVA_HOME."
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    text = out.stderr or out.stdout
    version = _java_major(text)
    if version is not None and version < 17:
        raise ConfigError(
            f"Spark 4 needs Java 17 or newer, but {java} is Java {version}. "
            "Install a newer JDK or point JAVA_HOME at one."
        )
    return text.splitlines()[0] if text else java


def _java_major(text: str) -> int | None:
    import re

    m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def get_spark() -> SparkSession:
    """The process-wide session: ``local[*]`` unless ``REGFLOW_SPARK_MASTER`` says otherwise."""
    global _SESSION, _SUBMITTED
    with _LOCK:
        if _SESSION is not None and not _SESSION.sparkContext._jsc.sc().isStopped():
            if not _SUBMITTED:
                s3a.apply_endpoint(_SESSION)  # the AWS variables may have changed since
            return _SESSION
        check_java()
        from pyspark import SparkConf
        from pyspark.sql import SparkSession

        settings = current()
        submitted = "PYSPARK_GATEWAY_PORT" in os.environ and settings.spark_master is None
        conf = SparkConf().setAppName("regflow")
        if not submitted:
            # under spark-submit (a SparkApplication's driver) the master, the driver's memory
            # and the JVM options are spark-submit's: never replace k8s://... by local[*]
            java_options = settings.driver_java_options or DEFAULT_JAVA_OPTIONS
            conf = (
                conf.setMaster(settings.spark_master or "local[*]")
                .set("spark.driver.memory", settings.driver_memory)
                .set("spark.driver.extraJavaOptions", java_options)
                .set("spark.executor.extraJavaOptions", java_options)
            )
        for key, value in SESSION_CONF.items():
            conf = conf.set(key, value)
        conf = (
            conf.set("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
            .set("spark.ui.enabled", "false")
            .set("spark.ui.showConsoleProgress", "false")
        )
        jars = [] if submitted else s3a.local_jars()
        if jars:
            # the S3A connector, fetched by `make jars`; under spark-submit the image has them
            # and the SparkApplication's sparkConf carries s3a_conf(). Jars cannot be added to
            # a running session: they are on every session created while they are present.
            # On the driver's class path (local mode: the executors share its JVM; no copy of
            # the 650 MiB bundle per session), shipped to a cluster's executors as spark.jars.
            conf = conf.set("spark.driver.extraClassPath", os.pathsep.join(jars))
            if not (settings.spark_master or "local").startswith("local"):
                conf = conf.set("spark.jars", ",".join(jars))
            for key, value in s3a.s3a_conf().items():
                conf = conf.set(key, value)
        if not submitted:  # spark-submit's JVM is already running, with its own stderr
            _launch_quiet_gateway(conf)
        builder = SparkSession.builder.config(conf=conf)
        _SESSION = builder.getOrCreate()
        _SUBMITTED = submitted
        _SESSION.sparkContext.setLogLevel("ERROR")
        return _SESSION


def exact_decimals(spark: SparkSession) -> None:
    """Set the decimal guard on a session regflow did not create (one given to
    ``run_stage``): no silent rounding of decimal results, overflow fails the run."""
    for key, value in EXACT_DECIMALS.items():
        if spark.conf.get(key, None) != value:
            spark.conf.set(key, value)


# What the JVM prints on stderr at every start: launcher notes and log4j's defaults. Airflow
# logs a task's stderr as ERROR, so each of these became an ERROR line of every task log.
_JVM_BANNER = re.compile(
    rb"^(WARNING: Using incubator modules"
    rb"|Using Spark's default log4j profile"
    rb"|Setting default log level to "
    rb"|To adjust logging level use sc\.setLogLevel"
    rb"|\S+ \S+ WARN Utils: (Your hostname, .* resolves to a loopback address"
    rb"|Set SPARK_LOCAL_IP if you need)"
    rb"|\S+ \S+ WARN NativeCodeLoader: Unable to load native-hadoop library"
    # the AWS SDK bundle's shaded SLF4J 1.x, at the first s3a:// access (its logging is off)
    rb'|SLF4J: (Failed to load class "org\.slf4j\.impl\.StaticLoggerBinder"'
    rb"|Defaulting to no-operation \(NOP\) logger implementation"
    rb"|See http://www\.slf4j\.org/codes\.html#StaticLoggerBinder))"
)


def _launch_quiet_gateway(conf: Any) -> None:
    """Start the JVM with its stderr through a filter that drops the start-up banner and
    passes everything else on to this process's stderr (fd 2, wherever it points then)."""
    from pyspark import SparkContext
    from pyspark.java_gateway import launch_gateway

    if SparkContext._gateway is not None:  # a JVM already runs (a stopped session's)
        return
    gateway = launch_gateway(conf, popen_kwargs={"stderr": subprocess.PIPE})
    SparkContext._ensure_initialized(gateway=gateway, conf=conf)
    stream = gateway.proc.stderr

    def forward() -> None:
        for line in iter(stream.readline, b""):
            if not _JVM_BANNER.match(line):
                with contextlib.suppress(OSError):
                    os.write(2, line)

    threading.Thread(target=forward, name="regflow-jvm-stderr", daemon=True).start()


def stop_spark() -> None:
    global _SESSION
    with _LOCK:
        if _SESSION is not None:
            _SESSION.stop()
            _SESSION = None
