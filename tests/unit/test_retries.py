"""Bounded retries with exponential backoff and jitter, honouring Retry-After, within the deadline."""
import dataclasses

import pytest
import responses

from gateway.errors import UpstreamError
from gateway.providers import transport
from gateway.providers.gemini import GeminiProvider
from tests.support import gemini_answer
from tests.unit.conftest import GENERATE

CALL = GeminiProvider.request_for("m", "p")


@pytest.fixture
def sleeps(monkeypatch):
    waited = []
    monkeypatch.setattr(transport.time, "sleep", waited.append)
    return waited


def provider(settings, **changes):
    return GeminiProvider(dataclasses.replace(settings, **changes))


def test_backoff_grows_exponentially_with_jitter(settings, upstream, sleeps):
    for _ in range(3):
        upstream.add(responses.POST, GENERATE, status=503)
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    generation = provider(settings, upstream_retry_base_delay=1.0, upstream_max_retries=3,
                          upstream_timeout=60).generate(CALL)
    assert generation.attempts == 4
    assert len(sleeps) == 3
    for attempt, delay in enumerate(sleeps):
        assert 0.5 * 2 ** attempt <= delay <= 1.5 * 2 ** attempt


def test_retry_after_is_honoured(settings, upstream, sleeps):
    upstream.add(responses.POST, GENERATE, status=429, headers={"Retry-After": "2"})
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    provider(settings).generate(CALL)
    assert sleeps == [2]


def test_a_retry_after_past_the_deadline_ends_the_retries(settings, upstream, sleeps):
    upstream.add(responses.POST, GENERATE, status=429, headers={"Retry-After": "60"})
    with pytest.raises(UpstreamError) as caught:
        provider(settings, upstream_timeout=5).generate(CALL)
    assert caught.value.status == 429
    assert caught.value.headers["Retry-After"] == "60"
    assert len(upstream.calls) == 1 and sleeps == []


def test_an_http_date_retry_after_is_understood(settings, upstream, sleeps):
    upstream.add(responses.POST, GENERATE, status=503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    provider(settings).generate(CALL)
    assert sleeps == [0]  # a date in the past means "now"


def test_non_retryable_errors_are_not_retried(settings, upstream, sleeps):
    upstream.add(responses.POST, GENERATE, status=400, json={"error": {"code": 400, "message": "bad"}})
    with pytest.raises(UpstreamError):
        provider(settings).generate(CALL)
    assert len(upstream.calls) == 1 and sleeps == []


def test_each_attempt_gets_connect_and_read_timeouts_within_the_deadline(settings, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    provider(settings, upstream_timeout=30).generate(CALL)
    connect, read = upstream.calls[0].request.req_kwargs["timeout"]
    assert connect == 10
    assert 29 < read <= 30
