"""The real openai SDK against the gateway under gunicorn, served by the offline emulator."""
import time

import openai
import pytest

from tests.integration.conftest import emulator_requests
from tests.support import decode

pytestmark = pytest.mark.integration


def test_generate_one_png(sdk):
    result = sdk.images.generate(prompt="a red fox in snow")
    assert len(result.data) == 1
    image = decode(result.data[0].b64_json)
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    assert result.data[0].revised_prompt == "Here is your image: a red fox in snow"
    assert result.size == "1024x1024"
    assert result.usage.output_tokens > 0


def test_n_3_returns_three_images_from_three_upstream_calls(sdk, emulator_url):
    since = time.time()
    result = sdk.images.generate(prompt="three owls", n=3)
    assert len(result.data) == 3
    assert all(decode(item.b64_json).format == "PNG" for item in result.data)
    assert len([r for r in emulator_requests(emulator_url, since) if r["prompt"] == "three owls"]) == 3


def test_size_1792x1024_gives_a_16_9_image_at_2k(sdk, emulator_url):
    since = time.time()
    result = sdk.images.generate(prompt="a wide harbour", size="1792x1024")
    assert decode(result.data[0].b64_json).size == (2752, 1536)  # Gemini 3 Pro's 16:9 at 2K
    (sent,) = emulator_requests(emulator_url, since)
    assert sent["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}


def test_extra_body_aspect_ratio(sdk):
    result = sdk.images.generate(prompt="a banner", model="gemini-2.5-flash-image", extra_body={"aspect_ratio": "16:9"})
    assert decode(result.data[0].b64_json).size == (1344, 768)
    assert result.model == "gemini-2.5-flash-image"


def test_output_format_jpeg(sdk):
    result = sdk.images.generate(prompt="a jpeg cat", output_format="jpeg", output_compression=80)
    image = decode(result.data[0].b64_json)
    assert (image.format, image.size) == ("JPEG", (1024, 1024))
    assert result.output_format == "jpeg"


def test_thought_images_never_reach_the_client(sdk):
    result = sdk.images.generate(prompt="a thoughtful robot [emulator: thoughts=1]", model="nano-banana-pro")
    assert len(result.data) == 1
    assert decode(result.data[0].b64_json).size == (1024, 1024)


def test_bad_request_raises_bad_request_error_with_the_gateways_message(sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.images.generate(prompt="x", n=11)
    error = caught.value
    assert error.status_code == 400
    assert str(error) == "Error code: 400 - Invalid request parameters: n: must be between 1 and 10"
    assert error.response.json() == {"error": {
        "message": "Invalid request parameters: n: must be between 1 and 10", "type": "invalid_request_error",
        "param": None, "code": "400"}}


def test_wrong_key_raises_authentication_error(gateway_url):
    with openai.OpenAI(base_url=gateway_url + "/v1", api_key="wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            client.images.generate(prompt="x")
    assert caught.value.status_code == 401


def test_text_only_answer_raises_internal_server_error(sdk):
    with pytest.raises(openai.InternalServerError) as caught:
        sdk.images.generate(prompt="just talk [emulator: text_only=1]")
    assert caught.value.message.endswith(
        "The model did not generate any images. Try a different model with image generation capabilities.")


def test_rate_limit_after_retries_raises_rate_limit_error(sdk):
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.images.generate(prompt="busy [emulator: fail=429 retry_after=0]")
    assert caught.value.response.headers["retry-after"] == "0"
