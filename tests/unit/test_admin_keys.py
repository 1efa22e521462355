"""Managed keys through the admin API, and static keys' policies, on SQLite and PostgreSQL."""
import dataclasses
import hashlib
import threading
import time

import pytest
import responses

from gateway import create_app, keys
from gateway.config import ConfigError
from gateway.shared import Outage
from tests.conftest import CLIENT_KEY, REDIS_URL
from tests.support import ADMIN, ADMIN_KEY, GENERATE, gemini_answer
from tests.support import create_key as create
from tests.support import generate_as as generate

pytestmark = pytest.mark.both_stores  # every test on SQLite and on PostgreSQL


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, admin_key=ADMIN_KEY)


def test_create_shows_the_secret_once_and_it_works_at_once(client, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    created = create(client, rpm=10, budget_usd=5, budget_period="month", models=["nano-banana"])
    assert created.status_code == 201
    body = created.json
    assert set(body) == {"name", "key", "created_at", "rpm", "ipm", "max_concurrent", "budget_usd",
                         "budget_period", "models", "expires_at"}
    assert body["key"].startswith("sk-gw-") and len(body["key"]) > 40
    assert (body["rpm"], body["budget_usd"], body["models"]) == (10, 5.0, ["gemini-2.5-flash-image"])
    assert generate(client, body["key"], model="nano-banana").status_code == 200


def test_list_and_get_never_show_a_secret_or_its_hash(client):
    secret = create(client, ipm=5).json["key"]
    listed = client.get("/v1/admin/keys", headers=ADMIN)
    one = client.get("/v1/admin/keys/team-a", headers=ADMIN)
    assert listed.status_code == one.status_code == 200
    for text in (listed.get_data(as_text=True), one.get_data(as_text=True)):
        assert secret not in text and hashlib.sha256(secret.encode()).hexdigest() not in text
    names = {key["name"]: key for key in listed.json["data"]}
    assert names["team-a"]["source"] == "managed" and names["team-a"]["ipm"] == 5
    assert names["team-a"]["revoked"] is False and names["team-a"]["spent_usd"] == 0
    assert any(key["source"] == "static" for key in listed.json["data"])
    assert one.json["name"] == "team-a"


def test_admin_api_is_a_404_without_an_admin_key(client, database_url, settings):
    app = create_app(dataclasses.replace(settings, admin_key=""))
    response = app.test_client().get("/v1/admin/keys", headers=ADMIN)
    app.config["STORE"].close()
    assert response.status_code == 404 and response.json["error"] is True


def test_a_client_key_is_refused_on_the_admin_api_and_the_admin_key_on_images(client):
    assert client.get("/v1/admin/keys", headers={"Authorization": f"Bearer {CLIENT_KEY}"}).status_code == 401
    assert client.get("/v1/admin/keys").status_code == 401
    assert generate(client, ADMIN_KEY).status_code == 401


def test_an_existing_name_is_a_409_static_names_included(client):
    assert create(client).status_code == 201
    again = create(client)
    assert again.status_code == 409 and "team-a" in again.json["message"]
    static = client.get("/v1/admin/keys", headers=ADMIN).json["data"]
    static_name = next(key["name"] for key in static if key["source"] == "static")
    assert create(client, static_name).status_code == 409


def test_two_workers_creating_one_name_at_once_give_one_201_and_one_409(app, settings):
    other = create_app(settings)  # a second worker on the same database
    clients, statuses, start = [app.test_client(), other.test_client()], [], threading.Barrier(2)

    def race(client):
        start.wait()
        statuses.append(create(client, "racer").status_code)

    threads = [threading.Thread(target=race, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.config["STORE"].close()
    assert sorted(statuses) == [201, 409]


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("rpm", "10", "Not a valid integer"),
    ("rpm", 1.5, "Not a valid integer"),
    ("rpm", True, "Not a valid integer"),
    ("ipm", -1, "between 1 and"),
    ("max_concurrent", 0, "between 1 and"),
    ("rpm", 10**12, "between 1 and"),
    ("budget_usd", -0.01, "between 0 and"),
    ("budget_usd", "5", "Not a valid number"),
    ("budget_usd", float("nan"), "Not a valid number"),
    ("budget_usd", float("inf"), "Not a valid number"),
    ("budget_usd", 1e300, "between 0 and"),
    ("budget_period", "week", "must be one of: day, month, total"),
    ("models", ["no-such-model"], "unknown model"),
    ("models", [], "between 1 and 100"),
    ("expires_at", "tomorrow", "Not a valid datetime"),
    ("expires_at", "2030-01-01T00:00:00", "Not a valid aware datetime"),
    ("colour", "blue", "Unknown field"),
])
def test_a_wrong_policy_field_is_a_400_naming_it(client, field, value, reason):
    response = create(client, **{field: value})
    assert response.status_code == 400, response.json
    assert field in response.json["message"] and reason in response.json["message"], response.json["message"]


@pytest.mark.parametrize("name", ["", "has space", "a/b", "x" * 65, "naïve", "a\nb"])
def test_a_name_outside_the_pattern_is_a_400(client, name):
    response = create(client, name)
    assert response.status_code == 400 and "name" in response.json["message"]


def test_patch_changes_a_policy_and_null_clears_a_field(client, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    secret = create(client, rpm=1, ipm=10).json["key"]
    assert generate(client, secret).status_code == 200
    assert generate(client, secret).status_code == 429
    changed = client.patch("/v1/admin/keys/team-a", json={"rpm": None, "budget_usd": 2}, headers=ADMIN)
    assert changed.status_code == 200
    assert (changed.json["rpm"], changed.json["ipm"], changed.json["budget_usd"]) == (None, 10, 2.0)
    assert changed.json["budget_period"] == "total"
    time.sleep(0.6)  # past the key cache
    assert generate(client, secret).status_code == 200


def test_patch_and_delete_of_unknown_or_static_keys(client):
    assert client.patch("/v1/admin/keys/nobody", json={"rpm": 1}, headers=ADMIN).status_code == 404
    assert client.delete("/v1/admin/keys/nobody", headers=ADMIN).status_code == 404
    static = next(key["name"] for key in client.get("/v1/admin/keys", headers=ADMIN).json["data"])
    assert client.delete(f"/v1/admin/keys/{static}", headers=ADMIN).status_code == 409
    assert client.patch("/v1/admin/keys/nobody", json={"rpm": "x"}, headers=ADMIN).status_code == 404


def test_a_revoked_key_is_refused_by_every_worker_within_a_second(app, settings, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    other = create_app(settings)  # another worker, which has the key in its cache
    secret = create(app.test_client()).json["key"]
    assert generate(other.test_client(), secret).status_code == 200
    revoked = app.test_client().delete("/v1/admin/keys/team-a", headers=ADMIN)
    assert revoked.status_code == 200 and revoked.json["revoked"] is True
    time.sleep(1.0)
    refused = generate(other.test_client(), secret)
    other.config["STORE"].close()
    assert refused.status_code == 401 and "revoked" in refused.json["message"]


def test_an_expired_key_is_a_401_saying_so(client):
    secret = create(client, expires_at="2020-01-01T00:00:00Z").json["key"]
    refused = generate(client, secret)
    assert refused.status_code == 401 and "expired at 2020-01-01T00:00:00Z" in refused.json["message"]


def test_a_model_outside_the_keys_models_is_a_403(client, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    secret = create(client, models=["gemini-2.5-flash-image"]).json["key"]
    refused = generate(client, secret, model="gemini-3-pro-image")
    assert refused.status_code == 403 and "gemini-2.5-flash-image" in refused.json["message"]
    assert generate(client, secret, model="nano-banana").status_code == 200
    assert len(upstream.calls) == 1


def test_a_restart_keeps_keys_and_policies(app, settings, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    secret = create(app.test_client(), rpm=7).json["key"]
    app.config["STORE"].close()
    restarted = create_app(settings)
    assert generate(restarted.test_client(), secret).status_code == 200
    assert restarted.test_client().get("/v1/admin/keys/team-a", headers=ADMIN).json["rpm"] == 7
    restarted.config["STORE"].close()


def test_static_keys_take_policies_from_gateway_key_policies(settings, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    app = create_app(dataclasses.replace(settings, client_names={CLIENT_KEY: "ci"},
                                         key_policies={"ci": {"rpm": 1, "models": ["nano-banana-pro"]}}))
    client = app.test_client()
    assert generate(client, CLIENT_KEY).status_code == 200
    refused = generate(client, CLIENT_KEY)
    usage = client.get("/v1/usage", headers={"Authorization": f"Bearer {CLIENT_KEY}"}).json
    app.config["STORE"].close()
    assert refused.status_code == 429
    assert (usage["name"], usage["rpm"], usage["models"]) == ("ci", 1, ["gemini-3-pro-image"])


@pytest.mark.parametrize(("policies", "named"), [
    ({"nobody": {"rpm": 1}}, "nobody"),
    ({"ci": {"rpm": -1}}, "ci: rpm"),
    ({"ci": {"budget_usd": "a lot"}}, "ci: budget_usd"),
    ({"ci": {"speed": 1}}, "ci: speed"),
    ({"ci": {"models": ["dall-e-9"]}}, "ci: models[0]"),
    (["ci"], "JSON object"),
])
def test_a_wrong_gateway_key_policies_stops_the_start_naming_the_entry(settings, policies, named):
    with pytest.raises(ConfigError, match="GATEWAY_KEY_POLICIES") as error:
        create_app(dataclasses.replace(settings, client_names={CLIENT_KEY: "ci"}, key_policies=policies))
    assert named in str(error.value)


def test_the_admin_key_may_not_also_be_a_client_key(settings):
    with pytest.raises(ConfigError, match="GATEWAY_ADMIN_KEY"):
        create_app(dataclasses.replace(settings, admin_key=CLIENT_KEY))


@pytest.fixture
def workers(settings):
    """A function that starts two workers (or instances) sharing the database and a Redis, stopped
    after the test."""
    apps = []

    def start(redis_url, redis_prefix="gateway"):
        shared = dataclasses.replace(settings, redis_url=redis_url, redis_prefix=redis_prefix)
        apps.extend(create_app(shared) for _ in range(2))
        return [app.test_client() for app in apps]

    yield start
    for app in apps:
        app.config["STORE"].close()


@pytest.fixture
def two_workers(workers, redis_prefix, monkeypatch):
    """Two workers whose caches would keep a key's row for a minute: only a change heard through
    Redis makes them forget it sooner."""
    monkeypatch.setattr(keys, "CACHE_SECONDS", 60)
    return workers(REDIS_URL, redis_prefix)


def test_with_redis_a_key_revoked_on_one_worker_is_refused_by_the_others_at_once(two_workers, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    admin, other = two_workers
    secret = create(admin).json["key"]
    assert generate(other, secret).status_code == 200
    assert admin.delete("/v1/admin/keys/team-a", headers=ADMIN).json["revoked"] is True
    refused = generate(other, secret)
    assert refused.status_code == 401 and "revoked" in refused.json["message"]


def test_with_redis_a_changed_policy_applies_on_the_other_workers_at_once(two_workers, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    admin, other = two_workers
    secret = create(admin).json["key"]
    assert generate(other, secret).status_code == 200
    assert admin.patch("/v1/admin/keys/team-a", json={"models": ["nano-banana"]}, headers=ADMIN).status_code == 200
    assert generate(other, secret).status_code == 403


def test_while_redis_is_away_a_change_is_seen_within_the_cache_seconds_then_at_once_again(
        workers, upstream, own_redis, monkeypatch, json_lines):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    url, servers, start = own_redis
    monkeypatch.setattr(Outage, "RETRY_SECONDS", 0.2)
    monkeypatch.setattr(keys, "CACHE_SECONDS", 1.0)
    admin, other = workers(url)
    secret = create(admin).json["key"]
    assert generate(other, secret).status_code == 200
    servers[0].kill()
    servers[0].wait()
    assert admin.patch("/v1/admin/keys/team-a", json={"models": ["nano-banana"]}, headers=ADMIN).status_code == 200
    assert generate(other, secret).status_code == 200  # its cached row, not yet expired
    time.sleep(1.0)
    assert generate(other, secret).status_code == 403
    messages = [line["message"] for line in json_lines()]
    assert any("the change to the key team-a is seen elsewhere within 1s" in message for message in messages)
    assert len([message for message in messages if "a managed key changed elsewhere" in message]) == 1
    servers.append(start())
    time.sleep(0.25)
    assert generate(other, secret, model="nano-banana").status_code == 200  # heard through Redis again
    admin.delete("/v1/admin/keys/team-a", headers=ADMIN)
    assert generate(other, secret, model="nano-banana").status_code == 401
