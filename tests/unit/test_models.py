"""GET /v1/models and /v1/models/{id} (docs/api.md) and GATEWAY_MODEL_ALIASES."""
import dataclasses

import pytest
import responses

from gateway import create_app
from gateway.config import ConfigError, Settings
from tests.support import GENERATE, gemini_answer, sent_bodies

ALIASES = {"dall-e-3": "gemini-3-pro-image", "house-image": "nano-banana-2"}


@pytest.fixture
def aliased(settings):
    return create_app(dataclasses.replace(settings, model_aliases=ALIASES)).test_client()


def test_models_lists_every_model_its_aliases_and_the_operators_in_openais_shape(aliased, auth):
    body = aliased.get("/v1/models", headers=auth).get_json()
    assert body["object"] == "list"
    ids = [entry["id"] for entry in body["data"]]
    assert ids[:3] == ["gemini-2.5-flash-image", "gemini-3-pro-image", "gemini-3.1-flash-image"]
    assert {"nano-banana", "gemini-3-pro-image-preview", "dall-e-3", "house-image"} <= set(ids)
    assert all(set(entry) == {"id", "object", "created", "owned_by"} and entry["object"] == "model"
               and isinstance(entry["created"], int) for entry in body["data"])


def test_one_model_or_alias_by_id(aliased, auth):
    assert aliased.get("/v1/models/dall-e-3", headers=auth).get_json()["id"] == "dall-e-3"
    assert aliased.get("/v1/models/gemini-3-pro-image", headers=auth).get_json()["owned_by"] == "google"


def test_an_unknown_model_id_is_a_404_in_the_error_body(aliased, auth):
    response = aliased.get("/v1/models/dall-e-9", headers=auth)
    assert response.status_code == 404
    assert response.get_json() == {"error": True, "status": 404, "message":
                                   "The model 'dall-e-9' does not exist or is not served by this gateway."}


def test_models_need_a_key(aliased):
    assert aliased.get("/v1/models").status_code == 401


def test_without_a_configured_provider_nothing_is_listed(settings, auth):
    client = create_app(dataclasses.replace(settings, gemini_api_key="")).test_client()
    assert client.get("/v1/models", headers=auth).get_json() == {"object": "list", "data": []}


def test_an_alias_resolves_to_its_model_and_the_response_names_the_model(aliased, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    response = aliased.post("/v1/images/generations", json={"prompt": "a fox", "model": "house-image"}, headers=auth)
    assert response.get_json()["model"] == "gemini-3.1-flash-image"
    assert upstream.calls[0].request.url.endswith("/models/gemini-3.1-flash-image:generateContent")
    assert sent_bodies(upstream)[0]["contents"][0]["parts"][-1]["text"] == "a fox"


def test_an_alias_to_an_unknown_model_stops_the_start(settings):
    with pytest.raises(ConfigError, match="GATEWAY_MODEL_ALIASES: dall-e-3 names an unknown model"):
        create_app(dataclasses.replace(settings, model_aliases={"dall-e-3": "dall-e-3"}))


def test_dall_e_names_resolve_to_the_default_model_out_of_the_box(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    response = client.post("/v1/images/generations", json={"prompt": "a fox", "model": "dall-e-2"}, headers=auth)
    assert response.get_json()["model"] == "gemini-3-pro-image"
    ids = [entry["id"] for entry in client.get("/v1/models", headers=auth).get_json()["data"]]
    assert {"dall-e-2", "dall-e-3"} <= set(ids) and not any(name.startswith("gpt-image") for name in ids)


def test_dall_e_follows_the_operators_default_model(settings, auth, upstream):
    client = create_app(dataclasses.replace(settings, default_model="nano-banana")).test_client()
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    response = client.post("/v1/images/generations", json={"prompt": "a fox", "model": "dall-e-3"}, headers=auth)
    assert response.get_json()["model"] == "gemini-2.5-flash-image"


def test_dall_e_aliases_can_be_pointed_elsewhere_or_removed():
    aliases = Settings.from_env({"GATEWAY_MODEL_ALIASES": "dall-e-3=gemini-2.5-flash-image, dall-e-2="}).model_aliases
    assert aliases == {"dall-e-3": "gemini-2.5-flash-image"}


def test_a_removed_dall_e_name_is_an_unknown_model(settings, auth):
    client = create_app(dataclasses.replace(settings, model_aliases={})).test_client()
    response = client.post("/v1/images/generations", json={"prompt": "a fox", "model": "dall-e-3"}, headers=auth)
    assert response.status_code == 400 and "unknown model 'dall-e-3'" in response.get_json()["message"]


@pytest.mark.parametrize("alias", ["gemini-3-pro-image", "nano-banana", "auto"])
def test_an_alias_that_names_a_catalog_model_stops_the_start(settings, alias):
    with pytest.raises(ConfigError, match=f"GATEWAY_MODEL_ALIASES: {alias} is a model of the catalog"):
        create_app(dataclasses.replace(settings, model_aliases={alias: "gemini-2.5-flash-image"}))
