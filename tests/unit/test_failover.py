"""Failover between providers (docs/providers.md): after a provider's retries end in a 429,
a 5xx, a timeout or a connection error, the next configured provider that serves the model takes
the call, within the request's one deadline; the client's own errors, safety blocks and
text-only answers stay where they are. Gemini then OpenRouter, both mocked."""
import dataclasses
import time

import pytest
import requests
import responses
from prometheus_client import REGISTRY

from gateway import create_app
from tests.conftest import OPENROUTER_KEY
from tests.support import GENERATE, gemini_answer
from tests.unit.test_routing import CHAT, openrouter_answer


@pytest.fixture
def client(settings):
    both = dataclasses.replace(settings, openrouter_api_key=OPENROUTER_KEY,
                               openrouter_base_url="https://openrouter.test/api/v1")
    return create_app(both).test_client()


def generate(client, auth, **params):
    return client.post("/v1/images/generations", json={"prompt": "a fox", **params}, headers=auth)


def gemini_fails(upstream, times=3, **answer):
    for _ in range(times):
        upstream.add(responses.POST, GENERATE, **answer)


def calls_to(upstream, url):
    return sum(call.request.url == url for call in upstream.calls)


def failovers():
    labels = {"model": "gemini-3-pro-image", "from_provider": "gemini", "to_provider": "openrouter"}
    return REGISTRY.get_sample_value("gateway_upstream_failovers_total", labels) or 0


@pytest.mark.parametrize("failure", [
    {"status": 503}, {"status": 500}, {"status": 429, "headers": {"Retry-After": "0"}},
    {"body": requests.exceptions.ConnectionError()}, {"body": requests.exceptions.ReadTimeout()},
], ids=["503", "500", "429", "connection-error", "timeout"])
def test_a_failing_provider_hands_the_call_to_the_next(client, auth, upstream, failure):
    gemini_fails(upstream, **failure)
    upstream.add(responses.POST, CHAT, json=openrouter_answer())
    before = failovers()
    response = generate(client, auth)
    assert response.status_code == 200, response.get_json()
    assert response.headers["x-gateway-provider"] == "openrouter"
    assert calls_to(upstream, CHAT) == 1
    assert failovers() == before + 1


@pytest.mark.parametrize("answer, status", [
    ({"status": 400, "json": {"error": {"code": 400, "message": "bad aspect ratio"}}}, 400),
    ({"json": {"promptFeedback": {"blockReason": "SAFETY"}}}, 400),
    ({"json": gemini_answer({"text": "I cannot draw that."})}, 500),
    ({"status": 403, "json": {"error": {"code": 403, "message": "key refused"}}}, 502),
], ids=["client-error", "safety-block", "text-only", "bad-credentials"])
def test_answers_another_provider_would_not_change_stay_where_they_are(client, auth, upstream, answer, status):
    upstream.add(responses.POST, GENERATE, **answer)
    upstream.add(responses.POST, CHAT, json=openrouter_answer())
    assert generate(client, auth).status_code == status
    assert calls_to(upstream, CHAT) == 0


def test_when_every_provider_fails_the_last_ones_error_is_the_answer(client, auth, upstream):
    gemini_fails(upstream, status=503)
    for _ in range(3):
        upstream.add(responses.POST, CHAT, status=402, json={"error": {"code": 402, "message": "no credits"}})
    response = generate(client, auth)
    assert response.status_code == 503
    assert response.get_json()["message"].startswith("The OpenRouter API account of this gateway has no credits")


def test_each_of_n_calls_fails_over_on_its_own(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    gemini_fails(upstream, status=503)
    upstream.add(responses.POST, CHAT, json=openrouter_answer())
    response = generate(client, auth, n=2)
    assert response.status_code == 200 and len(response.get_json()["data"]) == 2
    assert response.headers["x-gateway-provider"] == "gemini, openrouter"
    assert calls_to(upstream, CHAT) == 1


def test_no_provider_is_tried_after_the_deadline(settings, auth, upstream):
    both = dataclasses.replace(settings, openrouter_api_key=OPENROUTER_KEY, upstream_timeout=1,
                               openrouter_base_url="https://openrouter.test/api/v1")

    def slow_failure(request):
        time.sleep(1.1)
        return 503, {}, "{}"

    upstream.add_callback(responses.POST, GENERATE, callback=slow_failure)
    upstream.add(responses.POST, CHAT, json=openrouter_answer())
    response = generate(create_app(both).test_client(), auth)
    assert response.status_code == 502
    assert calls_to(upstream, CHAT) == 0


def test_the_log_line_tells_each_providers_attempts(client, auth, upstream, json_lines):
    gemini_fails(upstream, status=503)
    upstream.add(responses.POST, CHAT, json=openrouter_answer())
    generate(client, auth)
    (summary,) = [line for line in json_lines() if line["message"] == "request"]
    assert summary["upstream_attempts"] == {"gemini": {"upstream_503": 3}, "openrouter": {"ok": 1}}
    assert (summary["failovers"], summary["upstream_calls"]) == (1, 4)
    assert any("failing over to openrouter" in line["message"] for line in json_lines())
