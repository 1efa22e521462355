"""Oversized bodies against the `hardened` gateway (MAX_CONTENT_LENGTH 64 KiB): JSON and multipart
bodies of exactly the limit, one byte under and one byte over, chunked bodies with no Content-Length
(one byte over, a valid JSON prefix padded past the limit, 10 MiB), a JSON edit whose data URL
pushes it over, and a Content-Length of 10 GB announced before any body. MAX_CONTENT_LENGTH bounds
them: checked from the Content-Length header before the body is read, and while a chunked body
streams in, so each is a 413 JSON error, nothing is sent upstream, and the workers survive
(`survives` in conftest.py, applied to every test of every test_hostile_* module). Two known edges
at exactly the limit are strict xfails."""
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
    ok,
    post,
    raw_http,
    refused,
    upload,
)
from tests.support import PNG, data_url

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("survives")]


def padding(size, width):
    """Prompt text that takes exactly `size` bytes once encoded, mostly '€', which takes `width`
    bytes (6 as a JSON escape, 3 in UTF-8), so it stays far under the prompt's character limit."""
    return "€" * (size // width) + "a" * (size % width)


def json_body_of(size, **fields):
    """A valid generation body of exactly `size` bytes (padded through the prompt)."""
    payload = {"prompt": "a lighthouse at the limit ", **fields}
    payload["prompt"] += padding(size - len(json.dumps(payload).encode()), 6)
    body = json.dumps(payload).encode()
    assert len(body) == size
    return body


def multipart_body_of(size):
    """A valid multipart edit of exactly `size` bytes (padded through the prompt)."""
    body, _ = multipart(upload("image", PNG), field("prompt", "an edit at the limit "))
    body, content_type = multipart(upload("image", PNG),
                                   field("prompt", "an edit at the limit " + padding(size - len(body), 3)))
    assert len(body) == size
    return body, content_type


def test_json_body_of_exactly_max_content_length_is_served(hardened_url):
    ok(post(hardened_url, GENERATIONS, json_body_of(SMALL_LIMIT), "application/json"))


def test_json_body_one_byte_over_max_content_length_is_a_413(hardened_url, emulator_url, since):
    refused(post(hardened_url, GENERATIONS, json_body_of(SMALL_LIMIT + 1), "application/json"),
            413, "Request Entity Too Large")
    nothing_sent_upstream(emulator_url, since)


@pytest.mark.xfail(strict=True, reason=(
    "BUG: a multipart body of exactly MAX_CONTENT_LENGTH bytes is a 413. Under gunicorn "
    "(wsgi.input_terminated) werkzeug wraps the body in LimitedStream(max_content_length, is_max=True); the "
    "multipart parser reads until EOF, and a read after exactly the limit raises RequestEntityTooLarge. JSON "
    "bodies are read with readall(), which stops at the limit, so they are not affected."))
def test_multipart_body_of_exactly_max_content_length_is_served(hardened_url):
    ok(post(hardened_url, EDITS, *multipart_body_of(SMALL_LIMIT)))


def test_multipart_body_one_byte_under_max_content_length_is_served(hardened_url):
    ok(post(hardened_url, EDITS, *multipart_body_of(SMALL_LIMIT - 1)))


def test_multipart_body_one_byte_over_max_content_length_is_a_413(hardened_url, emulator_url, since):
    refused(post(hardened_url, EDITS, *multipart_body_of(SMALL_LIMIT + 1)), 413, "Request Entity Too Large")
    nothing_sent_upstream(emulator_url, since)


def test_json_edit_one_byte_over_max_content_length_is_a_413(hardened_url):
    payload = {"prompt": "x", "images": [{"image_url": data_url(PNG)}], "user": ""}
    payload["user"] = "u" * (SMALL_LIMIT + 1 - len(json.dumps(payload).encode()))
    refused(post(hardened_url, EDITS, json.dumps(payload).encode(), "application/json"), 413,
            "Request Entity Too Large")


def chunked(body, size=4096):
    """The body as a generator, so requests sends it chunked, with no Content-Length."""
    def chunks():
        for start in range(0, len(body), size):
            yield body[start:start + size]
    return chunks()


@pytest.mark.xfail(strict=True, reason=(
    "KNOWN EDGE: without a Content-Length the gateway cannot tell a chunked body that ends exactly at "
    "MAX_CONTENT_LENGTH from one that goes on, and refuses both with 413 (the safe side)."))
def test_chunked_json_body_of_exactly_max_content_length_is_served(hardened_url):
    ok(post(hardened_url, GENERATIONS, chunked(json_body_of(SMALL_LIMIT)), "application/json"))


def padded_json(size):
    """A short valid JSON object followed by spaces: `size` bytes, all of them valid JSON."""
    body = json.dumps({"prompt": "the body goes on past the limit"}).encode()
    return body + b" " * (size - len(body))


@pytest.mark.parametrize("body", [json_body_of(SMALL_LIMIT + 1), padded_json(SMALL_LIMIT + 1),
                                  padded_json(10 * 2**20)], ids=["one-byte-over", "valid-prefix", "10-MiB"])
def test_chunked_json_body_over_max_content_length_is_a_413(hardened_url, emulator_url, since, body):
    """No Content-Length to check up front: the limit must hold while the body streams in."""
    refused(post(hardened_url, GENERATIONS, chunked(body), "application/json"), 413, "Request Entity Too Large")
    nothing_sent_upstream(emulator_url, since)


def test_json_body_over_max_content_length_with_a_valid_prefix_is_a_413(hardened_url, emulator_url, since):
    """The same body as the chunked case, with its Content-Length: refused from the header."""
    refused(post(hardened_url, GENERATIONS, padded_json(SMALL_LIMIT + 1), "application/json"), 413,
            "Request Entity Too Large")
    nothing_sent_upstream(emulator_url, since)


def test_chunked_multipart_body_over_max_content_length_is_a_413(hardened_url):
    body, content_type = multipart_body_of(SMALL_LIMIT + 1)
    refused(post(hardened_url, EDITS, chunked(body), content_type), 413, "Request Entity Too Large")


def test_declared_content_length_over_the_limit_is_a_413_before_the_body_is_sent(hardened_url):
    """A client announcing 10 GB gets its 413 at once, from the headers alone."""
    status, headers, body = raw_http(hardened_url, (
        f"POST {GENERATIONS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\nConnection: close\r\n"
        "Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{").encode())
    assert status.split()[1] == "413"
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["status"] == 413
