"""Circuit breakers (docs/providers.md#circuit-breakers): after consecutive failed calls a provider
is skipped for a cool-down, then probed by one call; a success closes it. The breaker alone with
a fake clock, then through the app with Gemini and OpenRouter mocked; then shared through Redis
by several processes (each RedisBreaker here is one process's), and per process while Redis is away."""
import dataclasses
import time

import pytest
import responses
from prometheus_client import REGISTRY

from gateway import create_app
from gateway.breaker import LocalBreaker, RedisBreaker, breaker_for
from gateway.metrics import BREAKER_OPEN
from gateway.shared import Outage, shared_redis
from tests.conftest import OPENROUTER_KEY, REDIS_URL
from tests.support import CHAT, gemini_answer, openrouter_answer

GEMINI = "https://gemini.test/v1beta/models/gemini-3-pro-image:generateContent"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def breaker(clock):
    return LocalBreaker("gemini", failures=3, seconds=30, clock=clock)


def is_open(provider="gemini"):
    return REGISTRY.get_sample_value("gateway_provider_breaker_open", {"provider": provider})


def test_a_breaker_opens_after_k_consecutive_failures(breaker):
    breaker.failed()
    breaker.failed()
    assert breaker.admit() and is_open() == 0
    breaker.failed()
    assert not breaker.admit() and not breaker.would_admit()
    assert is_open() == 1


def test_a_success_between_failures_starts_the_count_again(breaker):
    for _ in range(2):
        breaker.failed()
    breaker.succeeded()
    for _ in range(2):
        breaker.failed()
    assert breaker.admit()


def test_an_open_breaker_skips_until_its_cool_down_then_admits_exactly_one_probe(breaker, clock):
    for _ in range(3):
        breaker.failed()
    clock.now += 29.9
    assert not breaker.admit()
    clock.now += 0.1
    assert breaker.would_admit()
    assert breaker.admit()
    assert not breaker.admit() and not breaker.would_admit()  # the others keep skipping it
    assert is_open() == 1


def test_a_probe_that_succeeds_closes_the_breaker(breaker, clock):
    for _ in range(3):
        breaker.failed()
    clock.now += 30
    assert breaker.admit()
    breaker.succeeded()
    assert breaker.admit() and breaker.admit()
    assert is_open() == 0


def test_a_probe_that_fails_opens_it_for_another_cool_down(breaker, clock):
    for _ in range(3):
        breaker.failed()
    clock.now += 30
    assert breaker.admit()
    breaker.failed()
    assert not breaker.admit()
    clock.now += 30
    assert breaker.admit()


def test_a_probe_without_a_verdict_lets_the_next_call_probe(breaker, clock):
    for _ in range(3):
        breaker.failed()
    clock.now += 30
    assert breaker.admit()
    breaker.released()  # the client went away
    assert breaker.admit()


@pytest.fixture
def both(settings):
    return dataclasses.replace(settings, openrouter_api_key=OPENROUTER_KEY,
                               openrouter_base_url="https://openrouter.test/api/v1")


def generate(client, auth, **params):
    return client.post("/v1/images/generations", json={"prompt": "a fox", **params}, headers=auth)


def calls(upstream):
    """The upstream URLs called since the last look, in order."""
    made = [call.request.url for call in upstream.calls]
    upstream.calls.reset()
    return made


def test_after_the_breaker_opens_a_request_goes_straight_to_the_next_provider(both, auth, upstream, json_lines):
    upstream.add(responses.POST, GEMINI, status=503, json={"error": {"code": 503, "message": "overloaded"}})
    upstream.add(responses.POST, CHAT, json=openrouter_answer())
    client = create_app(both).test_client()
    for _ in range(3):  # one attempt each: OpenRouter can take the call
        assert generate(client, auth).headers["x-gateway-provider"] == "openrouter"
        assert calls(upstream) == [GEMINI, CHAT]
    assert is_open() == 1
    assert any(line["message"] == "circuit breaker for gemini opened after 3 consecutive failed calls: "
                                  "skipping it for 30s" for line in json_lines())
    response = generate(client, auth)
    assert response.status_code == 200 and response.headers["x-gateway-provider"] == "openrouter"
    assert calls(upstream) == [CHAT]


def test_answers_that_do_not_fail_over_never_open_the_breaker(both, auth, upstream):
    upstream.add(responses.POST, GEMINI, status=400, json={"error": {"code": 400, "message": "bad ratio"}})
    client = create_app(both).test_client()
    for _ in range(4):
        assert generate(client, auth).status_code == 400
    upstream.add(responses.POST, GEMINI, json={"promptFeedback": {"blockReason": "SAFETY"}})
    for _ in range(4):
        assert generate(client, auth).status_code == 400
    assert calls(upstream) == [GEMINI] * 8
    assert is_open() == 0


def test_a_probe_that_succeeds_closes_the_breaker_and_the_provider_takes_calls_again(both, auth, upstream,
                                                                                    json_lines):
    upstream.add(responses.POST, GEMINI, status=503, json={"error": {"code": 503, "message": "overloaded"}})
    upstream.add(responses.POST, GEMINI, status=503, json={"error": {"code": 503, "message": "overloaded"}})
    upstream.add(responses.POST, GEMINI, json=gemini_answer())
    upstream.add(responses.POST, CHAT, json=openrouter_answer())
    client = create_app(dataclasses.replace(both, breaker_failures=2, breaker_seconds=0)).test_client()
    for _ in range(2):
        generate(client, auth)
    calls(upstream)
    assert generate(client, auth).headers["x-gateway-provider"] == "gemini"  # the probe, cool-down over
    assert is_open() == 0
    assert any(line["message"] == "circuit breaker for gemini closed: it answered again" for line in json_lines())


def test_a_skipped_provider_is_named_when_the_others_fail_too(both, auth, upstream):
    upstream.add(responses.POST, GEMINI, status=503, json={"error": {"code": 503, "message": "overloaded"}})
    upstream.add(responses.POST, CHAT, json=openrouter_answer())
    client = create_app(both).test_client()
    for _ in range(3):
        generate(client, auth)
    upstream.replace(responses.POST, CHAT, status=503, json={"error": {"code": 503, "message": "busy"}})
    calls(upstream)
    response = generate(client, auth)
    assert response.status_code == 502
    assert response.get_json()["message"] == ("gemini: skipped, failing recently (its circuit breaker is open); "
                                              "openrouter: The OpenRouter API failed (HTTP 503): busy")
    assert calls(upstream) == [CHAT] * 3  # the last provider gets its retries


def test_when_every_breaker_is_open_the_providers_are_tried_anyway(both, auth, upstream):
    upstream.add(responses.POST, GEMINI, status=503, json={"error": {"code": 503, "message": "overloaded"}})
    upstream.add(responses.POST, CHAT, status=503, json={"error": {"code": 503, "message": "busy"}})
    client = create_app(dataclasses.replace(both, breaker_failures=1, upstream_max_retries=0)).test_client()
    generate(client, auth)
    assert (is_open("gemini"), is_open("openrouter")) == (1, 1)
    calls(upstream)
    upstream.replace(responses.POST, CHAT, json=openrouter_answer())
    response = generate(client, auth)
    assert response.status_code == 200
    assert calls(upstream) == [GEMINI, CHAT]
    assert (is_open("gemini"), is_open("openrouter")) == (1, 0)


def test_a_failing_provider_with_no_other_keeps_its_retries(settings, auth, upstream):
    upstream.add(responses.POST, GEMINI, status=503, json={"error": {"code": 503, "message": "overloaded"}})
    client = create_app(settings).test_client()
    for _ in range(4):
        assert generate(client, auth).status_code == 502
    assert calls(upstream) == [GEMINI] * 12  # alone, open or not, it is tried with its 2 retries


def test_a_retry_log_line_names_the_upstreams_own_status(settings, auth, upstream, json_lines):
    upstream.add(responses.POST, GEMINI, status=503, json={"error": {"code": 503, "message": "overloaded"}})
    upstream.add(responses.POST, GEMINI, json=gemini_answer())
    assert generate(create_app(settings).test_client(), auth).status_code == 200
    assert any(line["message"].startswith("upstream attempt 1 for gemini-3-pro-image failed (503); retrying in")
               for line in json_lines())


@pytest.fixture
def process(redis_server, redis_prefix):
    """A function that builds gemini's breaker in another process sharing Redis (under this test's
    prefix): three failures open it."""
    def breaker(seconds=30, probe_seconds=60):
        return RedisBreaker("gemini", 3, seconds, redis_server, redis_prefix, probe_seconds)
    return breaker


def test_failures_in_several_processes_open_the_breaker_for_all_of_them(process):
    first, second = process(), process()
    first.failed()
    second.failed()
    assert first.admit() and second.would_admit()
    first.failed()
    assert not second.admit() and not second.would_admit() and not first.admit()


def test_a_providers_state_and_its_probe_share_one_hash_tag(process, redis_server, redis_prefix):
    breaker = process(seconds=0)
    for _ in range(3):
        breaker.failed()
    assert breaker.admit()
    keys = sorted(key.decode() for key in redis_server.scan_iter(f"{redis_prefix}:*"))
    assert keys == [f"{redis_prefix}:breaker:{{gemini}}", f"{redis_prefix}:breaker:{{gemini}}:probe"]


def test_a_success_in_any_process_starts_the_shared_count_again(process):
    first, second = process(), process()
    for _ in range(2):
        first.failed()
    second.succeeded()
    for _ in range(2):
        first.failed()
    assert second.admit()


def test_once_cooled_down_exactly_one_process_probes_and_its_success_closes_it_for_all(process, json_lines):
    first, second = process(seconds=0.1), process(seconds=0.1)
    for _ in range(3):
        first.failed()
    assert not second.admit()
    time.sleep(0.15)
    assert second.would_admit() and second.admit()
    assert not first.admit() and not first.would_admit() and not second.admit()  # one probe, anywhere
    assert is_open() == 1
    second.succeeded()
    assert first.admit() and is_open() == 0
    assert [line["message"] for line in json_lines() if line["message"].startswith("circuit breaker")] == [
        "circuit breaker for gemini opened after 3 consecutive failed calls: skipping it for 0.1s",
        "circuit breaker for gemini: probing it with one call",
        "circuit breaker for gemini closed: it answered again"]  # each logged once, by the process that did it


def test_a_failed_probe_opens_it_for_every_process_for_another_cool_down(process):
    first, second = process(seconds=0.2), process(seconds=0.2)
    for _ in range(3):
        first.failed()
    time.sleep(0.25)
    assert first.admit()
    first.failed()
    assert not second.admit()
    time.sleep(0.25)
    assert second.admit()


def test_only_the_probing_process_gives_its_probe_back(process):
    first, second = process(seconds=0), process(seconds=0)
    for _ in range(3):
        first.failed()
    assert first.admit()
    second.released()  # another process's call whose client went away: not the probe
    assert not second.admit()
    first.released()
    assert second.admit()


def test_a_probe_whose_process_died_frees_the_provider_when_its_lease_ends(process):
    first, second = process(seconds=0, probe_seconds=0.2), process(seconds=0, probe_seconds=0.2)
    for _ in range(3):
        first.failed()
    assert first.admit()  # and its process dies
    assert not second.admit()
    time.sleep(0.25)
    assert second.admit()


def test_each_process_shows_the_shared_state_it_last_read(process):
    first, second = process(), process()
    for _ in range(3):
        first.failed()
    BREAKER_OPEN.labels("gemini").set(0)  # as in the second process, which has not called gemini yet
    assert not second.would_admit()
    assert is_open() == 1


def test_a_breaker_opened_by_one_instance_sends_the_others_straight_to_the_next_provider(both, auth, upstream,
                                                                                        redis_prefix):
    upstream.add(responses.POST, GEMINI, status=503, json={"error": {"code": 503, "message": "overloaded"}})
    upstream.add(responses.POST, CHAT, json=openrouter_answer())
    shared = dataclasses.replace(both, redis_url=REDIS_URL, redis_prefix=redis_prefix)
    first, second = create_app(shared).test_client(), create_app(shared).test_client()
    for _ in range(3):
        assert generate(first, auth).headers["x-gateway-provider"] == "openrouter"
    calls(upstream)
    assert generate(second, auth).headers["x-gateway-provider"] == "openrouter"
    assert calls(upstream) == [CHAT]


def test_while_redis_is_away_each_process_decides_alone_then_shares_again(settings, own_redis, monkeypatch,
                                                                          json_lines):
    url, servers, start = own_redis
    monkeypatch.setattr(Outage, "RETRY_SECONDS", 0.2)
    client = shared_redis(dataclasses.replace(settings, redis_url=url))
    breaker = breaker_for("gemini", settings, client)
    for _ in range(3):
        breaker.failed()
    servers[0].kill()
    servers[0].wait()
    assert breaker.admit()  # it fails open: this process starts closed
    for _ in range(3):
        breaker.failed()
    assert not breaker.admit() and is_open() == 1  # and opens on its own failures
    time.sleep(0.25)
    assert not breaker.admit()  # Redis was asked again, and failed again
    assert len([line for line in json_lines() if line["message"].startswith("Redis failed")]) == 1
    servers.append(start())  # back, and empty
    time.sleep(0.25)
    assert breaker.admit() and is_open() == 0
    client.close()
