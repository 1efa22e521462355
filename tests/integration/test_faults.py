"""Upstream faults end to end: a gateway under real gunicorn against the emulator told to fail.
For each: the exact status and message, retries bounded as configured, and a worker that
survives (the same workers answer the next request)."""
import time
import uuid

import pytest
import requests

from gateway.errors import NO_IMAGE_MESSAGE
from tests.integration.conftest import emulator_requests, free_port, generate, start_gateway, stop, workers

pytestmark = pytest.mark.integration

TIMEOUT = 3
RETRIES = 2


@pytest.fixture(scope="module")
def faulty(emulator_url, tmp_path_factory):
    """A gateway with a short upstream timeout and a small upstream body limit."""
    process, url = start_gateway(emulator_url, tmp_path_factory.mktemp("faults") / "gateway.log",
                                 WEB_CONCURRENCY="1", UPSTREAM_TIMEOUT=str(TIMEOUT),
                                 UPSTREAM_MAX_RETRIES=str(RETRIES), UPSTREAM_MAX_RESPONSE_BYTES=str(8 * 2**20))
    yield process, url
    stop(process)


FAULTS = [
    # directive, status, message, upstream calls made
    ("fail=429 retry_after=0", 429, "The Gemini API rate limit was reached: emulated failure 429", 3),
    ("fail=500", 502, "The Gemini API failed (HTTP 500): emulated failure 500", 3),
    ("fail=503", 502, "The Gemini API failed (HTTP 503): emulated failure 503", 3),
    ("fail=400", 400, "emulated failure 400", 1),
    ("fail=403", 502, "The Gemini API refused the gateway's credentials (HTTP 403); "
                      "the operator should check GEMINI_API_KEY.", 1),
    ("malformed=1", 502, "The Gemini API returned a malformed response (not JSON).", 3),
    ("reset=1", 502, "Could not reach the Gemini API (ProtocolError).", 3),
    ("truncate=1", 502, "The Gemini API returned an image that cannot be used: the PNG data is truncated.", 3),
    ("bad_base64=1", 502, "The Gemini API returned an image that cannot be used: the image data is not valid base64.",
     3),
    ("not_image=1", 502, "The Gemini API returned an image that cannot be used: "
                         "not a decodable image (UnidentifiedImageError).", 3),
    ("block=SAFETY", 400, "The prompt was blocked by Gemini's safety filters (blockReason: SAFETY).", 1),
    ("finish=IMAGE_SAFETY", 400, "The image was withheld by Gemini's safety filters (finishReason: IMAGE_SAFETY).", 1),
    ("text_only=1", 500, NO_IMAGE_MESSAGE, 1),
    ("huge=20", 502, f"The Gemini API answer is larger than the gateway's limit of {8 * 2**20} bytes "
                     "(UPSTREAM_MAX_RESPONSE_BYTES).", 1),
]


@pytest.mark.parametrize("directive, status, message, calls", FAULTS, ids=[f[0] for f in FAULTS])
def test_upstream_fault_is_mapped_and_the_worker_survives(faulty, emulator_url, directive, status, message, calls):
    master, url = faulty
    before = workers(master.pid)
    prompt = f"fault {uuid.uuid4().hex} [emulator: {directive}]"
    since = time.time()
    response = generate(url, prompt)
    assert response.status_code == status
    assert response.json() == {"error": True, "status": status, "message": message}
    assert len([r for r in emulator_requests(emulator_url, since) if r["prompt"] == prompt]) == calls
    if status == 429:
        assert response.headers["Retry-After"] == "0"
    assert generate(url, "next one").status_code == 200
    assert workers(master.pid) == before


@pytest.mark.parametrize("directive, calls", [("fail=429 times=1", 2), ("fail=500 times=1", 2),
                                              ("fail=503 times=2", 3), ("reset=1 times=1", 2)])
def test_upstream_recovers_within_the_retries(faulty, emulator_url, directive, calls):
    _, url = faulty
    prompt = f"recover {uuid.uuid4().hex} [emulator: {directive}]"
    since = time.time()
    assert generate(url, prompt).status_code == 200
    assert len([r for r in emulator_requests(emulator_url, since) if r["prompt"] == prompt]) == calls


def test_a_hung_upstream_is_a_504_within_the_configured_time(faulty, emulator_url):
    master, url = faulty
    before = workers(master.pid)
    prompt = f"hang {uuid.uuid4().hex} [emulator: delay=30]"
    since = time.time()
    started = time.monotonic()
    response = generate(url, prompt)
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["message"] == f"The Gemini API did not answer within {TIMEOUT} seconds."
    assert elapsed < TIMEOUT + 5  # the timeout works (not a speed target)
    assert len([r for r in emulator_requests(emulator_url, since) if r["prompt"] == prompt]) == 1
    assert generate(url, "after the hang").status_code == 200
    assert workers(master.pid) == before


def test_connection_refused_is_a_502_after_the_retries(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    process, url = start_gateway(closed, tmp_path / "gateway.log", UPSTREAM_MAX_RETRIES=str(RETRIES))
    try:
        response = generate(url, "nobody home")
        assert response.status_code == 502
        assert response.json() == {"error": True, "status": 502,
                                   "message": "Could not reach the Gemini API (ConnectionError)."}
        time.sleep(0.2)
        summary = [line for line in (tmp_path / "gateway.log").read_text().splitlines()
                   if '"message": "request"' in line and '"/v1/images/generations"' in line]
        assert '"upstream_calls": 3' in summary[-1] and '"upstream_retries": 2' in summary[-1]
        assert requests.get(url + "/health", timeout=5).status_code == 200
    finally:
        stop(process)
