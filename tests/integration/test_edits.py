"""Edits end to end: the real openai SDK, raw multipart and JSON, the gateway under gunicorn,
the offline emulator upstream, and a local https image host."""
import base64
import io
import time

import openai
import pytest
import requests
from PIL import Image, ImageChops

from tests.integration.conftest import emulator_requests
from tests.support import decode

pytestmark = pytest.mark.integration

RED, BLUE = (220, 20, 20), (20, 20, 220)


def png(size, colour, mode="RGB"):
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def red_png(tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(png((300, 200), RED))
    return path


@pytest.fixture
def blue_png(tmp_path):
    path = tmp_path / "blue.png"
    path.write_bytes(png((200, 200), BLUE))
    return path


def test_sdk_edit_with_one_file(sdk, red_png):
    with open(red_png, "rb") as image:
        result = sdk.images.edit(image=image, prompt="add a hat")
    edited = decode(result.data[0].b64_json)
    assert (edited.format, edited.size) == ("PNG", (1264, 848))  # 300x200 -> 3:2 at 1K on Gemini 3 Pro
    assert edited.getpixel((0, 0)) == RED  # the emulator's stripe for the one input


def test_sdk_edit_with_two_files_sends_both_in_order(sdk, emulator_url, red_png, blue_png):
    since = time.time()
    with open(red_png, "rb") as first, open(blue_png, "rb") as second:
        result = sdk.images.edit(image=[first, second], prompt="put them side by side")
    edited = decode(result.data[0].b64_json)
    assert edited.getpixel((0, 0)) == RED
    assert edited.getpixel((edited.width - 1, 0)) == BLUE
    (sent,) = emulator_requests(emulator_url, since)
    assert sent["images"] == [[300, 200], [200, 200]]
    assert "imageConfig" not in sent["generationConfig"]


def test_sdk_edit_with_mask_keeps_the_source_outside_the_mask(sdk, tmp_path, red_png):
    mask = Image.new("RGBA", (300, 200), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (100, 50, 200, 150))  # transparent square = edit here
    mask_path = tmp_path / "mask.png"
    mask.save(mask_path)
    with open(red_png, "rb") as image, open(mask_path, "rb") as mask_file:
        result = sdk.images.edit(image=image, mask=mask_file, prompt="a blue square in the middle", n=2)
    assert len(result.data) == 2
    source = Image.open(red_png).convert("RGB")
    for item in result.data:
        edited = decode(item.b64_json).convert("RGB")
        assert edited.size == (300, 200)
        outside = Image.new("L", (300, 200), 255)
        outside.paste(0, (100, 50, 200, 150))
        difference = ImageChops.difference(edited, source)
        assert ImageChops.multiply(difference.convert("L"), outside).getbbox() is None
        assert edited.getpixel((150, 100)) != RED  # the model's pixels inside the mask


def test_sdk_edit_options_pass_through(sdk, red_png):
    with open(red_png, "rb") as image:
        result = sdk.images.edit(image=image, prompt="make it webp", output_format="webp", size="1024x1536",
                                 model="gemini-2.5-flash-image", input_fidelity="high")
    edited = decode(result.data[0].b64_json)
    assert (edited.format, edited.size) == ("WEBP", (832, 1248))  # 2:3 on Gemini 2.5 Flash


def test_sdk_edit_bad_mask_raises_bad_request(sdk, tmp_path, red_png):
    mask_path = tmp_path / "opaque.png"
    mask_path.write_bytes(png((300, 200), (0, 0, 0)))
    with open(red_png, "rb") as image, open(mask_path, "rb") as mask_file:
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.images.edit(image=image, mask=mask_file, prompt="x")
    assert "mask: must have an alpha channel" in str(caught.value)


def test_curl_style_multipart_with_image_and_image_brackets(gateway_url, auth, emulator_url, red_png, blue_png):
    since = time.time()
    with open(red_png, "rb") as first, open(blue_png, "rb") as second:
        response = requests.post(f"{gateway_url}/v1/images/edits", headers=auth, timeout=60,
                                 files=[("image", ("a.png", first, "image/png")),
                                        ("image[]", ("b.png", second, "image/png"))],
                                 data={"prompt": "combine", "n": "2"})
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2
    assert [r["images"] for r in emulator_requests(emulator_url, since)] == [[[300, 200], [200, 200]]] * 2


def test_json_edit_with_a_data_url(gateway_url, auth):
    data_url = "data:image/png;base64," + base64.b64encode(png((256, 256), BLUE)).decode()
    response = requests.post(f"{gateway_url}/v1/images/edits", headers=auth, timeout=60,
                             json={"prompt": "recolour", "images": [{"image_url": data_url}]})
    assert response.status_code == 200, response.text
    edited = decode(response.json()["data"][0]["b64_json"])
    assert (edited.size, edited.getpixel((0, 0))) == ((1024, 1024), BLUE)


def test_json_edit_with_an_https_url_from_a_local_tls_host(gateway_url, auth, image_server):
    image_server.files["/photos/red.png"] = png((200, 300), RED)
    response = requests.post(f"{gateway_url}/v1/images/edits", headers=auth, timeout=60, json={
        "prompt": "frame it", "images": [{"image_url": image_server.url("/photos/red.png")}]})
    assert response.status_code == 200, response.text
    edited = decode(response.json()["data"][0]["b64_json"])
    assert (edited.size, edited.getpixel((0, 0))) == ((848, 1264), RED)  # 200x300 -> 2:3
    assert "/photos/red.png" in image_server.requested


def test_json_edit_refuses_a_private_address(gateway_url, auth, image_server):
    url = f"https://127.0.0.1:{image_server.port}/photos/red.png"
    response = requests.post(f"{gateway_url}/v1/images/edits", headers=auth, timeout=60,
                             json={"prompt": "x", "images": [{"image_url": url}]})
    assert response.status_code == 400
    assert response.json()["message"] == (
        "images[0].image_url: could not fetch the image: the host 127.0.0.1 is not a public address")


def test_json_edit_missing_image_on_the_host_is_400(gateway_url, auth, image_server):
    response = requests.post(f"{gateway_url}/v1/images/edits", headers=auth, timeout=60,
                             json={"prompt": "x", "images": [{"image_url": image_server.url("/nope.png")}]})
    assert response.status_code == 400
    assert "HTTP 404" in response.json()["message"]
