"""Both providers' wire format, tested as pure functions with no network and no Flask: the body
each builds from an ImageCall, how each reads an answer into a Generation, and how each maps an
upstream error to the neutral errors; plus one mocked round trip of each provider's generate()."""
import dataclasses
import io
import json
import time

import pytest
import requests
import responses
from PIL import Image

from gateway.catalog import resolve_model
from gateway.errors import Blocked, NoCredits, NoImage, RateLimited, Rejected, UpstreamError, UpstreamUnavailable
from gateway.media import SourceImage
from gateway.providers import ImageCall, Usage, gemini, openrouter
from gateway.providers.gemini import GeminiProvider
from gateway.providers.openrouter import OpenRouterProvider
from gateway.providers.transport import Scope
from tests.conftest import OPENROUTER_KEY, UPSTREAM_KEY
from tests.support import (
    GENERATE_URL,
    assert_valid_gemini_request,
    b64,
    data_url,
    gemini_answer,
    google_error,
    image_part,
    png_bytes,
)

GOOGLE_STYLE_KEY = "AIza" + "SyD-0123456789abcdefghijklmnopqrstu"  # fake; split so no key-like literal is committed
OPENROUTER_STYLE_KEY = "sk-" + "or-v1-" + "0123456789abcdef" * 4  # fake, likewise
RED, BLUE = png_bytes(), png_bytes(size=(16, 8), colour=(0, 0, 255))


def jpeg_bytes(size=(32, 24)):
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 10)).save(buffer, "JPEG")
    return buffer.getvalue()


GREEN_JPEG = jpeg_bytes()


def source(data, mime_type="image/png"):
    return SourceImage(data, mime_type, Image.open(io.BytesIO(data)).size)


FLASH_31 = resolve_model("gemini-3.1-flash-image", "gemini-3.1-flash-image")  # every tier and ratio Google has


def image_call(params=None, **fields):
    """A call for FLASH_31 with the client's OpenAI `params` (size, aspect_ratio, quality)."""
    return ImageCall(**{"model": "model-x", "prompt": "a red fox", "catalog": FLASH_31, "params": params or {},
                        **fields})


def http_response(status, body=None, retry_after=None):
    """A requests.Response as the transport hands it to error_for; `body` is JSON unless bytes."""
    response = requests.Response()
    response.status_code = status
    response._content = body if isinstance(body, bytes) else json.dumps(body).encode()
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return response


def openrouter_error(status, message="upstream says no", **metadata):
    error = {"code": status, "message": message}
    if metadata:
        error["metadata"] = metadata
    return {"error": error}


def chat_completion(*urls, content="Here it is.", usage=None, finish_reason="stop", **choice):
    """A chat-completions answer carrying `urls` as message.images."""
    message = {"role": "assistant", "content": content,
               "images": [{"type": "image_url", "image_url": {"url": url}} for url in urls]}
    return {"id": "gen-1", "model": "model-x",
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, **choice}],
            "usage": usage if usage is not None else {"prompt_tokens": 10, "completion_tokens": 1290,
                                                      "total_tokens": 1300}}


def gemini_body(params=None, **fields):
    return json.loads(gemini.build_body(image_call(params, **fields)))


def openrouter_body(params=None, **fields):
    return json.loads(openrouter.build_body(image_call(params, **fields)))


def test_a_call_cannot_be_made_without_its_catalog_model():
    """Every provider maps the client's parameters through the catalog model (its ratios, tiers,
    sizes), so a call without one is refused where it is built, not deep inside a provider."""
    with pytest.raises(TypeError, match="catalog"):
        ImageCall(model="model-x", prompt="a red fox")


# --- Gemini: the request body ------------------------------------------------------------------

def test_gemini_body_sends_the_images_in_order_then_the_prompt():
    body = gemini_body(images=(source(RED), source(GREEN_JPEG, "image/jpeg"), source(BLUE)))
    assert body["contents"] == [{"role": "user", "parts": [
        {"inlineData": {"mimeType": "image/png", "data": b64(RED)}},
        {"inlineData": {"mimeType": "image/jpeg", "data": b64(GREEN_JPEG)}},
        {"inlineData": {"mimeType": "image/png", "data": b64(BLUE)}},
        {"text": "a red fox"},
    ]}]


def test_gemini_body_without_images_is_the_prompt_alone():
    assert gemini_body()["contents"] == [{"role": "user", "parts": [{"text": "a red fox"}]}]


def test_gemini_body_keeps_a_prompt_that_looks_like_the_splice_marker():
    prompt = 'say "data": "" and \\ then "quotes" and ünïcode'
    body = gemini_body(prompt=prompt, images=(source(RED),))
    assert body["contents"][0]["parts"] == [{"inlineData": {"mimeType": "image/png", "data": b64(RED)}},
                                            {"text": prompt}]


@pytest.mark.parametrize(("image_only", "modalities"), [(False, ["TEXT", "IMAGE"]), (True, ["IMAGE"])])
def test_gemini_body_asks_for_words_unless_image_only(image_only, modalities):
    assert gemini_body(image_only=image_only)["generationConfig"]["responseModalities"] == modalities


@pytest.mark.parametrize(("params", "image_config"), [
    ({"aspect_ratio": "16:9"}, {"aspectRatio": "16:9"}),
    ({"quality": "high"}, {"imageSize": "2K"}),
    ({"size": "512x512"}, {"aspectRatio": "1:1", "imageSize": "512"}),
    ({"aspect_ratio": "1:8", "size": "4096x4096"}, {"aspectRatio": "1:8", "imageSize": "4K"}),
])
def test_gemini_body_image_config_holds_only_what_is_set(params, image_config):
    assert gemini_body(params)["generationConfig"]["imageConfig"] == image_config


def test_gemini_body_has_no_image_config_when_nothing_is_set():
    assert "imageConfig" not in gemini_body()["generationConfig"]


@pytest.mark.parametrize("fields", [
    {},
    {"image_only": True},
    {"params": {"size": "512x512"}},
    {"params": {"aspect_ratio": "21:9", "size": "1024x1024"}, "images": (source(RED),)},
    {"params": {"size": "4096x4096"}, "images": (source(RED), source(GREEN_JPEG, "image/jpeg")), "image_only": True},
])
def test_gemini_body_is_a_valid_generate_content_request(fields):
    assert_valid_gemini_request(gemini_body(**fields))


# --- Gemini: reading an answer -----------------------------------------------------------------

def test_gemini_answer_images_are_read_in_order_skipping_thoughts():
    payload = gemini_answer(image_part(BLUE, thought=True), image_part(RED),
                            image_part(GREEN_JPEG, "image/jpeg"), image_part(BLUE))
    images = gemini.parse_answer(payload).images
    assert [image.b64.decode() for image in images] == [b64(RED), b64(GREEN_JPEG), b64(BLUE)]
    assert [(image.format, image.size) for image in images] == [("PNG", (64, 48)), ("JPEG", (32, 24)),
                                                                 ("PNG", (16, 8))]


def test_gemini_answer_words_are_joined_and_trimmed_without_thoughts():
    payload = gemini_answer({"text": "planning...", "thought": True}, {"text": " Here "}, image_part(),
                            {"text": "it is. "})
    assert gemini.parse_answer(payload).text == "Here it is."


def test_gemini_usage_splits_input_by_modality_and_counts_thoughts_as_output():
    usage = gemini.parse_answer(gemini_answer(image_part(), usage={
        "promptTokenCount": 265, "candidatesTokenCount": 1290, "thoughtsTokenCount": 100, "totalTokenCount": 1655,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 7}, {"modality": "IMAGE", "tokenCount": 258}],
    })).usage
    assert usage == Usage(input_text_tokens=7, input_image_tokens=258, input_tokens=265, output_tokens=1390,
                          output_text_tokens=100, total_tokens=1655, cost=None)


def test_gemini_usage_total_defaults_to_input_plus_output():
    usage = gemini.parse_usage({"promptTokenCount": 10, "candidatesTokenCount": 1290, "thoughtsTokenCount": 5})
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (10, 1295, 1305)


@pytest.mark.parametrize("metadata", [None, {}, "garbage"])
def test_gemini_usage_missing_is_all_zero(metadata):
    assert gemini.parse_usage(metadata) == Usage()


def test_gemini_block_reason_is_blocked():
    with pytest.raises(Blocked) as caught:
        gemini.parse_answer({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
    assert caught.value.status == 400 and caught.value.cause == "blocked"
    assert "blockReason: PROHIBITED_CONTENT" in caught.value.message


@pytest.mark.parametrize("finish_reason", sorted(gemini.SAFETY_FINISH_REASONS))
def test_gemini_safety_finish_without_an_image_is_blocked(finish_reason):
    with pytest.raises(Blocked) as caught:
        gemini.parse_answer(gemini_answer({"text": "I can't draw that."}, finish_reason=finish_reason))
    assert caught.value.status == 400
    assert f"finishReason: {finish_reason}" in caught.value.message


def test_gemini_safety_finish_with_an_image_still_answers_the_image():
    assert len(gemini.parse_answer(gemini_answer(image_part(), finish_reason="IMAGE_SAFETY")).images) == 1


def test_gemini_answer_whose_only_image_is_a_thought_uses_the_last_thought_image():
    first, last = png_bytes((20, 20)), png_bytes((30, 20))
    generation = gemini.parse_answer(gemini_answer(image_part(first, thought=True), image_part(last, thought=True)))
    assert [image.data for image in generation.images] == [last]


@pytest.mark.parametrize("payload", [
    gemini_answer({"text": "Only words."}),
    gemini_answer({"text": "Only words."}, finish_reason="MAX_TOKENS"),
    gemini_answer({"text": "Only a thought.", "thought": True}),
    {"candidates": []},
    {},
])
def test_gemini_answer_without_an_image_is_no_image(payload):
    with pytest.raises(NoImage) as caught:
        gemini.parse_answer(payload)
    assert caught.value.status == 500 and caught.value.cause == "no_image"


@pytest.mark.parametrize("payload", [[], "text", None, 42])
def test_gemini_answer_that_is_not_an_object_is_retryable(payload):
    with pytest.raises(UpstreamUnavailable) as caught:
        gemini.parse_answer(payload)
    assert (caught.value.status, caught.value.retryable, caught.value.cause) == (502, True, "malformed")


@pytest.mark.parametrize("inline", [
    {"mimeType": "image/png", "data": "not base64 at all!"},
    {"mimeType": "image/png", "data": b64(b"just some bytes, not an image")},
    {"mimeType": "image/png", "data": b64(RED[:-20])},
    {"mimeType": "image/png", "data": ""},
    {"mimeType": "image/png"},
    "garbage",
])
def test_gemini_unusable_image_is_retryable_bad_image(inline):
    with pytest.raises(UpstreamUnavailable) as caught:
        gemini.parse_answer(gemini_answer({"inlineData": inline}))
    assert (caught.value.status, caught.value.retryable, caught.value.cause) == (502, True, "bad_image")


# --- Gemini: upstream errors -------------------------------------------------------------------

def test_gemini_400_is_rejected_with_the_upstream_message():
    error = gemini.error_for(http_response(400, google_error(400, "aspect_ratio: unsupported value")))
    assert type(error) is Rejected
    assert (error.status, error.message, error.cause) == (400, "aspect_ratio: unsupported value", "upstream_400")


@pytest.mark.parametrize(("status", "reason"), [(400, "API_KEY_INVALID"), (401, None), (403, None)])
def test_gemini_credential_refusals_are_502_naming_the_key_setting(status, reason):
    error = gemini.error_for(http_response(status, google_error(status, reason=reason)))
    assert type(error) is UpstreamError
    assert (error.status, error.retryable) == (502, False)
    assert error.message == (f"The Gemini API refused the gateway's credentials (HTTP {status}); "
                             "the operator should check GEMINI_API_KEY.")


def test_gemini_404_is_a_502_that_names_the_model_problem():
    error = gemini.error_for(http_response(404, google_error(404, "models/nope is not found")))
    assert type(error) is UpstreamError
    assert (error.status, error.retryable) == (502, False)
    assert error.message == "The Gemini API does not serve this model (HTTP 404): models/nope is not found"


@pytest.mark.parametrize(("header", "retry_after", "sent"), [("7", 7, "7"), (None, None, "10")])
def test_gemini_429_is_rate_limited_with_retry_after(header, retry_after, sent):
    error = gemini.error_for(http_response(429, google_error(429, "quota exceeded"), retry_after=header))
    assert type(error) is RateLimited
    assert (error.status, error.retryable, error.retry_after) == (429, True, retry_after)
    assert error.headers == {"Retry-After": sent}
    assert error.message == "The Gemini API rate limit was reached: quota exceeded"




# --- OpenRouter: the request body ------------------------------------------------------------

def test_openrouter_body_is_exactly_the_chat_completions_request():
    body = openrouter_body({"aspect_ratio": "16:9", "size": "2048x2048"},
                           images=(source(RED), source(GREEN_JPEG, "image/jpeg")))
    assert body == {
        "model": "model-x",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "a red fox"},
            {"type": "image_url", "image_url": {"url": data_url(RED)}},
            {"type": "image_url", "image_url": {"url": data_url(GREEN_JPEG, "image/jpeg")}},
        ]}],
        "modalities": ["image", "text"],
        "image_config": {"aspect_ratio": "16:9", "image_size": "2K"},
    }


def test_openrouter_body_without_images_or_image_config():
    assert openrouter_body() == {
        "model": "model-x",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a red fox"}]}],
        "modalities": ["image", "text"],
    }


def test_openrouter_body_image_only_asks_for_images_alone():
    assert openrouter_body(image_only=True)["modalities"] == ["image"]


@pytest.mark.parametrize(("size", "image_size"), [("512x512", "0.5K"), ("1024x1024", "1K"), ("2048x2048", "2K"),
                                                  ("4096x4096", "4K")])
def test_openrouter_body_names_the_tier_as_openrouter_does(size, image_size):
    assert openrouter_body({"size": size})["image_config"] == {"aspect_ratio": "1:1", "image_size": image_size}


def test_openrouter_body_image_config_may_hold_the_aspect_ratio_alone():
    assert openrouter_body({"aspect_ratio": "1:4"})["image_config"] == {"aspect_ratio": "1:4"}


def test_openrouter_body_keeps_a_prompt_that_looks_like_the_splice_marker():
    prompt = 'say "url": "" and \\ then "quotes" and ünïcode'
    content = openrouter_body(prompt=prompt, images=(source(RED),))["messages"][0]["content"]
    assert content == [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": {"url": data_url(RED)}}]


# --- OpenRouter: reading an answer -------------------------------------------------------------

def test_openrouter_answer_images_are_read_in_order():
    answer = openrouter.parse_answer(chat_completion(data_url(RED), data_url(GREEN_JPEG, "image/jpeg"),
                                                       data_url(BLUE)))
    assert [image.b64.decode() for image in answer.images] == [b64(RED), b64(GREEN_JPEG), b64(BLUE)]
    assert [(image.format, image.size) for image in answer.images] == [("PNG", (64, 48)), ("JPEG", (32, 24)),
                                                                       ("PNG", (16, 8))]


@pytest.mark.parametrize(("content", "text"), [
    ("  Here it is. ", "Here it is."),
    ([{"type": "text", "text": "Here "}, {"type": "text", "text": "it is."}], "Here it is."),
    ([{"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "only this"}], "only this"),
    (None, ""),
    ("", ""),
])
def test_openrouter_answer_words_come_from_the_message_content(content, text):
    assert openrouter.parse_answer(chat_completion(data_url(RED), content=content)).text == text


def test_openrouter_usage_splits_image_tokens_from_text_and_keeps_the_cost():
    usage = openrouter.parse_answer(chat_completion(data_url(RED), usage={
        "prompt_tokens": 300, "completion_tokens": 1290, "total_tokens": 1590,
        "prompt_tokens_details": {"image_tokens": 258, "cached_tokens": 0}, "cost": 0.0391,
    })).usage
    assert usage == Usage(input_text_tokens=42, input_image_tokens=258, input_tokens=300, output_tokens=1290,
                          total_tokens=1590, cost=0.0391)
    assert isinstance(usage.cost, float)


def test_openrouter_usage_total_defaults_to_input_plus_output():
    usage = openrouter.parse_usage({"prompt_tokens": 10, "completion_tokens": 1290})
    assert usage == Usage(input_text_tokens=10, input_tokens=10, output_tokens=1290, total_tokens=1300)


@pytest.mark.parametrize(("usage", "cost"), [
    ({"prompt_tokens": 1}, None),
    ({"cost": None}, None),
    ({"cost": "0.04"}, None),
    ({"cost": True}, None),
    ({"cost": 0.0}, 0.0),
    ({"cost": 2}, 2),
    ({"cost": float("nan")}, None),
    ({"cost": float("inf")}, None),
    ({"cost": -1}, None),
    ({"cost": 1e300}, None),
])
def test_openrouter_usage_cost_is_kept_only_when_a_plausible_number(usage, cost):
    assert openrouter.parse_usage(usage).cost == cost


def test_openrouter_usage_garbage_counts_are_zero():
    usage = openrouter.parse_usage({"prompt_tokens": "300", "completion_tokens": 1290.5, "total_tokens": "x",
                                    "prompt_tokens_details": {"image_tokens": True}})
    assert usage == Usage()


def test_openrouter_usage_garbage_details_and_excess_image_tokens_leave_no_negative_text():
    assert openrouter.parse_usage({"prompt_tokens": 5, "prompt_tokens_details": [258]}).input_image_tokens == 0
    usage = openrouter.parse_usage({"prompt_tokens": 5, "prompt_tokens_details": {"image_tokens": 258}})
    assert (usage.input_text_tokens, usage.input_image_tokens) == (0, 258)


@pytest.mark.parametrize("usage", [None, "garbage", {}])
def test_openrouter_usage_missing_is_all_zero(usage):
    assert openrouter.parse_usage(usage) == Usage()


@pytest.mark.parametrize("item", [
    {"type": "image_url", "image_url": {"url": "https://cdn.example/image.png"}},
    {"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGVsbG8="}},
    {"type": "image_url", "image_url": {"url": "data:image/png," + b64(RED)}},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,not base64!"}},
    {"type": "image_url", "image_url": {"url": data_url(RED[:-20])}},
    {"type": "image_url", "image_url": {"url": None}},
    {"type": "image_url"},
    "garbage",
])
def test_openrouter_unusable_image_is_retryable_bad_image(item):
    payload = chat_completion()
    payload["choices"][0]["message"]["images"] = [item]
    with pytest.raises(UpstreamUnavailable) as caught:
        openrouter.parse_answer(payload)
    assert (caught.value.status, caught.value.retryable, caught.value.cause) == (502, True, "bad_image")


@pytest.mark.parametrize(("native", "named"), [("IMAGE_SAFETY", "IMAGE_SAFETY"), (None, "content_filter")])
def test_openrouter_content_filter_without_an_image_is_blocked(native, named):
    with pytest.raises(Blocked) as caught:
        openrouter.parse_answer(chat_completion(finish_reason="content_filter", native_finish_reason=native))
    assert (caught.value.status, caught.value.cause) == (400, "blocked")
    assert f"(finish_reason: {named})" in caught.value.message


def test_openrouter_content_filter_with_an_image_still_answers_the_image():
    answer = openrouter.parse_answer(chat_completion(data_url(RED), finish_reason="content_filter"))
    assert len(answer.images) == 1


@pytest.mark.parametrize("payload", [
    chat_completion(),
    chat_completion(finish_reason="length"),
    {"choices": [{"message": {"role": "assistant", "content": "words"}, "finish_reason": "stop"}]},
    {"choices": [{"finish_reason": "stop"}]},
    {"choices": []},
    {},
])
def test_openrouter_answer_without_an_image_is_no_image(payload):
    with pytest.raises(NoImage) as caught:
        openrouter.parse_answer(payload)
    assert caught.value.status == 500


@pytest.mark.parametrize(("where", "code", "kind", "status"), [
    ("top", 502, UpstreamUnavailable, 502),
    ("choice", 502, UpstreamUnavailable, 502),
    ("top", 429, RateLimited, 429),
    ("choice", 429, RateLimited, 429),
    ("choice", 400, Rejected, 400),
    ("top", 402, NoCredits, 503),
    ("choice", None, UpstreamUnavailable, 502),
    ("choice", "boom", UpstreamUnavailable, 502),
])
def test_openrouter_error_inside_a_200_is_mapped_by_its_code(where, code, kind, status):
    payload = chat_completion(data_url(RED))
    error = {"code": code, "message": "Provider returned error"}
    if where == "top":
        payload["error"] = error
    else:
        payload["choices"][0]["error"] = error
    with pytest.raises(kind) as caught:
        openrouter.parse_answer(payload)
    assert type(caught.value) is kind and caught.value.status == status
    assert "Provider returned error" in caught.value.message


def test_openrouter_rate_limit_inside_a_200_waits_the_default():
    with pytest.raises(RateLimited) as caught:
        openrouter.parse_answer({"error": {"code": 429, "message": "slow down"}})
    assert caught.value.retry_after is None and caught.value.headers == {"Retry-After": "10"}


@pytest.mark.parametrize("payload", [[], "text", None, 42])
def test_openrouter_answer_that_is_not_an_object_is_retryable(payload):
    with pytest.raises(UpstreamUnavailable) as caught:
        openrouter.parse_answer(payload)
    assert (caught.value.status, caught.value.retryable, caught.value.cause) == (502, True, "malformed")


def test_openrouter_configured_key_in_an_error_inside_a_200_is_redacted():
    with pytest.raises(Rejected) as caught:
        openrouter.parse_answer({"error": {"code": 400, "message": f"key {OPENROUTER_KEY} is invalid"}}, OPENROUTER_KEY)
    assert OPENROUTER_KEY not in caught.value.message


@pytest.mark.parametrize("usage", [{"promptTokenCount": None, "thoughtsTokenCount": None}, {"totalTokenCount": "9"}])
def test_gemini_usage_with_nulls_or_strings_counts_nothing_for_them(usage):
    assert gemini.parse_usage(usage).total_tokens == 0


def test_openrouter_content_parts_whose_text_is_not_a_string_are_skipped():
    answer = chat_completion(data_url(png_bytes()), content=[{"type": "text", "text": 5},
                                                               {"type": "text", "text": "a fox"}])
    assert openrouter.parse_answer(answer).text == "a fox"

# --- OpenRouter: upstream errors ---------------------------------------------------------------

def test_openrouter_400_is_rejected_with_the_upstream_message():
    error = openrouter.error_for(http_response(400, openrouter_error(400, "image_config.image_size is invalid")))
    assert type(error) is Rejected
    assert (error.status, error.message, error.cause) == (400, "image_config.image_size is invalid", "upstream_400")


@pytest.mark.parametrize("status", [401, 403])
def test_openrouter_credential_refusals_are_502_naming_the_key_setting(status):
    error = openrouter.error_for(http_response(status, openrouter_error(status, "No auth credentials found")))
    assert type(error) is UpstreamError
    assert (error.status, error.retryable) == (502, False)
    assert error.message == (f"The OpenRouter API refused the gateway's credentials (HTTP {status}); "
                             "the operator should check OPENROUTER_API_KEY.")


def test_openrouter_403_with_moderation_reasons_is_blocked_naming_them():
    body = openrouter_error(403, "Input was flagged", reasons=["violence", "hate"], flagged_input="...")
    error = openrouter.error_for(http_response(403, body))
    assert type(error) is Blocked
    assert (error.status, error.cause) == (400, "blocked")
    assert error.message == "The prompt was blocked by the OpenRouter API's moderation (violence, hate)."


def test_openrouter_402_is_no_credits_503():
    error = openrouter.error_for(http_response(402, openrouter_error(402, "Insufficient credits")))
    assert type(error) is NoCredits
    assert (error.status, error.retryable, error.cause) == (503, False, "upstream_402")
    assert error.message == ("The OpenRouter API account of this gateway has no credits left (HTTP 402); "
                             "the operator must add credits: Insufficient credits")


def test_openrouter_404_is_a_502_that_names_the_model_problem():
    error = openrouter.error_for(http_response(404, openrouter_error(404, "No endpoints found for model-x")))
    assert type(error) is UpstreamError
    assert (error.status, error.retryable) == (502, False)
    assert error.message == "The OpenRouter API does not serve this model (HTTP 404): No endpoints found for model-x"


PROVIDER_ERRORS = [(gemini, google_error, "The Gemini API"), (openrouter, openrouter_error, "The OpenRouter API")]


@pytest.mark.parametrize("provider, error_body, subject", PROVIDER_ERRORS)
@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retryable(provider, error_body, subject, status):
    error = provider.error_for(http_response(status, error_body(status, "try later")))
    assert type(error) is UpstreamUnavailable
    assert (error.status, error.retryable, error.cause) == (502, True, f"upstream_{status}")
    assert error.message == f"{subject} failed (HTTP {status}): try later"


@pytest.mark.parametrize("provider, error_body, subject", PROVIDER_ERRORS)
def test_a_501_is_not_retryable(provider, error_body, subject):
    error = provider.error_for(http_response(501, error_body(501)))
    assert type(error) is UpstreamError
    assert (error.status, error.retryable) == (502, False)


def test_an_openrouter_408_is_retryable():
    assert type(openrouter.error_for(http_response(408, openrouter_error(408)))) is UpstreamUnavailable


@pytest.mark.parametrize(("header", "retry_after", "sent"), [("7", 7, "7"), (None, None, "10")])
def test_openrouter_429_is_rate_limited_with_retry_after(header, retry_after, sent):
    error = openrouter.error_for(http_response(429, openrouter_error(429, "Rate limit exceeded"), retry_after=header))
    assert type(error) is RateLimited
    assert (error.status, error.retryable, error.retry_after, error.cause) == (429, True, retry_after, "upstream_429")
    assert error.headers == {"Retry-After": sent}
    assert error.message == "The OpenRouter API rate limit was reached: Rate limit exceeded"


@pytest.mark.parametrize("body", [b"<html>Bad Gateway</html>", b"", {"error": "a string"}, {"detail": "x"}, []])
@pytest.mark.parametrize(("status", "kind"), [(400, Rejected), (500, UpstreamUnavailable)])
def test_openrouter_error_without_an_error_object_says_the_status(body, status, kind):
    error = openrouter.error_for(http_response(status, body))
    assert type(error) is kind
    assert error.message.endswith(f"HTTP {status}")
    if status == 400:
        assert error.message == "HTTP 400"


@pytest.mark.parametrize("body", [b"<html>Bad Gateway</html>", {"error": "a string"}, []])
def test_gemini_error_without_an_error_object_says_the_status(body):
    assert gemini.error_for(http_response(400, body)).message == "HTTP 400"


@pytest.mark.parametrize("provider, error_body, key, key_shaped, status", [
    *((gemini, google_error, UPSTREAM_KEY, GOOGLE_STYLE_KEY, status) for status in (400, 404, 429, 500)),
    *((openrouter, openrouter_error, OPENROUTER_KEY, OPENROUTER_STYLE_KEY, status)
      for status in (400, 402, 404, 429, 500)),
])
def test_keys_in_upstream_messages_are_redacted(provider, error_body, key, key_shaped, status):
    message = f"key {key} and {key_shaped} are invalid"
    error = provider.error_for(http_response(status, error_body(status, message)), key)
    assert key not in error.message and key_shaped not in error.message
    assert "key [redacted] and [redacted] are invalid" in error.message


# --- Usage -------------------------------------------------------------------------------------

def test_usage_addition_sums_every_count_and_the_costs():
    total = Usage(1, 2, 3, 4, 5, cost=0.5) + Usage(10, 20, 30, 40, 50, cost=0.25)
    assert total == Usage(11, 22, 33, 44, 55, cost=0.75)


@pytest.mark.parametrize(("first", "second", "cost"), [
    (None, None, None), (0.5, None, 0.5), (None, 0.25, 0.25), (0.0, None, 0.0),
])
def test_usage_addition_keeps_the_cost_that_is_known(first, second, cost):
    assert (Usage(cost=first) + Usage(cost=second)).cost == cost


# --- the providers' generate(), with the upstream mocked ----------------------------------------

def test_gemini_provider_posts_to_generate_content_with_its_key(settings):
    provider = GeminiProvider(settings)
    request = provider.request_for(image_call(model="gemini-3-pro-image-preview", images=(source(BLUE),)))
    url = GENERATE_URL.format(model="gemini-3-pro-image-preview")
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, url, json=gemini_answer({"text": "A fox."}, image_part(RED)))
        generation = provider.generate(request, Scope(time.monotonic() + 5))
        sent = mock.calls[0].request
    assert sent.url == url
    assert sent.headers["x-goog-api-key"] == UPSTREAM_KEY
    assert sent.body == request.body
    assert [image.b64.decode() for image in generation.images] == [b64(RED)]
    assert (generation.text, generation.attempts) == ("A fox.", 1)


def test_openrouter_provider_posts_chat_completions_with_a_bearer_key(settings):
    settings = dataclasses.replace(settings, openrouter_api_key=OPENROUTER_KEY,
                                   openrouter_base_url="https://openrouter.test/api/v1")
    provider = OpenRouterProvider(settings)
    request = provider.request_for(image_call(model="google/gemini-3-pro-image-preview", images=(source(BLUE),)))
    url = "https://openrouter.test/api/v1/chat/completions"
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, url, json=chat_completion(data_url(RED), usage={
            "prompt_tokens": 300, "completion_tokens": 1290, "total_tokens": 1590, "cost": 0.04}))
        generation = provider.generate(request, Scope(time.monotonic() + 5))
        sent = mock.calls[0].request
    assert sent.url == url
    assert sent.headers["Authorization"] == f"Bearer {OPENROUTER_KEY}"
    assert sent.body == request.body
    assert json.loads(sent.body)["model"] == "google/gemini-3-pro-image-preview"
    assert [image.b64.decode() for image in generation.images] == [b64(RED)]
    assert (generation.text, generation.usage.cost, generation.attempts) == ("Here it is.", 0.04, 1)
