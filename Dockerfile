# syntax=docker/dockerfile:1
# nnserve: the API (default command) or a worker (`worker`), from one image.
#   docker build -t nnserve .
#   docker run -e REDIS_URL=redis://redis:6379/0 -p 127.0.0.1:8000:8000 nnserve
#   docker run -e REDIS_URL=redis://redis:6379/0 nnserve worker
# docker-compose.yml runs Redis, the API and workers together (docs/deployment.md). The API listens on
# NNSERVE_PORT (8000), and the health check asks that port: change it with -e NNSERVE_PORT=…, not --port.

# The dependencies: wheels of the exact versions of requirements/constraints.txt (requirements/lock.sh
# writes it). This stage sees that file alone, so it, and the layer that installs its wheels below, come
# from the build cache until the dependencies change, whatever happens to the source.
FROM python:3.11-slim AS dependencies
COPY requirements/constraints.txt /wheels/constraints.txt
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r /wheels/constraints.txt

# The nnserve wheel alone. nnserve/ is the package root; its engine, service and worker are links to the
# top-level folders, followed by the build.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY nnserve ./nnserve
COPY engine ./engine
COPY service ./service
COPY worker ./worker
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:3.11-slim
# NNSERVE_HOST: a container listens on all its interfaces; what reaches it is decided where its port is
# published (docker-compose.yml publishes it on the host's 127.0.0.1 only).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NNSERVE_HOST=0.0.0.0 \
    NNSERVE_PORT=8000
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/nnserve nnserve
# Mounted rather than copied: no wheel becomes a layer of the image. The dependencies first, in a layer of
# their own; then nnserve without them, and pip check fails the build if the constraints miss one.
RUN --mount=type=bind,from=dependencies,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels -r /wheels/constraints.txt
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    pip install --no-index --no-deps /dist/*.whl && pip check
# A numeric user, so that orchestrators can check it is not root (Kubernetes' runAsNonRoot).
USER 10001:10001
WORKDIR /home/nnserve
EXPOSE 8000
# Python's urllib rather than curl, which the slim image does not have; the port is the API's own setting.
# Workers serve no HTTP: docker-compose.yml turns this check off for them.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('NNSERVE_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["nnserve"]
CMD ["api"]
