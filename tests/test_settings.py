"""One settings object: every REGFLOW_* variable read and checked in regflow.settings, the
CLI's flags set through configure/override (never by writing os.environ), secrets kept out
of repr and display, and a child process given the settings as an explicit environment."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from regflow import settings
from regflow.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "regflow"

# (variable, raw value, field, parsed value): written out here, not derived from the module
CASES = [
    ("REGFLOW_STORAGE", "/data/storage", "storage", "/data/storage"),
    ("REGFLOW_WAREHOUSE", "postgresql://h/db", "warehouse", "postgresql://h/db"),
    ("REGFLOW_WAREHOUSE_DIR", "/data/wh", "warehouse_dir", "/data/wh"),
    ("REGFLOW_WAREHOUSE_PASSWORD", "s3cr3t", "warehouse_password", "s3cr3t"),
    ("REGFLOW_ALLOW_EMPTY_REPLACE", "yes", "allow_empty_replace", True),
    ("REGFLOW_PROJECT", "/p", "project", "/p"),
    ("REGFLOW_RUN_PID", "4242", "run_pid", 4242),
    ("REGFLOW_CLAIM_TTL", "60", "claim_ttl", 60.0),
    ("REGFLOW_DEBUG", "1", "debug", True),
    ("REGFLOW_SPARK_MASTER", "local[2]", "spark_master", "local[2]"),
    ("REGFLOW_DRIVER_MEMORY", "2g", "driver_memory", "2g"),
    ("REGFLOW_DRIVER_JAVA_OPTIONS", "-Xss4m", "driver_java_options", "-Xss4m"),
    ("REGFLOW_SHUFFLE_PARTITIONS", "16", "shuffle_partitions", 16),
    ("REGFLOW_CACHE_DIR", "/c", "cache_dir", "/c"),
    ("REGFLOW_K8S_CONFIG", "/k.yaml", "k8s_config", "/k.yaml"),
    ("REGFLOW_S3_ENDPOINT", "http://localhost:9000", "s3_endpoint", "http://localhost:9000"),
    ("REGFLOW_JARS_DIR", "/jars", "jars_dir", "/jars"),
    ("REGFLOW_ENGINE", "driver", "engine", "driver"),
    ("REGFLOW_EXECUTOR", "Kubernetes", "executor", "kubernetes"),
]


@pytest.mark.parametrize(("var", "raw", "name", "value"), CASES, ids=[c[0] for c in CASES])
def test_each_variable_sets_its_setting(var, raw, name, value):
    got = settings.from_env({var: raw})
    assert getattr(got, name) == value
    # and a child process given as_env() resolves the same value
    assert getattr(settings.from_env(got.as_env()), name) == value


def test_defaults_and_empty_means_unset():
    s = settings.from_env({"REGFLOW_CLAIM_TTL": "", "REGFLOW_ENGINE": ""})
    assert (s.claim_ttl, s.engine, s.shuffle_partitions, s.driver_memory) == (
        900.0,
        "auto",
        8,
        "4g",
    )
    assert s.storage is None and s.allow_empty_replace is False and s.as_env() == {}


@pytest.mark.parametrize(
    ("var", "raw", "want"),
    [
        ("REGFLOW_ENGINE", "fast", "expected one of auto, spark, driver"),
        ("REGFLOW_EXECUTOR", "k8s", "expected one of local, kubernetes"),
        ("REGFLOW_CLAIM_TTL", "15m", "expected a number of seconds"),
        ("REGFLOW_CLAIM_TTL", "0", "expected a positive number of seconds"),
        ("REGFLOW_SHUFFLE_PARTITIONS", "0", "expected a whole number >= 1"),
        ("REGFLOW_SHUFFLE_PARTITIONS", "many", "expected a whole number"),
        ("REGFLOW_RUN_PID", "me", "expected a whole number"),
        ("REGFLOW_ALLOW_EMPTY_REPLACE", "maybe", "expected 1 or 0"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_fix(var, raw, want):
    with pytest.raises(ConfigError) as exc:
        settings.from_env({var: raw})
    message = str(exc.value)
    assert message.startswith(f"{var}=") and f" is not valid: {want}" in message
    assert f"fix or unset {var}" in message


def test_a_bad_environment_is_said_by_the_cli_in_one_line(monkeypatch, capsys):
    from regflow.cli.main import main

    monkeypatch.setenv("REGFLOW_CLAIM_TTL", "15m")  # was silently taken as the default
    monkeypatch.setenv("REGFLOW_PROJECT", str(ROOT))
    assert main(["plan", "lcr"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("regflow: REGFLOW_CLAIM_TTL='15m' is not valid")


def test_the_password_stays_out_of_repr_display_and_errors():
    s = settings.from_env({"REGFLOW_WAREHOUSE_PASSWORD": "s3cr3t-pw"})
    assert "s3cr3t-pw" not in repr(s)
    assert s.describe() == {"REGFLOW_WAREHOUSE_PASSWORD": "***"}
    assert s.as_env() == {"REGFLOW_WAREHOUSE_PASSWORD": "s3cr3t-pw"}  # a child needs it


def test_configure_and_override_never_write_the_environment(monkeypatch):
    monkeypatch.delenv("REGFLOW_WAREHOUSE", raising=False)
    monkeypatch.setenv("REGFLOW_STORAGE", "/from/env")
    before = dict(os.environ)
    settings.configure(warehouse="postgresql://h/db", allow_empty_replace=True)
    assert settings.current().warehouse == "postgresql://h/db"
    with settings.override(storage="/run/storage", run_pid=99) as inside:
        assert (inside.storage, inside.run_pid) == ("/run/storage", 99)
        assert settings.current().allow_empty_replace is True  # configure still applies
        with settings.override(storage="/inner"):
            assert settings.current().storage == "/inner"
        assert settings.current().storage == "/run/storage"
    assert settings.current().storage == "/from/env"  # the block's values end with it
    assert settings.current().run_pid is None
    assert dict(os.environ) == before
    with pytest.raises(ConfigError, match="REGFLOW_ENGINE='gpu' is not valid"):
        settings.configure(engine="gpu")  # checked where it is given
    settings.reset()
    assert settings.current().warehouse is None


def test_the_settings_follow_a_changed_environment(monkeypatch):
    monkeypatch.setenv("REGFLOW_CLAIM_TTL", "30")
    assert settings.current().claim_ttl == 30.0
    monkeypatch.setenv("REGFLOW_CLAIM_TTL", "45")
    assert settings.current().claim_ttl == 45.0
    assert settings.current() is settings.current()  # resolved once while it stays put


def test_the_settings_reach_the_code_that_uses_them(monkeypatch, tmp_path):
    from regflow.storage import claim, resolve_root
    from regflow.warehouse.targets import embedded_dir

    with settings.override(storage=str(tmp_path / "s"), claim_ttl=12.5, warehouse_dir="/w"):
        assert resolve_root() == tmp_path / "s"
        assert claim.ttl() == 12.5
        assert embedded_dir() == Path("/w")


# Files that may still read REGFLOW_* from os.environ: the settings module itself, and the
# test-only fault hook (read at each fault point, inherited by every child process)
ALLOWED = {"settings.py", "storage/faults.py"}
_READ = re.compile(r"(?:os\.environ|getenv)\b[^\n]*REGFLOW_|REGFLOW_[A-Z_]+\"\s*\]\s*=")


def test_no_module_reads_or_writes_a_regflow_variable_but_the_settings():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel in ALLOWED:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if _READ.search(line) or re.search(r"os\.environ(\.get\(|\[)[A-Z_]+_ENV\b", line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == []


def test_the_spark_session_takes_its_partitions_from_the_settings(spark):
    # conftest sets REGFLOW_SHUFFLE_PARTITIONS (4) before the session starts
    assert (
        spark.conf.get("spark.sql.shuffle.partitions") == os.environ["REGFLOW_SHUFFLE_PARTITIONS"]
    )
