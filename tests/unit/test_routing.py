"""Which provider serves a request (docs/providers.md): GATEWAY_PROVIDERS order, the catalog's
ids per provider, `openrouter/<vendor>/<model>`, and the x-gateway-provider header."""
import base64
import dataclasses
import io
import json
import re

import pytest
import responses

from gateway import create_app
from gateway.config import ConfigError, Settings
from tests.conftest import OPENROUTER_KEY
from tests.support import CHAT, GENERATE, gemini_answer, generate, openrouter_answer, png_bytes


@pytest.fixture
def both(settings):
    return dataclasses.replace(settings, openrouter_api_key=OPENROUTER_KEY,
                               openrouter_base_url="https://openrouter.test/api/v1")


def client_with(settings, **changes):
    return create_app(dataclasses.replace(settings, **changes)).test_client()


@pytest.fixture
def chat(upstream):
    """The mocked OpenRouter API (the `upstream` mock, which also checks every Gemini body)."""
    upstream.add(responses.POST, CHAT, json=openrouter_answer())
    return upstream


def sent(mock):
    (call,) = mock.calls
    return call.request.url, json.loads(call.request.body)


def test_the_first_configured_provider_in_order_takes_the_request(both, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    response = generate(client_with(both), auth)
    assert response.headers["x-gateway-provider"] == "gemini"
    assert re.fullmatch(GENERATE, sent(upstream)[0])


def test_gateway_providers_changes_the_order(both, auth, chat):
    response = generate(client_with(both, providers=("openrouter", "gemini")), auth)
    assert response.status_code == 200
    assert response.headers["x-gateway-provider"] == "openrouter"
    url, body = sent(chat)
    assert (url, body["model"]) == (CHAT, "google/gemini-3-pro-image-preview")
    assert chat.calls[0].request.headers["Authorization"] == f"Bearer {OPENROUTER_KEY}"


def test_an_unconfigured_provider_is_skipped(both, auth, chat):
    response = generate(client_with(both, gemini_api_key=""), auth, model="nano-banana-2", size="1792x1024")
    assert response.headers["x-gateway-provider"] == "openrouter"
    assert sent(chat)[1]["model"] == "google/gemini-3.1-flash-image-preview"
    assert sent(chat)[1]["image_config"] == {"aspect_ratio": "16:9", "image_size": "2K"}


def test_the_openrouter_answer_becomes_the_images_response_with_its_cost(both, auth, chat):
    body = generate(client_with(both, gemini_api_key=""), auth).get_json()
    assert body["data"][0]["revised_prompt"] == "A fox."
    assert base64.b64decode(body["data"][0]["b64_json"]) == png_bytes()
    assert body["usage"] == {"input_tokens": 12, "output_tokens": 1290, "total_tokens": 1302,
                             "input_tokens_details": {"text_tokens": 12, "image_tokens": 0}, "cost": 0.039}


def test_costs_of_n_calls_add_up(both, auth, upstream):
    for cost in (0.25, 0.5):
        upstream.add(responses.POST, CHAT, json=openrouter_answer(cost=cost))
    body = generate(client_with(both, gemini_api_key=""), auth, n=2).get_json()
    assert len(body["data"]) == 2 and body["usage"]["cost"] == 0.75


@pytest.mark.parametrize("params, cost", [
    ({}, 0.13402),  # 3 Pro at 1K: $0.134, and 10 input tokens at $2 per million
    ({"size": "4096x4096"}, 0.24002),
    ({"model": "nano-banana-2", "size": "512x512"}, 0.045005),
    ({"model": "nano-banana"}, 0.039003),
])
def test_gemini_answers_are_priced_by_the_catalogs_table(both, auth, upstream, params, cost):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    assert generate(client_with(both), auth, **params).get_json()["usage"]["cost"] == cost


def test_an_edit_sends_its_images_to_openrouter_as_data_urls(both, auth, chat):
    source = png_bytes((40, 30), (0, 200, 0))
    response = client_with(both, gemini_api_key="").post(
        "/v1/images/edits", headers=auth, data={"prompt": "make it blue", "image": (io.BytesIO(source), "in.png")})
    assert response.status_code == 200, response.get_json()
    content = sent(chat)[1]["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "make it blue"}
    assert content[1] == {"type": "image_url",
                          "image_url": {"url": "data:image/png;base64," + base64.b64encode(source).decode()}}


def test_openrouter_models_pass_through_with_image_only_modalities(both, auth, chat):
    response = generate(client_with(both), auth, model="openrouter/black-forest-labs/flux.2-pro", size="1024x1536")
    assert response.status_code == 200
    assert response.get_json()["model"] == "openrouter/black-forest-labs/flux.2-pro"
    body = sent(chat)[1]
    assert (body["model"], body["modalities"]) == ("black-forest-labs/flux.2-pro", ["image"])
    assert body["image_config"] == {"aspect_ratio": "2:3"}


def test_openrouter_image_only_models_lists_the_image_only_ids(both, auth, chat):
    """OPENROUTER_IMAGE_ONLY_MODELS replaces the built-in prefixes: its models are asked for images
    alone, and FLUX, left out of it, is asked for words too."""
    client = client_with(both, openrouter_image_only=("acme/",))
    for model, modalities in (("openrouter/acme/pic-1", ["image"]), ("openrouter/black-forest-labs/flux.2-pro",
                                                                      ["image", "text"])):
        assert generate(client, auth, model=model).status_code == 200
        assert json.loads(chat.calls[-1].request.body)["modalities"] == modalities


def test_a_passthrough_model_is_sent_no_tier_the_client_never_asked_for(both, auth, chat):
    response = generate(client_with(both), auth, model="openrouter/openai/gpt-5-image", size="1792x1024",
                        quality="hd")
    assert response.status_code == 200
    assert sent(chat)[1]["image_config"] == {"aspect_ratio": "16:9"}


def test_other_openrouter_models_get_image_and_text(both, auth, chat):
    generate(client_with(both), auth, model="openrouter/openai/gpt-5-image")
    assert sent(chat)[1]["modalities"] == ["image", "text"]


def test_the_512_tier_is_0_5k_on_openrouter(both, auth, chat):
    generate(client_with(both, gemini_api_key=""), auth, model="gemini-3.1-flash-image", size="512x512")
    assert sent(chat)[1]["image_config"] == {"aspect_ratio": "1:1", "image_size": "0.5K"}


@pytest.mark.parametrize("model", ["openrouter/flux", "openrouter//x", "openrouter/a/b c", "openrouter/a/"])
def test_a_malformed_openrouter_name_is_an_unknown_model(both, auth, model):
    response = generate(client_with(both), auth, model=model)
    assert response.status_code == 400
    assert response.get_json()["message"].startswith("Invalid request parameters: model: unknown model")


def test_a_model_only_an_unconfigured_provider_serves_is_503_naming_its_setting(settings, auth, upstream):
    response = generate(client_with(settings), auth, model="openrouter/openai/gpt-5-image")
    assert response.status_code == 503
    assert response.get_json()["message"] == ("No provider that serves openrouter/openai/gpt-5-image is configured: "
                                              "set OPENROUTER_API_KEY on the gateway.")
    assert not upstream.calls


def test_a_model_whose_providers_are_left_out_of_gateway_providers_is_503(both, auth, upstream):
    response = generate(client_with(both, providers=("gemini",)), auth, model="openrouter/openai/gpt-5-image")
    assert response.status_code == 503
    assert response.get_json()["message"] == ("No provider in GATEWAY_PROVIDERS serves openrouter/openai/gpt-5-image; "
                                              "it is served by openrouter.")


def test_upstream_ids_are_overridden_per_provider(both, auth, chat):
    overrides = {"openrouter:gemini-3-pro-image": "google/gemini-3-pro-image", "gemini-3-pro-image": "g-3-pro"}
    generate(client_with(both, providers=("openrouter",), upstream_models=overrides), auth)
    assert sent(chat)[1]["model"] == "google/gemini-3-pro-image"


def test_an_unprefixed_override_is_for_googles_ids(both, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    generate(client_with(both, upstream_models={"gemini-3-pro-image": "gemini-3-pro-image-preview"}), auth)
    assert sent(upstream)[0].endswith("/models/gemini-3-pro-image-preview:generateContent")


def test_an_unknown_provider_in_gateway_providers_stops_the_start(settings):
    with pytest.raises(ConfigError, match="GATEWAY_PROVIDERS names unknown providers bedrock; known: gemini"):
        create_app(dataclasses.replace(settings, providers=("gemini", "bedrock")))


def test_provider_settings_are_read():
    settings = Settings.from_env({"OPENROUTER_API_KEY": " k ", "OPENROUTER_BASE_URL": "http://127.0.0.1:9/v1/",
                                  "GATEWAY_PROVIDERS": "OpenRouter, gemini"})
    assert (settings.openrouter_api_key, settings.openrouter_base_url) == ("k", "http://127.0.0.1:9/v1")
    assert settings.providers == ("openrouter", "gemini")
    defaults = Settings.from_env({})
    assert defaults.openrouter_base_url == "https://openrouter.ai/api/v1"
    assert defaults.providers == ("gemini", "vertex", "openai", "openrouter")


def test_models_lists_what_the_configured_providers_serve(both, auth):
    listed = client_with(both, gemini_api_key="").get("/v1/models", headers=auth).get_json()["data"]
    assert {"gemini-3-pro-image", "nano-banana-2"} <= {entry["id"] for entry in listed}


def test_an_alias_may_name_an_openrouter_model(both, auth, chat):
    client = client_with(both, model_aliases={"flux": "openrouter/black-forest-labs/flux.2-pro"})
    assert generate(client, auth, model="flux").get_json()["model"] == "openrouter/black-forest-labs/flux.2-pro"
    assert client.get("/v1/models/flux", headers=auth).get_json()["owned_by"] == "black-forest-labs"


def test_metrics_name_a_passthrough_model_by_a_fixed_label_not_the_clients_text(both, auth, chat):
    from prometheus_client import REGISTRY
    generate(client_with(both), auth, model="openrouter/someone/made-up-model-9")
    labels = {"model": "openrouter/other", "provider": "openrouter", "outcome": "ok"}
    assert REGISTRY.get_sample_value("gateway_upstream_calls_total", labels) >= 1
    names = {sample.labels.get("model") for metric in REGISTRY.collect() for sample in metric.samples}
    assert not any("made-up-model" in str(name) for name in names)
