"""The rate and concurrency counters in Redis: hash-tagged keys, leases that a dead instance
cannot keep, and per-process counting while Redis is away (then shared again, without a restart)."""
import dataclasses
import time

import pytest
import redis
import responses

from gateway import create_app
from gateway.counters import RedisCounters
from gateway.errors import GatewayError
from gateway.policies import Policy
from tests.conftest import CLIENT_KEY, REDIS_URL
from tests.support import GENERATE, gemini_answer, metric


def test_a_keys_counters_share_one_hash_tag(redis_server, redis_prefix):
    counters = RedisCounters(redis_server, redis_prefix, lease_seconds=60)
    counters.acquire("team-a", Policy(rpm=5, max_concurrent=2), 1)
    keys = sorted(key.decode() for key in redis_server.scan_iter(f"{redis_prefix}:*"))
    assert keys == [f"{redis_prefix}:{{team-a}}:{kind}" for kind in ("images", "leases", "requests")]


def test_a_lease_left_by_a_dead_instance_expires(redis_server, redis_prefix):
    counters = RedisCounters(redis_server, redis_prefix, lease_seconds=1)
    counters.acquire("team-a", Policy(max_concurrent=1), 1)  # its instance dies and never releases it
    with pytest.raises(GatewayError) as refused:
        counters.acquire("team-a", Policy(max_concurrent=1), 1)
    assert refused.value.status == 429
    time.sleep(1.1)
    assert counters.acquire("team-a", Policy(max_concurrent=1), 1).lease


def test_a_refused_request_counts_nothing(redis_server, redis_prefix):
    counters = RedisCounters(redis_server, redis_prefix, lease_seconds=60)
    policy = Policy(rpm=2, ipm=3)
    counters.acquire("team-a", policy, 2)
    for _ in range(3):
        with pytest.raises(GatewayError):
            counters.acquire("team-a", policy, 2)
    assert counters.acquire("team-a", policy, 1).windows[0][1].remaining == 0


def test_while_redis_is_away_limits_count_per_process_then_are_shared_again(settings, upstream, own_redis,
                                                                              monkeypatch):
    url, servers, start = own_redis
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    app = create_app(dataclasses.replace(settings, redis_url=url, client_names={CLIENT_KEY: "ci"},
                                         key_policies={"ci": {"rpm": 1}}))
    monkeypatch.setattr(app.config["ACCOUNTS"], "RETRY_SECONDS", 0.2)
    client, auth = app.test_client(), {"Authorization": f"Bearer {CLIENT_KEY}"}

    def statuses():
        return [client.post("/v1/images/generations", json={"prompt": "x"}, headers=auth).status_code
                for _ in range(2)]

    assert statuses() == [200, 429]  # shared: counted in Redis
    servers[0].kill()
    servers[0].wait()
    errors = metric(client.get("/metrics").get_data(as_text=True), "gateway_limiter_errors_total")
    assert statuses() == [200, 429]  # this process counts on its own
    assert client.get("/health/ready").json["redis"] == "unreachable"
    assert metric(client.get("/metrics").get_data(as_text=True), "gateway_limiter_errors_total") > errors
    servers.append(start())  # back, and empty
    time.sleep(0.3)
    assert statuses() == [200, 429]  # counted in Redis again: its window starts empty
    assert [key for key in redis.Redis.from_url(url).scan_iter("gateway:*")]
    app.config["STORE"].close()


def test_the_redis_url_comes_from_gateway_redis_url_then_redis_url():
    from gateway.config import Settings

    assert Settings.from_env({"REDIS_URL": REDIS_URL}).redis_url == REDIS_URL
    assert Settings.from_env({"REDIS_URL": "redis://a", "GATEWAY_REDIS_URL": "redis://b"}).redis_url == "redis://b"
