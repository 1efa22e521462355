"""POST /v1/images/generations: fan-out, partial failure, response shape, re-encoding and its deadline. The
service's own behaviour, served by a FakeProvider (the wire formats have their own tests)."""
import base64
import dataclasses
import threading
import time

import pytest
import responses
from PIL import Image
from sqlalchemy import select

from gateway import create_app, jobs, media
from gateway.errors import GatewayError, Rejected
from gateway.store import Store, ledger
from tests.support import (
    GENERATE,
    Answer,
    FakeProvider,
    assert_error,
    decode,
    encoded,
    gemini_answer,
    generate,
    image_part,
    metric,
    png_bytes,
    serve_with,
    tokens,
)


def test_response_has_the_openai_shape(client, auth, fake):
    fake.will(Answer([png_bytes((80, 60), (200, 30, 30))], text="A lighthouse at dusk."))
    response = generate(client, auth)
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


def test_png_from_upstream_passes_through_byte_for_byte(client, auth, fake):
    original = png_bytes((32, 32), (1, 2, 3))
    fake.will(Answer([original]))
    response = generate(client, auth)
    assert base64.b64decode(response.json["data"][0]["b64_json"]) == original


def test_revised_prompt_is_the_sent_prompt_when_the_model_says_nothing(client, auth, fake):
    response = generate(client, auth, style="natural")
    (call,) = fake.calls
    assert response.json["data"][0]["revised_prompt"] == call.prompt
    assert call.prompt.startswith("a lighthouse\n\n")


def test_thought_text_is_not_the_revised_prompt(client, auth, upstream):
    """Gemini's thought parts are the model thinking aloud, not its caption (read by the Gemini wire)."""
    upstream.add(responses.POST, GENERATE, json=gemini_answer(
        {"text": "thinking about lighthouses", "thought": True}, image_part()))
    assert generate(client, auth).json["data"][0]["revised_prompt"] == "a lighthouse"


def test_n_3_makes_exactly_three_upstream_calls_and_returns_three_images(client, auth, fake):
    fake.will(*(Answer([png_bytes(colour=colour)]) for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]))
    response = generate(client, auth, n=3)
    assert response.status_code == 200
    assert (len(fake.calls), len(fake.requests)) == (1, 3)  # the wire request is built once, sent three times
    colours = {decode(item["b64_json"]).getpixel((0, 0)) for item in response.json["data"]}
    assert colours == {(255, 0, 0), (0, 255, 0), (0, 0, 255)}
    assert "x-gateway-images-failed" not in response.headers


def test_n_calls_run_in_parallel(client, auth, fake):
    all_three_in_flight = threading.Barrier(3, timeout=10)  # breaks (and fails the calls) if they ran one at a time
    fake.will(*(Answer(before=all_three_in_flight.wait) for _ in range(3)))
    response = generate(client, auth, n=3)
    assert response.status_code == 200
    assert len(response.json["data"]) == 3


def test_extra_images_from_one_call_count_toward_n_and_never_exceed_it(client, auth, fake):
    three = Answer([png_bytes(colour=(i, i, i)) for i in (10, 20, 30)])
    fake.will(three, three)
    response = generate(client, auth, n=2)
    assert len(response.json["data"]) == 2


def test_partial_failure_returns_the_images_made_and_counts_the_failures(client, auth, fake):
    fake.will(Answer(), Answer(error=Rejected("nope")), Answer())
    response = generate(client, auth, n=3)
    assert response.status_code == 200
    assert len(response.json["data"]) == 2
    assert response.headers["x-gateway-images-failed"] == "1"


def test_when_every_call_fails_the_first_failure_is_the_error(client, auth, fake):
    fake.will(Answer(error=Rejected("bad prompt")), Answer(error=Rejected("bad prompt")))
    response = generate(client, auth, n=2)
    assert response.status_code == 400
    assert response.json == {"error": True, "status": 400, "message": "bad prompt"}


def test_usage_is_summed_over_calls(client, auth, fake):
    fake.will(Answer(usage=tokens(7, 1220)), Answer(usage=tokens(7, 1220)))
    assert generate(client, auth, n=2).json["usage"] == {
        "input_tokens": 14, "output_tokens": 2440, "total_tokens": 2454,
        "input_tokens_details": {"text_tokens": 14, "image_tokens": 0},
        "cost": 0.268028,  # two 3 Pro images at 1K ($0.134), 14 input tokens at $2 per million
    }  # (thinking tokens are priced in test_prices.py)


@pytest.mark.parametrize("output_format, pillow_format", [("jpeg", "JPEG"), ("webp", "WEBP"), ("png", "PNG")])
def test_output_format_really_re_encodes(client, auth, fake, output_format, pillow_format):
    fake.will(Answer([png_bytes((120, 90))]))
    response = generate(client, auth, output_format=output_format)
    image = decode(response.json["data"][0]["b64_json"])
    assert (image.format, image.size) == (pillow_format, (120, 90))
    assert response.json["output_format"] == output_format


def test_output_compression_changes_the_jpeg(client, auth, fake):
    noisy = encoded(Image.effect_noise((256, 256), 64).convert("RGB"), "PNG")
    sizes = []
    for compression in (10, 95):
        fake.will(Answer([noisy]))
        response = generate(client, auth, output_format="jpeg", output_compression=compression)
        sizes.append(len(base64.b64decode(response.json["data"][0]["b64_json"])))
    assert sizes[0] < sizes[1] / 2


def test_a_jpeg_from_upstream_becomes_png_by_default(client, auth, fake):
    fake.will(Answer([encoded(Image.new("RGB", (40, 30), (9, 9, 9)), "JPEG")]))
    image = decode(generate(client, auth).json["data"][0]["b64_json"])
    assert (image.format, image.size) == ("PNG", (40, 30))


def test_an_rgba_image_can_be_returned_as_jpeg(client, auth, fake):
    fake.will(Answer([png_bytes(colour=(0, 0, 0, 0), mode="RGBA")]))
    image = decode(generate(client, auth, output_format="jpeg").json["data"][0]["b64_json"])
    assert (image.format, image.mode) == ("JPEG", "RGB")


def test_user_and_moderation_are_accepted(client, auth, fake):
    assert generate(client, auth, user="end-user-42", moderation="low").status_code == 200


def test_the_provider_that_made_the_images_is_named_in_a_header(client, auth, fake):
    response = generate(client, auth)
    assert response.status_code == 200
    assert response.headers["x-gateway-provider"] == "gemini"


@pytest.mark.parametrize("failure, status, message", [
    (RuntimeError("a bug"), 500, "Internal server error; the details are in the gateway's log."),
    (GatewayError(503, "The gateway is busy: too many images are being decoded or encoded."), 503,
     "The gateway is busy: too many images are being decoded or encoded."),
], ids=["a bug", "image threads busy"])
def test_a_call_that_fails_outside_the_upstream_ends_the_request_with_its_error(
        client, auth, fake, monkeypatch, failure, status, message):
    """A call used to end only on an upstream error: anything else while finishing its image (a
    bug, or the image threads busy past IMAGE_QUEUE_TIMEOUT) left the request waiting forever."""
    def failing(*args, **kwargs):
        raise failure

    monkeypatch.setattr(jobs, "image_work", failing)
    answers = []
    request = threading.Thread(target=lambda: answers.append(generate(client, auth, output_format="jpeg")),
                               daemon=True)
    request.start()
    request.join(30)
    assert answers, "the request never ended"
    assert (answers[0].status_code, answers[0].json["message"]) == (status, message)


def test_an_image_not_finished_by_the_requests_deadline_is_a_504_and_its_thread_serves_the_next(
        settings, auth, monkeypatch, database_url):
    """The upstream answered in time, but re-encoding its image outlived UPSTREAM_TIMEOUT: the client
    is told at the deadline, the ledger and the metric record it, and the one image thread, free
    again once that work ends, serves the next request."""
    app = create_app(dataclasses.replace(settings, upstream_timeout=0.5, image_workers=1))
    client, encode, release = serve_with(app, FakeProvider("gemini")), media.encode_image, threading.Event()

    def slow_encode(*args):
        release.wait(10)  # the first request's encode, until the test lets it go
        return encode(*args)

    monkeypatch.setattr(media, "encode_image", slow_encode)
    timeouts = metric(client.get("/metrics").get_data(as_text=True), "gateway_image_work_timeouts_total", stage="work")
    started = time.monotonic()
    late = generate(client, auth, output_format="jpeg")
    assert time.monotonic() - started < 2
    assert_error(late, 504, "The images were not finished within the request's deadline (UPSTREAM_TIMEOUT, 0.5 "
                            "seconds): decoding and re-encoding them (with a mask, compositing) went on past it.")
    assert late.headers["x-should-retry"] == "false"
    assert metric(client.get("/metrics").get_data(as_text=True), "gateway_image_work_timeouts_total",
                  stage="work") == timeouts + 1
    release.set()
    served = generate(client, auth, output_format="jpeg")
    assert served.status_code == 200 and decode(served.json["data"][0]["b64_json"]).format == "JPEG"
    app.config["STORE"].close()
    store = Store(database_url)
    with store.read() as conn:
        rows = conn.execute(select(ledger.c.status, ledger.c.n_made, ledger.c.micro_usd > 0)).all()
    store.close()
    assert sorted(rows) == [(200, 1, True), (504, 0, True)]  # the late image's upstream call was paid for
