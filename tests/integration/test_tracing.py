"""Tracing under real gunicorn (docs/operations.md#tracing), exported over OTLP/HTTP to a real
receiver (tests/otlp.py): the server span continues the caller's `traceparent`, each upstream
attempt (retries and failover included) is a client span under it with the GenAI attributes,
a stream's span ends with the stream, a worker's queued spans are exported when it exits, and
no key, prompt or image is in anything exported."""
import re
import uuid

import pytest
import requests

from tests.integration.conftest import AUTH, CLIENT_KEY, UPSTREAM_KEY, generate, ok, start_gateway, stop
from tests.otlp import Receiver
from tests.secrets import WATCH

pytestmark = pytest.mark.integration
GENAI = {"gen_ai.operation.name": "generate_content", "gen_ai.provider.name": "gemini",
         "gen_ai.request.model": "gemini-3-pro-image", "gen_ai.output.type": "image"}
BASE64_RUN = re.compile(rb"[A-Za-z0-9+/]{200,}")  # a fragment of an image; ids and names are far shorter


@pytest.fixture(scope="module")
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def traced_url(emulator_url, receiver, tmp_path_factory):
    process, url = start_gateway(emulator_url, tmp_path_factory.mktemp("tracing") / "gateway.log",
                                 OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_BSP_SCHEDULE_DELAY="50",
                                 GATEWAY_PROVIDERS="gemini,openrouter", OPENROUTER_API_KEY=UPSTREAM_KEY,
                                 OPENROUTER_BASE_URL=emulator_url + "/api/v1")
    yield url
    stop(process)


def traced(receiver, trace_id, clients):
    """The server span of trace `trace_id` and its client spans, once `clients` of them came."""
    def complete(spans):
        ours = [span for span in spans if span.trace_id == trace_id]
        return any(span.kind == "SERVER" for span in ours) and sum(span.kind == "CLIENT" for span in ours) >= clients

    ours = [span for span in receiver.wait_for(complete) if span.trace_id == trace_id]
    servers = [span for span in ours if span.kind == "SERVER"]
    assert len(servers) == 1, ours
    return servers[0], [span for span in ours if span.kind == "CLIENT"]


def served(url, prompt):
    """A generation's request id. Its response is dropped here, which closes its connection: a
    kept-alive one would hold a stopping worker for CLIENT_HEADER_TIMEOUT."""
    response = generate(url, prompt=prompt)
    ok(response)
    return response.headers["X-Request-ID"]


def assert_nothing_secret(receiver, *texts):
    """No watched key (tests/secrets.py), none of `texts` (a prompt, a piece of an image), and
    no run of base64 in anything exported."""
    for body in receiver.bodies:
        WATCH.check("exported spans", body)
        for text in (CLIENT_KEY, UPSTREAM_KEY, *texts):
            assert text.encode() not in body
        assert not BASE64_RUN.search(body)


def test_a_generation_continues_the_callers_trace_with_a_client_span_per_attempt(traced_url, receiver):
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    prompt = f"a traced lighthouse {uuid.uuid4().hex} [emulator: fail=503 times=1]"
    response = requests.post(traced_url + "/v1/images/generations", json={"prompt": prompt}, timeout=60,
                             headers={**AUTH, "traceparent": f"00-{trace_id}-{parent_id}-01"})
    body = ok(response)

    server, clients = traced(receiver, trace_id, clients=2)
    assert (server.name, server.parent_id) == ("POST /v1/images/generations", parent_id)
    assert server.attributes["gateway.request.id"] == response.headers["X-Request-ID"]
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.route"] == "/v1/images/generations"
    assert server.attributes["http.response.status_code"] == 200
    assert server.resource["service.name"] == "image-gateway"
    assert [client.parent_id for client in clients] == [server.span_id] * 2
    failed, answered = sorted(clients, key=lambda client: "error.type" not in client.attributes)
    for client in clients:
        assert client.attributes.items() >= GENAI.items()
        assert client.name == "generate_content gemini-3-pro-image"
    assert (failed.attributes["error.type"], failed.attributes["http.response.status_code"]) == ("upstream_503", 503)
    assert failed.status == "ERROR"
    assert answered.attributes["http.response.status_code"] == 200
    assert answered.attributes["gen_ai.usage.input_tokens"] == body["usage"]["input_tokens"] > 0
    assert answered.attributes["gen_ai.usage.output_tokens"] == body["usage"]["output_tokens"] > 0
    assert_nothing_secret(receiver, prompt.split(" [")[0], body["data"][0]["b64_json"][:64])


def test_a_failover_shows_each_providers_attempts(traced_url, receiver):
    trace_id = uuid.uuid4().hex
    response = requests.post(traced_url + "/v1/images/generations", timeout=60,
                             json={"prompt": f"an outage {uuid.uuid4().hex} [emulator: fail=503 only=gemini]"},
                             headers={**AUTH, "traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"})
    ok(response)

    server, clients = traced(receiver, trace_id, clients=4)
    attempts = sorted((c.attributes["gen_ai.provider.name"], c.attributes.get("error.type", "ok")) for c in clients)
    assert attempts == [("gemini", "upstream_503")] * 3 + [("openrouter", "ok")]
    assert {client.parent_id for client in clients} == {server.span_id}


def test_a_request_without_traceparent_starts_a_trace(traced_url, receiver):
    request_id = served(traced_url, f"an untraced caller {uuid.uuid4().hex}")
    spans = receiver.wait_for(lambda spans: any(s.attributes.get("gateway.request.id") == request_id for s in spans))
    server = next(span for span in spans if span.attributes.get("gateway.request.id") == request_id)
    assert server.parent_id == ""
    server, clients = traced(receiver, server.trace_id, clients=1)
    assert [client.parent_id for client in clients] == [server.span_id]


def test_a_streams_span_ends_with_the_stream(traced_url, receiver):
    trace_id = uuid.uuid4().hex
    prompt = f"a traced stream {uuid.uuid4().hex}"
    with requests.post(traced_url + "/v1/images/generations", json={"prompt": prompt, "stream": True}, stream=True,
                       headers={**AUTH, "traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"},
                       timeout=60) as response:
        assert response.status_code == 200
        assert b"image_generation.completed" in response.content

    server, clients = traced(receiver, trace_id, clients=1)
    assert server.attributes["http.response.status_code"] == 200
    assert [client.parent_id for client in clients] == [server.span_id]
    assert clients[0].attributes["gen_ai.usage.output_tokens"] > 0
    assert_nothing_secret(receiver, prompt)


def test_probes_and_scrapes_are_not_traced(traced_url, receiver):
    for path in ("/health", "/metrics"):
        assert requests.get(traced_url + path, timeout=5).ok
    request_id = served(traced_url, f"after the probes {uuid.uuid4().hex}")
    spans = receiver.wait_for(lambda spans: any(s.attributes.get("gateway.request.id") == request_id for s in spans))
    assert not [span for span in spans if span.attributes.get("url.path", "").startswith(("/health", "/metrics"))]


def test_a_workers_queued_spans_are_exported_when_it_exits(emulator_url, receiver, tmp_path_factory):
    process, url = start_gateway(emulator_url, tmp_path_factory.mktemp("tracing") / "exit.log",
                                 OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_BSP_SCHEDULE_DELAY="600000")
    try:
        request_id = served(url, f"exported at exit {uuid.uuid4().hex}")
    finally:
        stop(process)
    spans = receiver.wait_for(lambda spans: any(s.attributes.get("gateway.request.id") == request_id for s in spans),
                              seconds=5)
    assert any(span.attributes.get("gateway.request.id") == request_id for span in spans)
