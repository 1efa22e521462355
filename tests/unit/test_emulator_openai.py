"""The offline emulator answers like OpenAI's Images API for the gpt-image models, and refuses
what the real one refuses, so a wrong wire fails the integration tests."""
import base64
import io

import pytest
from PIL import Image

from emulator import create_emulator
from tests.support import png_bytes

KEY = {"Authorization": "Bearer emulator-key"}


@pytest.fixture
def emulator():
    return create_emulator("emulator-key").test_client()


def generate(emulator, **fields):
    return emulator.post("/v1/images/generations", json={"model": "gpt-image-1", "prompt": "a fox", **fields},
                         headers=KEY)


def edit(emulator, mask=None, **fields):
    files = {"image[]": (io.BytesIO(png_bytes(size=(64, 64))), "photo.png")}
    if mask is not None:
        files["mask"] = (io.BytesIO(mask), "mask.png")
    return emulator.post("/v1/images/edits", data={"model": "gpt-image-1", "prompt": "a boat", **fields, **files},
                         headers=KEY)


def picture(b64):
    return Image.open(io.BytesIO(base64.b64decode(b64)))


@pytest.mark.parametrize("size", ["1024x1024", "1536x1024", "1024x1536"])
def test_a_generation_is_a_png_of_the_asked_size_with_usage(emulator, size):
    response = generate(emulator, size=size, quality="low")
    assert response.status_code == 200
    image = picture(response.json["data"][0]["b64_json"])
    assert (image.format, f"{image.size[0]}x{image.size[1]}") == ("PNG", size)
    assert response.json["usage"]["output_tokens"] > 0 and response.json["usage"]["input_tokens"] > 0


def test_n_images_come_in_one_answer(emulator):
    assert len(generate(emulator, n=3).json["data"]) == 3


@pytest.mark.parametrize(("fields", "message"), [
    ({"response_format": "b64_json"}, "Unknown parameter: 'response_format'."),
    ({"style": "vivid"}, "Unknown parameter: 'style'."),
    ({"size": "1792x1024"}, "Invalid value: '1792x1024'."),
    ({"quality": "hd"}, "Invalid value: 'hd'."),
    ({"model": "dall-e-3"}, "Invalid value for 'model'"),
    ({"stream": True, "n": 2}, "Streaming is not supported with n > 1."),
    ({"background": "transparent", "output_format": "jpeg"}, "Transparent background is not supported"),
    ({"input_fidelity": "high"}, "Unknown parameter: 'input_fidelity'."),
])
def test_what_openai_refuses_is_a_400_in_its_shape(emulator, fields, message):
    response = generate(emulator, **fields)
    assert response.status_code == 400
    assert response.json["error"]["message"].startswith(message)
    assert response.json["error"]["type"] == "invalid_request_error"


def test_a_wrong_key_is_a_401(emulator):
    response = emulator.post("/v1/images/generations", json={"model": "gpt-image-1", "prompt": "a fox"},
                             headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401


def test_an_edit_takes_image_files_and_an_alpha_mask(emulator):
    response = edit(emulator, png_bytes(size=(64, 64), colour=(0, 0, 0, 0), mode="RGBA"), input_fidelity="high")
    assert response.status_code == 200
    assert picture(response.json["data"][0]["b64_json"]).size == (1024, 1024)


@pytest.mark.parametrize("mask", [png_bytes(size=(64, 64)), png_bytes(size=(32, 32), mode="RGBA")])
def test_a_mask_without_alpha_or_of_another_size_is_refused(emulator, mask):
    response = edit(emulator, mask)
    assert response.status_code == 400 and response.json["error"]["param"] == "mask"


def test_stream_sends_partial_images_then_the_completed_event(emulator):
    response = generate(emulator, stream=True, partial_images=2)
    assert response.content_type == "text/event-stream"
    types = [line.removeprefix("event: ") for line in response.get_data(as_text=True).splitlines()
             if line.startswith("event: ")]
    assert types == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]


def test_an_edit_streams_image_edit_events(emulator):
    response = edit(emulator, stream="true", partial_images="1")
    assert "event: image_edit.partial_image" in response.get_data(as_text=True)
    assert "event: image_edit.completed" in response.get_data(as_text=True)


@pytest.mark.parametrize(("directive", "status"), [("fail=503", 503), ("fail=429", 429), ("block=violence", 400)])
def test_fault_directives_apply(emulator, directive, status):
    response = generate(emulator, prompt=f"a fox [emulator: {directive}]")
    assert response.status_code == status
    if directive.startswith("block"):
        assert response.json["error"]["code"] == "moderation_blocked"
