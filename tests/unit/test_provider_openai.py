"""The openai provider's wire (docs/providers.md, "The OpenAI call"): the JSON and multipart bodies
it sends, the mapping of the client's parameters, how it reads answers and streamed events, and
how OpenAI's errors map; then the service with it, through Flask, against a mocked OpenAI."""
import base64
import dataclasses
import io
import json

import pytest
import requests
import responses
from PIL import Image
from werkzeug.test import EnvironBuilder

from gateway import create_app
from gateway.catalog import resolve_model
from gateway.errors import Blocked, NoCredits, NoImage, RateLimited, Rejected, UpstreamError, UpstreamUnavailable
from gateway.media import SourceImage
from gateway.providers import ImageCall, Usage
from gateway.providers import openai as openai_provider
from tests.secrets import WATCH
from tests.support import png_bytes

OPENAI_KEY = "sk-" + "proj-" + "0123456789abcdef" * 3  # fake; split so no key-like literal is committed
WATCH.secrets.add(OPENAI_KEY)
GENERATIONS, EDITS = "https://openai.test/v1/images/generations", "https://openai.test/v1/images/edits"
PNG = png_bytes(size=(32, 32))
MASK = png_bytes(size=(32, 32), colour=(0, 0, 0, 0), mode="RGBA")
GPT_IMAGE_1 = resolve_model("gpt-image-1", "auto")


def call(**params):
    return ImageCall("gpt-image-1", "ignored: the provider sends the client's prompt", GPT_IMAGE_1,
                     params={"prompt": "a red fox", "n": 1, "output_format": "png", **params})


def body(**params):
    return json.loads(openai_provider.build_body(call(**params)))


def form(edit_call):
    """The multipart body as (fields, files), read back the way a server reads it."""
    raw, content_type = openai_provider.build_form(edit_call)
    with EnvironBuilder(method="POST", data=raw, content_type=content_type).get_request() as parsed:
        return dict(parsed.form), {name: [(upload.filename, upload.read()) for upload in parsed.files.getlist(name)]
                                   for name in parsed.files}


def answer(count=1, usage=None):
    return {"created": 1, "data": [{"b64_json": base64.b64encode(PNG).decode()} for _ in range(count)],
            "usage": usage or {"input_tokens": 12, "output_tokens": 4160, "total_tokens": 4172,
                               "input_tokens_details": {"text_tokens": 10, "image_tokens": 2}}}


def http_response(status, error=None, retry_after=None):
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps({"error": error} if error is not None else {}).encode()
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return response


# --- the mapping ---------------------------------------------------------------------------------

def test_a_generation_body_carries_the_clients_prompt_and_one_image():
    assert body() == {"model": "gpt-image-1", "prompt": "a red fox", "n": 1, "output_format": "png"}


def test_n_is_the_calls_own():
    assert json.loads(openai_provider.build_body(dataclasses.replace(call(n=3), n=3)))["n"] == 3


@pytest.mark.parametrize(("params", "size"), [
    ({"size": "1024x1024"}, "1024x1024"),
    ({"size": "1536x1024"}, "1536x1024"),
    ({"size": "1024x1536"}, "1024x1536"),
    ({"size": "1792x1024"}, "1536x1024"),
    ({"size": "1024x1792"}, "1024x1536"),
    ({"size": "512x512"}, "1024x1024"),
    ({"aspect_ratio": "16:9"}, "1536x1024"),
    ({"aspect_ratio": "9:16", "size": "1024x1024"}, "1024x1536"),
])
def test_size_is_one_openai_takes_the_nearest_by_aspect_ratio(params, size):
    assert body(**params)["size"] == size


@pytest.mark.parametrize("params", [{}, {"size": "auto"}])
def test_no_size_or_auto_sends_none_so_openai_chooses(params):
    assert "size" not in body(**params)


@pytest.mark.parametrize(("quality", "sent"), [
    ("standard", "medium"), ("hd", "high"), ("low", "low"), ("medium", "medium"), ("high", "high"), ("auto", "auto"),
])
def test_quality_maps_dall_e_names_to_openais(quality, sent):
    assert body(quality=quality)["quality"] == sent


def test_openais_own_parameters_pass_through():
    sent = body(background="transparent", output_format="webp", output_compression=80, moderation="low", user="u-1")
    assert {key: sent[key] for key in ("background", "output_format", "output_compression", "moderation", "user")} == {
        "background": "transparent", "output_format": "webp", "output_compression": 80, "moderation": "low",
        "user": "u-1"}


def test_gateway_only_parameters_are_not_sent():
    sent = body(style="vivid", aspect_ratio="1:1", safety_identifier="s", stream=True, response_format="b64_json", n=4)
    assert set(sent) == {"model", "prompt", "n", "output_format", "size"} and sent["n"] == 1


def test_partial_images_stream_the_call():
    sent = json.loads(openai_provider.build_body(dataclasses.replace(call(stream=True, partial_images=2),
                                                                     interim_images=True)))
    assert (sent["stream"], sent["partial_images"]) == (True, 2)


def test_an_edit_is_multipart_with_image_files_a_mask_file_and_form_fields():
    edit = dataclasses.replace(call(input_fidelity="high", quality="hd"), interim_images=True,
                               params={"prompt": "add a boat", "input_fidelity": "high", "quality": "hd",
                                       "partial_images": 1},
                               edit_images=(SourceImage(PNG, "image/png", (32, 32)),
                                            SourceImage(b"jpeg-bytes", "image/jpeg", (8, 8))),
                               mask=SourceImage(MASK, "image/png", (32, 32)))
    fields, files = form(edit)
    assert fields == {"model": "gpt-image-1", "prompt": "add a boat", "n": "1", "quality": "high",
                      "input_fidelity": "high", "stream": "true", "partial_images": "1"}
    assert files == {"image[]": [("image-0.png", PNG), ("image-1.jpg", b"jpeg-bytes")], "mask": [("mask.png", MASK)]}


def test_input_fidelity_is_sent_for_edits_only():
    assert "input_fidelity" not in body(input_fidelity="high")


# --- answers -------------------------------------------------------------------------------------

def test_answer_images_and_usage_are_read():
    generation = openai_provider.parse_answer(answer(2), "a red fox")
    assert [image.data for image in generation.images] == [PNG, PNG]
    assert generation.text == "a red fox"
    assert generation.usage == Usage(input_text_tokens=10, input_image_tokens=2, input_tokens=12, output_tokens=4160,
                                     total_tokens=4172)


@pytest.mark.parametrize("payload", [{"data": []}, {"data": None}, {}])
def test_an_answer_without_images_is_no_image(payload):
    with pytest.raises(NoImage):
        openai_provider.parse_answer(payload)


def test_a_malformed_answer_is_retried_as_unavailable():
    with pytest.raises(UpstreamUnavailable):
        openai_provider.parse_answer(["not", "an", "object"])


def test_streamed_events_become_partial_images_and_the_completed_answer():
    b64 = base64.b64encode(PNG).decode()
    events = [{"type": "image_generation.partial_image", "b64_json": b64, "partial_image_index": 0},
              {"type": "image_generation.completed", "b64_json": b64, "usage": answer()["usage"]}]
    assert [openai_provider.interim_image(event) for event in events] == [b64, None]
    generation = openai_provider.parse_answer(openai_provider.merge_stream(events), "p")
    assert len(generation.images) == 1 and generation.usage.output_tokens == 4160


def test_a_streamed_moderation_error_is_blocked():
    events = [{"type": "error", "error": {"code": "moderation_blocked", "message": "rejected by the safety system"}}]
    with pytest.raises(Blocked, match="rejected by the safety system"):
        openai_provider.merge_stream(events)


# --- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_a_502_naming_the_setting_without_the_key(status):
    error = openai_provider.error_for(http_response(status, {"message": f"Incorrect API key provided: {OPENAI_KEY}"}),
                                      OPENAI_KEY)
    assert (type(error), error.status) == (UpstreamError, 502)
    assert "OPENAI_API_KEY" in error.message and OPENAI_KEY not in error.message


def test_a_400_is_the_upstreams_message():
    error = openai_provider.error_for(http_response(400, {"message": "Invalid value: 'hd'.", "code": "invalid_value"}))
    assert (type(error), error.status, error.message) == (Rejected, 400, "Invalid value: 'hd'.")


def test_a_moderation_refusal_is_a_400_with_its_message():
    error = openai_provider.error_for(http_response(400, {"message": "Your request was rejected by the safety system.",
                                                          "code": "moderation_blocked"}))
    assert (type(error), error.status) == (Blocked, 400)
    assert "Your request was rejected by the safety system." in error.message


def test_a_429_is_rate_limited_with_the_upstreams_wait():
    error = openai_provider.error_for(http_response(429, {"message": "slow down"}, retry_after="7"))
    assert (type(error), error.status, error.retry_after) == (RateLimited, 429, 7)


def test_no_quota_left_is_the_operators_problem():
    error = openai_provider.error_for(http_response(429, {"message": "quota", "code": "insufficient_quota"}))
    assert (type(error), error.status) == (NoCredits, 503)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_a_retryable_502(status):
    error = openai_provider.error_for(http_response(status, {"message": "down"}))
    assert (type(error), error.status, error.retryable) == (UpstreamUnavailable, 502, True)


# --- the service with it -------------------------------------------------------------------------

@pytest.fixture
def openai_app(settings):
    app = create_app(dataclasses.replace(settings, openai_api_key=OPENAI_KEY, openai_base_url="https://openai.test/v1"))
    yield app
    app.config["STORE"].close()


@pytest.fixture
def mocked():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def test_gpt_image_1_without_the_key_is_a_503_naming_it_and_not_listed(client, auth):
    response = client.post("/v1/images/generations", json={"prompt": "a fox", "model": "gpt-image-1"}, headers=auth)
    assert response.status_code == 503
    assert "OPENAI_API_KEY" in response.get_json()["message"]
    listed = [entry["id"] for entry in client.get("/v1/models", headers=auth).get_json()["data"]]
    assert not any(name.startswith("gpt-image") for name in listed)


def test_a_generation_goes_to_openai_with_the_key_and_is_priced_from_its_tokens(openai_app, auth, mocked):
    mocked.add(responses.POST, GENERATIONS, json=answer())
    response = openai_app.test_client().post("/v1/images/generations", headers=auth, json={
        "prompt": "a fox", "model": "gpt-image-1", "size": "1792x1024", "quality": "hd", "background": "transparent"})
    assert response.status_code == 200, response.get_json()
    assert response.headers["x-gateway-provider"] == "openai"
    sent = mocked.calls[0].request
    assert sent.headers["Authorization"] == f"Bearer {OPENAI_KEY}"
    assert json.loads(sent.body) == {"model": "gpt-image-1", "prompt": "a fox", "n": 1, "size": "1536x1024",
                                     "quality": "high", "background": "transparent", "output_format": "png"}
    usage = response.get_json()["usage"]
    assert usage["output_tokens"] == 4160
    assert usage["cost"] == round((10 * 5.00 + 2 * 10.00 + 4160 * 40.00) / 1e6, 6)
    assert response.get_json()["data"][0]["revised_prompt"] == "a fox"


def test_n_images_come_from_one_upstream_call(openai_app, auth, mocked):
    mocked.add(responses.POST, GENERATIONS, json=answer(3))
    response = openai_app.test_client().post("/v1/images/generations", headers=auth,
                                             json={"prompt": "a fox", "model": "gpt-image-1-mini", "n": 3})
    assert response.status_code == 200 and len(response.get_json()["data"]) == 3
    assert len(mocked.calls) == 1 and json.loads(mocked.calls[0].request.body)["n"] == 3


def test_a_stream_of_n_images_is_n_calls_of_one(openai_app, auth, mocked):
    mocked.add(responses.POST, GENERATIONS, json=answer())
    response = openai_app.test_client().post("/v1/images/generations", headers=auth, json={
        "prompt": "a fox", "model": "gpt-image-1", "n": 2, "stream": True})
    assert response.get_data(as_text=True).count("event: image_generation.completed") == 2
    assert [json.loads(sent.request.body)["n"] for sent in mocked.calls] == [1, 1]


def test_an_edit_with_a_mask_goes_as_multipart_files(openai_app, auth, mocked):
    mocked.add(responses.POST, EDITS, json=answer())
    response = openai_app.test_client().post("/v1/images/edits", headers=auth, data={
        "prompt": "add a boat", "model": "gpt-image-1", "input_fidelity": "high",
        "image": (io.BytesIO(PNG), "photo.png"), "mask": (io.BytesIO(MASK), "mask.png")})
    assert response.status_code == 200, response.get_json()
    sent = mocked.calls[0].request
    assert sent.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert b'name="image[]"; filename="image-0.png"' in sent.body and b'name="mask"; filename="mask.png"' in sent.body
    assert MASK in sent.body and b"MASK_INSTRUCTION" not in sent.body and b"black-and-white" not in sent.body
    assert Image.open(io.BytesIO(base64.b64decode(response.get_json()["data"][0]["b64_json"]))).size == (32, 32)


def test_openais_refusal_of_the_key_is_a_502_that_never_echoes_it(openai_app, auth, mocked):
    mocked.add(responses.POST, GENERATIONS, status=401,
               json={"error": {"message": f"Incorrect API key provided: {OPENAI_KEY}", "code": "invalid_api_key"}})
    response = openai_app.test_client().post("/v1/images/generations", headers=auth,
                                             json={"prompt": "a fox", "model": "gpt-image-1"})
    assert response.status_code == 502
    assert "OPENAI_API_KEY" in response.get_json()["message"]
    assert OPENAI_KEY not in response.get_data(as_text=True)


def test_the_openapi_spec_names_the_provider_and_its_settings(client):
    description = client.get("/openapi.json").json["info"]["description"]
    assert "`openai` (OpenAI API, configured by OPENAI_API_KEY; serves gpt-image-1, gpt-image-1-mini, " \
           "gpt-image-1.5)" in description
