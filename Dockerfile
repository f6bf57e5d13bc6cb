# syntax=docker/dockerfile:1
#
# kafka-8x8-connector image: `connector worker` by default (Faust worker: webhooks and health on port
# 6066, the public one; metrics, conversations and routing between workers on 6067, internal only).
# Other commands: `docker run IMAGE topics create`,
# `... schemas register`, `... sandbox --port 8088 --webhook-url URL`.
#
#   docker build -t kafka-8x8-connector .
#
# Stage 1 builds wheels of the connector and of all its runtime dependencies (with the rocksdb
# extra) at the versions and hashes of requirements.lock, and installs them into a virtual
# environment; stage 2 copies only that environment onto a clean slim base: no build tools, no pip
# cache, no sources.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# The package's version, whose one source is pyproject.toml: `make image` passes it (the builder
# refuses any other), and it becomes the image's version label.
ARG VERSION=""

FROM ${PYTHON_IMAGE} AS builder
ARG VERSION

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Only what the wheel is built from (see .dockerignore).
COPY pyproject.toml README.md requirements.lock ./
COPY connector/ connector/
COPY schemas/ schemas/

RUN test -z "$VERSION" || python -c "import sys, tomllib; v = tomllib.load(open('pyproject.toml', 'rb'))['project']['version']; sys.exit(None if v == sys.argv[1] else f'VERSION={sys.argv[1]} is not the version of pyproject.toml, {v}')" "$VERSION"

RUN python -m pip wheel --wheel-dir /wheels --require-hashes -r requirements.lock \
    && python -m pip wheel --wheel-dir /wheels --no-deps ".[rocksdb]" \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links /wheels "kafka-8x8-connector[rocksdb]" \
    && /opt/venv/bin/pip uninstall --yes pip setuptools wheel \
    && /opt/venv/bin/python -c "import connector, rocksdict"


FROM ${PYTHON_IMAGE}
ARG VERSION

LABEL org.opencontainers.image.title="kafka-8x8-connector" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.description="Kafka <-> 8x8 Contact Center chat connector (Faust stream processor)" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed non-root uid/gid (10001), matched by the Helm chart's securityContext.
RUN groupadd --system --gid 10001 connector \
    && useradd --system --uid 10001 --gid connector --home-dir /var/lib/connector \
       --no-create-home --shell /usr/sbin/nologin connector \
    && mkdir -p /var/lib/connector \
    && chown connector:connector /var/lib/connector

COPY --from=builder /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONNECTOR_DATA_DIR=/var/lib/connector \
    CONNECTOR_TABLE_STORE=rocksdb:// \
    CONNECTOR_WEB_HOST=0.0.0.0 \
    CONNECTOR_WEB_PORT=6066 \
    CONNECTOR_ADMIN_PORT=6067

# Faust's table state (RocksDB). Only a cache of the changelog topics, but keep it on a volume so a
# restart does not replay them.
VOLUME ["/var/lib/connector"]
WORKDIR /var/lib/connector

USER 10001:10001

EXPOSE 6066 6067

# Liveness of the worker's web server; python's stdlib, no curl in the image.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CONNECTOR_WEB_PORT', '6066'), timeout=4)"]

# SIGTERM (docker stop, Kubernetes) makes the worker stop intake and commit before it exits.
STOPSIGNAL SIGTERM

ENTRYPOINT ["connector"]
CMD ["worker"]
