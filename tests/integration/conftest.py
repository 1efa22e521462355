"""Real processes on 127.0.0.1: the offline emulator, and the gateway under gunicorn with the
production gunicorn.conf.py, pointed at the emulator; and the HTTP helpers the tests share."""
import base64
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
import requests

from tests.secrets import WATCH
from tests.support import metric  # noqa: F401 - the integration tests import it from here
from tests.tls import ImageServer, self_signed_certificate

ROOT = Path(__file__).resolve().parents[2]
CLIENT_KEY = "integration-client-key"
UPSTREAM_KEY = "integration-upstream-key"
WATCH.secrets |= {CLIENT_KEY, UPSTREAM_KEY}
GATEWAY_LOGS = {}  # log path -> bytes already checked for keys


def check_gateway_logs():
    for path, checked in list(GATEWAY_LOGS.items()):
        text = Path(path).read_bytes()
        WATCH.check(f"gateway log {path}", text[checked:])
        GATEWAY_LOGS[path] = len(text)


@pytest.fixture(autouse=True)
def no_key_in_servers_output(monkeypatch):
    """Every response the real servers send the tests, and every line the gateways log."""
    send = requests.adapters.HTTPAdapter.send

    def checked_send(adapter, request, *args, **kwargs):
        response = send(adapter, request, *args, **kwargs)
        if not kwargs.get("stream"):
            WATCH.check_response(f"{request.method} {request.path_url}", response.headers, response.content)
        return response

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", checked_send)
    yield
    check_gateway_logs()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url, process, log_path, seconds=30, verify=True):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited early:\n{Path(log_path).read_text()}")
        try:
            if requests.get(url, timeout=1, verify=verify).ok:
                return
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or busy starting
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up:\n{Path(log_path).read_text()}")


def start(command, env, url, log_path):
    log = open(log_path, "w")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_until_up(url, process, log_path)
    return process


def stop(process):
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def service_account_file(tmp_path_factory):
    """The throwaway service-account file the emulator writes at start, for the Vertex provider."""
    return tmp_path_factory.mktemp("credentials") / "service-account.json"


@pytest.fixture(scope="session")
def emulator_url(tmp_path_factory, service_account_file):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "EMULATOR_API_KEY": UPSTREAM_KEY}
    process = start([sys.executable, "-m", "emulator", "--port", str(port), "--service-account",
                     str(service_account_file)], env, url + "/", tmp_path_factory.mktemp("logs") / "emulator.log")
    yield url
    stop(process)


@pytest.fixture(scope="session")
def gateway_log(tmp_path_factory):
    return tmp_path_factory.mktemp("logs") / "gateway.log"


@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory):
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def image_server(tls_certificate):
    """An https image host on localhost, trusted by the gateway through REQUESTS_CA_BUNDLE and
    exempted from the private-address block through IMAGE_FETCH_ALLOW_HOSTS."""
    server = ImageServer(*tls_certificate, files={})
    yield server
    server.close()


def start_gateway(emulator_url, log_path, wrapper=(), port=None, **env):
    """gunicorn with the production gunicorn.conf.py on `port` (else a free one), its command line
    after `wrapper` (a program that runs the rest); returns (process, url)."""
    port = port or free_port()
    environment = {
        **{k: v for k, v in os.environ.items()
           if not k.startswith(("GATEWAY_", "GEMINI_", "GOOGLE_", "VERTEX_", "OPENROUTER_", "UPSTREAM_",
                                "PROMETHEUS_"))},
        "GATEWAY_API_KEYS": CLIENT_KEY,
        "GEMINI_API_KEY": UPSTREAM_KEY,
        "GEMINI_BASE_URL": emulator_url,
        "UPSTREAM_TIMEOUT": "20",
        "UPSTREAM_RETRY_BASE_DELAY": "0.05",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_MAX_REQUESTS": "0",  # no worker recycling mid-test (tests that want it say so)
        "GATEWAY_DRAIN_SECONDS": "0",  # stop at once (tests/integration/test_drain.py drains)
        "PORT": str(port),
        "GATEWAY_DATABASE_URL": f"sqlite:///{Path(log_path).with_suffix('.db')}",
        **env,
    }
    command = [*wrapper, sys.executable, "-m", "gunicorn", "app:app", "--config", "gunicorn.conf.py",
               "--bind", f"127.0.0.1:{port}"]
    url = f"http://127.0.0.1:{port}"
    GATEWAY_LOGS[str(log_path)] = 0
    return start(command, environment, url + "/health", log_path), url


@pytest.fixture(scope="session")
def gateway_url(emulator_url, gateway_log, tls_certificate):
    process, url = start_gateway(emulator_url, gateway_log, REQUESTS_CA_BUNDLE=str(tls_certificate[0]),
                                 IMAGE_FETCH_ALLOW_HOSTS="localhost")
    yield url
    stop(process)


def sdk_for(gateway_url):
    """The real openai SDK pointed at a gateway (no SDK retries, so statuses are what we sent);
    every response it gets is checked for keys."""
    def check(response):
        response.read()
        WATCH.check_response(f"SDK {response.request.url.path}", response.headers, response.content)

    http_client = openai.DefaultHttpxClient(event_hooks={"response": [check]})
    return openai.OpenAI(base_url=gateway_url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=60,
                         http_client=http_client)


@pytest.fixture
def sdk(gateway_url):
    with sdk_for(gateway_url) as client:
        yield client


@pytest.fixture
def auth():
    return dict(AUTH)


def emulator_requests(emulator_url, since):
    """What the emulator received after `since` (a time.time() value)."""
    return [r for r in requests.get(emulator_url + "/emulator/requests", timeout=5).json() if r["at"] >= since]


# --- HTTP helpers -------------------------------------------------------------------------------

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


def generate(url, prompt="a normal request afterwards", **fields):
    return requests.post(url + "/v1/images/generations", headers=AUTH, json={"prompt": prompt, **fields}, timeout=60)


def refused(response, status, *names):
    """The response is the JSON error with this status; its message names every one of `names`."""
    assert response.status_code == status, response.text[:2000]
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "status", "message"}
    assert (body["error"], body["status"]) == (True, status)
    for name in names:
        assert name in body["message"], body["message"][:2000]
    return body["message"]


def ok(response):
    assert response.status_code == 200, response.text[:2000]
    body = response.json()
    assert body["data"] and base64.b64decode(body["data"][0]["b64_json"])
    return body


def read_to_close(sock):
    """Everything the server sends until it closes the connection. A server that closes with part
    of the request unread resets the connection (TCP's RST); what it sent first is still read."""
    received = b""
    try:
        while chunk := sock.recv(1 << 20):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def raw_http(url, request_bytes, close_after_sending=False, timeout=10):
    """Send bytes over one socket, read until the server closes it, and return the final
    (status line, headers, body), skipping interim 1xx answers."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request_bytes)
        if close_after_sending:
            sock.shutdown(socket.SHUT_WR)
        received = read_to_close(sock)
    while True:
        head, _, rest = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].split()[1].startswith("1"):
            break
        received = rest
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return lines[0], headers, rest[:int(headers.get("content-length", len(rest)))]




@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Mark a test whose call failed, so fixtures can save what it saw (test_playground's screenshots)."""
    outcome = yield
    if call.when == "call" and outcome.get_result().failed:
        item.failed = True
