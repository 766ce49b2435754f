# syntax=docker/dockerfile:1
# The trainer: TensorFlow/Keras, TFLite export and evaluation, dataset loaders, publish.
# GPU-capable without a CUDA base image: tensorflow[and-cuda] brings the CUDA and cuDNN
# runtime as pip wheels; the host provides only the NVIDIA driver (Container Toolkit,
# `--gpus all` or deploy/compose.gpu.yaml). On a host without a GPU TensorFlow uses the CPU.
# Build from the repository root:
#   docker build -f deploy/docker/trainer.Dockerfile -t edgeinfer-trainer:dev .
#   docker build -f deploy/docker/trainer.Dockerfile --build-arg TENSORFLOW_EXTRA= -t edgeinfer-trainer:cpu .
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# "and-cuda" (CUDA wheels, ~3 GB more) or "" (CPU only).
ARG TENSORFLOW_EXTRA=and-cuda
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY edge_agent ./edge_agent
COPY trainer ./trainer
# Versions come from pyproject.toml's ranges (the project ships no lock file).
# hadolint ignore=DL3013
RUN if [ -n "${TENSORFLOW_EXTRA}" ]; then \
         pip install ".[trainer]" "tensorflow[${TENSORFLOW_EXTRA}]"; \
    else \
         pip install ".[trainer]"; \
    fi

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="edgeinfer-trainer" \
      org.opencontainers.image.description="edgeinfer trainer: Keras training, TFLite export and quantization" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN groupadd --system --gid 10001 edgeinfer \
    && useradd --system --uid 10001 --gid edgeinfer --home-dir /var/lib/edgeinfer \
       --shell /usr/sbin/nologin edgeinfer \
    && mkdir -p /var/lib/edgeinfer/registry /var/lib/edgeinfer/runs \
    && chown -R edgeinfer:edgeinfer /var/lib/edgeinfer
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /var/lib/edgeinfer
ENTRYPOINT ["edgeinfer"]
CMD ["train", "--help"]
