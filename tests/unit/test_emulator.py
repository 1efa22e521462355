"""The offline emulator answers like the Gemini API, so the integration tests mean something."""
import base64
import io

import pytest
from PIL import Image

from emulator import create_emulator
from tests.support import png_bytes

KEY = {"x-goog-api-key": "emulator-key"}


def body(prompt="a fox", image_config=None, images=()):
    parts = [{"inlineData": {"mimeType": "image/png", "data": base64.b64encode(i).decode()}} for i in images]
    config = {"responseModalities": ["TEXT", "IMAGE"]}
    if image_config:
        config["imageConfig"] = image_config
    return {"contents": [{"role": "user", "parts": parts + [{"text": prompt}]}], "generationConfig": config}


def gemini_images(response):
    parts = response.json["candidates"][0]["content"]["parts"]
    return [Image.open(io.BytesIO(base64.b64decode(p["inlineData"]["data"]))) for p in parts
            if "inlineData" in p and not p.get("thought")]


def gemini(emulator, model, payload, headers=KEY):
    return emulator.post(f"/v1beta/models/{model}:generateContent", json=payload, headers=headers)


@pytest.mark.parametrize("model, config, size", [
    ("gemini-2.5-flash-image", {"aspectRatio": "16:9"}, (1344, 768)),
    ("gemini-2.5-flash-image", {"aspectRatio": "21:9"}, (1536, 672)),
    ("gemini-3-pro-image", {"aspectRatio": "16:9"}, (1376, 768)),
    ("gemini-3-pro-image", {"aspectRatio": "16:9", "imageSize": "2K"}, (2752, 1536)),
    ("gemini-3-pro-image-preview", {"aspectRatio": "1:1", "imageSize": "1K"}, (1024, 1024)),
    ("gemini-3.1-flash-image", {"aspectRatio": "1:4"}, (512, 2048)),
    ("gemini-3-pro-image", None, (1024, 1024)),
])
def test_answers_each_models_own_pixel_sizes(emulator, model, config, size):
    response = gemini(emulator, model, body(image_config=config))
    assert response.status_code == 200
    (image,) = gemini_images(response)
    assert (image.format, image.size) == ("PNG", size)


def test_output_is_deterministic_from_the_prompt(emulator):
    first, again, other = (gemini(emulator, "gemini-2.5-flash-image", body(p)) for p in ("a", "a", "b"))
    assert gemini_images(first)[0].tobytes() == gemini_images(again)[0].tobytes() != gemini_images(other)[0].tobytes()


def test_input_images_show_in_order_as_stripes(emulator):
    red, blue = png_bytes((20, 20), (255, 0, 0)), png_bytes((20, 20), (0, 0, 255))
    (image,) = gemini_images(gemini(emulator, "gemini-3-pro-image", body(images=[red, blue])))
    assert image.getpixel((0, 0)) == (255, 0, 0)
    assert image.getpixel((image.width - 1, 0)) == (0, 0, 255)


def test_requires_the_key_header_and_refuses_key_in_url(emulator):
    assert gemini(emulator, "gemini-3-pro-image", body(), headers={}).status_code == 403
    response = emulator.post("/v1beta/models/gemini-3-pro-image:generateContent?key=x", json=body(), headers=KEY)
    assert response.status_code == 400


def test_a_configured_key_refuses_others_like_google(emulator):
    strict = create_emulator(api_key="right").test_client()
    response = gemini(strict, "gemini-3-pro-image", body(), headers={"x-goog-api-key": "wrong"})
    assert response.status_code == 400
    assert response.json["error"]["details"][0]["reason"] == "API_KEY_INVALID"


def test_rejects_what_google_rejects(emulator):
    assert gemini(emulator, "gemini-9", body()).status_code == 404
    assert gemini(emulator, "gemini-3-pro-image", body(image_config={"aspectRatio": "7:4"})).status_code == 400
    assert gemini(emulator, "gemini-2.5-flash-image", body(image_config={"imageSize": "2K"})).status_code == 400


def test_fails_on_request_then_recovers(emulator):
    prompt = "[emulator: fail=503 times=1]"
    assert gemini(emulator, "gemini-3-pro-image", body(prompt)).status_code == 503
    assert gemini(emulator, "gemini-3-pro-image", body(prompt)).status_code == 200


def test_directives_for_safety_text_only_and_thoughts(emulator):
    blocked = gemini(emulator, "gemini-3-pro-image", body("[emulator: block=SAFETY]"))
    assert blocked.json["promptFeedback"]["blockReason"] == "SAFETY"
    assert gemini_images(gemini(emulator, "gemini-3-pro-image", body("[emulator: text_only=1]"))) == []
    withheld = gemini(emulator, "gemini-3-pro-image", body("[emulator: finish=IMAGE_SAFETY]"))
    assert withheld.json["candidates"][0]["finishReason"] == "IMAGE_SAFETY" and gemini_images(withheld) == []
    thoughtful = gemini(emulator, "gemini-3-pro-image", body("[emulator: thoughts=1]"))
    assert [p.get("thought", False) for p in thoughtful.json["candidates"][0]["content"]["parts"]] == [
        True, True, False, False]


def test_reports_usage_per_model_and_tier(emulator):
    response = gemini(emulator, "gemini-3-pro-image", body("x" * 40, {"aspectRatio": "1:1", "imageSize": "4K"}))
    usage = response.json["usageMetadata"]
    assert usage["promptTokenCount"] == 10
    assert usage["candidatesTokenCount"] >= 2000
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
