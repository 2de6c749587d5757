# regflow: two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint format bench install check-java jars clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "regflow needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev,warehouse,test-k8s,s3]'
	@touch $(STAMP)

install: $(STAMP)

check-java:
	@command -v java >/dev/null 2>&1 || { echo "error: Java 17+ is required by Spark but 'java' was not found. Install a JDK 17+ (e.g. apt-get install openjdk-17-jre-headless) or set JAVA_HOME." >&2; exit 1; }
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	if [ -z "$$v" ] || [ "$$v" -lt 17 ]; then echo "error: Spark 4 needs Java 17+, found '$$v' ($$(command -v java))." >&2; exit 1; fi

# Spark's S3A connector, the AWS SDK v2 bundle (~650 MiB) and the S3A committer's Spark
# binding, into .regflow/jars (once; `mvn` when installed, else Maven Central with checksums)
jars:
	@$(PYTHON) scripts/fetch_jars.py

demo: check-java install
	$(VENV)/bin/regflow demo

test: check-java install jars
	$(PY) -m pytest -q

# The inner loop: every test not marked slow (unit and golden tests, single stages on real
# Spark; no whole-pipeline Airflow runs, subprocess CLIs or spark-submit), on TEST_WORKERS
# pytest-xdist workers, a module's tests on one worker (its module fixtures built once).
TEST_WORKERS ?= 2
test-fast: check-java install jars
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile

lint: install
	$(VENV)/bin/ruff check src tests operators dags benchmarks
	$(VENV)/bin/ruff format --check src tests operators dags benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff format src tests operators dags benchmarks
	$(VENV)/bin/ruff check --fix src tests operators dags benchmarks

bench: check-java install jars
	$(VENV)/bin/pip install --quiet -e '.[dev,warehouse,bench]'
	$(PY) benchmarks/run_all.py

clean:
	rm -rf .regflow benchmarks/.work .pytest_cache .mypy_cache .ruff_cache
