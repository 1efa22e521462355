"""Real processes on 127.0.0.1: the offline emulator, and the gateway under gunicorn with the
production gunicorn.conf.py, pointed at the emulator; and the HTTP helpers the tests share."""
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import requests

from tests.secrets import WATCH
from tests.support import ADMIN, metric  # the integration tests also import metric from here
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
    with open(log_path, "w") as log:  # the child writes to its own copy of the descriptor
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_until_up(url, process, log_path)
    return process


def workers(master_pid):
    """The pids of a gunicorn master's workers, in order."""
    return sorted(int(pid) for task in Path(f"/proc/{master_pid}/task").iterdir()
                  for pid in (task / "children").read_text().split())


def stop(process):
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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
           if not k.startswith(("GATEWAY_", "GEMINI_", "GOOGLE_", "VERTEX_", "OPENROUTER_", "OPENAI_", "UPSTREAM_",
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
        "GATEWAY_STORAGE_URL": f"file://{Path(log_path).with_suffix('.images')}",  # response_format url
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


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def write_nginx_conf(work, http):
    """nginx.conf for a throwaway nginx in `work` (pid, logs and temp files there), its `http`
    block's own lines given."""
    (work / "nginx.conf").write_text(f"""
user root;
daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
{http}
}}
""")


def run_nginx(work, http):
    """nginx in the foreground with write_nginx_conf's configuration; (process, its output's log)."""
    if not shutil.which(NGINX):
        pytest.skip("nginx is not installed here (.ci/run installs it)")
    write_nginx_conf(work, http)
    log_path = work / "stdout.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([NGINX, "-p", str(work), "-e", str(work / "error.log"), "-c",
                                    str(work / "nginx.conf")], stdout=log, stderr=subprocess.STDOUT)
    return process, log_path


def start_nginx(gateway_url, certificate, work, openai_errors=False):
    """deploy/nginx.conf on free ports in front of `gateway_url`, with a throwaway certificate;
    returns (process, https url, http url)."""
    if not shutil.which(NGINX):
        pytest.skip("nginx is not installed here (.ci/run installs it)")
    http_port, https_port = free_port(), free_port()
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    for old, new in [("server 127.0.0.1:8000;", f"server {gateway_url.removeprefix('http://')};"),
                     ("listen 80;", f"listen 127.0.0.1:{http_port};"),
                     ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
                     ("/etc/ssl/certs/image-gateway.pem", str(certificate[0])),
                     ("/etc/ssl/private/image-gateway.key", str(certificate[1])),
                     ('""      0;', '""      1;' if openai_errors else '""      0;')]:
        assert old in site, old
        site = site.replace(old, new)
    (work / "site.conf").write_text(site)
    process, log_path = run_nginx(work, f"include {work}/site.conf;")
    url = f"https://127.0.0.1:{https_port}"
    wait_until_up(url + "/health", process, log_path, verify=str(certificate[0]))
    return process, url, f"http://127.0.0.1:{http_port}"


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


KEEP_ALIVE = "keep-alive"  # what read_stream records for a `: keep-alive` comment


def post_stream(url, prompt, timeout=60, verify=True, **fields):
    """A raw `stream: true` generation, its body not yet read."""
    return requests.post(url + "/v1/images/generations", headers=AUTH, stream=True, timeout=timeout, verify=verify,
                         json={"prompt": prompt, "stream": True, **fields})


def read_stream(response):
    """Everything an event stream sends, in order, each with the seconds since reading began:
    (KEEP_ALIVE, None, t) for each `: keep-alive` comment, (event type, data, t) for each event.
    Asserts the wire shape: `event:` then one `data:` line then a blank line, nothing else."""
    started, items, event = time.monotonic(), [], None
    for line in response.iter_lines(chunk_size=None):
        line = line.decode()
        if line == ": keep-alive":
            assert event is None, "a comment inside an event"
            items.append((KEEP_ALIVE, None, time.monotonic() - started))
        elif line.startswith("event: "):
            assert event is None, "an event without data"
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            assert event is not None, "data without an event line"
            data = json.loads(line.removeprefix("data: "))
            assert data["type"] == event
            items.append((event, data, time.monotonic() - started))
            event = None
        else:
            assert line == "", f"unexpected line {line[:200]!r}"
    assert event is None, "the stream ended inside an event"
    return items


def in_flight(url):
    return metric(requests.get(url + "/metrics", timeout=5).text, "gateway_upstream_in_flight")


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


# --- keys, limits and budgets through real HTTP --------------------------------------------------

PRO_1K = 0.134  # gemini-3-pro-image's list price per 1K image


def new_key(url, **policy):
    """A managed key made through the admin API of the gateway at `url`: (name, secret)."""
    name = f"team-{uuid.uuid4().hex[:8]}"
    response = requests.post(f"{url}/v1/admin/keys", json={"name": name, **policy}, headers=ADMIN, timeout=10)
    assert response.status_code == 201, response.text
    WATCH.secrets.add(response.json()["key"])
    return name, response.json()["key"]


def burst(url, key, count, prompt):
    def one(_):
        return requests.post(f"{url}/v1/images/generations", json={"prompt": prompt},
                             headers={"Authorization": f"Bearer {key}"}, timeout=60)
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def settled_usage(url, key, at_least, seconds=5):
    """GET /v1/usage once the key's spend has reached `at_least`: a request is settled just after
    its response has been sent, so the last ones may land a few milliseconds after their answers."""
    deadline = time.monotonic() + seconds
    while True:
        usage = requests.get(f"{url}/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
        if usage["spent_usd"] >= at_least or time.monotonic() > deadline:
            return usage
        time.sleep(0.05)


def until(condition, seconds):
    """Whether `condition()` became true within `seconds` (checked every 50 ms)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


# --- hostile input (tests/integration/test_hostile_*.py) -----------------------------------------

GENERATIONS, EDITS = "/v1/images/generations", "/v1/images/edits"
SMALL_LIMIT = 65536  # MAX_CONTENT_LENGTH of the `hardened` gateway
BOUNDARY = "hostile-boundary-7MA4YWxkTrZu0gW"
CRASH_MARKERS = (b"Traceback", b"unhandled error", b"WORKER TIMEOUT", b"Worker exited")


def upload(name, data, filename="a.png", content_type="image/png"):
    return name, data, filename, content_type


def field(name, value):
    return name, value, None, None


def multipart(*parts, boundary=BOUNDARY):
    """(body, content type) of a multipart/form-data body exactly as given: every byte is ours."""
    chunks = []
    for name, value, filename, content_type in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        chunks += [(head + "\r\n").encode(), value if isinstance(value, bytes) else value.encode(), b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def post(url, path, body=None, content_type=None, headers=None, **kwargs):
    """A raw POST: the body bytes and the content type exactly as given (None = no header)."""
    sent = {**AUTH, **(headers or {})}
    if content_type is not None:
        sent["Content-Type"] = content_type
    return requests.post(url + path, data=body, headers=sent, timeout=60, **kwargs)


def post_json(url, path, payload):
    return post(url, path, json.dumps(payload).encode(), "application/json")


def post_multipart(url, *parts):
    body, content_type = multipart(*parts)
    return post(url, EDITS, body, content_type)


def edit_json(url, *image_urls, **fields):
    return post_json(url, EDITS, {"prompt": "make it blue", "images": [{"image_url": u} for u in image_urls],
                                  **fields})


def nothing_sent_upstream(emulator_url, since):
    assert emulator_requests(emulator_url, since) == []


@pytest.fixture(scope="session")
def hardened(emulator_url, tls_certificate, tmp_path_factory):
    """A gateway of our own: MAX_CONTENT_LENGTH 64 KiB, no IMAGE_FETCH_ALLOW_HOSTS (so localhost is
    refused like any private address) but trusting the local image server's certificate, so a
    fetch that slipped through the policy would really succeed. Yields (master process, url, log).
    Session-scoped, like `gateway_url`, so that the hostile modules that use it (body size, HTTP
    framing, image fetches) share one start: nothing changes its state but the requests sent to it."""
    log = tmp_path_factory.mktemp("hostile") / "gateway.log"
    process, url = start_gateway(emulator_url, log, MAX_CONTENT_LENGTH=str(SMALL_LIMIT), IMAGE_FETCH_ALLOW_HOSTS="",
                                 REQUESTS_CA_BUNDLE=str(tls_certificate[0]), IMAGE_FETCH_TIMEOUT="5")
    yield process, url, log
    stop(process)


@pytest.fixture
def hardened_url(hardened):
    return hardened[1]


def master_pid(log):
    """gunicorn's master, from its `Listening at: http://... (PID)` line."""
    return int(re.search(rb"Listening at: \S+ \((\d+)\)", log.read_bytes())[1])


def all_workers(log, expected=2):
    """The master's pid and its workers' once all WEB_CONCURRENCY (2) of them are forked: a gateway
    answers /health from its first worker, maybe before the second one exists."""
    master = master_pid(log)
    deadline = time.monotonic() + 10
    while len(workers(master)) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return master, workers(master)


@pytest.fixture
def survives(request):
    """After each test: the gateways it used still serve a normal generation with the same
    workers, and their logs show no traceback, unhandled error or worker restart. Every
    test_hostile_* module applies it to all its tests (`pytest.mark.usefixtures("survives")`);
    `slow_fetch` is test_hostile_image_fetch.py's own gateway."""
    watched = []
    if "gateway_url" in request.fixturenames:
        watched.append((request.getfixturevalue("gateway_url"), Path(request.getfixturevalue("gateway_log"))))
    if "hardened_url" in request.fixturenames:
        _, url, log = request.getfixturevalue("hardened")
        watched.append((url, Path(log)))
    if "slow_fetch" in request.fixturenames:
        watched.append(request.getfixturevalue("slow_fetch"))
    marks = [(url, log, log.stat().st_size, *all_workers(log)) for url, log in watched]
    yield
    expected_failure = request.node.get_closest_marker("xfail") is not None
    for url, log, offset, master, before in marks:
        ok(generate(url))
        assert workers(master) == before, "a worker was replaced"
        if not expected_failure:
            new = log.read_bytes()[offset:]
            for marker in CRASH_MARKERS:
                assert marker not in new, f"{marker!r} in the gateway log:\n{new.decode(errors='replace')[-3000:]}"


@pytest.fixture
def since(emulator_url):
    return time.time()
