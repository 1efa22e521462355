"""`stream: true` (docs/api.md): OpenAI's image events as server-sent events on both
endpoints, partial images, `n` > 1, errors after the stream started, keep-alive comments and the
request's log line; and the one JSON body, unchanged. The service's side with a FakeProvider;
Gemini's streamed thought images (its partial images) on the mocked wire at the end."""
import dataclasses
import io
import json
import threading
import time

import pytest
import responses

from gateway import create_app, media
from gateway.errors import Rejected, UpstreamUnavailable
from gateway.images.streaming import sse
from gateway.limits import upstream_slots
from gateway.providers.transport import Cancel
from tests.support import (
    GENERATE,
    STREAM,
    Answer,
    FakeProvider,
    b64,
    decode,
    gemini_answer,
    generate,
    image_part,
    png_bytes,
    sent_bodies,
    serve_with,
    tokens,
)

IMAGE_FIELDS = {"type", "b64_json", "created_at", "size", "quality", "background", "output_format"}


def events(response):
    """(event type, data) of each event, ("comment", text) of each comment; the stream ends in a blank line."""
    body = response.get_data()
    assert body.endswith(b"\n\n")
    parsed = []
    for block in body[:-2].split(b"\n\n"):
        lines = block.decode().split("\n")
        if lines[0].startswith(":"):
            parsed.append(("comment", block.decode()))
            continue
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        parsed.append((lines[0].removeprefix("event: "), json.loads(lines[1].removeprefix("data: "))))
    return parsed


def images(response):
    return [(kind, data) for kind, data in events(response) if kind != "comment"]


def kinds(response):
    return [kind for kind, _ in images(response)]


def test_an_event_is_its_type_then_one_line_of_json_then_a_blank_line():
    blob = b64(png_bytes())
    event = sse("image_generation.completed", {"b64_json": blob.encode(), "size": "64x48", "note": "two\nlines"})
    head, data, rest = event.split(b"\n", 2)
    assert head == b"event: image_generation.completed" and rest == b"\n"
    assert data.startswith(b"data: ") and f'"b64_json": "{blob}"'.encode() in data
    assert json.loads(data.removeprefix(b"data: ")) == {
        "type": "image_generation.completed", "b64_json": blob, "size": "64x48", "note": "two\nlines"}
    assert b"id:" not in event


def test_an_event_without_fields_still_carries_data():
    assert sse("error", {}) == b'event: error\ndata: {"type": "error"}\n\n'


def test_a_streamed_generation_sends_its_partial_images_then_the_final_one(client, auth, fake):
    drafts, final = [png_bytes((32, 24), (0, 0, 200)), png_bytes((48, 36), (0, 200, 0))], png_bytes((64, 48))
    fake.will(Answer([final], text="Done.", partials=drafts))
    response = generate(client, auth, model="gemini-3-pro-image", stream=True, partial_images=2,
                        quality="high", background="opaque")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache" and response.headers["X-Accel-Buffering"] == "no"
    sent = images(response)
    assert [(kind, data.get("partial_image_index")) for kind, data in sent] == [
        ("image_generation.partial_image", 0), ("image_generation.partial_image", 1),
        ("image_generation.completed", None)]
    for (kind, data), png, size in zip(sent, [*drafts, final], ["32x24", "48x36", "64x48"], strict=True):
        assert IMAGE_FIELDS <= data.keys() and "index" not in data
        assert data["type"] == kind and data["b64_json"] == b64(png) and data["size"] == size
        assert isinstance(data["created_at"], int)
        assert (data["quality"], data["background"], data["output_format"]) == ("high", "opaque", "png")
    assert sent[-1][1]["usage"] == {"input_tokens": 10, "input_tokens_details": {"text_tokens": 10, "image_tokens": 0},
                                    "output_tokens": 1290, "total_tokens": 1300, "cost": 0.13402}
    (call,) = fake.calls
    assert call.interim_images


def test_no_more_partial_images_are_sent_than_asked_for(client, auth, fake):
    fake.will(Answer(partials=[png_bytes((32, 24)), png_bytes((48, 36))]))
    assert kinds(generate(client, auth, stream=True, partial_images=1)) == [
        "image_generation.partial_image", "image_generation.completed"]


@pytest.mark.parametrize("params", [
    {"partial_images": 0}, {}, {"model": "gemini-2.5-flash-image", "partial_images": 2},
], ids=["zero", "not-given", "model-without-interim-images"])
def test_without_partial_images_none_are_asked_for(client, auth, fake, params):
    fake.will(Answer(partials=[png_bytes((32, 24))]))
    assert kinds(generate(client, auth, stream=True, **params)) == ["image_generation.completed"]
    (call,) = fake.calls
    assert not call.interim_images


def test_stream_false_answers_the_usual_json_body(client, auth, fake):
    plain, unstreamed = generate(client, auth), generate(client, auth, stream=False, partial_images=2)
    assert unstreamed.status_code == plain.status_code == 200 and unstreamed.mimetype == "application/json"
    assert {**unstreamed.get_json(), "created": 0} == {**plain.get_json(), "created": 0}
    assert not any(call.interim_images for call in fake.calls)


@pytest.mark.parametrize("fields, expected", [
    ({}, ["image_edit.completed"]),
    ({"partial_images": "1"}, ["image_edit.partial_image", "image_edit.completed"]),
], ids=["final-only", "with-a-partial"])
def test_a_multipart_edit_streams_image_edit_events(client, auth, fake, fields, expected):
    fake.will(Answer(partials=[png_bytes((32, 24))]))
    response = client.post("/v1/images/edits", content_type="multipart/form-data", headers=auth, data={
        "prompt": "make it blue", "image": (io.BytesIO(png_bytes()), "a.png"), "stream": "true", **fields})
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert kinds(response) == expected


def test_each_of_n_images_is_a_completed_event_with_its_calls_index(client, auth, fake, call_index):
    pngs = [png_bytes((40 + 8 * index, 30), (60 * index, 0, 0)) for index in range(3)]
    fake.by_call(call_index, {index: Answer([png], usage=tokens(10, 100 * (index + 1)), delay=0.1 * (2 - index))
                              for index, png in enumerate(pngs)})
    sent = images(generate(client, auth, stream=True, n=3))
    assert {kind for kind, _ in sent} == {"image_generation.completed"}
    assert sorted(data["index"] for _, data in sent) == [0, 1, 2]
    for _, data in sent:
        assert data["b64_json"] == b64(pngs[data["index"]])
        assert decode(data["b64_json"]).size == (40 + 8 * data["index"], 30)
        assert data["usage"]["output_tokens"] == 100 * (data["index"] + 1)


@pytest.mark.parametrize("params", [{}, {"partial_images": 2}], ids=["plain-call", "streamed-call"])
def test_a_request_whose_every_call_fails_first_answers_the_json_error(client, auth, fake, params):
    fake.will(Answer(error=Rejected("bad aspect ratio")), Answer(error=Rejected("bad aspect ratio")))
    streamed, plain = generate(client, auth, stream=True, **params), generate(client, auth)
    assert streamed.status_code == plain.status_code == 400 and streamed.mimetype == "application/json"
    assert streamed.get_json() == plain.get_json() == {"error": True, "status": 400, "message": "bad aspect ratio"}


def test_a_failure_after_the_stream_started_is_its_last_event(client, auth, fake):
    fake.will(Answer(), Answer(delay=0.2, error=UpstreamUnavailable("The fake API is overloaded.")))
    response = generate(client, auth, stream=True, partial_images=0, n=2)
    assert response.status_code == 200
    (completed, completed_data), (last, error) = images(response)
    assert completed == "image_generation.completed" and completed_data["index"] in (0, 1)
    assert last == "error" and response.get_data().endswith(b"\n\n") and len(fake.requests) == 2
    assert error == {"type": "error", "error": {"message": "The fake API is overloaded.", "type": "server_error",
                                                "code": "502", "param": None}}


def test_a_quiet_stream_sends_keep_alive_comments(settings, auth):
    app = create_app(dataclasses.replace(settings, stream_keepalive=0.2))
    client = serve_with(app, FakeProvider("gemini", Answer(delay=0.7)))
    sent = events(generate(client, auth, stream=True))
    app.config["STORE"].close()
    assert sent[0] == ("comment", ": keep-alive") and sent[-1][0] == "image_generation.completed"


def test_a_streams_log_line_is_written_once_when_it_ends(client, auth, fake, json_lines):
    response = generate(client, auth, stream=True)
    response.get_data()
    (line,) = [line for line in json_lines() if line["message"] == "request"]
    assert (line["status"], line["images"], line["model"]) == (200, 1, "gemini-3-pro-image")


def test_the_json_body_lists_images_in_call_order_with_usage_summed(client, auth, fake, call_index):
    pngs = [png_bytes((40, 30), (200, 0, 0)), png_bytes((40, 30), (0, 0, 200))]
    fake.by_call(call_index, {0: Answer([pngs[0]], usage=tokens(10, 100), delay=0.3),
                              1: Answer([pngs[1]], usage=tokens(20, 200))})  # the second call finishes first
    response = generate(client, auth, n=2)
    assert response.status_code == 200
    body = response.get_json()
    assert [item["b64_json"] for item in body["data"]] == [b64(png) for png in pngs]
    assert body["usage"] == {"input_tokens": 30, "input_tokens_details": {"text_tokens": 30, "image_tokens": 0},
                             "output_tokens": 300, "total_tokens": 330, "cost": 0.26806}


# --- which provider: the head's x-gateway-provider and each image event's `provider` -------------

def quick_keepalive(settings, *providers):
    """A test client whose streams send a keep-alive after 0.1 s of silence, served by `providers`."""
    return serve_with(create_app(dataclasses.replace(settings, stream_keepalive=0.1)), *providers)


def test_a_head_sent_with_a_keep_alive_names_the_provider_the_call_waits_on(settings, auth):
    client = quick_keepalive(settings, FakeProvider("vertex", Answer(delay=0.5)))
    response = generate(client, auth, stream=True)
    sent = events(response)
    client.application.config["STORE"].close()
    assert sent[0] == ("comment", ": keep-alive")
    assert response.headers["x-gateway-provider"] == "vertex" and sent[-1][1]["provider"] == "vertex"


def test_a_failover_after_the_head_shows_in_the_event_not_the_header(settings, auth):
    down = FakeProvider("gemini", Answer(delay=0.5, error=UpstreamUnavailable("The fake API is overloaded.")))
    client = quick_keepalive(settings, down, FakeProvider("openrouter"))
    response = generate(client, auth, stream=True)
    sent = images(response)
    client.application.config["STORE"].close()
    assert response.headers["x-gateway-provider"] == "gemini"  # what the call waited on when the head went
    assert [(kind, data["provider"]) for kind, data in sent] == [("image_generation.completed", "openrouter")]


def test_each_event_names_the_provider_that_made_its_image(app, auth):
    down = FakeProvider("gemini", Answer(partials=[png_bytes((32, 24))], error=UpstreamUnavailable("overloaded")))
    response = generate(serve_with(app, down, FakeProvider("openrouter")), auth, stream=True, partial_images=1)
    assert [(kind, data["provider"]) for kind, data in images(response)] == [
        ("image_generation.partial_image", "gemini"), ("image_generation.completed", "openrouter")]


def test_a_head_sent_while_every_call_waits_for_a_slot_names_no_provider(settings, auth):
    client = quick_keepalive(dataclasses.replace(settings, upstream_max_in_flight=1), FakeProvider("gemini"))
    with upstream_slots(1).hold("another key", 0, Cancel()):
        response = generate(client, auth, stream=True)
        response.close()
    client.application.config["STORE"].close()
    assert response.status_code == 200 and "x-gateway-provider" not in response.headers


# --- Gemini's wire: thought images streamed as events are the partial images ---------------------

def thought(data):
    return {"candidates": [{"content": {"role": "model", "parts": [image_part(data, thought=True)]}}]}


def gemini_stream(upstream, *payloads):
    body = b"".join(b"data: " + json.dumps(payload).encode() + b"\r\n\r\n" for payload in payloads)
    upstream.add(responses.POST, STREAM, body=body, content_type="text/event-stream")


def test_gemini_streams_its_thought_images_when_partial_images_are_asked_for(client, auth, upstream):
    drafts, final = [png_bytes((32, 24), (0, 0, 200)), png_bytes((48, 36), (0, 200, 0))], png_bytes((64, 48))
    gemini_stream(upstream, thought(drafts[0]), thought(drafts[1]), gemini_answer({"text": "Done."}, image_part(final)))
    sent = images(generate(client, auth, model="gemini-3-pro-image", stream=True, partial_images=2))
    assert [data["b64_json"] for _, data in sent] == [b64(png) for png in [*drafts, final]]
    (call,) = upstream.calls
    assert STREAM.fullmatch(call.request.url)
    assert json.loads(call.request.body)["generationConfig"]["thinkingConfig"] == {"includeThoughts": True}


def test_gemini_is_named_in_the_head_and_every_event_of_its_stream(client, auth, upstream):
    gemini_stream(upstream, thought(png_bytes((32, 24))), gemini_answer())
    response = generate(client, auth, model="gemini-3-pro-image", stream=True, partial_images=1)
    assert response.headers["x-gateway-provider"] == "gemini"
    assert [(kind, data["provider"]) for kind, data in images(response)] == [
        ("image_generation.partial_image", "gemini"), ("image_generation.completed", "gemini")]


def test_a_partial_image_not_finished_by_the_deadline_ends_its_call_with_the_504(settings, auth, upstream,
                                                                                  monkeypatch):
    """The call is still reading Gemini's stream when its partial image misses the deadline: the
    answer is closed and the call ends, with the 504 of the image, not the upstream's timeout."""
    gemini_stream(upstream, thought(png_bytes((32, 24))), gemini_answer())
    app = create_app(dataclasses.replace(settings, upstream_timeout=0.3))
    encode, release = media.encode_image, threading.Event()

    def slow_encode(*args):
        release.wait(10)
        return encode(*args)

    monkeypatch.setattr(media, "encode_image", slow_encode)
    response = generate(app.test_client(), auth, stream=True, partial_images=1, output_format="jpeg")
    release.set()
    app.config["STORE"].close()
    assert response.status_code == 504 and response.mimetype == "application/json"  # nothing was sent before it
    assert response.get_json()["message"].endswith("decoding and re-encoding them (with a mask, compositing) went on "
                                                   "past it.")


def test_gemini_is_called_plainly_without_partial_images(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    assert kinds(generate(client, auth, stream=True)) == ["image_generation.completed"]
    (body,) = sent_bodies(upstream)
    assert upstream.calls[0].request.url.endswith(":generateContent")
    assert "thinkingConfig" not in body["generationConfig"]


def test_a_client_that_goes_away_takes_its_calls_waiting_for_a_slot_out_of_the_queue(settings, auth, upstream):
    settings = dataclasses.replace(settings, upstream_max_in_flight=1, upstream_queue_timeout=30, stream_keepalive=0.1)
    client, slots = create_app(settings).test_client(), upstream_slots(1)
    with slots.hold("another key", 0, Cancel()):
        response = client.post("/v1/images/generations", json={"prompt": "a fox", "n": 2, "stream": True},
                               headers=auth, buffered=False)
        assert next(response.response).startswith(b": keep-alive")
        assert sum(len(calls) for calls in slots.waiting.values()) == 2
        started = time.monotonic()
        response.close()
        assert time.monotonic() - started < 2  # not the 30 s of UPSTREAM_QUEUE_TIMEOUT
        assert slots.waiting == {}
    assert (slots.in_use, len(upstream.calls)) == (0, 0)
