"""The openai provider end to end: the official SDKs against the gateway under gunicorn, with
OpenAI's gpt-image models served by the emulator's Images API (generate, edit with a mask,
stream), and gpt-image-1 on a gateway without OPENAI_API_KEY."""
import base64
import io
import json
import subprocess
import time
from pathlib import Path

import openai
import pytest
from PIL import Image

from tests.integration.conftest import CLIENT_KEY, UPSTREAM_KEY, emulator_requests, sdk_for, start_gateway, stop
from tests.support import png_bytes

pytestmark = pytest.mark.integration
NODE = Path(__file__).resolve().parents[1] / "node"


@pytest.fixture(scope="module")
def gateway(emulator_url, tmp_path_factory):
    process, url = start_gateway(emulator_url, tmp_path_factory.mktemp("logs") / "openai.log",
                                 OPENAI_API_KEY=UPSTREAM_KEY, OPENAI_BASE_URL=emulator_url + "/v1")
    yield url
    stop(process)


@pytest.fixture
def client(gateway):
    with sdk_for(gateway) as sdk:
        yield sdk


def image_of(b64):
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_the_sdk_generates_through_openai(client, emulator_url):
    since = time.time()
    raw = client.images.with_raw_response.generate(prompt="a wide harbour", model="gpt-image-1", size="1792x1024",
                                                   quality="hd", background="transparent")
    result = raw.parse()
    assert raw.headers["x-gateway-provider"] == "openai"
    assert (image_of(result.data[0].b64_json).format, image_of(result.data[0].b64_json).size) == ("PNG", (1536, 1024))
    assert result.usage.output_tokens == 6208 and result.usage.model_extra["cost"] > 0
    [sent] = [r for r in emulator_requests(emulator_url, since) if r["api"] == "openai"]
    assert sent["generationConfig"] == {"model": "gpt-image-1", "n": 1, "size": "1536x1024", "quality": "high",
                                        "background": "transparent", "output_format": "png"}


def test_n_images_are_one_upstream_call(client, emulator_url):
    since = time.time()
    result = client.images.generate(prompt="three boats", model="gpt-image-1-mini", n=3, size="1024x1536")
    assert [image_of(item.b64_json).size for item in result.data] == [(1024, 1536)] * 3
    [sent] = [r for r in emulator_requests(emulator_url, since) if r["api"] == "openai"]
    assert sent["generationConfig"]["n"] == 3


def test_the_sdk_edits_with_a_mask_through_openai(client, emulator_url):
    since = time.time()
    photo = png_bytes(size=(64, 64), colour=(10, 200, 10))
    mask = png_bytes(size=(64, 64), colour=(0, 0, 0, 0), mode="RGBA")
    result = client.images.edit(model="gpt-image-1-mini", prompt="add a red boat", input_fidelity="high",
                                image=[("photo.png", photo, "image/png")], mask=("mask.png", mask, "image/png"))
    assert image_of(result.data[0].b64_json).size == (64, 64)  # composited onto the source under the mask
    [sent] = [r for r in emulator_requests(emulator_url, since) if r["api"] == "openai"]
    assert sent["images"] == [[64, 64]] and sent["generationConfig"]["input_fidelity"] == "high"
    assert sent["prompt"] == "add a red boat"


def test_the_sdk_streams_partial_images_through_openai(client):
    events = list(client.images.generate(prompt="a lighthouse", model="gpt-image-1.5", stream=True, partial_images=2))
    assert [event.type for event in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert events[-1].usage.output_tokens > 0 and image_of(events[-1].b64_json).format == "PNG"


def test_an_upstream_failure_is_retried_then_a_502(client, emulator_url):
    since = time.time()
    with pytest.raises(openai.InternalServerError):
        client.images.generate(prompt=f"down {since} [emulator: fail=503]", model="gpt-image-1")
    assert len(emulator_requests(emulator_url, since)) == 3  # UPSTREAM_MAX_RETRIES (2) + 1


def test_gpt_image_1_without_openai_api_key_is_a_503_naming_it(gateway_url):
    with sdk_for(gateway_url) as sdk:
        with pytest.raises(openai.APIStatusError) as error:
            sdk.images.generate(prompt="a fox", model="gpt-image-1")
        assert error.value.status_code == 503
        assert "OPENAI_API_KEY" in str(error.value)
        assert not any(model.id.startswith("gpt-image") for model in sdk.models.list())


def test_the_node_sdk_streams_through_openai(gateway):
    done = subprocess.run(["node", str(NODE / "sdk_stream.mjs"), gateway + "/v1", CLIENT_KEY, "a harbour at dusk",
                           "gpt-image-1", "1"], capture_output=True, text=True, timeout=120, check=True)
    events = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert [event.get("type") for event in events[:-1]] == ["image_generation.partial_image",
                                                             "image_generation.completed"]
    assert events[-1] == {"done": True} and events[-2]["bytes"] > 0
