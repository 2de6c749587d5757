# syntax=docker/dockerfile:1
# regflow images (not built in this repository's CI: it has no Docker engine; see
# docs/deploy.md). Two targets:
#   spark   (default) the SparkApplication image: Spark + S3A jars + regflow + the project
#   airflow           the Airflow image of the Helm chart: Airflow + regflow + the DAGs
# Build with the versions of deploy/versions.env (the ARG defaults below repeat them;
# tests/test_deploy_versions.py checks they agree):
#   docker build --target spark   -t regflow-spark:0.1.0   .
#   docker build --target airflow -t regflow-airflow:0.1.0 .

ARG SPARK_VERSION=4.3.0
ARG HADOOP_VERSION=3.5.0
ARG AWS_SDK_VERSION=2.35.4
ARG HADOOP_AWS_SHA256=66bd9eefb938b1a1657487324b63c13df2d8b17164a1dd24e0ef37b905bc5baa
ARG AWS_SDK_BUNDLE_SHA256=db4b55f24ad1b4e70f17eb1717a4de76a8dadc5a27d764be7c44ff67b2c1c677
ARG ANALYTICS_ACCELERATOR_VERSION=1.3.1
ARG WILDFLY_OPENSSL_VERSION=2.2.5.Final
ARG SPARK_HADOOP_CLOUD_VERSION=4.1.2
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11

# ---------------------------------------------------------------- the regflow wheel
FROM python:${PYTHON_VERSION}-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# ---------------------------------------------------------------- Airflow (scheduler, workers)
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION} AS airflow
ARG AIRFLOW_VERSION
COPY --from=wheel /dist /tmp/dist
# the constraint keeps the image's Airflow; the cncf-kubernetes provider submits the stages
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" \
        "/tmp/dist/$(ls /tmp/dist)[warehouse]" \
    && rm -rf /tmp/dist
COPY --chown=airflow:root pipelines /opt/regflow/project/pipelines
COPY --chown=airflow:root operators /opt/regflow/project/operators
COPY --chown=airflow:root adjustments /opt/regflow/project/adjustments
COPY --chown=airflow:root dags /opt/regflow/project/dags
# the DAG files find their specs at ../pipelines: the DAGs folder is the project's dags/
ENV REGFLOW_PROJECT=/opt/regflow/project \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/regflow/project/dags

# ---------------------------------------------------------------- the SparkApplication image
FROM apache/spark:${SPARK_VERSION}-python3 AS spark
ARG SPARK_VERSION
ARG HADOOP_VERSION
ARG AWS_SDK_VERSION
USER root
RUN python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else \
        f"regflow needs Python 3.11+; this base image has {sys.version.split()[0]}")'
# S3A and the magic committer: the jars the tests run with, fetched by the same script
# (`make jars`) from deploy/versions.env: hadoop-aws at the version of the Hadoop client
# Spark bundles, the AWS SDK v2 bundle it declares, its other runtime dependencies and
# spark-hadoop-cloud; each checked against Maven Central's checksum and the pinned SHA-256.
COPY deploy/versions.env scripts/fetch_jars.py /tmp/fetch/
RUN set -eux; test -f "${SPARK_HOME}/jars/hadoop-client-api-${HADOOP_VERSION}.jar"; \
    python3 /tmp/fetch/fetch_jars.py --no-mvn --versions /tmp/fetch/versions.env \
        --dest /tmp/fetch/jars; \
    cp /tmp/fetch/jars/*.jar "${SPARK_HOME}/jars/"; chmod 644 "${SPARK_HOME}"/jars/*.jar; \
    rm -rf /tmp/fetch
# regflow in a venv of its own, pinned to the Spark it runs on
COPY --from=wheel /dist /tmp/dist
RUN set -eux; python3 -m venv /opt/regflow/venv \
    || { apt-get update && apt-get install -y --no-install-recommends python3-venv \
         && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/regflow/venv; }; \
    /opt/regflow/venv/bin/pip install --no-cache-dir "pyspark==${SPARK_VERSION}" \
        "/tmp/dist/$(ls /tmp/dist)[warehouse]"; \
    rm -rf /tmp/dist
COPY pipelines /opt/regflow/project/pipelines
COPY operators /opt/regflow/project/operators
COPY adjustments /opt/regflow/project/adjustments
COPY deploy/stage_main.py /opt/regflow/stage_main.py
ENV PATH=/opt/regflow/venv/bin:${PATH} \
    PYSPARK_PYTHON=/opt/regflow/venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/regflow/venv/bin/python \
    REGFLOW_PROJECT=/opt/regflow/project
# the base image's unprivileged user (uid 185); nothing below /opt/regflow is writable
USER 185
WORKDIR /opt/spark/work-dir
