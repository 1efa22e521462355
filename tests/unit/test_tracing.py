"""Tracing (docs/operations.md#tracing) in one process, with OpenTelemetry's real SDK exporting to
a real OTLP/HTTP receiver (tests/otlp.py): off without an endpoint, what failures put on spans
(never a message, which may quote the prompt), and nothing of it loaded in gunicorn's master."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import responses

from gateway import create_app, tracing
from gateway.config import Settings
from tests.otlp import Receiver
from tests.unit.conftest import GENERATE

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "a harbour at dawn, as only this prompt says"


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def traced_client(settings, receiver, upstream, monkeypatch):
    """A client of an app whose process traces to `receiver`; spans go out at `tracing.stop()`."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
    upstream.add_passthru(receiver.url)
    app = create_app(dataclasses.replace(settings, tracing=True))
    tracing.start(app.config["SETTINGS"])
    yield app.test_client()
    tracing.stop()
    app.config["STORE"].close()


@pytest.mark.parametrize("environ, on", [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
])
def test_tracing_is_on_only_with_an_otlp_endpoint(environ, on):
    assert Settings.from_env(environ).tracing is on


def test_off_no_sdk_is_loaded_and_no_span_is_made():
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys; from gateway import tracing; from gateway.config import Settings; "
                               "tracing.start(Settings.from_env({})); "
                               "print(tracing.TRACING.tracer, 'opentelemetry.sdk' in sys.modules)"],
        cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == ["None", "False"]


def test_gunicorns_master_loads_no_exporter_with_tracing_on():
    """The exporter imports requests, which must come after gevent's patches, in a worker (the
    API, which the gateway package imports, loads neither)."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys; exec(open('gunicorn.conf.py').read()); "
                               "print(sorted(m for m in sys.modules if m.startswith(("
                               "'opentelemetry.sdk', 'opentelemetry.exporter', 'requests', 'urllib3'))))"],
        cwd=ROOT, capture_output=True, text=True, check=True,
        env={"PATH": "", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert loaded.stdout.strip() == "[]"


def test_failed_attempts_carry_their_cause_and_status_never_the_upstreams_message(traced_client, auth, upstream,
                                                                                    receiver):
    quoting = {"error": {"code": 503, "message": f"overloaded while drawing {PROMPT}", "status": "UNAVAILABLE"}}
    for _ in range(3):
        upstream.add(responses.POST, GENERATE, json=quoting, status=503)
    response = traced_client.post("/v1/images/generations", json={"prompt": PROMPT}, headers=auth)
    tracing.stop()

    server = next(span for span in receiver.spans if span.kind == "SERVER")
    attempts = [span for span in receiver.spans if span.kind == "CLIENT"]
    assert (server.attributes["http.response.status_code"], server.status) == (response.status_code, "ERROR")
    assert server.attributes["error.type"] == str(response.status_code)
    assert [(a.attributes["error.type"], a.attributes["http.response.status_code"], a.status) for a in attempts] == \
        [("upstream_503", 503, "ERROR")] * 3
    assert not any(b"harbour" in body for body in receiver.bodies)


def test_a_client_error_is_not_a_server_span_error(traced_client, receiver):
    response = traced_client.post("/v1/images/generations", json={"prompt": PROMPT})
    tracing.stop()

    [server] = receiver.spans
    assert (server.attributes["http.response.status_code"], server.status) == (response.status_code, "UNSET") == \
        (401, "UNSET")
