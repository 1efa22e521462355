"""The drain on SIGTERM under real gunicorn (two workers) against the emulator: readiness turns
503 at once on every worker, a new request is still served during GATEWAY_DRAIN_SECONDS, a
request and an event stream in flight finish, then the process exits with every request's ledger
row written."""
import signal
import threading
import time

import pytest
import requests
from sqlalchemy import func, select

from gateway.store import Store, ledger
from tests.integration.conftest import (
    generate,
    in_flight,
    post_stream,
    read_stream,
    refused,
    start_gateway,
    stop,
    until,
)

pytestmark = pytest.mark.integration

DRAIN = 2.5  # seconds; the in-flight calls take 4 s, so they outlast the drain and finish during the stop
SLOW = "[emulator: delay=4]"


@pytest.fixture
def draining_gateway(emulator_url, tmp_path):
    process, url = start_gateway(emulator_url, tmp_path / "gateway.log", GATEWAY_DRAIN_SECONDS=str(DRAIN))
    yield process, url
    if process.poll() is None:
        stop(process)


def answer(response):
    """(status, text) of a response, which is dropped with its connection as a client that is done does."""
    return response.status_code, response.text


def read_whole_stream(url, prompt):
    """The stream's events; its connection closed after, as a client that is done does."""
    with post_stream(url, prompt) as response:
        return read_stream(response)


def in_background(results, name, call):
    thread = threading.Thread(target=lambda: results.__setitem__(name, call()))
    thread.start()
    return thread


def test_sigterm_drains_finishes_in_flight_work_then_exits(draining_gateway, tmp_path):
    process, url = draining_gateway
    results = {}
    threads = [
        in_background(results, "request", lambda: answer(generate(url, f"finish after the drain {SLOW}"))),
        in_background(results, "stream", lambda: read_whole_stream(url, f"stream through the drain {SLOW}")),
    ]
    assert until(lambda: in_flight(url) == 2, 5), "the two slow calls did not start"
    process.send_signal(signal.SIGTERM)
    terminated = time.monotonic()

    assert until(lambda: requests.get(url + "/health/ready", timeout=5).status_code == 503, 1)
    for _ in range(4):  # new connections, taken by either worker
        refused(requests.get(url + "/health/ready", timeout=5), 503, "draining before shutdown")
        assert requests.get(url + "/health/live", timeout=5).status_code == 200
    during = generate(url, "a new request during the drain")
    assert (during.status_code, during.headers["Connection"]) == (200, "close")
    assert time.monotonic() - terminated < DRAIN, "the checks above took longer than the drain"

    for thread in threads:
        thread.join(timeout=30)
    assert results["request"][0] == 200, results["request"][1][:2000]
    assert results["stream"][-1][0] == "image_generation.completed"
    assert process.wait(timeout=30) == 0
    assert time.monotonic() - terminated >= DRAIN
    store = Store(f"sqlite:///{tmp_path / 'gateway.db'}")  # start_gateway's database, next to its log
    with store.read() as conn:
        assert conn.scalar(select(func.count()).select_from(ledger)) == 3  # queued rows are written at exit
    store.close()
