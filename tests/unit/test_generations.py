"""POST /v1/images/generations: fan-out, partial failure, response shape, re-encoding."""
import base64
import io
import json
import threading

import pytest
import responses
from PIL import Image

from gateway import jobs
from gateway.errors import GatewayError
from tests.support import decode, gemini_answer, image_part, png_bytes
from tests.unit.conftest import GENERATE


def post(client, auth, **params):
    return client.post("/v1/images/generations", json={"prompt": "a lighthouse", **params}, headers=auth)


def answer_with(size=(64, 48), colour=(200, 30, 30), text="A lighthouse at dusk."):
    parts = ([{"text": text}] if text else []) + [image_part(png_bytes(size, colour))]
    return gemini_answer(*parts)


def test_response_has_the_openai_shape(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=answer_with(size=(80, 60)))
    response = post(client, auth)
    assert response.status_code == 200
    body = response.json
    assert set(body) == {"created", "data", "model", "size", "output_format", "usage"}
    assert isinstance(body["created"], int)
    assert body["model"] == "gemini-3-pro-image"
    assert body["size"] == "80x60"
    assert body["output_format"] == "png"
    assert body["data"][0]["revised_prompt"] == "A lighthouse at dusk."
    image = decode(body["data"][0]["b64_json"])
    assert (image.format, image.size, image.getpixel((0, 0))) == ("PNG", (80, 60), (200, 30, 30))


def test_png_from_upstream_passes_through_byte_for_byte(client, auth, upstream):
    original = png_bytes((32, 32), (1, 2, 3))
    upstream.add(responses.POST, GENERATE, json=gemini_answer(image_part(original)))
    response = post(client, auth)
    assert base64.b64decode(response.json["data"][0]["b64_json"]) == original


def test_revised_prompt_is_the_sent_prompt_when_the_model_says_nothing(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=answer_with(text=None))
    response = post(client, auth, style="natural")
    sent = json.loads(upstream.calls[0].request.body)["contents"][0]["parts"][-1]["text"]
    assert response.json["data"][0]["revised_prompt"] == sent
    assert sent.startswith("a lighthouse\n\n")


def test_thought_text_is_not_the_revised_prompt(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer(
        {"text": "thinking about lighthouses", "thought": True}, image_part()))
    assert post(client, auth).json["data"][0]["revised_prompt"] == "a lighthouse"


def test_n_3_makes_exactly_three_upstream_calls_and_returns_three_images(client, auth, upstream):
    for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]:
        upstream.add(responses.POST, GENERATE, json=answer_with(colour=colour))
    response = post(client, auth, n=3)
    assert response.status_code == 200
    assert len(upstream.calls) == 3
    colours = {decode(item["b64_json"]).getpixel((0, 0)) for item in response.json["data"]}
    assert colours == {(255, 0, 0), (0, 255, 0), (0, 0, 255)}
    assert "x-gateway-images-failed" not in response.headers


def test_n_calls_run_in_parallel(client, auth, upstream):
    all_three_in_flight = threading.Barrier(3, timeout=10)

    def answer(request):
        all_three_in_flight.wait()  # breaks (and fails the calls) if the calls ran one at a time
        return 200, {}, json.dumps(answer_with())

    upstream.add_callback(responses.POST, GENERATE, callback=answer)
    response = post(client, auth, n=3)
    assert response.status_code == 200
    assert len(response.json["data"]) == 3


def test_extra_images_from_one_call_count_toward_n_and_never_exceed_it(client, auth, upstream):
    three = gemini_answer(*(image_part(png_bytes(colour=(i, i, i))) for i in (10, 20, 30)))
    upstream.add(responses.POST, GENERATE, json=three)
    upstream.add(responses.POST, GENERATE, json=three)
    response = post(client, auth, n=2)
    assert len(response.json["data"]) == 2


def test_partial_failure_returns_the_images_made_and_counts_the_failures(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=answer_with())
    upstream.add(responses.POST, GENERATE, json=answer_with())
    for _ in range(3):  # one call fails for good: 1 attempt + 2 retries
        upstream.add(responses.POST, GENERATE, json={"error": {"code": 400, "message": "nope"}}, status=400)
    response = post(client, auth, n=3)
    assert response.status_code == 200
    assert len(response.json["data"]) == 2
    assert response.headers["x-gateway-images-failed"] == "1"


def test_when_every_call_fails_the_first_failure_is_the_error(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json={"error": {"code": 400, "message": "bad prompt"}}, status=400)
    upstream.add(responses.POST, GENERATE, json={"error": {"code": 400, "message": "bad prompt"}}, status=400)
    response = post(client, auth, n=2)
    assert response.status_code == 400
    assert response.json == {"error": True, "status": 400, "message": "bad prompt"}


def test_usage_is_summed_over_calls(client, auth, upstream):
    usage = {"promptTokenCount": 7, "candidatesTokenCount": 1120, "thoughtsTokenCount": 100,
             "totalTokenCount": 1227, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 7}]}
    for _ in range(2):
        upstream.add(responses.POST, GENERATE, json=gemini_answer(image_part(), usage=usage))
    assert post(client, auth, n=2).json["usage"] == {
        "input_tokens": 14, "output_tokens": 2440, "total_tokens": 2454,
        "input_tokens_details": {"text_tokens": 14, "image_tokens": 0},
        "cost": 0.270428,  # two 3 Pro images at 1K ($0.134), 14 input tokens at $2 and 200 thinking at $12 per million
    }


@pytest.mark.parametrize("output_format, pillow_format", [("jpeg", "JPEG"), ("webp", "WEBP"), ("png", "PNG")])
def test_output_format_really_re_encodes(client, auth, upstream, output_format, pillow_format):
    upstream.add(responses.POST, GENERATE, json=answer_with(size=(120, 90)))
    response = post(client, auth, output_format=output_format)
    image = decode(response.json["data"][0]["b64_json"])
    assert (image.format, image.size) == (pillow_format, (120, 90))
    assert response.json["output_format"] == output_format


def test_output_compression_changes_the_jpeg(client, auth, upstream):
    noisy = Image.effect_noise((256, 256), 64).convert("RGB")
    buffer = io.BytesIO()
    noisy.save(buffer, "PNG")
    sizes = []
    for compression in (10, 95):
        upstream.add(responses.POST, GENERATE, json=gemini_answer(image_part(buffer.getvalue())))
        response = post(client, auth, output_format="jpeg", output_compression=compression)
        sizes.append(len(base64.b64decode(response.json["data"][0]["b64_json"])))
    assert sizes[0] < sizes[1] / 2


def test_a_jpeg_from_upstream_becomes_png_by_default(client, auth, upstream):
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (9, 9, 9)).save(buffer, "JPEG")
    upstream.add(responses.POST, GENERATE, json=gemini_answer(image_part(buffer.getvalue(), "image/jpeg")))
    image = decode(post(client, auth).json["data"][0]["b64_json"])
    assert (image.format, image.size) == ("PNG", (40, 30))


def test_an_rgba_image_can_be_returned_as_jpeg(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer(image_part(png_bytes(colour=(0, 0, 0, 0), mode="RGBA"))))
    image = decode(post(client, auth, output_format="jpeg").json["data"][0]["b64_json"])
    assert (image.format, image.mode) == ("JPEG", "RGB")


def test_user_and_moderation_are_accepted(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=answer_with())
    assert post(client, auth, user="end-user-42", moderation="low").status_code == 200


def test_the_provider_that_made_the_images_is_named_in_a_header(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    response = post(client, auth)
    assert response.status_code == 200
    assert response.headers["x-gateway-provider"] == "gemini"


@pytest.mark.parametrize("failure, status, message", [
    (RuntimeError("a bug"), 500, "Internal server error; the details are in the gateway's log."),
    (GatewayError(503, "The gateway is busy: too many images are being decoded or encoded."), 503,
     "The gateway is busy: too many images are being decoded or encoded."),
], ids=["a bug", "image threads busy"])
def test_a_call_that_fails_outside_the_upstream_ends_the_request_with_its_error(
        client, auth, upstream, monkeypatch, failure, status, message):
    """A call used to end only on an upstream error: anything else while finishing its image (a
    bug, or the image threads busy past IMAGE_QUEUE_TIMEOUT) left the request waiting forever."""
    def failing(*args):
        raise failure

    monkeypatch.setattr(jobs, "image_work", failing)
    upstream.add(responses.POST, GENERATE, json=answer_with())
    answers = []
    request = threading.Thread(target=lambda: answers.append(post(client, auth, output_format="jpeg")), daemon=True)
    request.start()
    request.join(30)
    assert answers, "the request never ended"
    assert (answers[0].status_code, answers[0].json["message"]) == (status, message)
