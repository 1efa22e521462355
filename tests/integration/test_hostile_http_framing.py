"""Malformed HTTP framing, written byte by byte over a socket to the `hardened` gateway: an invalid
chunk size, a chunked body or a Content-Length body the client cuts off, `Expect: 100-continue`
with an oversize length, and the requests gunicorn itself refuses (a 9,000-byte header, 120
headers, a 5,000-character URL, a Content-Length that is not a number, Content-Length together
with Transfer-Encoding). gunicorn's parser and its request-line and header limits bound them, and
MAX_CONTENT_LENGTH the announced body: every refusal, gunicorn's own included (gunicorn.conf.py
replaces its HTML error page), is a 4xx in the JSON error shape, nothing is sent upstream, and the
workers survive (`survives`)."""
import json

import pytest

from tests.integration.conftest import (
    CLIENT_KEY,
    EDITS,
    GENERATIONS,
    SMALL_LIMIT,
    field,
    multipart,
    nothing_sent_upstream,
    raw_http,
    upload,
)
from tests.support import PNG

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("survives")]


def raw_request(path, headers, body=b""):
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\nConnection: close\r\n"
    return head.encode() + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n" + body


MULTIPART_BODY, MULTIPART_TYPE = multipart(upload("image", PNG), field("prompt", "a fox"))


@pytest.mark.parametrize("path, content_type, body", [
    (GENERATIONS, "application/json", b'{"prompt": "a fox"}'),
    (EDITS, MULTIPART_TYPE, MULTIPART_BODY),
], ids=["json", "multipart"])
def test_invalid_chunk_size_is_a_400(hardened_url, emulator_url, since, path, content_type, body):
    framed = b"zz\r\n" + body + b"\r\n0\r\n\r\n"  # "zz" is not a hexadecimal chunk size
    status, headers, answer = raw_http(hardened_url, raw_request(
        path, {"Content-Type": content_type, "Transfer-Encoding": "chunked"}, framed))
    assert status.split()[1] == "400", (status, answer)
    assert headers["content-type"] == "application/json"
    assert json.loads(answer)["status"] == 400
    nothing_sent_upstream(emulator_url, since)


def test_chunked_body_cut_off_by_the_client_is_a_400(hardened_url):
    """The client announces a 16-byte chunk, sends 9 bytes and closes its side."""
    status, headers, body = raw_http(hardened_url, raw_request(
        GENERATIONS, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}, b'10\r\n{"prompt"'),
        close_after_sending=True)
    assert status.split()[1] == "400"
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["status"] == 400


def test_content_length_longer_than_the_body_is_a_400(hardened_url):
    status, headers, body = raw_http(hardened_url, raw_request(
        GENERATIONS, {"Content-Type": "application/json", "Content-Length": "100"}, b'{"prompt": "a fox"'),
        close_after_sending=True)
    assert status.split()[1] == "400"
    assert json.loads(body) == {"error": True, "status": 400, "message": "Invalid JSON in request body"}


def test_expect_100_continue_with_an_oversize_length_gets_a_413(hardened_url):
    status, headers, body = raw_http(hardened_url, raw_request(
        GENERATIONS, {"Content-Type": "application/json", "Expect": "100-continue",
                      "Content-Length": str(SMALL_LIMIT + 1)}), close_after_sending=True)
    assert status.split()[1] == "413"
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["status"] == 413


@pytest.mark.parametrize("request_bytes, status", [
    (raw_request(GENERATIONS, {"Content-Type": "application/json", "X-Big": "a" * 9000, "Content-Length": "2"},
                 b"{}"), 431),
    (raw_request(GENERATIONS, {**{f"X-H{i}": "1" for i in range(120)}, "Content-Length": "2"}, b"{}"), 431),
    (f"GET /{'a' * 5000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 414),
    (raw_request(GENERATIONS, {"Content-Type": "application/json", "Content-Length": "abc"}, b"{}"), 400),
    (raw_request(GENERATIONS, {"Content-Type": "application/json", "Content-Length": "2",
                               "Transfer-Encoding": "chunked"}, b"0\r\n\r\n"), 400),
], ids=["huge-header", "many-headers", "long-url", "bad-content-length", "length-and-chunked"])
def test_requests_gunicorn_refuses_get_the_json_error_shape(hardened_url, request_bytes, status):
    answer_status, headers, body = raw_http(hardened_url, request_bytes)
    assert answer_status.split()[1] == str(status)
    assert headers["content-type"] == "application/json", body[:300]
    assert json.loads(body) == {"error": True, "status": status, "message": json.loads(body)["message"]}
