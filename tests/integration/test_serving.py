"""Production behaviour under real gunicorn: metrics across workers, request ids and JSON logs,
the in-flight bound, graceful shutdown, and clients that hang up."""
import json
import re
import signal
import socket
import threading
import time

import pytest
import requests

from tests.integration.conftest import CLIENT_KEY, UPSTREAM_KEY, generate, metric, start_gateway, stop

pytestmark = pytest.mark.integration


def test_metrics_are_summed_over_all_workers(gateway_url):
    before = requests.get(gateway_url + "/metrics", timeout=10).text
    for index in range(6):
        assert generate(gateway_url, f"metrics {index}").status_code == 200
    after = requests.get(gateway_url + "/metrics", timeout=10).text
    served = (metric(after, "gateway_requests_total", endpoint="/v1/images/generations", status="200")
              - metric(before, "gateway_requests_total", endpoint="/v1/images/generations", status="200"))
    assert served == 6
    labels = {"model": "gemini-3-pro-image", "provider": "gemini", "outcome": "ok"}
    ok_calls = metric(after, "gateway_upstream_calls_total", **labels) - metric(before, "gateway_upstream_calls_total",
                                                                                **labels)
    assert ok_calls == 6
    assert metric(after, "gateway_images_generated_total", model="gemini-3-pro-image") >= 6
    assert metric(after, "gateway_tokens_total", model="gemini-3-pro-image", kind="output") > 0


def test_request_id_is_returned_and_logged_as_json(gateway_url, gateway_log):
    response = generate(gateway_url, "a logged lighthouse", user="end-user-7")
    request_id = response.headers["X-Request-ID"]
    assert len(request_id) == 32
    time.sleep(0.2)
    lines = [json.loads(line) for line in gateway_log.read_text().splitlines() if line.startswith("{")]
    (entry,) = [e for e in lines if e.get("request_id") == request_id and e["message"] == "request"]
    assert entry["status"] == 200 and entry["path"] == "/v1/images/generations"
    assert entry["model"] == "gemini-3-pro-image" and entry["n"] == 1 and entry["user"] == "end-user-7"
    assert entry["upstream_calls"] == 1 and entry["upstream_retries"] == 0 and entry["images"] == 1
    assert len(entry["key_id"]) == 12 and entry["key_id"] not in CLIENT_KEY
    text = gateway_log.read_text()
    assert "a logged lighthouse" not in text and CLIENT_KEY not in text and UPSTREAM_KEY not in text


def test_a_client_request_id_is_kept(gateway_url):
    traced = requests.get(gateway_url + "/health", headers={"X-Request-ID": "trace-abc.123"}, timeout=5)
    assert traced.headers["X-Request-ID"] == "trace-abc.123"


def test_retries_are_counted_in_the_log_line(gateway_url, gateway_log):
    response = generate(gateway_url, f"flaky {time.time()} [emulator: fail=503 times=2]")
    request_id = response.headers["X-Request-ID"]
    time.sleep(0.2)
    entries = [json.loads(line) for line in gateway_log.read_text().splitlines() if request_id in line]
    assert any("retrying" in e["message"] for e in entries)  # the provider's line carries the request id
    (summary,) = [e for e in entries if e["message"] == "request"]
    assert (summary["upstream_calls"], summary["upstream_retries"]) == (3, 2)


@pytest.fixture
def own_gateway(emulator_url, tmp_path):
    """A gateway of this test's own, so it can be stopped or squeezed."""
    started = []

    def launch(**env):
        process, url = start_gateway(emulator_url, tmp_path / "gateway.log", **env)
        started.append(process)
        return process, url

    yield launch
    for process in started:
        if process.poll() is None:
            stop(process)


def test_in_flight_bound_turns_excess_into_503(own_gateway):
    _, url = own_gateway(WEB_CONCURRENCY="1", UPSTREAM_MAX_IN_FLIGHT="1", UPSTREAM_QUEUE_TIMEOUT="0.5")
    slow = threading.Thread(target=generate, args=(url, "hold [emulator: delay=3]"))
    slow.start()
    time.sleep(0.8)
    response = generate(url, "one too many")
    slow.join()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json()["message"].startswith("The gateway is busy")
    assert generate(url, "room again").status_code == 200


def test_sigterm_lets_in_flight_requests_finish(own_gateway):
    process, url = own_gateway()
    results = []
    slow = threading.Thread(target=lambda: results.append(generate(url, "finish me [emulator: delay=2]")))
    slow.start()
    time.sleep(0.7)
    process.send_signal(signal.SIGTERM)
    slow.join(timeout=30)
    assert results and results[0].status_code == 200
    assert process.wait(timeout=30) == 0


def test_a_client_that_hangs_up_does_not_hurt_the_worker(own_gateway):
    process, url = own_gateway(WEB_CONCURRENCY="1")
    body = json.dumps({"prompt": "nobody waits [emulator: delay=1]"}).encode()
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {CLIENT_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    time.sleep(1.5)  # the upstream answers after the client is gone; the gateway writes to a closed socket
    assert process.poll() is None
    assert generate(url, "still serving").status_code == 200


def test_workers_are_recycled_after_max_requests_without_dropping_a_request(own_gateway, tmp_path):
    _, url = own_gateway(WEB_CONCURRENCY="1", GUNICORN_MAX_REQUESTS="3")
    statuses, deadline = [], time.monotonic() + 30

    def booted():
        return set(re.findall(r"Booting worker with pid: (\d+)", (tmp_path / "gateway.log").read_text()))

    while len(booted()) < 3 and time.monotonic() < deadline:  # the first worker and two replacements
        statuses.append(generate(url, f"recycled {len(statuses)}").status_code)
        time.sleep(0.2)
    assert len(booted()) >= 3
    assert set(statuses) == {200}


def test_a_connection_is_kept_alive_between_requests(gateway_url):
    """Two image requests, one after the other, on one TCP connection (HTTP/1.1 keep-alive)."""
    host, port = gateway_url.removeprefix("http://").split(":")
    body = json.dumps({"prompt": "kept alive"}).encode()
    request = (f"POST /v1/images/generations HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {CLIENT_KEY}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        stream = sock.makefile("rb")
        for _ in range(2):
            sock.sendall(request)
            status = stream.readline()
            headers = {}
            while (line := stream.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            payload = json.loads(stream.read(int(headers["content-length"])))
            assert status.startswith(b"HTTP/1.1 200") and payload["data"][0]["b64_json"]
            assert headers.get("connection", "keep-alive").lower() != "close"
