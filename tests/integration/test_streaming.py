"""`stream: true` end to end (docs/api.md): the gateway under gunicorn against the
emulator, read by the official Python and Node SDKs, by raw HTTP, and through the real nginx."""
import json
import subprocess
import time
from pathlib import Path

import openai
import pytest

from tests.integration.conftest import (
    CLIENT_KEY,
    KEEP_ALIVE,
    emulator_requests,
    in_flight,
    post_stream,
    read_stream,
    refused,
    start_gateway,
    start_nginx,
    stop,
)
from tests.support import decode, png_bytes

pytestmark = pytest.mark.integration

NODE = Path(__file__).resolve().parents[1] / "node"
THINKING_MODEL = "gemini-3-pro-image"  # draws two interim images before the final one


# --- helpers ------------------------------------------------------------------------------------

def decoded(b64):
    """The image a b64_json carries, as (format, size)."""
    image = decode(b64)
    return image.format, image.size


def extra(event, name):
    """A field the SDK's event model does not declare (it keeps unknown fields)."""
    return (event.model_extra or {}).get(name, getattr(event, name, None))


def slots_freed_after_abandoning(url, prompt, **fields):
    """Whether, once a client reads a stream's first keep-alive and closes it, the gateway's
    upstream calls (in flight while the stream runs) give their slots back within 5 s. A broken
    precondition fails the test outright (pytest.fail), never as the expected AssertionError."""
    response = post_stream(url, prompt, timeout=30, **fields)
    first = next(response.iter_lines(chunk_size=None))
    if (response.status_code, first, in_flight(url)) != (200, b": keep-alive", fields.get("n", 1)):
        pytest.fail(f"the stream did not start as expected: {response.status_code} {first[:200]!r} "
                    f"with {in_flight(url)} calls in flight")
    response.close()
    closed = time.monotonic()
    while in_flight(url) and time.monotonic() - closed < 5:
        time.sleep(0.2)
    return in_flight(url) == 0


def node_stream(url, prompt, model=THINKING_MODEL, partial_images=2):
    """The JSON lines tests/node/sdk_stream.mjs prints for one streamed images.generate call."""
    done = subprocess.run(["node", str(NODE / "sdk_stream.mjs"), url + "/v1", CLIENT_KEY, prompt, model,
                           str(partial_images)], capture_output=True, text=True, timeout=120, check=True)
    return [json.loads(line) for line in done.stdout.strip().splitlines()]


# --- gateways -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick_keepalive(emulator_url, tmp_path_factory):
    """A gateway that sends a keep-alive comment after every half second of silence."""
    process, url = start_gateway(emulator_url, tmp_path_factory.mktemp("stream") / "keepalive.log",
                                 STREAM_KEEPALIVE_SECONDS="0.5")
    yield url
    stop(process)


@pytest.fixture
def own_keepalive(emulator_url, tmp_path):
    """Like quick_keepalive, for one test whose calls may outlive it (by at most UPSTREAM_TIMEOUT, 10 s)."""
    process, url = start_gateway(emulator_url, tmp_path / "gateway.log", STREAM_KEEPALIVE_SECONDS="0.5",
                                 UPSTREAM_TIMEOUT="10")
    yield url
    stop(process)


@pytest.fixture(scope="module")
def nginx_in_front(gateway_url, tls_certificate, tmp_path_factory):
    process, url, _ = start_nginx(gateway_url, tls_certificate, tmp_path_factory.mktemp("stream-nginx"))
    yield url
    stop(process)


# --- the Python SDK -----------------------------------------------------------------------------

@pytest.mark.parametrize("size, pixels", [(None, (1024, 1024)), ("1792x1024", (2752, 1536))])
def test_python_sdk_gets_two_partial_images_then_the_completed_one(sdk, emulator_url, size, pixels):
    since = time.time()
    options = {"size": size} if size else {}
    stream = sdk.images.generate(model=THINKING_MODEL, prompt=f"a streamed lighthouse {size or ''}", stream=True,
                                 partial_images=2, **options)
    events = list(stream)
    assert [event.type for event in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert stream.response.headers["x-gateway-provider"] == "gemini"  # the head waited for the first image
    assert [extra(event, "provider") for event in events] == ["gemini"] * 3
    assert [event.partial_image_index for event in events[:2]] == [0, 1]
    for event in events:
        assert decoded(event.b64_json) == ("PNG", pixels)
        assert event.size == "{}x{}".format(*pixels) and event.output_format == "png"
    assert events[0].b64_json != events[1].b64_json != events[2].b64_json
    usage = events[2].usage
    assert usage.output_tokens > 0 and usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.text_tokens > 0
    (sent,) = emulator_requests(emulator_url, since)
    assert sent["generationConfig"]["thinkingConfig"]["includeThoughts"] is True


def test_python_sdk_streams_an_edit(sdk):
    events = list(sdk.images.edit(image=("red.png", png_bytes((256, 256), (255, 0, 0))), prompt="a streamed edit",
                                  model=THINKING_MODEL, stream=True, partial_images=1))
    assert [event.type for event in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert events[0].partial_image_index == 0
    assert all(decoded(event.b64_json) == ("PNG", (1024, 1024)) for event in events)
    assert events[1].usage.input_tokens_details.image_tokens > 0


def test_n_images_arrive_as_one_completed_event_each_with_its_index(sdk):
    events = list(sdk.images.generate(model="gemini-2.5-flash-image", prompt="three streamed foxes", n=3,
                                      stream=True))
    assert [event.type for event in events] == ["image_generation.completed"] * 3
    assert {extra(event, "index") for event in events} == {0, 1, 2}
    assert all(decoded(event.b64_json) == ("PNG", (1024, 1024)) for event in events)


def test_a_failure_mid_stream_is_the_sdks_api_error_after_the_partial_images(sdk):
    stream = sdk.images.generate(model=THINKING_MODEL, prompt=f"dropped {time.time()} [emulator: reset=1]",
                                 stream=True, partial_images=2)
    seen = []
    with pytest.raises(openai.APIError) as error:
        for event in stream:
            seen.append(event.type)
    assert seen == ["image_generation.partial_image"] * 2
    assert "the Gemini API" in error.value.message
    assert error.value.body["type"] and error.value.body["code"]


# --- the Node SDK -------------------------------------------------------------------------------

def test_node_sdk_gets_two_partial_images_then_the_completed_one(gateway_url):
    lines = node_stream(gateway_url, "a streamed lighthouse for node")
    assert lines[-1] == {"done": True}, lines
    events = lines[:-1]
    assert [event["type"] for event in events] == ["image_generation.partial_image"] * 2 + [
        "image_generation.completed"]
    assert [event.get("partial_image_index") for event in events] == [0, 1, None]
    assert all(event["bytes"] > 0 and event["size"] == "1024x1024" for event in events)
    assert [event["provider"] for event in events] == ["gemini"] * 3
    assert events[2]["usage"]["output_tokens"] > 0


# --- raw HTTP -----------------------------------------------------------------------------------

def test_keep_alive_comments_fill_a_slow_upstreams_silence(quick_keepalive):
    response = post_stream(quick_keepalive, "a slow stream [emulator: delay=2]")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["x-gateway-provider"] == "gemini"  # the call's provider when the first keep-alive went
    items = read_stream(response)
    kinds = [kind for kind, _, _ in items]
    assert kinds[-1] == "image_generation.completed" and kinds.count("image_generation.completed") == 1
    assert items[-1][1]["provider"] == "gemini"
    assert kinds[:-1] == [KEEP_ALIVE] * (len(kinds) - 1) and len(kinds) - 1 >= 2


def test_an_invalid_field_is_refused_as_json_before_the_stream(gateway_url):
    response = post_stream(gateway_url, "a bad size", size="abc")
    refused(response, 400, "size")


def test_an_upstream_refusal_before_the_first_image_is_json(gateway_url):
    response = post_stream(gateway_url, f"refused {time.time()} [emulator: fail=400]")
    refused(response, 400, "emulated failure 400")  # the upstream's own message (docs/api.md)


def test_a_client_that_goes_away_frees_the_slots_of_calls_awaiting_an_answer(own_keepalive):
    assert slots_freed_after_abandoning(own_keepalive, f"abandoned {time.time()} [emulator: delay=20]", n=2)


def test_a_client_that_goes_away_frees_the_slots_of_calls_reading_an_upstream_stream(own_keepalive):
    assert slots_freed_after_abandoning(own_keepalive, f"abandoned {time.time()} [emulator: between=20]", n=2,
                                        model=THINKING_MODEL, partial_images=2)


# --- behind nginx, and longer than gunicorn's worker timeout -------------------------------------

def test_nginx_passes_each_event_on_as_it_comes(nginx_in_front, tls_certificate):
    response = post_stream(nginx_in_front, f"paced {time.time()} [emulator: between=1]", verify=str(tls_certificate[0]),
                           model=THINKING_MODEL, partial_images=2)
    assert response.status_code == 200
    events = [(kind, at) for kind, _, at in read_stream(response) if kind != KEEP_ALIVE]
    assert [kind for kind, _ in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert events[2][1] - events[0][1] > 0.8, events  # buffered by nginx, they would arrive together


def test_a_stream_outlives_gunicorns_worker_timeout(emulator_url, tmp_path):
    process, url = start_gateway(emulator_url, tmp_path / "long.log", STREAM_KEEPALIVE_SECONDS="5",
                                 UPSTREAM_TIMEOUT="60")
    started = time.monotonic()
    try:
        with post_stream(url, f"a long wait {time.time()} [emulator: delay=33]", timeout=90) as response:
            assert response.status_code == 200
            items = read_stream(response)
        lasted = time.monotonic() - started
    finally:
        stop(process)
    kinds = [kind for kind, _, _ in items]
    assert kinds[-1] == "image_generation.completed" and kinds.count(KEEP_ALIVE) >= 5
    assert lasted > 32
