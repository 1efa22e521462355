"""Resource safety of the gateway as the Procfile runs it (gevent workers, no nginx in front): slow
and idle clients cannot deny service, inputs stay within the pixel budget and damaged ones are
refused, one key may use every upstream slot yet its backlog never keeps another key's call
waiting, UPSTREAM_TIMEOUT is wall-clock however the upstream trickles, and the smaller limits
(field lengths, whole-value patterns, gunicorn's own refusals, `100 Continue`). The deadlines
are short here so the tests are quick; speed and memory at full scale are measured by
bench/resources.py."""
import io
import json
import re
import resource
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.integration.conftest import (
    AUTH,
    CLIENT_KEY,
    emulator_requests,
    generate,
    metric,
    ok,
    raw_http,
    read_to_close,
    refused,
    start_gateway,
    stop,
)

pytestmark = pytest.mark.integration

OTHER_KEY = "integration-second-client-key"
HEADER_TIMEOUT, BODY_TIMEOUT, SEND_TIMEOUT, UPSTREAM_TIMEOUT = 2, 3, 2, 4
MAX_PIXELS = 4_000_000
SLOTS = 10  # UPSTREAM_MAX_IN_FLIGHT
FLOOD = 2500  # connections per flood: more than the 1,024 that stopped the gthread workers


@pytest.fixture(scope="module")
def strict(emulator_url, tmp_path_factory):
    """One worker (so per-process bounds are exact) with short client deadlines, a 4-second
    upstream deadline without retries, a 4-megapixel input limit and 10 upstream calls in flight."""
    log = tmp_path_factory.mktemp("resources") / "gateway.log"
    process, url = start_gateway(
        emulator_url, log, WEB_CONCURRENCY="1", GATEWAY_API_KEYS=f"{CLIENT_KEY},{OTHER_KEY}",
        CLIENT_HEADER_TIMEOUT=str(HEADER_TIMEOUT), CLIENT_BODY_TIMEOUT=str(BODY_TIMEOUT),
        CLIENT_SEND_TIMEOUT=str(SEND_TIMEOUT), UPSTREAM_TIMEOUT=str(UPSTREAM_TIMEOUT), UPSTREAM_MAX_RETRIES="0",
        IMAGE_MAX_PIXELS=str(MAX_PIXELS), UPSTREAM_MAX_IN_FLIGHT=str(SLOTS))
    yield url, log
    stop(process)


@pytest.fixture
def url(strict):
    return strict[0]


@pytest.fixture(autouse=True)
def still_serves(strict):
    """After each test the gateway answers a normal generation, and its log shows no crash."""
    offset = strict[1].stat().st_size
    yield
    ok(generate(strict[0]))
    new = strict[1].read_bytes()[offset:]
    assert b"Traceback" not in new and b"Worker exited" not in new, new.decode(errors="replace")[-3000:]


def worker_pid(log):
    return int(re.findall(rb"Booting worker with pid: (\d+)", log.read_bytes())[-1])


def address(url):
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def request_head(path, *headers):
    return "\r\n".join([f"POST {path} HTTP/1.1", "Host: gateway", *headers, "", ""]).encode()


# --- slow and idle clients ----------------------------------------------------------------------

def open_flood(url, first_bytes):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * FLOOD)), hard))
    sockets = []
    for _ in range(FLOOD):
        sock = socket.create_connection(address(url), timeout=10)
        if first_bytes:
            sock.sendall(first_bytes)
        sockets.append(sock)
    return sockets


def closed_by_server(sock, deadline):
    """True when the server closes the connection before `deadline` (a time.monotonic() value);
    any answer it sends first is read and skipped."""
    sock.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        read_to_close(sock)
    except TimeoutError:
        return False
    return True


STALLED = {
    "nothing": b"",
    "one byte": b"P",
    "half a header": b"POST /v1/images/generations HTTP/1.1\r\nHost: gateway\r\nContent-Ty",
    "headers and half a body": request_head("/v1/images/generations", f"Authorization: Bearer {CLIENT_KEY}",
                                            "Content-Type: application/json", "Content-Length: 1000") + b'{"pro',
}


@pytest.mark.parametrize("sent", STALLED.values(), ids=STALLED.keys())
def test_thousands_of_stalled_connections_do_not_stop_other_clients(url, sent):
    flood = open_flood(url, sent)
    try:
        assert requests.get(url + "/health", timeout=5).ok
        ok(requests.post(url + "/v1/images/generations", json={"prompt": "served during a flood"},
                         headers=AUTH, timeout=10))
        deadline = time.monotonic() + (BODY_TIMEOUT if b"Content-Length" in sent else HEADER_TIMEOUT) + 5
        assert [sock for sock in flood if not closed_by_server(sock, deadline)] == []
    finally:
        for sock in flood:
            sock.close()


@pytest.mark.parametrize("stream", [False, True], ids=["JSON", "stream"])
def test_a_client_that_stops_reading_is_cut_off_at_the_send_deadline(strict, stream):
    """Four 1.4 MB images (about 7.6 MB of base64) to a client whose receive buffer is tiny and
    that reads nothing: the server's socket buffers fill, the pending write waits
    CLIENT_SEND_TIMEOUT, and the connection is closed with the response unfinished (without the
    deadline, reading later would get all of it)."""
    url, log = strict
    offset = log.stat().st_size
    body = json.dumps({"prompt": "a noisy picture nobody reads [emulator: noise=1]", "n": 4, "stream": stream})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(address(url))
    with sock:
        sock.sendall(request_head("/v1/images/generations", f"Authorization: Bearer {CLIENT_KEY}",
                                  "Content-Type: application/json", f"Content-Length: {len(body)}") + body.encode())
        time.sleep(SEND_TIMEOUT + 4)
        sock.settimeout(10)
        received = read_to_close(sock)
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    if stream:
        assert not rest.endswith(b"0\r\n\r\n")  # the last chunk of a finished stream never came
        assert rest.count(b"event: image_generation.completed") < 4
    else:
        assert len(rest) < int(re.search(rb"Content-Length: (\d+)", head)[1])
    assert b"did not take a response write within 2 seconds" in log.read_bytes()[offset:]


def test_a_body_that_drips_gets_a_408_when_the_body_deadline_passes(url, emulator_url):
    since = time.time()
    with socket.create_connection(address(url), timeout=BODY_TIMEOUT + 5) as sock:
        sock.sendall(request_head("/v1/images/generations", f"Authorization: Bearer {CLIENT_KEY}",
                                  "Content-Type: application/json", "Content-Length: 1000") + b"{")
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:  # a byte every half second: never idle, never done
                sock.sendall(b" ")
                sock.settimeout(0.5)
                try:
                    answer += sock.recv(65536)
                except TimeoutError:
                    continue
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(5)
        answer += read_to_close(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), head
    assert json.loads(body)["message"].startswith(f"Request Timeout: the request body did not arrive within "
                                                  f"{BODY_TIMEOUT} seconds")
    assert emulator_requests(emulator_url, since) == []


def test_a_body_from_a_client_without_a_key_is_never_read(url):
    status, _, _ = raw_http(url, request_head("/v1/images/generations", "Content-Type: application/json",
                                              "Content-Length: 100000") + b"{")
    assert status.startswith("HTTP/1.1 401")


def test_100_continue_is_sent_only_after_the_key_is_checked(url):
    head = ("Content-Type: application/json", "Content-Length: 22", "Expect: 100-continue")
    with socket.create_connection(address(url), timeout=5) as sock:
        sock.sendall(request_head("/v1/images/generations", *head))
        assert sock.recv(65536).startswith(b"HTTP/1.1 401 ")
    with socket.create_connection(address(url), timeout=5) as sock:
        sock.sendall(request_head("/v1/images/generations", f"Authorization: Bearer {CLIENT_KEY}", *head))
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b'{"prompt": "continue"}')
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


# --- the pixel budget and damaged images ----------------------------------------------------------

def encoded(image, image_format, **options):
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def noisy(size):
    return Image.merge("RGB", [Image.effect_noise(size, 60) for _ in range(3)])


def jpeg_claiming(width, height):
    """A valid 8x8 JPEG whose frame header is rewritten to claim width x height."""
    data = bytearray(encoded(Image.new("RGB", (8, 8), (90, 120, 200)), "JPEG"))
    frame = data.index(b"\xff\xc0")
    data[frame + 5:frame + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def edit(url, image, *extra, **fields):
    files = [("image", ("input", image, "application/octet-stream")), *extra]
    return requests.post(url + "/v1/images/edits", headers=AUTH, files=files,
                         data={"prompt": "an edit", **fields}, timeout=60)


def test_a_tiny_lossless_webp_of_64_megapixels_is_refused_from_its_header(url, emulator_url):
    bomb = encoded(Image.new("RGB", (8000, 8000)), "WEBP", lossless=True)
    assert len(bomb) < 20_000
    since = time.time()
    refused(edit(url, bomb), 400, "image[0]: 8000x8000 is 64,000,000 pixels; the limit is 4,000,000")
    assert emulator_requests(emulator_url, since) == []


def test_a_jpeg_header_over_the_limit_is_refused_before_decoding(url):
    refused(edit(url, jpeg_claiming(8000, 8000)), 400, "image[0]: 8000x8000 is 64,000,000 pixels")


def test_a_jpeg_whose_header_claims_more_pixels_than_its_data_holds_is_refused(url, emulator_url):
    since = time.time()
    refused(edit(url, jpeg_claiming(1800, 1800)), 400, "image[0]: the JPEG data is damaged")
    assert emulator_requests(emulator_url, since) == []


def test_a_jpeg_cut_short_with_its_end_marker_appended_is_refused(url):
    data = encoded(noisy((600, 400)), "JPEG", quality=90)
    refused(edit(url, data[:len(data) // 10] + b"\xff\xd9"), 400, "image[0]: the JPEG data is damaged")


def test_a_whole_jpeg_is_accepted(url):
    ok(edit(url, encoded(noisy((600, 400)), "JPEG", quality=90)))


def peak_rss_mb(pid):
    return int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1]) / 1024


def current_rss_mb(pid):
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1]) / 1024


def test_a_masked_edit_with_n_10_decodes_its_source_once(strict):
    url, log = strict
    side = 1500
    mask = Image.new("RGBA", (side, side), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, side // 2, side))
    pid = worker_pid(log)
    ok(generate(url))
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # restart the peak (VmHWM) from the current RSS
    before = current_rss_mb(pid)
    answer = edit(url, encoded(noisy((side, side)), "PNG"), ("mask", ("mask.png", encoded(mask, "PNG"), "image/png")),
                  n="10", output_format="jpeg")
    assert len(ok(answer)["data"]) == 10
    # The source and mask are decoded once per request and the ten composites run one at a time
    # on an image thread: a few full-size RGB copies of 6.75 MB at once, not ten sets of them.
    assert peak_rss_mb(pid) - before < 120


# --- the fair share of upstream slots, and the upstream deadline ----------------------------------

def test_one_key_without_a_policy_gets_no_refusal_for_more_calls_than_the_slots(url):
    """13 requests of n=10 at once from one key: 130 calls, more than the 128 per key that used to
    be refused with a 429, against 10 slots. The calls past the slots wait their turn."""
    with ThreadPoolExecutor(13) as pool:
        answers = list(pool.map(lambda _: generate(url, "a burst [emulator: delay=0.05]", n=10), range(13)))
    assert [answer.status_code for answer in answers] == [200] * 13, {answer.text[:300] for answer in answers}
    assert all(len(answer.json()["data"]) == 10 for answer in answers)


def test_while_one_key_floods_past_every_slot_another_keys_call_is_not_queued_behind_it(url, emulator_url):
    since = time.time()
    flood, other = f"flood {since} [emulator: delay=0.5]", f"another key {since}"
    with ThreadPoolExecutor(3) as pool:
        flooding = [pool.submit(generate, url, flood, n=10) for _ in range(3)]  # 30 calls: 20 wait for a slot
        while len(emulator_requests(emulator_url, since)) < SLOTS:
            time.sleep(0.02)
        answer = requests.post(url + "/v1/images/generations", json={"prompt": other}, timeout=30,
                               headers={"Authorization": f"Bearer {OTHER_KEY}"})
        assert [future.result().status_code for future in flooding] == [200] * 3
    ok(answer)
    received = [request["prompt"] for request in emulator_requests(emulator_url, since)]
    # The first slot freed went to the other key (it held none, the flood all but one); waiting
    # behind the flood, its call would have been the 31st.
    assert received.index(other) < 2 * SLOTS, received


def test_an_upstream_that_trickles_its_answer_is_cut_off_at_upstream_timeout(url):
    # 16 bytes every 0.3 s: every read gets data long before a per-read timeout would fire.
    response = requests.post(url + "/v1/images/generations", headers=AUTH, timeout=UPSTREAM_TIMEOUT + 6,
                             json={"prompt": "slowly [emulator: drip=0.3]"})
    refused(response, 504, f"The Gemini API did not answer within {UPSTREAM_TIMEOUT} seconds.")


# --- smaller limits -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["user", "safety_identifier", "model"])
def test_free_text_fields_have_a_length_limit(url, name):
    refused(generate(url, **{name: "u" * 257}), 400, f"{name}: Longer than maximum length 256")


def test_a_huge_field_name_is_quoted_only_as_a_prefix(url):
    message = refused(generate(url, **{"x" * 1_000_000: 1}), 400, "Unknown field")
    assert len(message) < 300


def test_an_unknown_model_is_quoted_only_as_a_prefix(url):
    message = refused(generate(url, model="m" * 200), 400, "model: unknown model 'mmmm")
    assert len(message) < 400


@pytest.mark.parametrize("field, value", [("size", "1024x1024\n"), ("aspect_ratio", "16:9\n")])
def test_patterns_match_the_whole_value(url, field, value):
    refused(generate(url, **{field: value}), 400, f"{field}: must be")


def test_gunicorns_own_refusals_are_json_lines_in_the_log_and_counted(strict):
    url, log = strict
    before = metric(requests.get(url + "/metrics", timeout=5).text, "gateway_requests_total",
                    endpoint="unparsed", status="414")
    offset = log.stat().st_size
    status, headers, body = raw_http(url, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status.startswith("HTTP/1.1 414") and json.loads(body)["status"] == 414
    after = metric(requests.get(url + "/metrics", timeout=5).text, "gateway_requests_total",
                   endpoint="unparsed", status="414")
    assert after == before + 1
    lines = [json.loads(line) for line in log.read_bytes()[offset:].splitlines() if line.strip()]
    assert any(line["logger"] == "gunicorn.error" and "Invalid request" in line["message"] for line in lines)
