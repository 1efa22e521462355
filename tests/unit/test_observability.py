"""Request ids, the per-request JSON log line, metrics, and proxy headers."""
import dataclasses
import json

import pytest
import responses
from prometheus_client import REGISTRY

from gateway import create_app
from gateway.auth import key_id
from gateway.config import Settings
from tests.conftest import CLIENT_KEY, UPSTREAM_KEY
from tests.support import GENERATE, gemini_answer, generate, metric


def test_a_request_id_is_generated_and_returned(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    request_id = generate(client, auth).headers["X-Request-ID"]
    assert len(request_id) == 32 and int(request_id, 16) >= 0


def test_a_valid_client_request_id_is_kept(client):
    assert client.get("/health", headers={"X-Request-ID": "abc-123_x.y:z"}).headers["X-Request-ID"] == "abc-123_x.y:z"


@pytest.mark.parametrize("unsafe", ["has space", "x" * 129, "new\\nline", "quote\""])
def test_an_unsafe_client_request_id_is_replaced(client, unsafe):
    returned = client.get("/health", headers={"X-Request-ID": unsafe}).headers["X-Request-ID"]
    assert returned != unsafe and len(returned) == 32


def test_errors_carry_the_request_id_too(client):
    response = client.get("/nope", headers={"X-Request-ID": "lost-1"})
    assert response.status_code == 404 and response.headers["X-Request-ID"] == "lost-1"


def test_one_structured_line_per_request_without_secrets(client, auth, upstream, json_lines):
    upstream.add(responses.POST, GENERATE, status=503)
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    response = generate(client, {**auth, "X-Request-ID": "req-42"}, n=1, user="end-user-9")
    assert response.status_code == 200
    lines = [line for line in json_lines() if line["message"] == "request"]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "req-42"
    assert {k: line[k] for k in ("method", "path", "status", "model", "n", "user", "images",
                                 "upstream_calls", "upstream_retries")} == {
        "method": "POST", "path": "/v1/images/generations", "status": 200, "model": "gemini-3-pro-image",
        "n": 1, "user": "end-user-9", "images": 1, "upstream_calls": 2, "upstream_retries": 1}
    assert isinstance(line["duration_ms"], float)
    everything = json.dumps(json_lines())
    assert CLIENT_KEY not in everything and UPSTREAM_KEY not in everything
    assert "a quiet harbour" not in everything
    assert all(entry["request_id"] == "req-42" for entry in json_lines() if entry["logger"].startswith("gateway"))


def test_fan_out_threads_log_with_the_request_id(client, auth, upstream, json_lines):
    upstream.add(responses.POST, GENERATE, status=503)
    for _ in range(3):
        upstream.add(responses.POST, GENERATE, json=gemini_answer())
    generate(client, {**auth, "X-Request-ID": "fan-7"}, n=3)
    retry_lines = [line for line in json_lines() if "retrying" in line["message"]]
    assert retry_lines and all(line["request_id"] == "fan-7" for line in retry_lines)
    (summary,) = [line for line in json_lines() if line["message"] == "request"]
    assert (summary["upstream_calls"], summary["upstream_retries"], summary["images"]) == (4, 1, 3)


def test_key_id_is_a_short_hash_and_differs_per_key(client, upstream, json_lines):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    client.post("/v1/images/generations", json={"prompt": "x"}, headers={"x-api-key": CLIENT_KEY})
    client.post("/v1/images/generations", json={"prompt": "x"}, headers={"x-api-key": "second-client-key"})
    ids = [line["key_id"] for line in json_lines() if line["message"] == "request"]
    assert len(ids) == 2 and ids[0] != ids[1] and all(len(i) == 12 for i in ids)


def test_metrics_count_requests_upstream_calls_images_and_tokens(client, auth, upstream):
    def samples():
        text = client.get("/metrics").get_data(as_text=True)
        return (metric(text, "gateway_requests_total", endpoint="/v1/images/generations", status="200"),
                metric(text, "gateway_upstream_calls_total", model="gemini-3-pro-image", outcome="upstream_503",
                       provider="gemini"),
                metric(text, "gateway_upstream_retries_total", model="gemini-3-pro-image", provider="gemini"),
                metric(text, "gateway_images_generated_total", model="gemini-3-pro-image"),
                metric(text, "gateway_tokens_total", kind="output", model="gemini-3-pro-image"))

    before = samples()
    upstream.add(responses.POST, GENERATE, status=503)
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    assert generate(client, auth).status_code == 200
    after = samples()
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1, 1290]


def test_metrics_content_type_is_prometheus_text_with_one_charset(client):
    content_type = client.get("/metrics").headers["Content-Type"]
    assert content_type.startswith("text/plain; version=") and content_type.count("charset") == 1


def test_the_log_line_of_a_client_error_says_why(client, auth, json_lines):
    generate(client, auth, prompt="")
    (line,) = [line for line in json_lines() if line["message"] == "request"]
    assert (line["status"], line["error"]) == (400, "Invalid request parameters: prompt: must not be empty")


def test_the_log_line_quotes_a_long_error_message_cut_short(client, auth, upstream, json_lines):
    upstream.add(responses.POST, GENERATE, status=400, json={"error": {"code": 400, "message": "no " * 400}})
    generate(client, auth)
    (line,) = [line for line in json_lines() if line["message"] == "request"]
    assert line["status"] == 400 and len(line["error"]) == 303 and line["error"].endswith("...")


def test_the_log_line_of_a_success_has_no_error(client, auth, upstream, json_lines):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    generate(client, auth)
    (line,) = [line for line in json_lines() if line["message"] == "request"]
    assert line["status"] == 200 and "error" not in line


def test_trusted_proxies_take_the_client_address_from_x_forwarded_for(settings, upstream, json_lines):
    app = create_app(dataclasses.replace(settings, trusted_proxies=1))
    app.test_client().get("/v1/nothing", headers={"X-Forwarded-For": "203.0.113.7"})
    (line,) = [line for line in json_lines() if line["message"] == "request"]
    assert line["client"] == "203.0.113.7"


def test_without_trusted_proxies_x_forwarded_for_is_ignored(client, json_lines):
    client.get("/v1/nothing", headers={"X-Forwarded-For": "203.0.113.7"})
    (line,) = [line for line in json_lines() if line["message"] == "request"]
    assert line["client"] == "127.0.0.1"


def test_named_keys_are_read_and_bare_keys_keep_no_name():
    settings = Settings.from_env({"GATEWAY_API_KEYS": "alice:key-of-alice-123, bare-key-456 ,ops.team-1:k2"})
    assert settings.api_keys == ("key-of-alice-123", "bare-key-456", "k2")
    assert settings.client_names == {"key-of-alice-123": "alice", "k2": "ops.team-1"}


def test_cost_is_counted_per_client_model_and_provider_and_logged(settings, auth, upstream, json_lines):
    named = dataclasses.replace(settings, client_names={CLIENT_KEY: "alice"})
    labels = {"client": "alice", "model": "gemini-2.5-flash-image", "provider": "gemini"}
    before = REGISTRY.get_sample_value("gateway_cost_usd_total", labels) or 0
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    generate(create_app(named).test_client(), auth, model="nano-banana")
    assert REGISTRY.get_sample_value("gateway_cost_usd_total", labels) == pytest.approx(before + 0.039003)
    (line,) = [line for line in json_lines() if line["message"] == "request"]
    assert (line["key_name"], line["cost_usd"]) == ("alice", 0.039003)


def test_a_bare_key_is_named_from_its_hash_never_by_itself(client, auth, upstream, json_lines):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    generate(client, auth)
    (line,) = [line for line in json_lines() if line["message"] == "request"]
    assert line["key_name"] == f"key-{line['key_id']}" and CLIENT_KEY not in line["key_name"]


def test_requests_images_and_tokens_are_counted_per_client_name(settings, auth, upstream):
    client = create_app(dataclasses.replace(settings, client_names={CLIENT_KEY: "alice"})).test_client()
    upstream.add(responses.POST, GENERATE, json=gemini_answer())

    def counts():
        text = client.get("/metrics").get_data(as_text=True)
        return (metric(text, "gateway_requests_total", client="alice", status="200"),
                metric(text, "gateway_images_generated_total", client="alice"),
                metric(text, "gateway_tokens_total", client="alice", kind="output"))

    before = counts()
    generate(client, auth)
    assert [a - b for a, b in zip(counts(), before, strict=True)] == [1, 1, 1290]


def test_a_wrong_key_is_counted_as_anonymous_never_by_what_it_sent(client):
    client.post("/v1/images/generations", json={"prompt": "x"}, headers={"Authorization": "Bearer made-up-key-77"})
    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, "gateway_requests_total", client="-", status="401") >= 1
    assert "made-up" not in text and key_id("made-up-key-77") not in text
