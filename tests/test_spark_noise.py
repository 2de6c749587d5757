"""A task's log starts clean: the JVM's start-up banner (launcher notes, log4j defaults) no
longer reaches stderr, which Airflow logs as ERROR; what the JVM writes later still does."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# a Spark session in a subprocess: `make test-fast` skips it (docs/development.md)
pytestmark = pytest.mark.slow

PROBE = """
from regflow.runtime.session import get_spark, stop_spark
spark = get_spark()
assert spark.range(3).count() == 3
spark._jvm.java.lang.System.err.println("regflow-probe: a later JVM line")
spark._jvm.java.lang.System.err.flush()
stop_spark()
assert get_spark().range(2).count() == 2  # a second session on the same JVM
import time; time.sleep(0.5)  # (the forwarding thread writes asynchronously)
"""
BANNER = (
    "WARNING: Using incubator modules",
    "Using Spark's default log4j profile",
    "Setting default log level to",
    "To adjust logging level use sc.setLogLevel",
    "resolves to a loopback address",
    "Set SPARK_LOCAL_IP",
    "Unable to load native-hadoop library",
)


def test_the_jvm_banner_is_dropped_and_later_lines_pass():
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [
        line
        for line in proc.stderr.splitlines()
        if line.startswith(BANNER) or any(b in line for b in BANNER)
    ] == [], proc.stderr
    assert "regflow-probe: a later JVM line" in proc.stderr
