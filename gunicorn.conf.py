"""gunicorn settings for the Procfile deploy. Every value from the environment, gunicorn's own
included, is read by the gateway's Settings (gateway/config.py), so a bad one stops the start with
a message naming its variable.

Nothing here may import `requests` (nor urllib3): the master imports this file, and gevent must
patch ssl and sockets in each worker before urllib3 is first imported."""
import glob
import os
import sys
import tempfile

# Metrics from every worker are summed through files in one directory; it must be known before
# any worker imports prometheus_client.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="gateway-metrics-"))

from gateway import drain, serving  # noqa: E402  (after the environment above is complete)
from gateway.config import Settings  # noqa: E402

settings = Settings.from_env()

bind = f"{settings.host}:{settings.port}"
workers = settings.workers
# gevent: a connection is a greenlet (tens of KB), so 10,000 idle, dripping or half-sent
# connections cost memory, not the worker's ability to serve (docs/operations.md). An image
# call is 5-60 s of waiting on the network; the CPU work (decode, composite, encode) runs on
# IMAGE_WORKERS real threads per process (gateway/limits.py), so it never stalls the event loop.
worker_class = "gevent"
worker_connections = settings.worker_connections
# gevent's worker reads every request head (the first on a connection and each kept-alive one)
# under a `keepalive`-second deadline: a client that sends nothing, one byte or half a header is
# closed then. Idle kept-alive connections close after the same time (nginx's upstream
# keepalive_timeout is shorter). Bodies have their own deadline (pre_request below).
keepalive = settings.client_header_timeout
timeout = 30  # a worker that stops answering its heartbeat for 30 s is replaced
graceful_timeout = int(settings.upstream_timeout) + 30  # in-flight requests finish after SIGTERM and the drain
# The gateway logs one JSON line per request itself: gunicorn's "gunicorn.access" logger has no
# handler (LOG_CONFIG), so the access-log fields gunicorn still builds for each request (about
# 20 µs, docs/benchmarks.md) are dropped.
accesslog = None
errorlog = "-"
logconfig_dict = serving.LOG_CONFIG
# gunicorn's control socket lives at one fixed path per user; several gateways on one host
# (or tests next to a dev server) would fight over it, and nothing here uses it.
control_socket_disable = True

# workers fork from this process and share the patches
serving.answer_refusals_as_json(settings.error_format)
serving.bound_writes(settings.client_send_timeout)
serving.raise_open_files_limit(worker_connections + settings.upstream_max_in_flight + 1024)


def post_fork(server, worker):
    serving.stop_signals_stop_at_once()  # until the worker installs its own handlers


def post_worker_init(worker):
    """Workers are replaced after 2,000-2,400 served image requests (jitter keeps them from retiring
    together), so memory that Python or the C allocator keeps after a burst is given back. Counted
    in post_request, not by gunicorn's max_requests, which a flood of cheap requests would trip."""
    serving.return_freed_memory()
    serving.start_recycling_count(worker, settings.image_requests_per_worker)
    from gateway import tracing  # here, in the worker: its exporter imports requests (gevent patches first)
    tracing.start(settings)
    serving.freeze_loaded_objects()  # last: everything loaded so far stays for the worker's life


def pre_request(worker, req):
    serving.limit_body(req, settings.client_body_timeout)
    drain.close_after_response(req)


def post_request(worker, req, environ, resp):
    serving.count_image_request(worker, environ, resp)


def on_starting(server):
    """Start metrics from zero (remove the metric files an earlier run left in the directory), and
    drain on SIGTERM before stopping (gateway/drain.py)."""
    drain.drain_on_sigterm(server, settings.drain_seconds)
    directory = settings.prometheus_multiproc_dir
    os.makedirs(directory, exist_ok=True)
    for stale in glob.glob(os.path.join(directory, "*.db")):
        os.remove(stale)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker):
    """Let the worker's asynchronous jobs finish (gateway/asyncjobs.py), write its queued ledger
    rows (gateway/accounting.py), then export its queued spans before it goes; each is a no-op
    where nothing was started (no job taken, no request settled, tracing off, or in the master,
    which calls this for a worker that was already gone)."""
    from gateway import tracing

    jobs = sys.modules.get("gateway.asyncjobs")  # imported only where an app was made
    accounting = sys.modules.get("gateway.accounting")
    steps = [tracing.stop]
    if accounting is not None:
        steps.insert(0, accounting.flush_all)
    if jobs is not None:
        steps.insert(0, lambda: jobs.wait_for_running(settings.upstream_timeout + 15))
    for step in steps:
        try:
            step()
        except Exception:  # noqa: BLE001 - one step's failure must not skip the others
            server.log.exception("worker exit: a step failed")
