# The gateway as a container image: the Procfile's command (gunicorn with gunicorn.conf.py) on
# the Python of .python-version, as a non-root user. Nothing secret is in the image: keys and
# store URLs come from the environment at run time.
#   docker build -t image-gateway .
#   docker run -p 8000:8000 -e GATEWAY_API_KEYS=... -e GEMINI_API_KEY=... image-gateway
# It runs with a read-only root filesystem when /tmp and /app/var are writable mounts (see
# deploy/kubernetes/deployment.yaml). Checked statically by tests/unit/test_container.py, and run
# under those constraints without a container engine by tests/integration/test_container_layout.py.
FROM python:3.11-slim-trixie

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A system user of its own, with a fixed uid so Kubernetes' runAsNonRoot can check it.
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin gateway

WORKDIR /app
# The pinned requirements first, so a change to the code alone reuses this layer.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# The code stays owned by root (the gateway cannot change it); var/ (the default SQLite file and
# image store) is the gateway's. Temporary files (metrics of the workers, gunicorn's heartbeat
# files) go to /tmp.
COPY . .
RUN mkdir -p var && chown gateway:gateway var

USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('PORT', '8000'), timeout=4)"]
CMD ["gunicorn", "app:app", "--config", "gunicorn.conf.py"]
