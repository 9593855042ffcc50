# bnserve: one image for both the trainer and the API (docker-compose.yml runs it both ways).
#
#   docker build -t bnserve .                                    # CPU torch
#   docker build -t bnserve:cuda --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#   docker build -t bnserve:lean --build-arg RUNTIME=lean .      # the API only, on numpy: no torch (README)
#   docker run -p 8000:8000 -v bnserve-artifacts:/artifacts bnserve
FROM python:3.11-slim

# The PyPI torch wheel for Linux is the multi-GB CUDA build; take the CPU one from PyTorch's index instead.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# torch: the trainer and the API on torch (the default). lean: the API on the lean runtime, without torch or the
# training packages (requirements-lean.txt); it serves artifacts but cannot train them.
ARG RUNTIME=torch

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Its own layer: torch is most of the image and changes least often.
RUN case "$RUNTIME" in \
      torch) pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0 ;; \
      lean) ;; \
      *) echo "RUNTIME must be torch or lean, got '$RUNTIME'" >&2; exit 1 ;; \
    esac
COPY requirements-lean.txt ./
RUN if [ "$RUNTIME" = lean ]; then pip install -r requirements-lean.txt; fi

COPY pyproject.toml README.md ./
COPY models ./models
COPY training ./training
COPY service ./service
# `python -m service` runs these sources from /app, and PYTHONDONTWRITEBYTECODE keeps Python from caching
# their bytecode at run time: compiled once here, they are not compiled again at every start (~50 ms).
RUN if [ "$RUNTIME" = lean ]; then pip install --no-deps .; else pip install .; fi && \
    python -m compileall -q models training service

# /artifacts is created here, owned by the app user, so a fresh named volume mounted on it is writable.
RUN useradd --create-home --uid 10001 bnserve && mkdir /artifacts && chown bnserve:bnserve /artifacts
USER bnserve

ENV BNSERVE_RUNTIME=$RUNTIME \
    BNSERVE_HOST=0.0.0.0 \
    BNSERVE_PORT=8000 \
    BNSERVE_MODEL_DIR=/artifacts/breast_cancer
EXPOSE 8000

# slim has no curl; urlopen raises (exit 1) on a 503 from /readyz or a refused connection.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('BNSERVE_PORT', '8000'); urllib.request.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=3)"]

CMD ["python", "-m", "service"]
