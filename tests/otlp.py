"""A real OTLP/HTTP trace receiver on 127.0.0.1, as a collector would be: it accepts
`POST /v1/traces`, decodes the protobuf ExportTraceServiceRequest with opentelemetry-proto's own
classes and keeps the spans, and the raw bodies, which the tests search for keys and prompts."""
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto


@dataclass
class Span:
    name: str
    kind: str  # "SERVER", "CLIENT"...
    trace_id: str  # hex
    span_id: str
    parent_id: str  # "" for a root span
    attributes: dict
    status: str  # "UNSET", "OK", "ERROR"
    resource: dict


def _value(any_value):
    """An OTLP AnyValue as a Python value (the scalar kinds spans use here)."""
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def _attributes(key_values):
    return {item.key: _value(item.value) for item in key_values}


def decode(body):
    """The spans of one ExportTraceServiceRequest."""
    request = ExportTraceServiceRequest.FromString(body)
    return [Span(span.name, SpanProto.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"), span.trace_id.hex(),
                 span.span_id.hex(), span.parent_span_id.hex(), _attributes(span.attributes),
                 span.status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                 _attributes(resource_spans.resource.attributes))
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans]


class Receiver:
    """Runs until `close()`; `url` is what OTEL_EXPORTER_OTLP_ENDPOINT should say."""

    def __init__(self):
        self.spans, self.bodies, self.lock = [], [], threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path != "/v1/traces" or self.headers["Content-Type"] != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver.keep(body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        return Handler

    def keep(self, body):
        spans = decode(body)
        with self.lock:
            self.bodies.append(body)
            self.spans += spans

    def wait_for(self, found, seconds=10):
        """The spans received, once `found(spans)` is true (or the wait is over)."""
        deadline = time.monotonic() + seconds
        while True:
            with self.lock:
                spans = list(self.spans)
            if found(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
