# syntax=docker/dockerfile:1
# The edge agent: LiteRT + numpy + kafka-python + prometheus-client, no TensorFlow. It also
# runs `edgeinfer monitor` (fleet/: online accuracy, same dependencies).
# Build from the repository root (multi-arch: add --platform linux/amd64,linux/arm64):
#   docker build -f deploy/docker/agent.Dockerfile -t edgeinfer-agent:dev .
# EXTRAS adds optional dependency groups, e.g. --build-arg EXTRAS=agent,datasets for an image
# that can also replay the bundled datasets.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=agent
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY edge_agent ./edge_agent
COPY fleet ./fleet
# Versions come from pyproject.toml's ranges (the project ships no lock file).
# hadolint ignore=DL3013
RUN pip install ".[${EXTRAS}]" \
    && if pip show tensorflow >/dev/null 2>&1; then \
         echo "tensorflow must not be in the agent image" >&2; exit 1; \
       fi

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="edgeinfer-agent" \
      org.opencontainers.image.description="edgeinfer edge agent: LiteRT inference on Kafka streams" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EDGE_METRICS_PORT=9400 \
    EDGE_STATE_DIR=/var/lib/edgeinfer/state
RUN groupadd --system --gid 10001 edgeinfer \
    && useradd --system --uid 10001 --gid edgeinfer --home-dir /var/lib/edgeinfer \
       --shell /usr/sbin/nologin edgeinfer \
    && mkdir -p /var/lib/edgeinfer/registry /var/lib/edgeinfer/state \
    && chown -R edgeinfer:edgeinfer /var/lib/edgeinfer
COPY --from=build /opt/venv /opt/venv
COPY deploy/docker/healthcheck.py /usr/local/bin/edgeinfer-healthcheck
RUN chmod 0755 /usr/local/bin/edgeinfer-healthcheck
USER 10001:10001
WORKDIR /var/lib/edgeinfer
EXPOSE 9400
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["edgeinfer-healthcheck", "/healthz"]
ENTRYPOINT ["edgeinfer"]
CMD ["agent", "--help"]
