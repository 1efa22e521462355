"""Prometheus metrics and the per-request counters, shared by the HTTP layer, the service and
the providers (no Flask here). Under gunicorn, PROMETHEUS_MULTIPROC_DIR makes them
multiprocess-safe; gunicorn.conf.py sets it."""
import contextvars
import threading
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram

REQUEST_ID = contextvars.ContextVar("request_id", default="-")
STATS = contextvars.ContextVar("request_stats", default=None)
SLOW = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 180, 300)

REQUESTS = Counter("gateway_requests_total", "HTTP requests served", ["endpoint", "status", "client"])
REQUEST_SECONDS = Histogram("gateway_request_duration_seconds", "Time to serve a request", ["endpoint"],
                            buckets=SLOW)
UPSTREAM_CALLS = Counter("gateway_upstream_calls_total", "Upstream call attempts", ["model", "provider", "outcome"])
UPSTREAM_SECONDS = Histogram("gateway_upstream_duration_seconds", "Time of one upstream attempt",
                             ["model", "provider", "outcome"], buckets=SLOW)
UPSTREAM_RETRIES = Counter("gateway_upstream_retries_total", "Upstream attempts that were retries",
                           ["model", "provider"])
FAILOVERS = Counter("gateway_upstream_failovers_total", "Calls handed to the next provider after a failure",
                    ["model", "from_provider", "to_provider"])
BREAKER_OPEN = Gauge("gateway_provider_breaker_open", "Worker processes that see the provider's circuit breaker "
                     "open (skipping it, or probing it with one call): their own, or the shared one as they last "
                     "read it", ["provider"], multiprocess_mode="livesum")
UPSTREAM_IN_FLIGHT = Gauge("gateway_upstream_in_flight", "Upstream calls in flight", multiprocess_mode="livesum")
IMAGES = Counter("gateway_images_generated_total", "Images returned to clients", ["model", "client"])
TOKENS = Counter("gateway_tokens_total", "Tokens reported by the upstream", ["model", "kind", "client"])
LIMITER_ERRORS = Counter("gateway_limiter_errors_total", "Times the shared limit counters failed and a process "
                         "counted on its own")
LEDGER_ERRORS = Counter("gateway_ledger_errors_total", "Times ledger rows could not be written (kept to retry)")
IMAGE_WORK_TIMEOUTS = Counter("gateway_image_work_timeouts_total", "Images dropped because finishing them passed "
                              "the request's deadline, by what they waited for: a free image thread (queue) or "
                              "their decoding and encoding (work)", ["stage"])
COST = Counter("gateway_cost_usd_total", "What the upstream calls cost, in USD (the upstream's figure, else the "
               "catalog's price table)", ["client", "model", "provider"])


@dataclass
class RequestStats:
    """What one request did upstream; shared with its fan-out threads through a contextvar."""
    model: str = ""
    n: int = 0
    user: str = ""
    images: int = 0
    upstream_calls: int = 0
    upstream_retries: int = 0
    failovers: int = 0
    cost: float = 0.0  # USD
    attempts: dict = field(default_factory=dict)  # provider -> {outcome: attempts}
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_attempt(self, provider, outcome, retry):
        with self.lock:
            self.upstream_calls += 1
            self.upstream_retries += retry
            outcomes = self.attempts.setdefault(provider, {})
            outcomes[outcome] = outcomes.get(outcome, 0) + 1


def describe_request(model, n, user):
    stats = STATS.get()
    if stats is not None:
        stats.model, stats.n, stats.user = model, n, user or ""


def record_attempt(model, provider, outcome, seconds, retry):
    """One upstream attempt: its metrics, and the current request's counts."""
    UPSTREAM_CALLS.labels(model, provider, outcome).inc()
    UPSTREAM_SECONDS.labels(model, provider, outcome).observe(seconds)
    if retry:
        UPSTREAM_RETRIES.labels(model, provider).inc()
    stats = STATS.get()
    if stats is not None:
        stats.count_attempt(provider, outcome, retry)


def record_cost(model, provider, client, cost):
    """One call's cost: the metric, and the current request's total."""
    if cost is None:
        return
    COST.labels(client, model, provider).inc(cost)
    stats = STATS.get()
    if stats is not None:
        with stats.lock:
            stats.cost += cost


def record_failover(model, from_provider, to_provider):
    FAILOVERS.labels(model, from_provider, to_provider).inc()
    stats = STATS.get()
    if stats is not None:
        with stats.lock:
            stats.failovers += 1


def record_images(model, client, images, usage):
    IMAGES.labels(model, client).inc(images)
    TOKENS.labels(model, "input", client).inc(usage.input_tokens)
    TOKENS.labels(model, "output", client).inc(usage.output_tokens)
    stats = STATS.get()
    if stats is not None:
        stats.images = images
