"""No secret in any output. A password is planted in every URL shape (an empty user, an
unencoded ``/``, ``@`` or ``:`` in the password, a ``password=`` parameter, Redshift) and
every channel is searched for it: stdout, stderr, the Airflow log, the stage reports, error
records and run summaries, everything written under the project's .regflow folder.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from regflow.cli.main import main
from regflow.redaction import redact, scrub, split_url

ROOT = Path(__file__).resolve().parent.parent
# (URL, its password as the author meant it). Port 1 on loopback: nothing listens there.
SHAPES = [
    ("postgresql://:S3kr1tPW@127.0.0.1:1/db", "S3kr1tPW"),
    ("postgresql://user:S3kr/1tPW@127.0.0.1:1/db", "S3kr/1tPW"),
    ("postgresql://user:S3kr@1tPW@127.0.0.1:1/db", "S3kr@1tPW"),
    ("postgresql://user:S3kr:1tPW/x@127.0.0.1:1/db", "S3kr:1tPW/x"),
    ("postgresql://user:S3kr%2F1tPW@127.0.0.1:1/db", "S3kr%2F1tPW"),
    ("postgresql://user@127.0.0.1:1/db?sslmode=disable&password=S3kr1tPW", "S3kr1tPW"),
    ("redshift://user:S3kr/1tPW@127.0.0.1:1/dev?iam_role=arn:aws:iam::1:role/r", "S3kr/1tPW"),
]
IDS = ["empty-user", "slash", "at", "colon", "encoded", "param", "redshift"]
# Every piece of the planted passwords that a leak would show
PIECES = re.compile(rb"S3kr|1tPW|S3kr1tPW")


def leaks(data: bytes | str) -> list[str]:
    raw = data.encode() if isinstance(data, str) else data
    return [m.group(0).decode() for m in PIECES.finditer(raw)]


@pytest.mark.parametrize(("url", "password"), SHAPES, ids=IDS)
def test_one_redaction_masks_every_url_shape(url, password):
    shown = redact(url)
    assert leaks(shown) == [], shown
    assert "127.0.0.1:1" in shown and shown.startswith(url.split("://")[0] + "://")
    parts = split_url(url)
    assert parts is not None and parts.rest.startswith("127.0.0.1:1/")
    if "password=" not in url:
        assert parts.password == password  # the credentials run to the last '@'
    # and the same URL inside any text (an error message, a log line)
    assert leaks(scrub(f"load lcr_star -> {url} (copy)")) == []


def test_scrub_masks_a_remembered_secret_and_its_pieces_in_a_drivers_error():
    import psycopg

    from regflow.redaction import remember_secret

    url = "postgresql://user:Zq81@9wXy@127.0.0.1:1/db"  # libpq splits at the first '@'
    with pytest.raises(psycopg.Error) as info:
        psycopg.connect(url)
    assert "9wXy" in str(info.value)  # the driver echoes the password's tail as a host
    remember_secret("Zq81@9wXy")
    assert "9wXy" not in scrub(str(info.value)) and "Zq81" not in scrub(str(info.value))


@pytest.mark.parametrize(("url", "password"), SHAPES, ids=IDS)
def test_warehouse_commands_print_no_secret(url, password, capfd):
    """`warehouse info` prints where the warehouse is; both commands then fail to connect:
    the driver's error is filtered before it is printed."""
    assert main(["warehouse", "info", "--warehouse", url]) == 1
    assert main(["warehouse", "query", "SELECT 1", "--warehouse", url]) == 1
    out, err = capfd.readouterr()
    assert "cannot connect to the warehouse" in err and "127.0.0.1" in out + err
    assert leaks(out + err) == [], out + err


# ------------------------------------------------------------------------------ a real run
RUN_SHAPES = [SHAPES[0], SHAPES[1], SHAPES[2], SHAPES[5]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`regflow run lcr` through real Airflow: first into a real PostgreSQL (the embedded
    server trusts local connections, so the planted password is accepted and the run is
    published with its summary), then once per URL shape, each failing at the load (nothing
    listens on the port) and taking the unchanged stages of the first. One project, so that
    every output lands in its .regflow folder."""
    from regflow.demo.data import generate_demo_data
    from regflow.warehouse.embedded import EmbeddedServer

    server = EmbeddedServer(tmp_path_factory.mktemp("pg")).start()
    socket_dir = re.search(r"host=([^&]+)", server.get_uri()).group(1)
    good = f"postgresql://postgres:S3kr@1tPW@/postgres?host={socket_dir}"

    project = tmp_path_factory.mktemp("secret-project")
    for name in ("pipelines", "operators", "dags"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "no-rules").mkdir()
    data = project / "data"
    generate_demo_data(data, cob=__import__("datetime").date(2026, 3, 31), deals=300, seed=3)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGFLOW_", "AIRFLOW"))}
    env.update(REGFLOW_PROJECT=str(project), PYTHONPATH=os.environ.get("PYTHONPATH", ""))
    exe = Path(sys.executable).parent / "regflow"
    procs = []
    for url in [good] + [u for u, _ in RUN_SHAPES]:
        procs.append(
            subprocess.run(
                [
                    str(exe),
                    "run",
                    "lcr",
                    "--cob",
                    "2026-03-31",
                    "--param",
                    f"data_root={data}",
                    "--adjustments",
                    str(project / "no-rules"),
                    "--warehouse",
                    url,
                ],
                cwd=project,
                env=env,
                capture_output=True,
                timeout=900,
                check=False,
            )
        )
    yield project, procs
    server.release()


@pytest.mark.slow
def test_no_run_writes_a_secret_anywhere(runs):
    project, (good, *procs) = runs
    shown = (good.stdout + good.stderr).decode()
    assert good.returncode == 0, shown[-3000:]
    assert leaks(shown) == [], shown
    for proc, (url, _) in zip(procs, RUN_SHAPES, strict=True):
        shown = (proc.stdout + proc.stderr).decode()
        assert proc.returncode == 1, shown[-3000:]
        # the run got to the load and said why it failed, naming the redacted URL
        assert "cannot connect to the warehouse" in shown, shown[-3000:]
        assert redact(url).encode() in proc.stderr, shown[-3000:]
        assert leaks(shown) == [], shown
    written = [p for p in (project / ".regflow").rglob("*") if p.is_file()]
    names = {p.name for p in written}
    # the channels searched: the Airflow logs, the run summary, stage reports, error records
    assert any(n.startswith("regflow-run-") and n.endswith(".log") for n in names)
    assert "_RUN_SUCCESS" in names
    assert any(n.endswith(".error.json") for n in names)
    assert any(n.endswith(".json") and not n.endswith(".error.json") for n in names)
    found = {str(p): leaks(p.read_bytes()) for p in written}
    assert {p: hits for p, hits in found.items() if hits} == {}
