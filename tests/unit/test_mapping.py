"""OpenAI size / aspect_ratio / quality / style -> Google's aspect ratio and tier, and the prompt (docs/api.md)."""
import dataclasses

import pytest
import responses

from gateway import create_app
from gateway.catalog import resolve_model
from gateway.providers.google import image_shape
from tests.support import GENERATE, gemini_answer, sent_bodies

PRO = resolve_model("gemini-3-pro-image", "gemini-3-pro-image")
FLASH = resolve_model("gemini-2.5-flash-image", "gemini-3-pro-image")
FLASH_31 = resolve_model("gemini-3.1-flash-image", "gemini-3-pro-image")


def shape_for(model, **params):
    return image_shape(model, params)


@pytest.mark.parametrize("size, ratio", [
    ("1024x1024", "1:1"),
    ("1792x1024", "16:9"),
    ("1024x1792", "9:16"),
    ("1536x1024", "3:2"),
    ("1024x1536", "2:3"),
    ("1280x1024", "5:4"),
    ("2520x1080", "21:9"),
])
def test_size_maps_to_nearest_aspect_ratio(size, ratio):
    assert shape_for(FLASH, size=size) == (ratio, None)


def test_aspect_ratio_7_4_maps_to_16_9():
    assert shape_for(FLASH, aspect_ratio="7:4") == ("16:9", None)


def test_aspect_ratio_beats_size_for_the_ratio():
    assert shape_for(FLASH, size="1024x1024", aspect_ratio="16:9") == ("16:9", None)


def test_size_still_picks_the_tier_when_aspect_ratio_is_given():
    assert shape_for(PRO, size="2048x2048", aspect_ratio="9:16") == ("9:16", "2K")


def test_tall_ratios_exist_only_on_gemini_3_1_flash():
    assert shape_for(FLASH_31, aspect_ratio="1:8") == ("1:8", None)
    assert shape_for(PRO, aspect_ratio="1:8") == ("9:16", None)


def test_9_21_is_no_ratio_of_googles_so_it_maps_to_the_nearest_one():
    assert shape_for(FLASH_31, size="640x1493") == ("9:16", "1K")
    assert shape_for(FLASH_31, aspect_ratio="9:21") == ("9:16", None)


@pytest.mark.parametrize("size, tier", [
    ("1024x1024", "1K"), ("1536x1024", "1K"), ("1792x1024", "2K"), ("3072x3072", "2K"), ("4096x4096", "4K"),
    ("512x512", "1K"),
])
def test_long_edge_picks_the_tier_on_models_with_tiers(size, tier):
    assert shape_for(PRO, size=size)[1] == tier


@pytest.mark.parametrize("size, tier", [("256x256", "512"), ("640x360", "512"), ("641x360", "1K")])
def test_long_edges_up_to_640_pick_the_512_tier_of_gemini_3_1_flash(size, tier):
    assert shape_for(FLASH_31, size=size)[1] == tier


def test_no_tier_is_sent_to_a_model_without_tiers():
    assert shape_for(FLASH, size="4096x4096", quality="hd") == ("1:1", None)


@pytest.mark.parametrize("quality", ["hd", "high"])
def test_hd_and_high_raise_the_tier_to_at_least_2k(quality):
    assert shape_for(PRO, size="1024x1024", quality=quality) == ("1:1", "2K")
    assert shape_for(PRO, quality=quality) == (None, "2K")
    assert shape_for(FLASH_31, size="512x512", quality=quality) == ("1:1", "2K")


def test_hd_keeps_4k_when_size_asks_for_it():
    assert shape_for(PRO, size="4096x2304", quality="hd") == ("16:9", "4K")


@pytest.mark.parametrize("quality", ["standard", "low", "medium", "auto"])
def test_other_qualities_do_not_change_the_tier(quality):
    assert shape_for(PRO, size="1024x1024", quality=quality) == ("1:1", "1K")


def test_size_auto_and_no_size_leave_the_shape_to_the_model():
    assert shape_for(PRO, size="auto") == (None, None)
    assert shape_for(PRO) == (None, None)


def gemini_body_for(client, auth, upstream, **params):
    """The body Gemini is sent for a generation with `params`."""
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    response = client.post("/v1/images/generations", json={"prompt": "a lighthouse", **params}, headers=auth)
    assert response.status_code == 200, response.json
    return sent_bodies(upstream)[0]


def test_upstream_body_for_size_1792x1024_on_the_default_model(client, auth, upstream):
    body = gemini_body_for(client, auth, upstream, size="1792x1024")
    assert upstream.calls[0].request.url == "https://gemini.test/v1beta/models/gemini-3-pro-image:generateContent"
    assert body == {
        "contents": [{"role": "user", "parts": [{"text": "a lighthouse"}]}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"],
                             "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"}},
    }


def test_the_512_tier_is_sent_to_gemini_as_512(client, auth, upstream):
    body = gemini_body_for(client, auth, upstream, model="gemini-3.1-flash-image", size="512x512")
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "1:1", "imageSize": "512"}


def test_upstream_body_has_no_image_config_without_size(client, auth, upstream):
    body = gemini_body_for(client, auth, upstream)
    assert body["generationConfig"] == {"responseModalities": ["TEXT", "IMAGE"]}
    assert "candidateCount" not in body["generationConfig"]


@pytest.mark.parametrize("style, words", [("vivid", "vivid style"), ("natural", "natural style")])
def test_style_adds_one_sentence_to_the_prompt(client, auth, upstream, style, words):
    body = gemini_body_for(client, auth, upstream, style=style)
    text = body["contents"][0]["parts"][0]["text"]
    assert text.startswith("a lighthouse\n\n") and words in text and text.count("\n\n") == 1


@pytest.mark.parametrize("model, upstream_id", [
    ("auto", "gemini-3-pro-image"),
    ("nano-banana", "gemini-2.5-flash-image"),
    ("gemini-2.5-flash-image-preview", "gemini-2.5-flash-image"),
    ("gemini-3-pro-image-preview", "gemini-3-pro-image"),
    ("nano-banana-pro", "gemini-3-pro-image"),
    ("nano-banana-2", "gemini-3.1-flash-image"),
    ("gemini-3.1-flash-image", "gemini-3.1-flash-image"),
])
def test_model_names_and_aliases_call_the_catalog_upstream_id(client, auth, upstream, model, upstream_id):
    gemini_body_for(client, auth, upstream, model=model)
    assert upstream.calls[0].request.url.endswith(f"/models/{upstream_id}:generateContent")


def test_upstream_model_id_is_overridable_by_configuration(settings, upstream, auth):
    overridden = dataclasses.replace(settings, upstream_models={"gemini-3-pro-image": "gemini-3-pro-image-preview"})
    gemini_body_for(create_app(overridden).test_client(), auth, upstream)
    assert upstream.calls[0].request.url.endswith("/models/gemini-3-pro-image-preview:generateContent")


def test_default_model_is_configurable(settings, upstream, auth):
    flash = dataclasses.replace(settings, default_model="nano-banana")
    client = create_app(flash).test_client()
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    response = client.post("/v1/images/generations", json={"prompt": "x"}, headers=auth)
    assert response.json["model"] == "gemini-2.5-flash-image"
