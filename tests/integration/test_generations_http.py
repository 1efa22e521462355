"""Raw HTTP against the gateway under gunicorn, as curl would send it."""
import base64
import io
import time

import pytest
import requests
from PIL import Image

from tests.integration.conftest import CLIENT_KEY, UPSTREAM_KEY, emulator_requests

pytestmark = pytest.mark.integration


def post_generation(gateway_url, payload, headers):
    """POST exactly `payload` with exactly `headers`."""
    return requests.post(f"{gateway_url}/v1/images/generations", json=payload, headers=headers, timeout=60)


def test_curl_style_request_returns_a_real_png(gateway_url):
    response = post_generation(gateway_url, {"prompt": "a lighthouse", "size": "1024x1024"}, {"x-api-key": CLIENT_KEY})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    png = base64.b64decode(response.json()["data"][0]["b64_json"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert Image.open(io.BytesIO(png)).size == (1024, 1024)


def test_upstream_503_once_is_retried_and_succeeds(gateway_url, emulator_url, auth):
    prompt = f"flaky {time.time()} [emulator: fail=503 times=1]"
    since = time.time()
    response = post_generation(gateway_url, {"prompt": prompt}, auth)
    assert response.status_code == 200
    assert len([r for r in emulator_requests(emulator_url, since) if r["prompt"] == prompt]) == 2


def test_partial_failure_returns_the_images_made(gateway_url, auth):
    prompt = f"half {time.time()} [emulator: fail=400 times=1]"
    response = post_generation(gateway_url, {"prompt": prompt, "n": 2}, auth)
    assert response.status_code == 200
    assert len(response.json()["data"]) == 1
    assert response.headers["x-gateway-images-failed"] == "1"


@pytest.mark.parametrize("directive, status, words", [
    ("block=SAFETY", 400, "blockReason: SAFETY"),
    ("finish=IMAGE_SAFETY", 400, "finishReason: IMAGE_SAFETY"),
    ("fail=503", 502, "HTTP 503"),
    ("malformed=1", 502, "not JSON"),
    ("truncate=1", 502, "truncated"),
])
def test_upstream_trouble_is_a_json_error(gateway_url, auth, directive, status, words):
    response = post_generation(gateway_url, {"prompt": f"trouble [emulator: {directive}]"}, auth)
    assert response.status_code == status
    body = response.json()
    assert body["error"] is True and body["status"] == status and words in body["message"]
    assert UPSTREAM_KEY not in response.text


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/v1/images/generations", 405),
    ("POST", "/v1/nothing-here", 404),
    ("GET", "/nothing-here", 404),
    ("POST", "/", 405),  # the playground page only answers GET
])
def test_routing_errors_are_json(gateway_url, method, path, status):
    response = requests.request(method, gateway_url + path, timeout=10)
    assert response.status_code == status
    assert response.json()["status"] == status and response.json()["error"] is True


def test_oversize_body_is_a_413_json_error(gateway_url, auth):
    response = requests.post(f"{gateway_url}/v1/images/generations", data=b"x" * (52428800 + 1),
                             headers={**auth, "Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 413
    assert response.json()["status"] == 413


def test_health(gateway_url):
    providers = requests.get(gateway_url + "/health", timeout=5).json()["providers"]
    assert providers == {"gemini": {"configured": True}, "vertex": {"configured": False},
                         "openai": {"configured": False}, "openrouter": {"configured": False}}


def test_no_key_or_prompt_ever_appears_in_the_gateway_log(gateway_url, gateway_log, auth):
    post_generation(gateway_url, {"prompt": "a secret-shaped prompt"}, auth)
    log = gateway_log.read_text()
    assert CLIENT_KEY not in log and UPSTREAM_KEY not in log
    assert "secret-shaped" not in log
