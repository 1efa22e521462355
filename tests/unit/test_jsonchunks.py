"""JSON with base64 spliced in is the same JSON the encoder would write."""
import json

import pytest

from gateway.jsonchunks import json_chunks, loads_carving


def test_blobs_land_in_order_in_the_marked_fields():
    document = {"a": [{"data": ""}, {"data": ""}], "text": 'say "data": "" here'}
    body = b"".join(json_chunks(document, "data", [b"QUJD", b"REVG"]))
    assert json.loads(body) == {"a": [{"data": "QUJD"}, {"data": "REVG"}], "text": 'say "data": "" here'}


LONG = "QUJD" * 2000


@pytest.mark.parametrize("document", [
    {"candidates": [{"content": {"parts": [{"text": "a fox"}, {"inlineData": {"mimeType": "image/png", "data": LONG}},
                                           {"inlineData": {"data": LONG[::-1]}}]}}]},
    {"choices": [{"message": {"content": 'say "hi" \\ there', "images": [{"image_url": {"url": "data:," + LONG}}]}}]},
    {"data": LONG, "other": LONG, "text": "x" * 5000},
])
@pytest.mark.parametrize("indent", [None, 2])
def test_loads_carving_reads_what_json_reads_with_long_images_as_bytes(document, indent):
    body = json.dumps(document, indent=indent).encode()
    carved = loads_carving(body)

    def as_text(value):
        if isinstance(value, dict):
            return {key: as_text(item) for key, item in value.items()}
        if isinstance(value, list):
            return [as_text(item) for item in value]
        return value.decode() if isinstance(value, bytes) else value

    assert as_text(carved) == json.loads(body)


def test_only_long_image_values_are_carved():
    carved = loads_carving(json.dumps({"data": LONG, "other": LONG, "short": {"data": "QUJD"}}).encode())
    assert isinstance(carved["data"], bytes) and isinstance(carved["other"], str)
    assert carved["short"]["data"] == "QUJD"


def test_a_string_with_escapes_is_left_to_the_parser():
    escaped = {"data": "QUJD" * 2000 + "\\u0041"}
    assert loads_carving(json.dumps(escaped).encode()) == escaped


@pytest.mark.parametrize("body", [b'{"data": "' + b"A" * 5000, b"<html>", b'{"data": "' + b"A" * 5000 + b'"'])
def test_malformed_json_is_still_a_value_error(body):
    with pytest.raises(ValueError):
        loads_carving(body)
