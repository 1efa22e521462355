"""Failover between providers (docs/providers.md): after a provider's call ends in a 429, a 5xx,
a timeout or a connection error (one attempt while another provider can take the call; the last
one gets its retries), the next configured provider that serves the model takes the call, within
the request's one deadline; the client's own errors, safety blocks and text-only answers stay
where they are. The service's side with FakeProviders; the attempts per provider and the log
line's counts with the Gemini and OpenRouter wires mocked."""
import dataclasses

import pytest
import responses
from prometheus_client import REGISTRY

from gateway import create_app
from gateway.errors import (
    Blocked,
    NoCredits,
    NoImage,
    RateLimited,
    Rejected,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tests.conftest import OPENROUTER_KEY
from tests.support import CHAT, GENERATE, Answer, FakeProvider, generate, openrouter_answer, serve_with


@pytest.fixture
def first():
    return FakeProvider("gemini")


@pytest.fixture
def second():
    return FakeProvider("openrouter")


@pytest.fixture
def client(app, first, second):
    return serve_with(app, first, second)


def failovers(to="openrouter"):
    labels = {"model": "gemini-3-pro-image", "from_provider": "gemini", "to_provider": to}
    return REGISTRY.get_sample_value("gateway_upstream_failovers_total", labels) or 0


@pytest.mark.parametrize("error", [
    UpstreamUnavailable("The fake API is unavailable (503).", cause="upstream_503"),
    RateLimited("The fake API's rate limit.", retry_after=0),
    UpstreamTimeout("The fake API did not answer in time.", cause="timeout"),
    NoCredits("The fake API account has no credits."),
], ids=["unavailable", "rate-limited", "timeout", "no-credits"])
def test_a_failing_provider_hands_the_call_to_the_next(auth, client, first, second, error):
    first.will(Answer(error=error))
    before = failovers()
    response = generate(client, auth)
    assert response.status_code == 200, response.get_json()
    assert response.headers["x-gateway-provider"] == "openrouter"
    assert (len(first.requests), len(second.requests)) == (1, 1)
    assert failovers() == before + 1


@pytest.mark.parametrize("error, status", [
    (Rejected("bad aspect ratio"), 400),
    (Blocked("The prompt was blocked (SAFETY)."), 400),
    (NoImage(), 500),
    (UpstreamError("The fake API refused the gateway's credentials."), 502),
], ids=["client-error", "safety-block", "text-only", "bad-credentials"])
def test_answers_another_provider_would_not_change_stay_where_they_are(auth, client, first, second, error, status):
    first.will(Answer(error=error))
    response = generate(client, auth)
    assert (response.status_code, response.get_json()["message"]) == (status, error.message)
    assert not second.requests


def test_providers_are_tried_in_gateway_providers_order(auth, app):
    third = FakeProvider("vertex")
    first, second = FakeProvider("openrouter"), FakeProvider("gemini")
    first.will(Answer(error=UpstreamUnavailable("down")))
    second.will(Answer(error=UpstreamUnavailable("down too")))
    response = generate(serve_with(app, first, second, third), auth)
    assert response.headers["x-gateway-provider"] == "vertex"
    assert [len(provider.requests) for provider in (first, second, third)] == [1, 1, 1]


def test_an_unconfigured_provider_is_not_a_failover(auth, app):
    first, off, last = FakeProvider("gemini"), FakeProvider("vertex", configured=False), FakeProvider("openrouter")
    first.will(Answer(error=UpstreamUnavailable("down")))
    response = generate(serve_with(app, first, off, last), auth)
    assert response.headers["x-gateway-provider"] == "openrouter"
    assert not off.requests and not off.calls


def test_when_every_provider_fails_the_answer_names_each_failure_with_the_last_ones_status(auth, client, first,
                                                                                         second):
    first.will(Answer(error=UpstreamUnavailable("The fake gemini API is unavailable.")))
    second.will(Answer(error=NoCredits("The fake openrouter API account has no credits.")))
    response = generate(client, auth)
    assert response.status_code == 503
    assert response.get_json()["message"] == ("gemini: The fake gemini API is unavailable.; "
                                              "openrouter: The fake openrouter API account has no credits.")


def test_a_provider_with_another_to_fail_over_to_gets_one_attempt_and_the_last_its_retries(auth, settings,
                                                                                           upstream):
    """Attempts are the shared transport's, so both wires are mocked."""
    both = dataclasses.replace(settings, openrouter_api_key=OPENROUTER_KEY,
                               openrouter_base_url="https://openrouter.test/api/v1")
    for url in (GENERATE, CHAT, CHAT, CHAT):
        upstream.add(responses.POST, url, status=503, json={"error": {"code": 503, "message": "busy"}})
    app = create_app(both)
    assert generate(app.test_client(), auth).status_code == 502
    app.config["STORE"].close()
    sent = [call.request.url for call in upstream.calls]
    assert (sum(url.startswith("https://gemini.test") for url in sent), sent.count(CHAT)) == (1, 3)


def test_each_of_n_calls_fails_over_on_its_own(auth, client, first, second):
    first.will(Answer(), Answer(error=UpstreamUnavailable("down")))
    response = generate(client, auth, n=2)
    assert response.status_code == 200 and len(response.get_json()["data"]) == 2
    assert set(response.headers["x-gateway-provider"].split(", ")) == {"gemini", "openrouter"}
    assert (len(first.requests), len(second.requests)) == (2, 1)


def test_the_failover_providers_wire_request_is_built_only_when_a_call_fails_over(auth, client, first, second):
    generate(client, auth, n=3)
    assert (len(first.calls), len(first.requests)) == (1, 3)
    assert not second.calls


def test_no_provider_is_tried_after_the_deadline(auth, settings):
    first, second = FakeProvider("gemini"), FakeProvider("openrouter")
    first.will(Answer(delay=1.1, error=UpstreamUnavailable("too late")))
    app = create_app(dataclasses.replace(settings, upstream_timeout=1))
    response = generate(serve_with(app, first, second), auth)
    app.config["STORE"].close()
    assert response.status_code == 502
    assert not second.requests


def test_the_log_line_tells_each_providers_attempts(auth, settings, upstream, json_lines):
    """Counted by the shared transport, so both wires are mocked: a 503 from Gemini (its one
    attempt, as OpenRouter can take the call), then OpenRouter's answer."""
    both = dataclasses.replace(settings, openrouter_api_key=OPENROUTER_KEY,
                               openrouter_base_url="https://openrouter.test/api/v1")
    for _ in range(3):
        upstream.add(responses.POST, GENERATE, status=503)
    upstream.add(responses.POST, CHAT, json=openrouter_answer())
    app = create_app(both)
    generate(app.test_client(), auth)
    app.config["STORE"].close()
    (summary,) = [line for line in json_lines() if line["message"] == "request"]
    assert summary["upstream_attempts"] == {"gemini": {"upstream_503": 1}, "openrouter": {"ok": 1}}
    assert (summary["failovers"], summary["upstream_calls"]) == (1, 2)
    assert any(line["message"] == "gemini failed for gemini-3-pro-image (503); failing over to openrouter"
               for line in json_lines())
