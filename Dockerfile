# syntax=docker/dockerfile:1.7
# kiosk-edge runtime image: `edge` with onnxruntime and llama.cpp. No torch, no transformers, no
# bundle (bundles ship as their own image: k3s/bundle/Dockerfile). Building for x86, arm64 and Jetson
# and loading the images into air-gapped k3s: k3s/README.md.
#
#   docker build -t kiosk-edge:0.1.0 .
#
# Build arguments:
#   PYTHON_IMAGE     base of both stages (pinned; a release may add @sha256:<digest>)
#   BUILDER_IMAGE    base of the build stage      [PYTHON_IMAGE] (Jetson: an L4T CUDA devel image)
#   RUNTIME_IMAGE    base of the runtime stage    [PYTHON_IMAGE] (Jetson: the matching runtime image)
#   PYTHON           the Python to use; installed with apt when the base has none [python3]
#   LLAMA_CMAKE_ARGS llama.cpp's CPU flags. The default build would use -march=native, tuning the
#                    binary to the build machine's CPU and crashing with SIGILL on an older store box;
#                    this is portable to any x86-64 with AVX2 (Haswell, 2013, and later) and cost
#                    0-15 % generation speed against native here. arm64:
#                    "-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16" (Orin's Cortex-A78AE)
#   LLAMA_CUDA       1: build llama.cpp's CUDA backend too (Jetson) [0]
#   CUDA_ARCHITECTURES  GPU compute capability for LLAMA_CUDA=1 [87: Orin]

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG BUILDER_IMAGE=${PYTHON_IMAGE}
ARG RUNTIME_IMAGE=${PYTHON_IMAGE}

# ---- build: llama-cpp-python from source, then the runtime's dependencies, into /opt/venv --------
# checkov:skip=CKV_DOCKER_7: the bases are build arguments (for Jetson); their defaults are pinned, which tests/k3s/test_dockerfile.py checks
FROM ${BUILDER_IMAGE} AS builder
ARG PYTHON=python3
ARG LLAMA_CPP_VERSION=0.3.36
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
ARG LLAMA_CUDA=0
ARG CUDA_ARCHITECTURES=87
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Every apt step cleans up after itself in the same layer: the lists, and the downloaded .debs, which
# the python images delete by themselves (docker-clean) but the L4T CUDA images keep.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake ninja-build \
    && if ! command -v "${PYTHON}" >/dev/null; then \
         apt-get install -y --no-install-recommends "${PYTHON}" "${PYTHON}-venv" "${PYTHON}-dev"; \
       fi \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb

RUN "${PYTHON}" -m venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH}

# The one compiled dependency, built first so that a change to edge/ does not rebuild it (~7 min).
RUN if [ "${LLAMA_CUDA}" = 1 ]; then \
      export CMAKE_ARGS="${LLAMA_CMAKE_ARGS} -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}"; \
    else \
      export CMAKE_ARGS="${LLAMA_CMAKE_ARGS} -DGGML_CUDA=OFF"; \
    fi \
    && echo "llama.cpp CMAKE_ARGS: ${CMAKE_ARGS}" \
    && pip install --no-binary llama-cpp-python "llama-cpp-python==${LLAMA_CPP_VERSION}"

# The runtime package and its dependencies (pyproject's core list: no torch, no quantize extras).
# pyproject also declares the workstation's `quantize` command, whose package is not in this build
# context: its script would only fail with ModuleNotFoundError, so it goes; `edge` is the image's one.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edge ./edge
RUN pip install . \
    && rm -f /opt/venv/bin/quantize \
    && pip check \
    && ! pip show torch >/dev/null 2>&1 \
    && edge --help >/dev/null

# ---- runtime: the venv, the seed data, a non-root user ------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
ARG PYTHON=python3
ENV DEBIAN_FRONTEND=noninteractive

# libgomp1: llama.cpp's CPU backend uses OpenMP. The user's numeric id is what the pod's
# runAsUser and runAsNonRoot check (k3s/base/deployment.yaml).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && if ! command -v "${PYTHON}" >/dev/null; then \
         apt-get install -y --no-install-recommends "${PYTHON}"; \
       fi \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
    && groupadd --system --gid 10001 kiosk \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
         --shell /usr/sbin/nologin kiosk

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# The curated answers and knowledge seeds (relative defaults of edge/settings.py resolve under /app).
COPY models/data/answers/answers.csv models/data/answers/SOURCE.md ./models/data/answers/
COPY models/data/knowledge/ ./models/data/knowledge/

# Read-only root filesystem in k3s: nothing is written outside the volume and /tmp (an emptyDir).
# .pyc files were compiled at install; Python must not try to write new ones.
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    KIOSK_HOST=0.0.0.0 \
    KIOSK_PORT=8080 \
    KIOSK_DATA_DIR=/var/lib/kiosk/data \
    KIOSK_BUNDLE_DIR=/var/lib/kiosk/bundles/current

USER 10001:10001
EXPOSE 8080
# For `docker run`; k3s ignores it and uses the pod's probes on the same path.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('KIOSK_PORT', '8080') + '/healthz', timeout=4)"]
ENTRYPOINT ["edge"]
CMD ["serve"]
