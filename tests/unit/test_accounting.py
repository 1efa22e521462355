"""Limits, budgets and the usage ledger, on SQLite and PostgreSQL: what a key with a policy may do,
what a refusal says, and that every cent lands in the ledger."""
import dataclasses
import re
import threading
import time

import pytest
import responses
from sqlalchemy import insert, select

from gateway import create_app
from gateway.counters import Window, decide, reset_text
from gateway.policies import Policy
from gateway.store import Store, ledger, reservations
from tests.conftest import CLIENT_KEY, REDIS_URL, STORES
from tests.support import ADMIN, ADMIN_KEY, create_key, gemini_answer, generate_as, metric
from tests.unit.conftest import GENERATE

PRO_CALL = 0.134 + 10 * 2.00 / 1e6  # gemini-3-pro-image: a 1K image and the mock's 10 input tokens


@pytest.fixture(params=[*STORES, "sqlite+redis"])
def backend(request):
    """Where the counters live: the database (SQLite or PostgreSQL), or Redis."""
    return request.param


@pytest.fixture
def database_url(request, backend):
    return request.getfixturevalue(f"{backend.split('+')[0]}_url")


@pytest.fixture
def settings(request, settings, backend):
    if "redis" in backend:
        prefix = request.getfixturevalue("redis_prefix")
        settings = dataclasses.replace(settings, redis_url=REDIS_URL, redis_prefix=prefix)
    return dataclasses.replace(settings, admin_key=ADMIN_KEY)


@pytest.fixture
def answering(upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    return upstream


def key_with(client, **policy):
    response = create_key(client, **policy)
    assert response.status_code == 201, response.json
    return response.json["key"]


def own_usage(client, key):
    return client.get("/v1/usage", headers={"Authorization": f"Bearer {key}"}).json


# --- the moving windows, as a pure function ---------------------------------------------------

def test_a_request_over_rpm_waits_for_the_oldest_counted_second_to_leave_the_window():
    with pytest.raises(Exception) as refused:
        decide(Policy(rpm=2), [(100, 1, 1), (130, 1, 1)], 0, 1, now=140.0)
    assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "20"
    assert refused.value.headers["x-ratelimit-remaining-requests"] == "0"


def test_ipm_counts_images_and_frees_as_many_as_the_request_needs():
    buckets = [(100, 1, 2), (110, 1, 2), (120, 1, 2)]  # (second, requests, images)
    assert decide(Policy(ipm=8), buckets, 0, 2, now=125.0) == [("images", Window(8, 0, 35.0))]
    with pytest.raises(Exception) as refused:
        decide(Policy(ipm=8), buckets, 0, 6, now=125.0)  # needs the first two buckets gone: at 170
    assert refused.value.headers["Retry-After"] == "45"


@pytest.mark.parametrize(("seconds", "text"), [(0.25, "250ms"), (1, "1s"), (59.2, "1m0s"), (360, "6m0s"), (61, "1m1s")])
def test_reset_durations_are_in_openais_format(seconds, text):
    assert reset_text(seconds) == text


# --- rates and concurrency through the API ----------------------------------------------------

def test_rpm_refuses_with_retry_after_and_the_refused_request_never_reaches_upstream(client, answering):
    key = key_with(client, rpm=2)
    first, second, third = (generate_as(client, key) for _ in range(3))
    assert first.status_code == second.status_code == 200
    assert (first.headers["x-ratelimit-limit-requests"], first.headers["x-ratelimit-remaining-requests"]) == ("2", "1")
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert re.fullmatch(r"\d+(ms|s)|\dm\d+s", first.headers["x-ratelimit-reset-requests"])
    assert third.status_code == 429 and 1 <= int(third.headers["Retry-After"]) <= 60
    assert "2 requests per minute" in third.json["message"]
    assert len(answering.calls) == 2


def test_ipm_counts_n_and_a_request_larger_than_ipm_is_a_400_naming_n(client, answering):
    key = key_with(client, ipm=3)
    assert generate_as(client, key, n=2).headers["x-ratelimit-remaining-images"] == "1"
    assert generate_as(client, key, n=2).status_code == 429
    too_many = generate_as(client, key, n=4)
    assert too_many.status_code == 400 and "n: 4 is more than" in too_many.json["message"]
    assert generate_as(client, key, n=1).status_code == 200


def test_the_openai_error_format_names_the_rate_limit_code(client, settings, answering):
    app = create_app(dataclasses.replace(settings, error_format="openai"))
    key = key_with(app.test_client(), rpm=1)
    generate_as(app.test_client(), key)
    refused = generate_as(app.test_client(), key)
    app.config["STORE"].close()
    assert refused.status_code == 429 and refused.json["error"]["code"] == "rate_limit_exceeded"


def test_max_concurrent_refuses_while_the_calls_are_in_flight_and_frees_them_after(client, upstream):
    release, arrived = threading.Event(), threading.Event()

    def slow(request):
        arrived.set()
        release.wait(5)
        return 200, {}, __import__("json").dumps(gemini_answer())

    upstream.add_callback(responses.POST, GENERATE, callback=slow)
    key = key_with(client, max_concurrent=2)
    first = []
    holder = threading.Thread(target=lambda: first.append(generate_as(client, key, n=2)))
    holder.start()
    assert arrived.wait(5)
    refused = generate_as(client, key)
    release.set()
    holder.join()
    assert refused.status_code == 429 and "2 image calls in flight" in refused.json["message"]
    assert first[0].status_code == 200 and generate_as(client, key).status_code == 200


def test_a_key_without_a_policy_gets_no_limit_headers(client, auth, answering):
    response = client.post("/v1/images/generations", json={"prompt": "x"}, headers=auth)
    assert response.status_code == 200 and not [h for h in response.headers.keys() if h.startswith("x-ratelimit")]


def burst_on_two_workers(app, settings, key, count):
    """The statuses of `count` requests of `key` sent at once, alternately to `app` and to a second
    worker (another app on the same database), sorted."""
    apps, statuses, start = [app, create_app(settings)], [], threading.Barrier(count)

    def call(worker):
        start.wait()
        statuses.append(generate_as(worker.test_client(), key).status_code)

    threads = [threading.Thread(target=call, args=(apps[i % 2],)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    apps[1].config["STORE"].close()
    return sorted(statuses)


def test_two_workers_never_double_a_limit(app, settings, answering):
    key = key_with(app.test_client(), rpm=5)
    assert burst_on_two_workers(app, settings, key, 12) == [200] * 5 + [429] * 7
    assert len(answering.calls) == 5


# --- budgets ----------------------------------------------------------------------------------

def test_a_spent_budget_is_a_429_that_must_not_be_retried_naming_budget_spend_and_reset(client, answering):
    key = key_with(client, budget_usd=0.3, budget_period="day")
    assert [generate_as(client, key).status_code for _ in range(2)] == [200, 200]
    refused = generate_as(client, key)
    assert refused.status_code == 429 and refused.headers["x-should-retry"] == "false"
    message = refused.json["message"]
    assert "day budget of $0.30" in message and "$0.268040 used" in message and "resets at" in message
    assert len(answering.calls) == 2
    usage = own_usage(client, key)
    assert (usage["spent_usd"], usage["remaining_usd"], usage["budget_period"]) == (0.26804, 0.03196, "day")


def test_a_burst_from_two_workers_never_spends_past_the_budget(app, settings, answering):
    key = key_with(app.test_client(), budget_usd=0.5)  # room for 3 images at $0.134
    assert burst_on_two_workers(app, settings, key, 10) == [200] * 3 + [429] * 7
    assert len(answering.calls) == 3
    assert own_usage(app.test_client(), key)["spent_usd"] == pytest.approx(3 * PRO_CALL)


def test_only_images_made_are_charged_and_a_failure_frees_its_reservation(client, upstream):
    upstream.add(responses.POST, GENERATE, status=500, json={"error": {"message": "boom"}})
    key = key_with(client, budget_usd=0.2)
    assert generate_as(client, key).status_code == 502
    assert own_usage(client, key)["remaining_usd"] == 0.2
    upstream.replace(responses.POST, GENERATE, json=gemini_answer())
    assert generate_as(client, key).status_code == 200
    assert own_usage(client, key)["spent_usd"] == PRO_CALL


def test_a_reservation_left_by_a_dead_worker_expires(client, database_url):
    key = key_with(client, budget_usd=0.2)
    store = Store(database_url)

    def hold(conn, now):  # one left by a worker that is still running, one by a worker that died
        conn.execute(insert(reservations).values(id="live", key_name="team-a", micro_usd=150_000, expires_at=now + 60))
        conn.execute(insert(reservations).values(id="dead", key_name="team-a", micro_usd=150_000, expires_at=now - 1))

    store.run(hold, "team-a")
    refused = generate_as(client, key)  # $0.15 is still held by the live reservation
    store.run(lambda conn, now: conn.execute(reservations.delete().where(reservations.c.id == "live")))
    store.close()
    assert refused.status_code == 429 and "held by requests in flight" in refused.json["message"]


# --- the ledger -------------------------------------------------------------------------------

def test_cost_agrees_in_response_ledger_log_and_metric(client, answering, json_lines, database_url):
    key = key_with(client)
    counted = metric(client.get("/metrics").get_data(as_text=True), "gateway_cost_usd_total", client="team-a")
    body = generate_as(client, key, n=2).json
    cost = body["usage"]["cost"]
    assert cost == pytest.approx(2 * PRO_CALL)
    line = next(line for line in json_lines() if line.get("path") == "/v1/images/generations")
    assert line["cost_usd"] == cost
    metrics = client.get("/metrics").get_data(as_text=True)
    assert metric(metrics, "gateway_cost_usd_total", client="team-a") - counted == pytest.approx(cost)
    store = Store(database_url)
    with store.read() as conn:
        row = conn.execute(select(ledger)).mappings().one()
    store.close()
    assert row["micro_usd"] == round(cost * 1e6)
    assert (row["key_name"], row["model"], row["providers"], row["n_requested"], row["n_made"], row["status"]) == (
        "team-a", "gemini-3-pro-image", "gemini", 2, 2, 200)
    assert row["input_tokens"] == 20 and row["output_tokens"] == 2 * 1290
    assert own_usage(client, key)["spent_usd"] == cost


def test_admin_usage_groups_and_filters_the_ledger(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    upstream.add(responses.POST, GENERATE.pattern.replace("[^/]+", "gemini-2.5-flash-image"), json=gemini_answer())
    key = key_with(client)
    generate_as(client, key, n=2)
    generate_as(client, key, model="nano-banana")
    client.post("/v1/images/generations", json={"prompt": "x"}, headers=auth)
    by_key = client.get("/v1/admin/usage?group_by=key", headers=ADMIN).json["data"]
    rows = {row["key"]: row for row in by_key}
    assert rows["team-a"]["requests"] == 2 and rows["team-a"]["images"] == 3
    by_model = client.get("/v1/admin/usage?group_by=model,provider&key=team-a", headers=ADMIN).json["data"]
    assert {(row["model"], row["provider"], row["images"]) for row in by_model} == {
        ("gemini-2.5-flash-image", "gemini", 1), ("gemini-3-pro-image", "gemini", 2)}
    today = time.strftime("%Y-%m-%d", time.gmtime())
    by_day = client.get(f"/v1/admin/usage?group_by=day&since={today}", headers=ADMIN).json["data"]
    assert by_day[0]["day"] == today and by_day[0]["requests"] == 3
    assert client.get("/v1/admin/usage?until=2000-01-01", headers=ADMIN).json["data"] == []
    assert sum(row["cost_usd"] for row in by_key) == pytest.approx(sum(row["cost_usd"] for row in by_day))


@pytest.mark.parametrize(("query", "field"), [("group_by=colour", "group_by"), ("since=yesterday", "since"),
                                              ("until=2026-01-01T00:00:00", "until")])
def test_admin_usage_refuses_a_bad_parameter_naming_it(client, query, field):
    response = client.get(f"/v1/admin/usage?{query}", headers=ADMIN)
    assert response.status_code == 400 and field in response.json["message"]


def test_a_failed_request_is_in_the_ledger_at_no_cost(client, upstream, database_url):
    upstream.add(responses.POST, GENERATE, status=400, json={"error": {"message": "bad prompt"}})
    key = key_with(client)
    assert generate_as(client, key).status_code == 400
    store = Store(database_url)
    with store.read() as conn:
        row = conn.execute(select(ledger)).mappings().one()
    store.close()
    assert (row["status"], row["n_made"], row["micro_usd"]) == (400, 0, 0)


def test_own_usage_for_a_key_without_a_budget(client, auth, answering):
    client.post("/v1/images/generations", json={"prompt": "x"}, headers=auth)
    usage = own_usage(client, CLIENT_KEY)
    assert usage["budget_usd"] is None and usage["remaining_usd"] is None and usage["spent_usd"] > 0


def test_a_stream_carries_the_rate_limit_headers_too(client, answering):
    key = key_with(client, rpm=3, ipm=9)
    response = client.post("/v1/images/generations", json={"prompt": "x", "stream": True},
                           headers={"Authorization": f"Bearer {key}"})
    assert response.mimetype == "text/event-stream" and b"image_generation.completed" in response.get_data()
    assert (response.headers["x-ratelimit-remaining-requests"], response.headers["x-ratelimit-remaining-images"]) == (
        "2", "8")
