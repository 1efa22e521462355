"""The transport every provider shares, tested once without any provider: bounded retries with
exponential backoff and jitter, Retry-After, one wall-clock deadline, the capped read."""
import dataclasses
import threading
import time

import pytest
import responses
from prometheus_client import REGISTRY

from gateway.errors import RateLimited, Rejected, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.providers import Generation, transport

URL = "https://upstream.test/generate"


def text_answer(payload):
    return Generation(images=[], text=payload["text"])


def error_for(response):
    if response.status_code == 429:
        return RateLimited("rate limited", transport.retry_after(response))
    if response.status_code >= 500:
        return UpstreamUnavailable(f"HTTP {response.status_code}", cause=f"upstream_{response.status_code}")
    return Rejected("refused")


@pytest.fixture
def sleeps(monkeypatch):
    waited = []
    monkeypatch.setattr(transport.Cancel, "sleep", lambda cancel, seconds: waited.append(seconds))
    return waited


def transport_call(settings, **changes):
    settings = dataclasses.replace(settings, **changes)
    sender = transport.Transport(settings, "test", "The test API")
    return sender.call("model-x", URL, {"Authorization": "Bearer k"}, b"{}", text_answer, error_for,
                       transport.Scope(time.monotonic() + settings.upstream_timeout))


def test_backoff_grows_exponentially_with_jitter(settings, web, sleeps):
    for _ in range(3):
        web.add(responses.POST, URL, status=503)
    web.add(responses.POST, URL, json={"text": "made"})
    generation = transport_call(settings, upstream_retry_base_delay=1.0, upstream_max_retries=3, upstream_timeout=60)
    assert (generation.text, generation.attempts) == ("made", 4)
    assert len(sleeps) == 3
    for attempt, delay in enumerate(sleeps):
        assert 0.5 * 2 ** attempt <= delay <= 1.5 * 2 ** attempt


def test_retry_after_is_honoured(settings, web, sleeps):
    web.add(responses.POST, URL, status=429, headers={"Retry-After": "2"})
    web.add(responses.POST, URL, json={"text": "made"})
    transport_call(settings)
    assert sleeps == [2]


def test_a_retry_after_past_the_deadline_ends_the_retries(settings, web, sleeps):
    web.add(responses.POST, URL, status=429, headers={"Retry-After": "60"})
    with pytest.raises(RateLimited) as caught:
        transport_call(settings, upstream_timeout=5)
    assert caught.value.status == 429
    assert caught.value.headers["Retry-After"] == "60"
    assert len(web.calls) == 1 and sleeps == []


def test_an_http_date_retry_after_is_understood(settings, web, sleeps):
    web.add(responses.POST, URL, status=503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    web.add(responses.POST, URL, json={"text": "made"})
    transport_call(settings)
    assert sleeps == [0]  # a date in the past means "now"


def test_retries_stop_at_upstream_max_retries(settings, web, sleeps):
    for _ in range(5):
        web.add(responses.POST, URL, status=503)
    with pytest.raises(UpstreamUnavailable):
        transport_call(settings, upstream_max_retries=2)
    assert len(web.calls) == 3


def test_non_retryable_errors_are_not_retried(settings, web, sleeps):
    web.add(responses.POST, URL, status=400)
    with pytest.raises(Rejected):
        transport_call(settings)
    assert len(web.calls) == 1 and sleeps == []


def test_each_attempt_gets_connect_and_read_timeouts_within_the_deadline(settings, web):
    web.add(responses.POST, URL, json={"text": "made"})
    transport_call(settings, upstream_timeout=30)
    connect, read = web.calls[0].request.req_kwargs["timeout"]
    assert connect == 10
    assert 29 < read <= 30


def test_the_body_and_headers_are_sent_as_given(settings, web):
    web.add(responses.POST, URL, json={"text": "made"})
    transport_call(settings)
    sent = web.calls[0].request
    assert sent.body == b"{}"
    assert sent.headers["Authorization"] == "Bearer k"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Accept-Encoding"] == "identity"


@pytest.mark.parametrize("no_proxy, proxied", [("", True), ("upstream.test", False)])
def test_the_proxy_variables_are_honoured_as_requests_reads_them(settings, web, monkeypatch, no_proxy, proxied):
    """requests' own reading of the environment, once per origin, for every call to it."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/upstream-ca.pem")
    web.add(responses.POST, URL, json={"text": "made"})
    sender = transport.Transport(settings, "test", "The test API", session=transport.Session())
    for _ in range(2):
        sender.call("model-x", URL, {}, b"{}", text_answer, error_for, transport.Scope(time.monotonic() + 30))
    expected = {"https": "http://proxy.test:3128"} if proxied else {}
    assert [call.request.req_kwargs["proxies"] for call in web.calls] == [expected, expected]
    assert [call.request.req_kwargs["verify"] for call in web.calls] == ["/etc/ssl/upstream-ca.pem"] * 2


def test_each_origin_reads_its_own_proxy_settings_and_no_netrc_is_read(settings, web, monkeypatch, tmp_path):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", "local.test")
    (tmp_path / ".netrc").write_text("machine upstream.test login someone password secret\n")
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    local = "https://local.test/v1/generate"
    web.add(responses.POST, URL, json={"text": "made"})
    web.add(responses.POST, local, json={"text": "made"})
    sender = transport.Transport(settings, "test", "The test API", session=transport.Session())
    for url in (URL, local):
        sender.call("model-x", url, {}, b"{}", text_answer, error_for, transport.Scope(time.monotonic() + 30))
    assert [call.request.req_kwargs["proxies"].get("https") for call in web.calls] == ["http://proxy.test:3128", None]
    assert "Authorization" not in web.calls[0].request.headers


def test_a_redirect_is_an_upstream_error_and_is_not_followed(settings, web):
    """The API key header would go with it to wherever the redirect points."""
    web.add(responses.POST, URL, status=307, headers={"Location": "https://elsewhere.test/generate"})
    web.add(responses.POST, "https://elsewhere.test/generate", json={"text": "made"})
    with pytest.raises(Rejected):
        transport_call(settings)
    assert [c.request.url for c in web.calls] == [URL]


def test_no_cookie_from_one_call_rides_along_on_the_next(settings, web):
    web.add(responses.POST, URL, json={"text": "made"}, headers={"Set-Cookie": "session=client-a; Path=/"})
    transport_call(settings)
    transport_call(settings)
    assert "Cookie" not in web.calls[1].request.headers


def test_an_answer_over_the_size_limit_is_refused(settings, web):
    web.add(responses.POST, URL, body=b'{"text": "' + b"x" * 4096 + b'"}', content_type="application/json")
    with pytest.raises(UpstreamError) as caught:
        transport_call(settings, upstream_max_response_bytes=1024)
    assert caught.value.status == 502 and not caught.value.retryable
    assert "larger than the gateway's limit of 1024 bytes" in caught.value.message


def test_a_non_json_answer_is_retried_then_502(settings, web, sleeps):
    for _ in range(3):
        web.add(responses.POST, URL, body=b"<html>proxy error</html>")
    with pytest.raises(UpstreamUnavailable) as caught:
        transport_call(settings)
    assert caught.value.message == "The test API returned a malformed response (not JSON)."
    assert len(web.calls) == 3


def test_no_attempt_starts_after_the_deadline(settings, web):
    sender = transport.Transport(settings, "test", "The test API")
    with pytest.raises(UpstreamTimeout):
        sender.call("model-x", URL, {}, b"{}", text_answer, error_for, transport.Scope(time.monotonic() - 1))
    assert not web.calls


def test_attempts_are_counted_per_provider_and_outcome(settings, web):
    def attempts(outcome):
        labels = {"model": "model-x", "provider": "test", "outcome": outcome}
        return REGISTRY.get_sample_value("gateway_upstream_calls_total", labels) or 0

    before = attempts("upstream_503"), attempts("ok")
    web.add(responses.POST, URL, status=503)
    web.add(responses.POST, URL, json={"text": "made"})
    transport_call(settings)
    assert (attempts("upstream_503"), attempts("ok")) == (before[0] + 1, before[1] + 1)


def test_a_timeout_is_504_and_not_retried(settings, web):
    import requests
    web.add(responses.POST, URL, body=requests.exceptions.ReadTimeout())
    with pytest.raises(UpstreamTimeout) as caught:
        transport_call(settings)
    assert caught.value.status == 504 and caught.value.message == "The test API did not answer within 5 seconds."
    assert len(web.calls) == 1


def test_a_cancelled_call_stops_waiting_out_its_backoff(settings, web):
    """A client that went away frees its in-flight slot at once, not after the upstream's Retry-After."""
    web.add(responses.POST, URL, status=429, headers={"Retry-After": "30"})
    sender = transport.Transport(dataclasses.replace(settings, upstream_timeout=60, upstream_max_retries=2), "test",
                                 "The test API")
    scope = transport.Scope(time.monotonic() + 60)
    threading.Timer(0.2, scope.cancel.set).start()
    started = time.monotonic()
    with pytest.raises(UpstreamError) as error:
        sender.call("model-x", URL, {}, b"{}", text_answer, error_for, scope)
    assert error.value.cause == "cancelled" and time.monotonic() - started < 10
    assert len(web.calls) == 1
