# visit-counter API image. Runtime dependencies come from requirements.txt only: the
# lock compiled from pyproject.toml (`make lock`), every package pinned with its hashes
# and installed in pip's hash-checking mode. The embedded-node extra is not installed
# because the compose file supplies real Redis nodes through REDIS_NODES.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/data

WORKDIR /srv/visit-counter

# Dependencies first, so editing the code does not invalidate this layer.
COPY requirements.txt .
RUN pip install --no-cache-dir --require-hashes -r requirements.txt

# A fixed, unprivileged uid so volume ownership is predictable across rebuilds.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin app \
    && mkdir -p /data \
    && chown app:app /data

# The package (visit_counter/) and the seed layout's doorway to it (app/: app.main:app).
COPY visit_counter/ ./visit_counter/
COPY app/ ./app/

# The journal and any other on-disk state live here. Docker seeds an empty named
# volume from the image, so the volume inherits the app user's ownership. The
# Prometheus files do not: they go to /dev/shm (PROMETHEUS_DIR unset), which a
# full volume cannot reach.
VOLUME ["/data"]

USER app

EXPOSE 8000

# Readiness: 503 (unhealthy) only while no node is reachable and the journal cannot be
# written. The slim image has no curl; urlopen raises (exit 1) on refusal, timeout or non-2xx.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4)"]

# `serve`, not plain uvicorn: it reads and checks the settings and the nodes before any
# worker starts, so a bad setting stops the container with one line and exit status 2
# (under `uvicorn --workers N` each worker dies of it and the supervisor respawns it,
# forever). Worker processes: serve's --workers defaults to WEB_CONCURRENCY, so
# `docker run -e WEB_CONCURRENCY=4 ...` runs four workers without changing CMD.
# serve runs uvicorn with uvloop, no access log, and the httptools server with limits
# (visit_counter/core/http_limits.py): a request target over 8 KiB gets 414, a request
# line plus headers over 16 KiB gets 431, a head not complete within HEAD_TIMEOUT_SECONDS
# gets 408, and a worker holds at most MAX_CONNECTIONS. Set REDIS_NODES (compose does):
# without it serve would start the embedded nodes, whose server the image does not have,
# and stop (exit status 2).
CMD ["python", "-m", "app", "serve", "--host", "0.0.0.0", "--port", "8000"]
