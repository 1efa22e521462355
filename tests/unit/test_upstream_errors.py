"""Every upstream failure of docs/api.md's error table, with the Gemini API mocked: the status and
message the client sees, the headers, and how many upstream calls were made (the settings
fixture allows 2 retries with no delay, so a retried failure is 3 calls)."""
import base64
import dataclasses

import pytest
import requests
import responses

from gateway import create_app
from gateway.errors import GatewayError
from gateway.limits import upstream_slots
from gateway.providers.transport import Cancel
from tests.conftest import UPSTREAM_KEY
from tests.support import GENERATE, assert_error, decode, gemini_answer, generate, google_error, image_part, png_bytes

URL = "/v1/images/generations"
NO_IMAGE = ("The model did not generate any images. "
            "Try a different model with image generation capabilities.")
CREDENTIALS = ("The Gemini API refused the gateway's credentials (HTTP {status}); "
               "the operator should check GEMINI_API_KEY.")
GOOGLE_STYLE_KEY = "AIza" + "SyD-0123456789abcdefghijklmnopqrstu"  # fake; split so no key-like literal is committed
SAFETY_FINISH_REASONS = ["SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT",
                         "BLOCKLIST", "SPII", "RECITATION", "IMAGE_RECITATION"]
def reply(upstream, times=1, **kwargs):
    """Register the same upstream answer `times` times (answers are served in order)."""
    for _ in range(times):
        upstream.add(responses.POST, GENERATE, **kwargs)


def fail(upstream, status, message="upstream says no", times=1, reason=None, headers=None):
    reply(upstream, times, json=google_error(status, message, reason), status=status, headers=headers or {})


def succeed(upstream, *parts):
    reply(upstream, json=gemini_answer(*parts))


def assert_one_image(response):
    assert response.status_code == 200, response.get_json()
    data = response.get_json()["data"]
    assert len(data) == 1
    assert decode(data[0]["b64_json"]).size == (64, 48)


# --- upstream HTTP errors -------------------------------------------------------------------

def test_upstream_400_is_400_with_the_upstream_message(client, auth, upstream):
    message = "* GenerateContentRequest.generation_config.image_config.aspect_ratio: unsupported value"
    fail(upstream, 400, message)

    response = generate(client, auth)

    assert_error(response, 400, message)
    assert len(upstream.calls) == 1


def test_upstream_400_api_key_invalid_is_502(client, auth, upstream):
    fail(upstream, 400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID")

    response = generate(client, auth)

    assert_error(response, 502, CREDENTIALS.format(status=400))
    assert len(upstream.calls) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_upstream_auth_failure_is_502_without_the_key(client, auth, upstream, status):
    fail(upstream, status, f"The API key {UPSTREAM_KEY} ({GOOGLE_STYLE_KEY}) was refused.")

    response = generate(client, auth)

    assert_error(response, 502, CREDENTIALS.format(status=status))
    assert UPSTREAM_KEY not in response.get_data(as_text=True)
    assert GOOGLE_STYLE_KEY not in response.get_data(as_text=True)
    assert len(upstream.calls) == 1


@pytest.mark.parametrize("status, gateway_status", [(400, 400), (404, 502), (429, 429), (503, 502)])
def test_google_style_key_in_upstream_message_is_scrubbed(client, auth, upstream, status, gateway_status):
    fail(upstream, status, f"Request with key {GOOGLE_STYLE_KEY} failed", headers={"Retry-After": "0"})

    response = generate(client, auth)

    assert_error(response, gateway_status)
    assert "AIza" not in response.get_data(as_text=True)
    assert response.get_json()["message"].endswith("Request with key [redacted] failed")


@pytest.mark.parametrize("status, gateway_status", [(400, 400), (404, 502)])
def test_configured_key_in_upstream_message_is_never_echoed(client, auth, upstream, status, gateway_status):
    fail(upstream, status, f"Project for API key {UPSTREAM_KEY} is not enabled")

    response = generate(client, auth)

    assert_error(response, gateway_status)
    assert UPSTREAM_KEY not in response.get_data(as_text=True)


def test_upstream_redirect_is_502_and_the_key_never_follows_it(client, auth, upstream):
    reply(upstream, status=307, headers={"Location": "https://elsewhere.test/v1beta/generate"})
    upstream.add(responses.POST, "https://elsewhere.test/v1beta/generate", json=gemini_answer(image_part()))

    response = generate(client, auth)

    assert_error(response, 502, "The Gemini API failed (HTTP 307): HTTP 307")
    assert [GENERATE.fullmatch(call.request.url) is not None for call in upstream.calls] == [True]


def test_upstream_404_is_502(client, auth, upstream):
    fail(upstream, 404, "models/gemini-3-pro-image is not found for API version v1beta")

    response = generate(client, auth)

    assert_error(response, 502, "The Gemini API does not serve this model (HTTP 404): "
                                "models/gemini-3-pro-image is not found for API version v1beta")
    assert len(upstream.calls) == 1


# --- rate limits and retries ----------------------------------------------------------------

def test_upstream_429_after_retries_is_429_with_retry_after(client, auth, upstream):
    fail(upstream, 429, "Resource has been exhausted (e.g. check quota).", times=3, headers={"Retry-After": "0"})

    response = generate(client, auth)

    assert_error(response, 429,
                 "The Gemini API rate limit was reached: Resource has been exhausted (e.g. check quota).")
    assert response.headers["Retry-After"] == "0"
    assert len(upstream.calls) == 3


def test_upstream_429_without_retry_after_still_sends_retry_after(client, auth, upstream):
    fail(upstream, 429, "Resource has been exhausted (e.g. check quota).", times=3)

    response = generate(client, auth)

    assert_error(response, 429, startswith="The Gemini API rate limit was reached")
    assert response.headers["Retry-After"].isdigit() and int(response.headers["Retry-After"]) > 0
    assert len(upstream.calls) == 3


@pytest.mark.parametrize("retry_after", ["soon", "1.5"])
def test_upstream_429_with_unparsable_retry_after_is_429(client, auth, upstream, retry_after):
    fail(upstream, 429, "Resource has been exhausted (e.g. check quota).", times=3,
         headers={"Retry-After": retry_after})

    response = generate(client, auth)

    assert_error(response, 429, startswith="The Gemini API rate limit was reached")
    assert response.headers["Retry-After"].isdigit()


def test_upstream_429_then_success_is_200(client, auth, upstream):
    fail(upstream, 429, "Resource has been exhausted (e.g. check quota).", headers={"Retry-After": "0"})
    succeed(upstream)

    response = generate(client, auth)

    assert_one_image(response)
    assert len(upstream.calls) == 2


def test_upstream_500_then_503_then_success_is_200(client, auth, upstream):
    fail(upstream, 500, "Internal error encountered.")
    fail(upstream, 503, "The model is overloaded. Please try again later.")
    succeed(upstream)

    response = generate(client, auth)

    assert_one_image(response)
    assert len(upstream.calls) == 3


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_upstream_5xx_after_retries_is_502(client, auth, upstream, status):
    fail(upstream, status, "The model is overloaded. Please try again later.", times=3)

    response = generate(client, auth)

    assert_error(response, 502, f"The Gemini API failed (HTTP {status}): "
                                "The model is overloaded. Please try again later.")
    assert len(upstream.calls) == 3


def test_upstream_max_retries_zero_calls_once(settings, auth, upstream):
    client = create_app(dataclasses.replace(settings, upstream_max_retries=0)).test_client()
    fail(upstream, 503, "The model is overloaded. Please try again later.", times=3)

    response = generate(client, auth)

    assert_error(response, 502, startswith="The Gemini API failed (HTTP 503)")
    assert len(upstream.calls) == 1


def test_upstream_timeout_is_504_and_not_retried(client, auth, upstream):
    reply(upstream, times=3, body=requests.exceptions.ReadTimeout())

    response = generate(client, auth)

    assert_error(response, 504, "The Gemini API did not answer within 5 seconds.")
    assert len(upstream.calls) == 1


def test_upstream_connection_error_after_retries_is_502(client, auth, upstream):
    reply(upstream, times=3, body=requests.exceptions.ConnectionError())

    response = generate(client, auth)

    assert_error(response, 502, "Could not reach the Gemini API (ConnectionError).")
    assert len(upstream.calls) == 3


# --- malformed answers ----------------------------------------------------------------------

def test_upstream_non_json_body_after_retries_is_502(client, auth, upstream):
    reply(upstream, times=3, body="<html><body>Bad gateway</body></html>", status=200, content_type="text/html")

    response = generate(client, auth)

    assert_error(response, 502, "The Gemini API returned a malformed response (not JSON).")
    assert len(upstream.calls) == 3


def test_upstream_invalid_base64_after_retries_is_502(client, auth, upstream):
    encoded = base64.b64encode(png_bytes()).decode()
    truncated = encoded[:len(encoded) // 4 * 4 - 2]  # bad padding
    reply(upstream, times=3, json=gemini_answer({"inlineData": {"mimeType": "image/png", "data": truncated}}))

    response = generate(client, auth)

    assert_error(response, 502,
                 "The Gemini API returned an image that cannot be used: the image data is not valid base64.")
    assert len(upstream.calls) == 3


def truncated_png():
    data = png_bytes()
    cut = data[:len(data) - 12]  # drops the IEND chunk
    return cut[:len(cut) // 3 * 3]  # whole base64 groups: valid base64 of a cut PNG


UNUSABLE_IMAGES = [
    pytest.param(truncated_png(), "the PNG data is truncated", id="truncated-png"),
    pytest.param(b"this is text, not an image", "not a decodable image (UnidentifiedImageError)",
                 id="not-an-image"),
]


@pytest.mark.parametrize("data, reason", UNUSABLE_IMAGES)
def test_upstream_unusable_image_is_502_after_retries(client, auth, upstream, data, reason):
    reply(upstream, times=3, json=gemini_answer(image_part(data)))

    response = generate(client, auth)

    assert_error(response, 502, f"The Gemini API returned an image that cannot be used: {reason}.")
    assert len(upstream.calls) == 3


# --- safety and answers without an image ----------------------------------------------------

def test_prompt_block_reason_is_400_naming_it(client, auth, upstream):
    reply(upstream, json={"promptFeedback": {"blockReason": "SAFETY"},
                          "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8}})

    response = generate(client, auth)

    assert_error(response, 400, "The prompt was blocked by Gemini's safety filters (blockReason: SAFETY).")
    assert len(upstream.calls) == 1


@pytest.mark.parametrize("finish_reason", SAFETY_FINISH_REASONS)
def test_safety_finish_reason_without_image_is_400_naming_it(client, auth, upstream, finish_reason):
    reply(upstream, json={"candidates": [{"finishReason": finish_reason, "index": 0}],
                          "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8}})

    response = generate(client, auth)

    assert_error(response, 400,
                 f"The image was withheld by Gemini's safety filters (finishReason: {finish_reason}).")
    assert len(upstream.calls) == 1


def test_text_only_answer_is_500_no_image(client, auth, upstream):
    succeed(upstream, {"text": "Here is a description of a red square instead."})

    response = generate(client, auth)

    assert_error(response, 500, startswith=NO_IMAGE)
    assert len(upstream.calls) == 1


def test_thought_images_are_skipped(client, auth, upstream):
    thought = png_bytes(size=(32, 32), colour=(0, 0, 255))
    real = png_bytes(size=(64, 48), colour=(200, 30, 30))
    succeed(upstream, {"text": "Planning the square.", "thought": True}, image_part(thought, thought=True),
            image_part(real))

    response = generate(client, auth)

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert len(body["data"]) == 1
    image = decode(body["data"][0]["b64_json"])
    assert image.size == (64, 48)
    assert image.convert("RGB").getpixel((10, 10)) == (200, 30, 30)
    assert body["size"] == "64x48"


def test_an_answer_whose_only_image_is_a_thought_returns_that_image(client, auth, upstream):
    succeed(upstream, {"text": "Planning the square.", "thought": True},
            image_part(png_bytes(size=(32, 32), colour=(0, 0, 255)), thought=True))

    response = generate(client, auth)

    assert response.status_code == 200
    assert decode(response.get_json()["data"][0]["b64_json"]).size == (32, 32)
    assert len(upstream.calls) == 1


# --- configuration --------------------------------------------------------------------------

def test_a_model_no_configured_provider_serves_is_503_naming_the_settings(settings, auth, upstream):
    client = create_app(dataclasses.replace(settings, gemini_api_key="")).test_client()

    response = generate(client, auth)

    assert_error(response, 503, "No provider that serves gemini-3-pro-image is configured: set GEMINI_API_KEY "
                                "(or GOOGLE_API_KEY) or VERTEX_PROJECT or OPENROUTER_API_KEY on the gateway.")
    assert len(upstream.calls) == 0


# -- what the SDKs may retry (docs/api.md) ---------------------------------------------

@pytest.mark.parametrize("status", [429, 500, 503])
def test_an_upstream_failure_the_gateway_retried_tells_sdks_not_to_retry(client, auth, upstream, status):
    fail(upstream, status, times=3, headers={"Retry-After": "0"} if status == 429 else None)
    response = generate(client, auth)
    assert response.headers["x-should-retry"] == "false"
    assert len(upstream.calls) == 3
    if status == 429:
        assert response.headers["Retry-After"] == "0"


def test_a_request_the_gateway_did_not_send_upstream_may_be_retried(client, auth, upstream):
    response = generate(client, auth, n=0)
    assert response.status_code == 400 and "x-should-retry" not in response.headers


def test_the_gateway_being_busy_may_be_retried(settings, auth, upstream):
    client = create_app(dataclasses.replace(settings, upstream_max_in_flight=1, upstream_queue_timeout=0)).test_client()
    with upstream_slots(1).hold("another key", 0, Cancel()):
        response = generate(client, auth)
    assert response.status_code == 503 and "x-should-retry" not in response.headers
    assert response.headers["Retry-After"] == "5" and response.get_json()["message"].startswith("The gateway is busy")


@pytest.mark.parametrize("error_format, body", [
    ("seed", {"error": True, "status": 400, "message": "upstream says no"}),
    ("openai", {"error": {"message": "upstream says no", "type": "invalid_request_error", "param": None,
                          "code": "400"}}),
])
def test_gateway_error_format_chooses_the_error_body(settings, auth, upstream, error_format, body):
    client = create_app(dataclasses.replace(settings, error_format=error_format)).test_client()
    fail(upstream, 400)
    response = generate(client, auth)
    assert (response.status_code, response.get_json()) == (400, body)


@pytest.mark.parametrize("upstream_status, status, kind", [(429, 429, "rate_limit_error"), (503, 502, "server_error")])
def test_openai_error_types_follow_the_status(settings, auth, upstream, upstream_status, status, kind):
    client = create_app(dataclasses.replace(settings, error_format="openai")).test_client()
    fail(upstream, upstream_status, times=3, headers={"Retry-After": "0"})
    response = generate(client, auth)
    assert (response.status_code, response.get_json()["error"]["type"]) == (status, kind)


@pytest.mark.parametrize("path, headers, status, kind", [
    ("/v1/images/generations", {}, 401, "authentication_error"), ("/nowhere", {}, 404, "not_found_error")])
def test_openai_error_types_for_the_gateways_own_errors(settings, path, headers, status, kind):
    client = create_app(dataclasses.replace(settings, error_format="openai")).test_client()
    response = client.post(path, json={"prompt": "x"}, headers=headers)
    assert (response.status_code, response.get_json()["error"]["type"]) == (status, kind)


@pytest.mark.parametrize("headers, body", [
    ({"X-Stainless-Lang": "python"}, {"error": {"message": "upstream says no", "type": "invalid_request_error",
                                                "param": None, "code": "400"}}),
    ({"User-Agent": "curl/8.5.0"}, {"error": True, "status": 400, "message": "upstream says no"}),
])
def test_auto_answers_openais_sdks_in_openais_body_and_others_in_the_gateways(client, auth, upstream, headers, body):
    fail(upstream, 400)
    response = generate(client, {**auth, **headers})
    assert (response.status_code, response.get_json()) == (400, body)


@pytest.mark.parametrize("error_format", ["seed", "openai"])
def test_seed_and_openai_force_their_body_whoever_asks(settings, auth, upstream, error_format):
    client = create_app(dataclasses.replace(settings, error_format=error_format)).test_client()
    fail(upstream, 400)
    body = generate(client, {**auth, "X-Stainless-Lang": "js"}).get_json()
    assert isinstance(body["error"], dict) == (error_format == "openai")


def test_a_gateway_errors_code_names_it_in_openais_body(settings):
    app = create_app(dataclasses.replace(settings, error_format="openai"))

    def spent():
        raise GatewayError(429, "Budget spent.", code="insufficient_quota")

    app.add_url_rule("/spent", view_func=spent)
    body = app.test_client().get("/spent").get_json()
    assert body["error"] == {"message": "Budget spent.", "type": "insufficient_quota", "param": None,
                             "code": "insufficient_quota"}  # OpenAI's own type for a spent quota
