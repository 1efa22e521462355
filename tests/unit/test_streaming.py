"""`stream: true` (docs/api.md): OpenAI's image events as server-sent events on both
endpoints, partial images from Gemini 3's thought images, `n` > 1, errors after the stream
started, keep-alive comments and the request's log line; and the one JSON body, unchanged."""
import base64
import dataclasses
import io
import json
import threading
import time

import pytest
import responses

from gateway import create_app
from gateway.images.streaming import sse
from gateway.jobs import ImageJob
from tests.support import GENERATE, STREAM, decode, gemini_answer, image_part, png_bytes, sent_bodies

IMAGE_FIELDS = {"type", "b64_json", "created_at", "size", "quality", "background", "output_format"}
CALL = threading.local()  # the index of the job's call running on this thread


def b64(data):
    return base64.b64encode(data).decode("ascii")


def usage(prompt, output):
    return {"promptTokenCount": prompt, "candidatesTokenCount": output, "totalTokenCount": prompt + output,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]}


def thought(data):
    return {"candidates": [{"content": {"role": "model", "parts": [image_part(data, thought=True)]}}]}


def gemini_stream(upstream, *payloads):
    body = b"".join(b"data: " + json.dumps(payload).encode() + b"\r\n\r\n" for payload in payloads)
    upstream.add(responses.POST, STREAM, body=body, content_type="text/event-stream")


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


def generate(client, auth, **params):
    return client.post("/v1/images/generations", json={"prompt": "a fox", **params}, headers=auth)


@pytest.fixture
def per_call(monkeypatch, upstream):
    """Answers each call with its own image, usage and delay: `per_call({index: (png, tokens, delay)})`."""
    original = ImageJob._call

    def tagged(self, index, *args):
        CALL.index = index
        return original(self, index, *args)

    monkeypatch.setattr(ImageJob, "_call", tagged)

    def answer_with(plan):
        def callback(request):
            png, tokens, delay = plan[CALL.index]
            time.sleep(delay)
            return 200, {}, json.dumps(gemini_answer(image_part(png), usage=usage(*tokens)))

        upstream.add_callback(responses.POST, GENERATE, callback=callback, content_type="application/json")

    return answer_with


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


def test_a_streamed_generation_sends_its_partial_images_then_the_final_one(client, auth, upstream):
    drafts, final = [png_bytes((32, 24), (0, 0, 200)), png_bytes((48, 36), (0, 200, 0))], png_bytes((64, 48))
    gemini_stream(upstream, thought(drafts[0]), thought(drafts[1]), gemini_answer({"text": "Done."}, image_part(final)))
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
    (call,) = upstream.calls
    assert STREAM.fullmatch(call.request.url)
    assert json.loads(call.request.body)["generationConfig"]["thinkingConfig"] == {"includeThoughts": True}


def test_no_more_partial_images_are_sent_than_asked_for(client, auth, upstream):
    gemini_stream(upstream, thought(png_bytes((32, 24))), thought(png_bytes((48, 36))), gemini_answer())
    kinds = [kind for kind, _ in images(generate(client, auth, stream=True, partial_images=1))]
    assert kinds == ["image_generation.partial_image", "image_generation.completed"]


@pytest.mark.parametrize("params", [
    {"partial_images": 0}, {}, {"model": "gemini-2.5-flash-image", "partial_images": 2},
], ids=["zero", "not-given", "model-without-interim-images"])
def test_without_partial_images_the_plain_call_is_made(client, auth, upstream, params):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    kinds = [kind for kind, _ in images(generate(client, auth, stream=True, **params))]
    assert kinds == ["image_generation.completed"]
    (body,) = sent_bodies(upstream)
    assert upstream.calls[0].request.url.endswith(":generateContent")
    assert "thinkingConfig" not in body["generationConfig"]


def test_stream_false_answers_the_usual_json_body(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    plain, unstreamed = generate(client, auth), generate(client, auth, stream=False, partial_images=2)
    assert unstreamed.status_code == plain.status_code == 200 and unstreamed.mimetype == "application/json"
    assert {**unstreamed.get_json(), "created": 0} == {**plain.get_json(), "created": 0}
    assert all(GENERATE.fullmatch(call.request.url) for call in upstream.calls)


@pytest.mark.parametrize("fields, kinds", [
    ({}, ["image_edit.completed"]),
    ({"partial_images": "1"}, ["image_edit.partial_image", "image_edit.completed"]),
], ids=["final-only", "with-a-partial"])
def test_a_multipart_edit_streams_image_edit_events(client, auth, upstream, fields, kinds):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    gemini_stream(upstream, thought(png_bytes((32, 24))), gemini_answer())
    response = client.post("/v1/images/edits", content_type="multipart/form-data", headers=auth, data={
        "prompt": "make it blue", "image": (io.BytesIO(png_bytes()), "a.png"), "stream": "true", **fields})
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert [kind for kind, _ in images(response)] == kinds


def test_each_of_n_images_is_a_completed_event_with_its_calls_index(client, auth, per_call):
    pngs = [png_bytes((40 + 8 * index, 30), (60 * index, 0, 0)) for index in range(3)]
    per_call({index: (png, (10, 100 * (index + 1)), 0.1 * (2 - index)) for index, png in enumerate(pngs)})
    sent = images(generate(client, auth, stream=True, n=3))
    assert {kind for kind, _ in sent} == {"image_generation.completed"}
    assert sorted(data["index"] for _, data in sent) == [0, 1, 2]
    for _, data in sent:
        assert data["b64_json"] == b64(pngs[data["index"]])
        assert decode(data["b64_json"]).size == (40 + 8 * data["index"], 30)
        assert data["usage"]["output_tokens"] == 100 * (data["index"] + 1)


@pytest.mark.parametrize("params", [{}, {"partial_images": 2}], ids=["plain-call", "streamed-call"])
def test_a_request_whose_every_call_fails_first_answers_the_json_error(client, auth, upstream, params):
    refusal = {"status": 400, "json": {"error": {"code": 400, "message": "bad aspect ratio"}}}
    upstream.add(responses.POST, GENERATE, **refusal)
    upstream.add(responses.POST, STREAM, **refusal)
    streamed, plain = generate(client, auth, stream=True, **params), generate(client, auth)
    assert streamed.status_code == plain.status_code == 400 and streamed.mimetype == "application/json"
    assert streamed.get_json() == plain.get_json() and streamed.get_json()["error"] is True


def test_a_failure_after_the_stream_started_is_its_last_event(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    for _ in range(3):
        upstream.add(responses.POST, GENERATE, status=503, json={"error": {"code": 503, "message": "overloaded"}})
    response = generate(client, auth, stream=True, partial_images=0, n=2)
    assert response.status_code == 200
    (completed, completed_data), (last, error) = images(response)
    assert completed == "image_generation.completed" and completed_data["index"] in (0, 1)
    assert last == "error" and response.get_data().endswith(b"\n\n") and len(upstream.calls) == 4
    assert error == {"type": "error", "error": {"message": error["error"]["message"], "type": "server_error",
                                                "code": "502", "param": None}}
    assert "overloaded" in error["error"]["message"]


def test_a_quiet_stream_sends_keep_alive_comments(settings, auth, upstream):
    def slow(request):
        time.sleep(0.7)
        return 200, {}, json.dumps(gemini_answer())

    upstream.add_callback(responses.POST, GENERATE, callback=slow, content_type="application/json")
    client = create_app(dataclasses.replace(settings, stream_keepalive=0.2)).test_client()
    sent = events(generate(client, auth, stream=True))
    assert sent[0] == ("comment", ": keep-alive") and sent[-1][0] == "image_generation.completed"


def test_a_streams_log_line_is_written_once_when_it_ends(client, auth, upstream, json_lines):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    response = generate(client, auth, stream=True)
    response.get_data()
    (line,) = [line for line in json_lines() if line["message"] == "request"]
    assert (line["status"], line["images"], line["upstream_calls"]) == (200, 1, 1)


def test_the_json_body_lists_images_in_call_order_with_usage_summed(client, auth, per_call):
    pngs = [png_bytes((40, 30), (200, 0, 0)), png_bytes((40, 30), (0, 0, 200))]
    per_call({0: (pngs[0], (10, 100), 0.3), 1: (pngs[1], (20, 200), 0)})  # the second call finishes first
    response = generate(client, auth, n=2)
    assert response.status_code == 200
    body = response.get_json()
    assert [item["b64_json"] for item in body["data"]] == [b64(png) for png in pngs]
    assert body["usage"] == {"input_tokens": 30, "input_tokens_details": {"text_tokens": 30, "image_tokens": 0},
                             "output_tokens": 300, "total_tokens": 330, "cost": 0.26806}
