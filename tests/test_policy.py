"""The execution policy: one frozen set of thresholds and an engine mode, per deployment
($REGFLOW_ENGINE), shown by ``regflow plan``; importable without Spark."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from regflow.cli.main import main
from regflow.errors import ConfigError
from regflow.runtime.policy import (
    DRIVER_LIMITS,
    ENGINE_ENV,
    NEVER,
    UNLIMITED,
    Declined,
    ExecutionPolicy,
    deployment_policy,
)

ROOT = Path(__file__).resolve().parent.parent
SPARK_CHOICES = ("one_partition_max_rows", "broadcast_max_keys")


def test_every_field_is_a_driver_limit_a_spark_choice_or_the_mode():
    names = {f.name for f in dataclasses.fields(ExecutionPolicy)}
    assert names == {"mode", *DRIVER_LIMITS, *SPARK_CHOICES}


def test_the_modes_set_the_driver_limits_and_keep_sparks_choices():
    auto = ExecutionPolicy.for_mode("auto")
    assert auto == ExecutionPolicy()
    assert (auto.cluster_max_rows, auto.check_max_rows, auto.adjust_max_rows) == (
        4_000_000,
        20_000_000,
        100_000,
    )
    spark = ExecutionPolicy.for_mode("spark")
    driver = ExecutionPolicy.for_mode("driver")
    assert (spark.mode, driver.mode) == ("spark", "driver")
    for name in DRIVER_LIMITS:
        assert getattr(spark, name) == NEVER, name
        assert getattr(driver, name) == UNLIMITED, name
        assert not spark.allows(name, 0)  # not even no rows
        assert driver.allows(name, 10**15)
    for name in SPARK_CHOICES:
        assert getattr(spark, name) == getattr(driver, name) == getattr(auto, name) == 100_000
    with pytest.raises(dataclasses.FrozenInstanceError):
        auto.mode = "spark"  # type: ignore[misc]


def test_an_unknown_mode_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError) as exc:
        ExecutionPolicy.for_mode("fast")
    assert "unknown execution engine mode 'fast'" in str(exc.value)
    assert "auto, spark, driver" in str(exc.value) and ENGINE_ENV in str(exc.value)


def test_a_declined_step_says_why():
    auto = ExecutionPolicy()
    assert auto.decline("cluster_max_rows", 4_000_000) is None  # (inclusive)
    assert auto.decline("cluster_max_rows", 4_000_001) == Declined(
        "4,000,001 rows > cluster_max_rows 4,000,000"
    )
    assert auto.decline("adjust_max_rows", None) == Declined("rows unknown")
    assert ExecutionPolicy.for_mode("spark").decline("check_max_rows", 1) == Declined(
        "engine mode 'spark'"
    )


def test_the_mode_is_read_from_the_environment(monkeypatch):
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    assert deployment_policy() == ExecutionPolicy()
    monkeypatch.setenv(ENGINE_ENV, " Driver ")
    assert deployment_policy() == ExecutionPolicy.for_mode("driver")
    monkeypatch.setenv(ENGINE_ENV, "gpu")
    with pytest.raises(ConfigError, match="'gpu'"):
        deployment_policy()


def test_the_policy_imports_without_spark():
    code = (
        "import sys, regflow.runtime.policy, regflow.runtime.context; "
        "sys.exit('pyspark' in sys.modules or 'pyarrow' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_plan_shows_the_policy_in_effect(capsys, monkeypatch):
    monkeypatch.setenv("REGFLOW_PROJECT", str(ROOT))
    monkeypatch.setenv(ENGINE_ENV, "spark")
    assert main(["plan", "lcr"]) == 0
    out = capsys.readouterr().out
    assert "stage 1: weigh" in out
    assert "execution policy: engine mode spark ($REGFLOW_ENGINE)" in out
    assert "    cluster_max_rows: never" in out and "    broadcast_max_keys: 100,000" in out
    monkeypatch.delenv(ENGINE_ENV)
    assert main(["plan", "lcr"]) == 0
    out = capsys.readouterr().out
    assert "engine mode auto" in out and "    cluster_max_rows: 4,000,000" in out
    monkeypatch.setenv(ENGINE_ENV, "turbo")
    assert main(["plan", "lcr"]) == 1
    captured = capsys.readouterr()
    assert "REGFLOW_ENGINE='turbo'" in captured.err and "auto, spark, driver" in captured.err
    assert "stage 1" not in captured.out  # refused before anything is shown
