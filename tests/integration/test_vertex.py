"""Vertex AI end to end, and failover from the Gemini API to it: the real openai SDK and raw HTTP
against the gateway under gunicorn; the emulator plays both APIs and Google's token endpoint."""
import time

import pytest
import requests

from tests.integration.conftest import (
    UPSTREAM_KEY,
    emulator_requests,
    generate,
    metric,
    ok,
    post_stream,
    read_stream,
    refused,
    sdk_for,
    start_gateway,
    stop,
)
from tests.support import decode, png_bytes

pytestmark = pytest.mark.integration
TIMEOUT = 4


def vertex_env(emulator_url, service_account_file):
    return {"VERTEX_PROJECT": "emulator-project", "VERTEX_LOCATION": "us-central1", "VERTEX_BASE_URL": emulator_url,
            "GOOGLE_APPLICATION_CREDENTIALS": str(service_account_file)}


@pytest.fixture(scope="module")
def vertex_only(emulator_url, service_account_file, tmp_path_factory):
    process, url = start_gateway(emulator_url, tmp_path_factory.mktemp("logs") / "vertex.log", GEMINI_API_KEY="",
                                 **vertex_env(emulator_url, service_account_file))
    yield url
    stop(process)


@pytest.fixture(scope="module")
def gemini_then_vertex(emulator_url, service_account_file, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "failover.log"
    process, url = start_gateway(emulator_url, log, UPSTREAM_TIMEOUT=str(TIMEOUT), GATEWAY_PROVIDERS="gemini,vertex",
                                 GEMINI_API_KEY=UPSTREAM_KEY, **vertex_env(emulator_url, service_account_file),
                                 GATEWAY_BREAKER_FAILURES="0")  # else this module's gemini outages would open it
    yield url, log
    stop(process)


def calls(emulator_url, since, prompt):
    return [r["api"] for r in emulator_requests(emulator_url, since) if r["prompt"] == prompt]


def test_the_sdk_gets_images_from_vertex(vertex_only, emulator_url):
    since = time.time()
    with sdk_for(vertex_only) as client:
        raw = client.images.with_raw_response.generate(prompt="a vertex harbour", size="1792x1024")
        red = png_bytes((64, 48), (255, 0, 0))
        edit = client.images.edit(image=("red.png", red), prompt="a vertex edit", model="nano-banana")
    assert raw.headers["x-gateway-provider"] == "vertex"
    assert decode(raw.parse().data[0].b64_json).size == (2752, 1536)
    assert decode(edit.data[0].b64_json).convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    sent = emulator_requests(emulator_url, since)
    assert [r["api"] for r in sent] == ["vertex", "vertex"]
    assert sent[0]["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}


def test_one_token_serves_many_calls(vertex_only, emulator_url):
    """This module's gateways are the session's only Vertex users, and this one runs first."""
    for index in range(6):
        ok(generate(vertex_only, f"token reuse {index}", n=2))
    issued = requests.get(emulator_url + "/emulator/tokens", timeout=5).json()["issued"]
    assert 1 <= issued <= 2  # one per worker process (WEB_CONCURRENCY=2), however many calls


def test_a_gemini_outage_is_served_by_vertex(gemini_then_vertex, emulator_url):
    url, _ = gemini_then_vertex
    prompt, since = f"outage {time.time()} [emulator: fail=503 only=gemini]", time.time()
    before = requests.get(url + "/metrics", timeout=5).text
    response = generate(url, prompt)
    ok(response)
    assert response.headers["x-gateway-provider"] == "vertex"
    assert calls(emulator_url, since, prompt) == ["gemini", "vertex"]  # one attempt: Vertex can take the call
    after = requests.get(url + "/metrics", timeout=5).text
    labels = {"model": "gemini-3-pro-image", "from_provider": "gemini", "to_provider": "vertex"}
    assert metric(after, "gateway_upstream_failovers_total", **labels) == \
        metric(before, "gateway_upstream_failovers_total", **labels) + 1


def test_a_stream_whose_head_waits_for_the_first_image_names_the_provider_failed_over_to(gemini_then_vertex):
    url, _ = gemini_then_vertex
    response = post_stream(url, f"streamed outage {time.time()} [emulator: fail=503 only=gemini]")
    assert response.status_code == 200 and response.headers["x-gateway-provider"] == "vertex"
    assert [(kind, data["provider"]) for kind, data, _ in read_stream(response)] == [
        ("image_generation.completed", "vertex")]


def test_the_log_shows_the_failover(gemini_then_vertex):
    url, log = gemini_then_vertex
    generate(url, f"logged outage {time.time()} [emulator: fail=429 retry_after=0 only=gemini]")
    time.sleep(0.5)
    text = log.read_text()
    assert "failing over to vertex" in text
    assert '"upstream_attempts": {"gemini": {"upstream_429": 1}, "vertex": {"ok": 1}}' in text


@pytest.mark.parametrize("fault, status", [("fail=400", 400), ("block=SAFETY", 400), ("text_only=1", 500)])
def test_client_errors_and_safety_blocks_do_not_fail_over(gemini_then_vertex, emulator_url, fault, status):
    url, _ = gemini_then_vertex
    prompt, since = f"no failover {time.time()} [emulator: {fault} only=gemini]", time.time()
    refused(generate(url, prompt), status)
    assert calls(emulator_url, since, prompt) == ["gemini"]


def test_a_hung_first_provider_still_answers_within_the_deadline(gemini_then_vertex, emulator_url):
    url, _ = gemini_then_vertex
    prompt, since = f"hung {time.time()} [emulator: delay=30 only=gemini]", time.time()
    started = time.monotonic()
    refused(generate(url, prompt), 504, f"did not answer within {TIMEOUT} seconds")
    assert time.monotonic() - started < TIMEOUT + 1.5
    assert calls(emulator_url, since, prompt) == ["gemini"]
