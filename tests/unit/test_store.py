"""The database: its migrations, the release-phase command, and what requests do while it is down."""
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import responses
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from gateway import create_app
from gateway.config import Settings
from gateway.store import Store, engine_url, metadata
from tests.conftest import CLIENT_KEY, STORES
from tests.support import gemini_answer, metric
from tests.unit.conftest import GENERATE

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE = "postgresql://postgres@127.0.0.1:9/nowhere"  # the discard port: refused at once


@pytest.mark.parametrize("store_name", STORES)
def test_the_migrations_build_exactly_the_tables_the_code_uses(request, store_name):
    store = Store(request.getfixturevalue(f"{store_name}_url"))
    with store.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    store.close()
    assert differences == []


def test_the_release_command_creates_the_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh' / 'gateway.db'}"
    done = subprocess.run([sys.executable, "-m", "gateway.store", "upgrade"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "GATEWAY_DATABASE_URL": url}, timeout=60)
    assert done.returncode == 0, done.stderr
    store = Store(url)
    assert {"api_keys", "ledger", "spend"} <= set(inspect(store.engine).get_table_names())
    store.close()


@pytest.mark.parametrize(("environ", "url"), [
    ({}, "sqlite:///var/gateway.db"),
    ({"DATABASE_URL": "postgres://u:p@db/app"}, "postgres://u:p@db/app"),
    ({"DATABASE_URL": "postgres://u:p@db/app", "GATEWAY_DATABASE_URL": "sqlite:///x.db"}, "sqlite:///x.db"),
])
def test_the_database_url_comes_from_gateway_database_url_then_database_url(environ, url):
    assert Settings.from_env(environ).database_url == url


def test_herokus_postgres_scheme_means_psycopg():
    assert engine_url("postgres://u:p@db/app") == "postgresql+psycopg://u:p@db/app"
    assert engine_url("postgresql://u@db/app") == "postgresql+psycopg://u@db/app"


@pytest.fixture
def database_down(settings, caplog):
    """An app whose database cannot be reached, started all the same."""
    def start(**changes):
        app = create_app(dataclasses.replace(settings, database_url=UNREACHABLE, **changes))
        return app.test_client()
    return start


def test_a_static_key_without_a_budget_keeps_working_while_the_database_is_down(database_down, auth, upstream,
                                                                                  caplog):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    client = database_down()
    assert "the database cannot be reached" in caplog.text
    assert client.post("/v1/images/generations", json={"prompt": "x"}, headers=auth).status_code == 200


def test_a_key_with_a_budget_is_a_503_while_the_database_is_down_unless_it_fails_open(database_down, auth,
                                                                                      upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    policies = {"client_names": {CLIENT_KEY: "ci"}, "key_policies": {"ci": {"budget_usd": 5}}}
    refused = database_down(**policies).post("/v1/images/generations", json={"prompt": "x"}, headers=auth)
    assert refused.status_code == 503 and "budget" in refused.json["message"]
    assert len(upstream.calls) == 0
    served = database_down(**policies, budget_fail_open=True).post(
        "/v1/images/generations", json={"prompt": "x"}, headers=auth)
    assert served.status_code == 200


def test_rate_limits_count_per_process_while_the_database_is_down(database_down, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    client = database_down(client_names={CLIENT_KEY: "ci"}, key_policies={"ci": {"rpm": 1}})
    before = metric(client.get("/metrics").get_data(as_text=True), "gateway_limiter_errors_total")
    statuses = [client.post("/v1/images/generations", json={"prompt": "x"}, headers=auth).status_code
                for _ in range(2)]
    assert statuses == [200, 429]
    assert metric(client.get("/metrics").get_data(as_text=True), "gateway_limiter_errors_total") > before


def test_a_managed_key_is_a_503_while_the_database_is_down(database_down):
    client = database_down(admin_key="admin-key-0123456789abcdef")
    refused = client.post("/v1/images/generations", json={"prompt": "x"},
                          headers={"Authorization": "Bearer sk-gw-not-a-static-key"})
    assert refused.status_code == 503 and "database" in refused.json["message"]


def test_not_ready_until_the_database_was_reached_once(database_down):
    refused = database_down().get("/health/ready")
    assert refused.status_code == 503 and "database has not been reached since start" in refused.json["message"]
    assert "9" not in refused.json["message"].split("(")[-1]  # the reason names the setting, not the address


def test_ready_names_a_database_that_fails_after_start(client, app, auth, upstream, monkeypatch):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    assert client.get("/health/ready").json["database"] == "ok"
    monkeypatch.setitem(app.config["ACCOUNTS"].down_until, "database", float("inf"))
    answer = client.get("/health/ready")
    assert answer.status_code == 200 and answer.json["database"] == "unreachable"
