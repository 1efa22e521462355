"""gunicorn settings for the Procfile deploy; values come from the gateway's own Settings."""
import os

from gateway.config import Settings

settings = Settings.from_env()

bind = f"0.0.0.0:{settings.port}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Image calls take 5-60 s and mostly wait on the network: threads keep a worker serving while
# its requests wait. The `n` fan-out runs in its own short-lived threads per request.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
# A request may take the whole upstream deadline; let it finish before gunicorn gives up.
timeout = int(settings.upstream_timeout) + 30
graceful_timeout = int(settings.upstream_timeout) + 30
keepalive = 5
accesslog = "-"
errorlog = "-"
# gunicorn's control socket lives at one fixed path per user; several gateways on one host
# (or tests next to a dev server) would fight over it, and nothing here uses it.
control_socket_disable = True
