"""Traces with OpenTelemetry (docs/operations.md#tracing): a server span per request and a client
span per upstream attempt, with the GenAI attributes, exported over OTLP/HTTP. On only when an
OTLP endpoint is set (Settings.tracing); otherwise the SDK is never loaded and every hook returns
at once. Spans carry names, ids, statuses and counts only: never a key, a prompt, an error's
message (an upstream may quote the prompt) or image data."""
import contextlib
from urllib.parse import urlsplit

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

SERVICE_NAME = "image-gateway"  # unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say otherwise
UNTRACED = ("/health", "/metrics")  # probes and scrapes, every few seconds: noise in a trace store


class _Tracing:
    """This process's tracer, once `start` has set it up."""
    provider = tracer = None


TRACING = _Tracing()


def start(settings):
    """Set up this process's exporter when tracing is on. Called by gunicorn.conf.py's
    post_worker_init: after the fork, so each worker has its own export thread and connection,
    and after gevent patched sockets, since the exporter imports requests. The SDK reads the
    other OTEL_* variables itself (endpoint, headers, sampler, batch delays)."""
    if not settings.tracing:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    named = Resource({"service.name": SERVICE_NAME}).merge(OTELResourceDetector().detect())
    TRACING.provider = TracerProvider(resource=Resource.create(named.attributes), shutdown_on_exit=False)
    TRACING.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    TRACING.tracer = TRACING.provider.get_tracer("gateway")


def stop():
    """Export the spans still queued and stop (gunicorn's worker_exit)."""
    provider, TRACING.provider, TRACING.tracer = TRACING.provider, None, None
    if provider is not None:
        provider.shutdown()


def start_server_span(request, request_id):
    """The request's server span, a child of the caller's W3C `traceparent` when it sends one,
    made current so the upstream attempts' spans (in threads that copy this context) are its
    children: (span, token) for `end_server_span` and `detach`, or None when not traced."""
    if TRACING.tracer is None or request.path.startswith(UNTRACED):
        return None
    route = request.url_rule.rule if request.url_rule else None
    attributes = {"http.request.method": request.method, "url.scheme": request.scheme, "url.path": request.path,
                  "client.address": request.remote_addr or "", "user_agent.original": request.user_agent.string,
                  "gateway.request.id": request_id}
    if route:
        attributes["http.route"] = route
    span = TRACING.tracer.start_span(f"{request.method} {route}" if route else request.method,
                                     context=propagate.extract(request.headers), kind=SpanKind.SERVER,
                                     attributes=attributes)
    return span, context.attach(trace.set_span_in_context(span))


def end_server_span(traced, status):
    """End the span when the response is done (a stream's after its last event)."""
    if traced is None:
        return
    span = traced[0]
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_attribute("error.type", str(status))
        span.set_status(Status(StatusCode.ERROR))
    span.end()


def detach(traced):
    """Make the request's span no longer current (Flask's teardown; a stream keeps its own copy)."""
    if traced is not None:
        context.detach(traced[1])


class Attempt:
    """One upstream attempt's span (or none): `answered` adds the answer's token counts."""

    def __init__(self, span=None):
        self.span = span

    def answered(self, generation):
        if self.span is not None:
            self.span.set_attribute("gen_ai.usage.input_tokens", generation.usage.input_tokens)
            self.span.set_attribute("gen_ai.usage.output_tokens", generation.usage.output_tokens)
        return generation


@contextlib.contextmanager
def upstream_attempt(provider, model, url):
    """A client span around one upstream attempt, current while it runs (so `upstream_status`
    reaches it); a failure sets `error.type` to the error's cause (`upstream_503`, `timeout`...).
    `model` is the catalog id, as in the metrics; of `url`, only its host and port are kept."""
    if TRACING.tracer is None:
        yield Attempt()
        return
    where = urlsplit(url)
    attributes = {"gen_ai.operation.name": "generate_content", "gen_ai.provider.name": provider,
                  "gen_ai.request.model": model, "gen_ai.output.type": "image", "http.request.method": "POST",
                  "server.address": where.hostname or "",
                  "server.port": where.port or (443 if where.scheme == "https" else 80)}
    with TRACING.tracer.start_as_current_span(f"generate_content {model}", kind=SpanKind.CLIENT,
                                              attributes=attributes, record_exception=False,
                                              set_status_on_exception=False) as span:
        try:
            yield Attempt(span)
        except Exception as error:
            span.set_attribute("error.type", getattr(error, "cause", None) or type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR))
            raise


def upstream_status(status):
    """The HTTP status of the current upstream attempt's answer, on its span."""
    if TRACING.tracer is not None:
        trace.get_current_span().set_attribute("http.response.status_code", status)
