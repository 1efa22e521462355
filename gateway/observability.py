"""What an operator sees: a request id on every log line, one JSON log line per request, and
Prometheus metrics (multiprocess-safe under gunicorn when PROMETHEUS_MULTIPROC_DIR is set)."""
import contextvars
import functools
import json
import logging
import re
import time
import uuid

from flask import Blueprint, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from . import tracing
from .auth import client_id, current_client
from .errors import shorten
from .metrics import REQUEST_ID, REQUEST_SECONDS, REQUESTS, STATS, RequestStats

log = logging.getLogger("gateway.request")
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
ERROR_LOG_CHARS = 300  # of an error's message in the request's log line

bp = Blueprint("observability", __name__)


class RequestIdFilter(logging.Filter):
    def filter(self, record):
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; structured fields come from `extra={"fields": {...}}`."""

    def format(self, record):
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging():
    """JSON lines on stderr from every logger (once per process)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)


def _endpoint():
    return request.url_rule.rule if request.url_rule else "unmatched"


def start_request():
    supplied = request.headers.get("X-Request-ID", "")
    g.request_id = supplied if CLIENT_REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
    g.started = time.monotonic()
    g.tokens = (REQUEST_ID.set(g.request_id), STATS.set(RequestStats()))
    g.traced = tracing.start_server_span(request, g.request_id)


def finish_request(response):
    response.headers["X-Request-ID"] = g.request_id
    endpoint, status = _endpoint(), response.status_code
    fields = {"method": request.method, "path": request.path, "status": status, "client": request.remote_addr,
              "key_id": client_id(), "key_name": current_client().name}
    if "error_message" in g:  # why the request failed, as its client was told (no key is ever in it)
        fields["error"] = shorten(g.error_message, ERROR_LOG_CHARS)
    done = functools.partial(contextvars.copy_context().run, _request_done, endpoint, fields, g.started,
                             g.get("traced"))
    if response.mimetype != "text/event-stream":
        done()
        return response
    # A stream's request ends when its last event is sent or the client goes away: count and log it then.
    response.response = _then(response.response, done)
    return response


def _then(body, done):
    try:
        yield from body
    finally:
        done()


def _request_done(endpoint, fields, started, traced):
    seconds = time.monotonic() - started
    tracing.end_server_span(traced, fields["status"])
    REQUESTS.labels(endpoint, str(fields["status"]), fields["key_name"]).inc()
    REQUEST_SECONDS.labels(endpoint).observe(seconds)
    if endpoint in ("/metrics", "/health", "/health/live", "/health/ready"):  # scraped and probed often
        return
    stats = STATS.get()
    log.info("request", extra={"fields": {
        **fields, "duration_ms": round(seconds * 1000, 1), "model": stats.model, "n": stats.n, "user": stats.user,
        "images": stats.images, "upstream_calls": stats.upstream_calls, "upstream_retries": stats.upstream_retries,
        "failovers": stats.failovers, "upstream_attempts": stats.attempts, "cost_usd": round(stats.cost, 6),
    }})


def end_request(error=None):
    tracing.detach(g.pop("traced", None))
    request_id_token, stats_token = g.pop("tokens", (None, None))
    if request_id_token is not None:
        REQUEST_ID.reset(request_id_token)
        STATS.reset(stats_token)


@bp.get("/metrics")
def metrics():
    """Prometheus metrics, summed over every gunicorn worker in multiprocess mode."""
    registry = REGISTRY
    if current_app.config["SETTINGS"].prometheus_multiproc_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)  # it names its charset


def init_app(app):
    app.before_request(start_request)
    app.after_request(finish_request)
    app.teardown_request(end_request)
    app.register_blueprint(bp)
