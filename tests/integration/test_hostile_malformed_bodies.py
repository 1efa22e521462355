"""Malformed bodies on the session gateway: JSON nested 100,000 deep, JSON that is not an object
(arrays, scalars, trailing data, single quotes, an integer of 5,000 digits), non-finite numbers,
invalid UTF-8 and lone surrogates, wrong or missing Content-Types, JSON labelled multipart with no
or a wrong boundary, multipart cut off before its closing boundary, and a gzip body. The JSON
parser's nesting and integer limits, the request schema and the content-type check bound them
(Content-Encoding is not honoured, so a gzip bomb is never inflated): each is a 400 or 415 JSON
error naming the problem, nothing is sent upstream, and the workers survive (`survives`)."""
import json
import zlib

import pytest

from tests.integration.conftest import (
    EDITS,
    GENERATIONS,
    field,
    multipart,
    nothing_sent_upstream,
    ok,
    post,
    refused,
    upload,
)
from tests.support import PNG, data_url

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("survives")]


# --- malformed JSON -----------------------------------------------------------------------------

DEPTH = 100_000


@pytest.mark.parametrize("body", [
    b"[" * DEPTH + b"]" * DEPTH,
    b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
    b'{"prompt": "x", "user": ' + b"[" * DEPTH + b"]" * DEPTH + b"}",
], ids=["arrays", "objects", "inside-a-field"])
@pytest.mark.parametrize("path", [GENERATIONS, EDITS])
def test_deeply_nested_json_is_a_400(gateway_url, emulator_url, since, path, body):
    message = refused(post(gateway_url, path, body, "application/json"), 400, "Invalid JSON in request body")
    assert "nested too deeply" in message
    nothing_sent_upstream(emulator_url, since)


def test_nesting_the_parser_accepts_is_still_refused_by_the_schema(gateway_url):
    depth = 500
    body = b'{"prompt": "x", "user": ' + b"[" * depth + b"]" * depth + b"}"
    refused(post(gateway_url, GENERATIONS, body, "application/json"), 400,
            "Invalid request parameters: user: Not a valid string")


@pytest.mark.parametrize("body, reason", [
    (b"[]", "expected a JSON object"),
    (b'[{"prompt": "a fox"}]', "expected a JSON object"),
    (b"42", "expected a JSON object"),
    (b"-1.5e300", "expected a JSON object"),
    (b'"a fox"', "expected a JSON object"),
    (b"true", "expected a JSON object"),
    (b"null", "Invalid JSON in request body"),
    (b"", "Invalid JSON in request body"),
    (b"   ", "Invalid JSON in request body"),
    (b'{"prompt": "a fox"', "Invalid JSON in request body"),
    (b'{"prompt": "a fox"} {}', "Invalid JSON in request body"),
    (b"{'prompt': 'a fox'}", "Invalid JSON in request body"),
    (b'{"prompt": "a fox", "n": 1' + b"0" * 5000 + b"}", "Invalid JSON in request body"),  # int over 4300 digits
], ids=["empty-array", "array", "number", "float", "string", "true", "null", "empty", "blank", "unterminated",
        "trailing-data", "single-quotes", "huge-integer"])
@pytest.mark.parametrize("path", [GENERATIONS, EDITS])
def test_json_that_is_not_an_object_is_a_400(gateway_url, path, body, reason):
    message = refused(post(gateway_url, path, body, "application/json"), 400, reason)
    assert message.startswith("Invalid JSON in request body")


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_refused_naming_the_field(gateway_url, value):
    body = b'{"prompt": "a fox", "n": ' + value.encode() + b"}"
    refused(post(gateway_url, GENERATIONS, body, "application/json"), 400,
            "Invalid request parameters: n: Not a valid integer")


@pytest.mark.parametrize("body", [
    b'{"prompt": "caf\xe9"}',  # Latin-1, not UTF-8
    b'{"prompt": "\xff\xfe\xfd"}',
    b'{"prompt": "a fox", "user": "\xc3"}',  # a truncated two-byte sequence
    b'{"prompt": "\xc0\xaf"}',  # an overlong encoding of "/"
    b'{"prompt": "a fox"}\xff',
], ids=["latin-1", "ff-fe-fd", "truncated-sequence", "overlong", "trailing-byte"])
@pytest.mark.parametrize("path", [GENERATIONS, EDITS])
def test_invalid_utf8_in_a_json_body_is_a_400(gateway_url, emulator_url, since, path, body):
    refused(post(gateway_url, path, body, "application/json"), 400, "Invalid JSON in request body")
    nothing_sent_upstream(emulator_url, since)


def test_surrogate_encoded_in_utf8_bytes_is_a_400(gateway_url, emulator_url, since):
    """ED A0 80 is U+D800 encoded as if it were a character: invalid UTF-8 (CESU-8)."""
    refused(post(gateway_url, GENERATIONS, b'{"prompt": "\xed\xa0\x80 a fox"}', "application/json"), 400,
            "prompt: must be valid Unicode text")
    nothing_sent_upstream(emulator_url, since)


def test_lone_surrogate_escape_in_the_prompt_is_a_400_naming_prompt(gateway_url, emulator_url, since):
    """Valid JSON syntax, but not a Unicode string: it cannot be sent upstream as UTF-8."""
    refused(post(gateway_url, GENERATIONS, b'{"prompt": "\\ud800 a fox"}', "application/json"), 400, "prompt")
    nothing_sent_upstream(emulator_url, since)


def test_lone_surrogate_in_a_logged_only_field_does_no_harm(gateway_url):
    ok(post(gateway_url, GENERATIONS, b'{"prompt": "a fox", "user": "\\ud800"}', "application/json"))


# --- content types ------------------------------------------------------------------------------

JSON_BODY = json.dumps({"prompt": "a fox"}).encode()


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/x-www-form-urlencoded",
                                          None, "", "text/json", "application/jsonx", "image/png"],
                         ids=["text", "xml", "urlencoded", "none", "empty", "text-json", "jsonx", "png"])
def test_wrong_content_type_on_generations_is_a_415_naming_json(gateway_url, emulator_url, since, content_type):
    message = refused(post(gateway_url, GENERATIONS, JSON_BODY, content_type), 415, "Unsupported Media Type")
    assert message == "Unsupported Media Type: send the body as application/json."
    nothing_sent_upstream(emulator_url, since)


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/x-www-form-urlencoded",
                                          None, "multipart/mixed; boundary=x"],
                         ids=["text", "xml", "urlencoded", "none", "multipart-mixed"])
def test_wrong_content_type_on_edits_is_a_415_naming_both_types(gateway_url, content_type):
    body = b"prompt=a+fox&image=x" if content_type == "application/x-www-form-urlencoded" else JSON_BODY
    message = refused(post(gateway_url, EDITS, body, content_type), 415, "Unsupported Media Type")
    assert message == "Unsupported Media Type: send the body as application/json or multipart/form-data."


def test_multipart_on_generations_is_a_415(gateway_url):
    body, content_type = multipart(field("prompt", "a fox"))
    refused(post(gateway_url, GENERATIONS, body, content_type), 415, "application/json")


@pytest.mark.parametrize("content_type", ["multipart/form-data", "multipart/form-data; boundary=",
                                          "multipart/form-data; boundary=not-in-the-body"],
                         ids=["no-boundary", "empty-boundary", "wrong-boundary"])
def test_json_body_labelled_multipart_is_a_4xx_naming_what_is_missing(gateway_url, emulator_url, since,
                                                                      content_type):
    refused(post(gateway_url, EDITS, json.dumps({"prompt": "a fox", "images": [{"image_url": data_url(PNG)}]})
                 .encode(), content_type), 400, "Invalid request parameters", "prompt: Required")
    nothing_sent_upstream(emulator_url, since)


def test_multipart_body_cut_off_before_its_closing_boundary_is_a_400(gateway_url):
    body, content_type = multipart(upload("image", PNG), field("prompt", "a fox"))
    refused(post(gateway_url, EDITS, body[:-40], content_type), 400, "Invalid request parameters")


def test_content_type_with_charset_and_odd_case_is_still_json(gateway_url):
    ok(post(gateway_url, GENERATIONS, JSON_BODY, "Application/JSON; charset=utf-8"))


def test_gzip_body_is_not_inflated(gateway_url):
    """Content-Encoding is not honoured, so a gzip bomb is just 1 KB of invalid JSON."""
    body = zlib.compress(b"[" * 1_000_000)
    refused(post(gateway_url, GENERATIONS, body, "application/json", {"Content-Encoding": "gzip"}), 400,
            "Invalid JSON in request body")
