"""POST /v1/images/generations: every request the gateway refuses before calling Gemini
(docs/api.md). Each refusal is exactly {"error": true, "status": N, "message": ...}
with the same HTTP status, and never reaches the upstream."""
import dataclasses

import pytest
import responses

from gateway import create_app
from gateway.catalog import MODELS
from tests.support import GENERATE, assert_error, gemini_answer, sent_bodies

URL = "/v1/images/generations"
PREFIX = "Invalid request parameters: "
SIZE_REASON = "must be 'auto' or WIDTHxHEIGHT in pixels, like '1024x1024'"


def error_body(status, message):
    return {"error": True, "status": status, "message": message}


def post_body(client, auth, body):
    """POST exactly `body` (no prompt added)."""
    return client.post(URL, json=body, headers=auth)


def answer_with_an_image(upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())


@pytest.mark.parametrize("body, message", [
    pytest.param({}, "prompt: Required", id="prompt-missing"),
    pytest.param({"prompt": None}, "prompt: Required", id="prompt-null"),
    pytest.param({"prompt": ""}, "prompt: must not be empty", id="prompt-empty"),
    pytest.param({"prompt": " \t\n "}, "prompt: must not be empty", id="prompt-whitespace"),
    pytest.param({"prompt": "x" * 32001}, "prompt: Longer than maximum length 32000", id="prompt-32001-chars"),
    pytest.param({"prompt": "a cat", "n": 0}, "n: must be between 1 and 10", id="n-0"),
    pytest.param({"prompt": "a cat", "n": 11}, "n: must be between 1 and 10", id="n-11"),
    pytest.param({"prompt": "a cat", "n": True}, "n: Not a valid integer", id="n-true"),
    pytest.param({"prompt": "a cat", "n": 1.5}, "n: Not a valid integer", id="n-float"),
    pytest.param({"prompt": "a cat", "n": "2"}, "n: Not a valid integer", id="n-string"),
    pytest.param({"prompt": "a cat", "size": "big"}, f"size: {SIZE_REASON}", id="size-word"),
    pytest.param({"prompt": "a cat", "size": "0x10"}, f"size: {SIZE_REASON}", id="size-zero-width"),
    pytest.param({"prompt": "a cat", "size": "1024x"}, f"size: {SIZE_REASON}", id="size-no-height"),
    pytest.param({"prompt": "a cat", "aspect_ratio": "16-9"}, "aspect_ratio: must be W:H, like '16:9'",
                 id="aspect-ratio-dash"),
    pytest.param({"prompt": "a cat", "quality": "ultra"},
                 "quality: must be one of: standard, hd, low, medium, high, auto", id="quality-ultra"),
    pytest.param({"prompt": "a cat", "style": "loud"}, "style: must be one of: vivid, natural", id="style-loud"),
    pytest.param({"prompt": "a cat", "response_format": "gif"}, "response_format: must be one of: b64_json, url",
                 id="response-format-gif"),
    pytest.param({"prompt": "a cat", "response_format": "url", "stream": True},
                 "response_format: 'url' cannot be streamed: use 'b64_json' with stream: true, or url without it",
                 id="response-format-url-streamed"),
    pytest.param({"prompt": "a cat", "output_format": "gif"}, "output_format: must be one of: png, jpeg, webp",
                 id="output-format-gif"),
    pytest.param({"prompt": "a cat", "output_compression": 101}, "output_compression: must be between 0 and 100",
                 id="output-compression-101"),
    pytest.param({"prompt": "a cat", "output_compression": -1}, "output_compression: must be between 0 and 100",
                 id="output-compression-negative"),
    pytest.param({"prompt": "a cat", "output_compression": True}, "output_compression: Not a valid integer",
                 id="output-compression-true"),
    pytest.param({"prompt": "a cat", "moderation": "strict"}, "moderation: must be one of: auto, low",
                 id="moderation-strict"),
    pytest.param({"prompt": "a cat", "stream": True, "partial_images": 4}, "partial_images: must be between 0 and 3",
                 id="partial-images-4"),
    pytest.param({"prompt": "a cat", "foo": "bar"}, "foo: Unknown field", id="unknown-field"),
    pytest.param({"prompt": "a cat", "model": "dall-e-9"},
                 "model: unknown model 'dall-e-9'; supported models: "
                 "auto, gemini-2.5-flash-image, gemini-3-pro-image, gemini-3.1-flash-image, gpt-image-1, "
                 "gpt-image-1-mini, gpt-image-1.5, openrouter/<vendor>/<model>", id="model-unknown"),
])
def test_invalid_parameter_is_400_naming_the_field(client, auth, upstream, body, message):
    response = post_body(client, auth, body)

    assert response.status_code == 400
    assert response.get_json() == error_body(400, PREFIX + message)
    assert len(upstream.calls) == 0


def test_several_invalid_parameters_are_all_listed(client, auth, upstream):
    response = post_body(client, auth, {"n": 0, "size": "big", "style": "loud", "foo": 1})

    assert response.status_code == 400
    assert response.get_json() == error_body(400, PREFIX + "; ".join([
        "foo: Unknown field",
        "n: must be between 1 and 10",
        "prompt: Required",
        f"size: {SIZE_REASON}",
        "style: must be one of: vivid, natural",
    ]))
    assert len(upstream.calls) == 0


@pytest.mark.parametrize("model", [m.id for m in MODELS if not m.transparent_background])
def test_transparent_background_is_400_naming_background(client, auth, upstream, model):
    response = post_body(client, auth, {"prompt": "a cat", "model": model, "background": "transparent"})

    assert response.status_code == 400
    assert response.get_json() == error_body(
        400, f"{PREFIX}background: 'transparent' is not supported by {model}; use 'auto' or 'opaque'")
    assert len(upstream.calls) == 0


@pytest.mark.parametrize("extra", [
    pytest.param({"prompt": "x" * 32000}, id="prompt-32000-chars"),
    pytest.param({"size": "auto"}, id="size-auto"),
    pytest.param({"background": "opaque"}, id="background-opaque"),
    pytest.param({"stream": False}, id="stream-false"),
    pytest.param({"output_format": "jpeg", "output_compression": 0}, id="output-compression-0"),
    pytest.param({"output_format": "webp", "output_compression": 100}, id="output-compression-100"),
    pytest.param({"user": "user-42", "moderation": "low"}, id="user-and-moderation"),
])
def test_valid_edge_value_is_accepted(client, auth, upstream, extra):
    answer_with_an_image(upstream)

    response = post_body(client, auth, {"prompt": "a cat", **extra})

    assert response.status_code == 200, response.get_json()
    assert len(response.get_json()["data"]) == 1
    assert len(upstream.calls) == 1


def test_prompt_of_32000_chars_is_sent_whole(client, auth, upstream):
    answer_with_an_image(upstream)
    prompt = "ab" * 16000

    response = post_body(client, auth, {"prompt": prompt})

    assert response.status_code == 200
    assert sent_bodies(upstream)[0]["contents"][0]["parts"][-1]["text"] == prompt


def test_json_null_optional_fields_are_treated_as_absent(client, auth, upstream):
    answer_with_an_image(upstream)
    nulls = dict.fromkeys(["model", "n", "size", "aspect_ratio", "quality", "style", "response_format",
                           "output_format", "output_compression", "background", "user", "moderation", "stream"])

    response = post_body(client, auth, {"prompt": "a cat", **nulls})

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["model"], body["output_format"], len(body["data"])) == ("gemini-3-pro-image", "png", 1)
    assert len(upstream.calls) == 1
    assert "imageConfig" not in sent_bodies(upstream)[0]["generationConfig"]


def test_body_that_is_not_json_is_400(client, auth, upstream):
    response = client.post(URL, data='{"prompt": "a cat",', content_type="application/json", headers=auth)

    assert response.status_code == 400
    assert response.get_json() == error_body(400, "Invalid JSON in request body")
    assert len(upstream.calls) == 0


def test_json_array_body_is_400(client, auth, upstream):
    response = client.post(URL, json=[{"prompt": "a cat"}], headers=auth)

    assert response.status_code == 400
    assert response.get_json() == error_body(400, "Invalid JSON in request body: expected a JSON object")
    assert len(upstream.calls) == 0


def test_invalid_utf8_body_is_400(client, auth, upstream):
    response = client.post(URL, data=b'{"prompt": "a \xff\xfe cat"}', content_type="application/json",
                           headers=auth)

    assert response.status_code == 400
    assert response.get_json() == error_body(400, "Invalid JSON in request body")
    assert len(upstream.calls) == 0


def test_text_plain_body_is_415_naming_json(client, auth, upstream):
    response = client.post(URL, data='{"prompt": "a cat"}', content_type="text/plain", headers=auth)

    assert response.status_code == 415
    assert response.get_json() == error_body(415, "Unsupported Media Type: send the body as application/json.")
    assert len(upstream.calls) == 0


def test_unknown_route_is_json_404(client, auth):
    response = client.post("/v1/images/variations", json={"prompt": "a cat"}, headers=auth)

    assert_error(response, 404, startswith="Not Found")


def test_wrong_method_is_json_405_with_allow_header(client, auth):
    response = client.get(URL, headers=auth)

    assert_error(response, 405, startswith="Method Not Allowed")
    assert {m.strip() for m in response.headers["Allow"].split(",")} == {"POST", "OPTIONS"}


def test_body_over_max_content_length_is_json_413(settings, auth, upstream):
    client = create_app(dataclasses.replace(settings, max_content_length=2048)).test_client()

    response = client.post(URL, json={"prompt": "x" * 3000}, headers=auth)

    assert_error(response, 413, startswith="Request Entity Too Large")
    assert len(upstream.calls) == 0
