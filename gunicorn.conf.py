"""gunicorn settings for the Procfile deploy. The gateway's own values come from its Settings."""
import glob
import json
import os
import tempfile

from gunicorn import util

# Metrics from every worker are summed through files in one directory; it must be known before
# any worker imports prometheus_client.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="gateway-metrics-"))

from gateway.config import Settings  # noqa: E402  (after the environment above is complete)

settings = Settings.from_env()

bind = f"0.0.0.0:{settings.port}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# An image call waits 5-60 s on the network and little else, and its CPU work (base64, Pillow)
# releases the GIL: a thread per in-flight request is cheap, needs no monkey-patching, and
# keeps the synchronous requests-based adapter and the `n` fan-out threads as they are.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "512"))
worker_connections = threads  # a worker accepts no more connections than it has threads to serve
# A request may take the whole upstream deadline; let it finish before gunicorn gives up, and
# let in-flight requests finish after SIGTERM.
timeout = int(settings.upstream_timeout) + 30
graceful_timeout = int(settings.upstream_timeout) + 30
keepalive = 75  # longer than nginx's upstream keepalive_timeout (60 s)
accesslog = None  # the gateway logs one JSON line per request itself
errorlog = "-"
# gunicorn's control socket lives at one fixed path per user; several gateways on one host
# (or tests next to a dev server) would fight over it, and nothing here uses it.
control_socket_disable = True


def write_json_error(sock, status_int, reason, mesg):
    """gunicorn's own refusals (431, 414, bad framing...) in the gateway's JSON error shape."""
    body = json.dumps({"error": True, "status": status_int, "message": f"{reason}: {mesg}"})
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, (head + body).encode("latin1"))


util.write_error = write_json_error  # workers fork from this process and share the patched module


def on_starting(server):
    """Start metrics from zero: remove the metric files an earlier run left in the directory."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for stale in glob.glob(os.path.join(directory, "*.db")):
        os.remove(stale)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
