# groundqa: CPU-only image that serves the bundled seeds (index built at image build time).
# Operators serve their own documents by mounting /app/seeds and /app/index (see README).

# ---- build stage: compilers and pip live here only ----
FROM python:3.11-slim AS build
# CPU-only torch, pinned as in pyproject.toml; the default PyPI wheel pulls CUDA (GBs).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GROUNDQA_CACHE_DIR=/src/cache
WORKDIR /src
RUN python -m venv /opt/groundqa \
    && /opt/groundqa/bin/pip install --extra-index-url "$TORCH_INDEX_URL" torch==2.13.0
COPY pyproject.toml README.md ./
COPY service ./service
RUN /opt/groundqa/bin/pip install --extra-index-url "$TORCH_INDEX_URL" .
COPY seeds ./seeds
RUN /opt/groundqa/bin/groundqa index --seeds /src/seeds --index /src/index

# ---- runtime stage: the virtualenv, the seeds and their index; no build tools ----
# (The bundled seeds are text: the build stage needs no OCR. Mounted seeds are indexed here.)
FROM python:3.11-slim
# Tesseract OCRs scanned PDF pages (GROUNDQA_OCR=auto); Debian's package, a runtime program.
# Unpinned: Debian's stable suite only ships security fixes for it.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 groundqa \
    && useradd --create-home --uid 10001 --gid 10001 groundqa
COPY --from=build /opt/groundqa /opt/groundqa
COPY --from=build --chown=groundqa:groundqa /src/seeds /app/seeds
# The model exported to ONNX at build time, in the default GROUNDQA_CACHE_DIR of the user.
COPY --from=build --chown=groundqa:groundqa /src/cache /home/groundqa/.cache/groundqa
COPY --from=build --chown=groundqa:groundqa /src/index /app/index
WORKDIR /app
# Numeric, so the runtime can check it is not root without reading /etc/passwd.
USER 10001:10001
ENV PATH=/opt/groundqa/bin:$PATH \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    GROUNDQA_SEEDS_DIR=/app/seeds GROUNDQA_INDEX_DIR=/app/index
EXPOSE 8000
VOLUME ["/app/seeds", "/app/index"]
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["groundqa", "serve", "--host", "0.0.0.0", "--port", "8000"]
