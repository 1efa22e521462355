"""Keys, limits and budgets under real gunicorn (two workers), on the default SQLite file and on
PostgreSQL: bursts never pass a limit or a budget, refused requests never reach the emulator,
and the ledger has a row per request."""
import time
import uuid

import pytest
import requests

from tests.integration.conftest import PRO_1K, burst, emulator_requests, new_key, settled_usage, start_gateway, stop
from tests.support import ADMIN, ADMIN_KEY

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def keyed(request, emulator_url, tmp_path_factory):
    """A gateway with the admin API on, two workers, on each store."""
    env = {"GATEWAY_ADMIN_KEY": ADMIN_KEY, "WEB_CONCURRENCY": "2"}
    if request.param == "postgres":
        env["GATEWAY_DATABASE_URL"] = request.getfixturevalue("postgres_database")
    process, url = start_gateway(emulator_url, tmp_path_factory.mktemp("keys") / "gateway.log", **env)
    yield url
    stop(process)


def test_a_burst_across_workers_gets_exactly_the_rpm(keyed, emulator_url):
    _, key = new_key(keyed, rpm=5)
    prompt, since = f"rpm burst {uuid.uuid4()}", time.time()
    responses = burst(keyed, key, 20, prompt)
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * 5 + [429] * 15
    refused = next(response for response in responses if response.status_code == 429)
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert len([r for r in emulator_requests(emulator_url, since) if prompt in r.get("prompt", "")]) == 5


def test_a_burst_across_workers_never_spends_past_the_budget(keyed, emulator_url):
    name, key = new_key(keyed, budget_usd=0.5)  # three 1K images of gemini-3-pro-image
    prompt, since = f"budget burst {uuid.uuid4()}", time.time()
    statuses = sorted(response.status_code for response in burst(keyed, key, 12, prompt))
    assert statuses == [200] * 3 + [429] * 9
    assert len([r for r in emulator_requests(emulator_url, since) if prompt in r.get("prompt", "")]) == 3
    usage = settled_usage(keyed, key, 3 * PRO_1K)
    assert 3 * PRO_1K <= usage["spent_usd"] <= 0.5
    ledger = requests.get(f"{keyed}/v1/admin/usage?key={name}", headers=ADMIN, timeout=10).json()["data"]
    assert (ledger[0]["requests"], ledger[0]["images"], ledger[0]["cost_usd"]) == (3, 3, usage["spent_usd"])
