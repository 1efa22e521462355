"""The OpenRouter provider end to end: the real openai SDK against the gateway under gunicorn,
configured with OpenRouter alone and served by the emulator's chat-completions route."""
import time

import openai
import pytest
import requests

from tests.integration.conftest import (
    AUTH,
    UPSTREAM_KEY,
    emulator_requests,
    generate,
    ok,
    refused,
    sdk_for,
    start_gateway,
    stop,
)
from tests.support import decode, png_bytes

pytestmark = pytest.mark.integration
ALIASES = "dall-e-3=gemini-3-pro-image,flux=openrouter/black-forest-labs/flux.2-pro"


def openrouter_gateway(emulator_url, log, path="/api/v1"):
    return start_gateway(emulator_url, log, GEMINI_API_KEY="", GATEWAY_PROVIDERS="openrouter",
                         OPENROUTER_API_KEY=UPSTREAM_KEY, OPENROUTER_BASE_URL=emulator_url + path,
                         GATEWAY_MODEL_ALIASES=ALIASES)


@pytest.fixture(scope="module")
def openrouter_url(emulator_url, tmp_path_factory):
    process, url = openrouter_gateway(emulator_url, tmp_path_factory.mktemp("logs") / "openrouter.log")
    yield url
    stop(process)


@pytest.fixture
def openrouter_sdk(openrouter_url):
    with sdk_for(openrouter_url) as sdk:
        yield sdk


def test_the_sdk_gets_real_images_through_openrouter(openrouter_sdk, emulator_url):
    since = time.time()
    raw = openrouter_sdk.images.with_raw_response.generate(prompt="a wide harbour", model="dall-e-3", size="1792x1024")
    result = raw.parse()
    assert raw.headers["x-gateway-provider"] == "openrouter"
    image = decode(result.data[0].b64_json)
    assert (image.format, image.size) == ("PNG", (2752, 1536))
    assert result.model == "gemini-3-pro-image"
    assert result.data[0].revised_prompt == "Here is your image: a wide harbour"
    assert result.usage.output_tokens > 0 and result.usage.model_extra["cost"] > 0
    (sent,) = emulator_requests(emulator_url, since)
    assert sent["model"] == "google/gemini-3-pro-image-preview"
    assert sent["generationConfig"] == {"modalities": ["image", "text"],
                                        "image_config": {"aspect_ratio": "16:9", "image_size": "2K"}}


def test_an_edit_through_openrouter_gets_the_input_images(openrouter_sdk, emulator_url):
    since = time.time()
    red, blue = png_bytes((64, 48), (255, 0, 0)), png_bytes((64, 48), (0, 0, 255))
    result = openrouter_sdk.images.edit(image=[("red.png", red), ("blue.png", blue)], prompt="two stripes",
                                model="gemini-3.1-flash-image")
    image = decode(result.data[0].b64_json).convert("RGB")
    assert image.getpixel((0, 0)) == (255, 0, 0) and image.getpixel((image.width - 1, 0)) == (0, 0, 255)
    assert emulator_requests(emulator_url, since)[0]["images"] == [[64, 48], [64, 48]]


def test_an_image_only_model_passes_through(openrouter_sdk, emulator_url):
    since = time.time()
    result = openrouter_sdk.images.generate(prompt="a flux fox", model="flux", n=2)
    assert [decode(item.b64_json).size for item in result.data] == [(1024, 1024)] * 2
    assert result.model == "openrouter/black-forest-labs/flux.2-pro"
    assert result.data[0].revised_prompt == "a flux fox"  # no words from an image-only model
    assert {r["generationConfig"]["modalities"][0] for r in emulator_requests(emulator_url, since)} == {"image"}


def test_models_list_shows_what_openrouter_serves(openrouter_sdk):
    ids = [model.id for model in openrouter_sdk.models.list()]
    assert {"gemini-2.5-flash-image", "gemini-3-pro-image", "gemini-3.1-flash-image", "dall-e-3", "flux"} <= set(ids)
    assert openrouter_sdk.models.retrieve("flux").owned_by == "black-forest-labs"


@pytest.mark.parametrize("fault, status, words, calls", [
    ("fail=402", 503, "has no credits left (HTTP 402)", 1),
    ("fail=401", 502, "the operator should check OPENROUTER_API_KEY", 1),
    ("block=violence", 400, "moderation (violence)", 1),
    ("finish=SAFETY", 400, "safety filters (finish_reason: SAFETY)", 1),
    ("text_only=1", 500, "The model did not generate any images.", 1),
    ("fail=429 retry_after=0", 429, "The OpenRouter API rate limit was reached", 3),
    ("fail=503", 502, "The OpenRouter API failed (HTTP 503)", 3),
])
def test_openrouter_errors_map_to_the_gateways(openrouter_url, emulator_url, fault, status, words, calls):
    prompt = f"an error {time.time()} [emulator: {fault}]"
    since = time.time()
    refused(generate(openrouter_url, prompt), status, words)
    assert len([r for r in emulator_requests(emulator_url, since) if r["prompt"] == prompt]) == calls


def test_the_sdk_raises_the_matching_error(openrouter_sdk):
    with pytest.raises(openai.InternalServerError) as caught:
        openrouter_sdk.images.generate(prompt="no credits [emulator: fail=402]")
    assert caught.value.status_code == 503


def test_any_endpoint_of_this_shape_works(emulator_url, tmp_path):
    """`/v1/chat/completions` (LiteLLM's and llmgateway's path) as well as OpenRouter's `/api/v1`."""
    process, url = openrouter_gateway(emulator_url, tmp_path / "v1.log", path="/v1")
    try:
        response = requests.post(url + "/v1/images/generations", headers=AUTH, json={"prompt": "a v1 fox"}, timeout=60)
        assert response.headers["x-gateway-provider"] == "openrouter"
        ok(response)
    finally:
        stop(process)
