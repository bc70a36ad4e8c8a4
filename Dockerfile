# syntax=docker/dockerfile:1
# nnserve: the API (default command) or a worker (`worker`), from one image.
#   docker build -t nnserve .
#   docker run -e REDIS_URL=redis://redis:6379/0 -p 8000:8000 nnserve
#   docker run -e REDIS_URL=redis://redis:6379/0 nnserve worker
# docker-compose.yml runs Redis, the API and workers together (docs/deployment.md).

# Build stage: the nnserve wheel and the wheels of its dependencies, so that the final stage
# installs from local files only and carries no build tools or sources. nnserve/ is the package
# root; its engine, service and worker are links to the top-level folders, followed by the build.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY nnserve ./nnserve
COPY engine ./engine
COPY service ./service
COPY worker ./worker
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/nnserve nnserve
# Mounted rather than copied: the wheels never become a layer of the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels nnserve
# A numeric user, so that orchestrators can check it is not root (Kubernetes' runAsNonRoot).
USER 10001:10001
WORKDIR /home/nnserve
EXPOSE 8000
# Python's urllib rather than curl, which the slim image does not have. Workers serve no HTTP:
# docker-compose.yml turns this check off for them.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["nnserve"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
