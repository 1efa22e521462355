"""Client keys (docs/api.md): Bearer or x-api-key, compared against every configured key."""
import dataclasses

import pytest
import responses

from gateway import create_app
from tests.conftest import CLIENT_KEY
from tests.support import GENERATE, gemini_answer, generate


@pytest.mark.parametrize("headers", [
    {"Authorization": f"Bearer {CLIENT_KEY}"},
    {"Authorization": f"bearer {CLIENT_KEY}"},
    {"x-api-key": CLIENT_KEY},
    {"Authorization": "Bearer second-client-key"},
])
def test_a_configured_key_is_accepted(client, upstream, headers):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    assert generate(client, headers).status_code == 200


def test_missing_key_is_401_with_json_body(client, upstream):
    response = generate(client, {})
    assert response.status_code == 401
    assert response.json == {"error": True, "status": 401, "message": response.json["message"]}
    assert "Authorization: Bearer" in response.json["message"]
    assert len(upstream.calls) == 0


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer wrong-key"},
    {"x-api-key": "wrong-key"},
    {"Authorization": f"Basic {CLIENT_KEY}"},
    {"Authorization": f"Bearer {CLIENT_KEY}x"},
])
def test_wrong_key_is_401(client, upstream, headers):
    response = generate(client, headers)
    assert response.status_code == 401
    assert response.json["message"].startswith("Unauthorized")
    assert len(upstream.calls) == 0


def test_no_configured_keys_refuses_every_request_and_says_why(settings, upstream):
    client = create_app(dataclasses.replace(settings, api_keys=())).test_client()
    response = generate(client, {"Authorization": "Bearer anything"})
    assert response.status_code == 401
    assert "GATEWAY_API_KEYS" in response.json["message"]


def test_auth_is_checked_before_the_body(client):
    response = client.post("/v1/images/generations", data="not json", headers={"Content-Type": "text/plain"})
    assert response.status_code == 401


def test_health_needs_no_key_and_shows_no_secret(client, settings):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json["status"] == "ok"
    assert response.json["providers"] == {"gemini": {"configured": True}, "vertex": {"configured": False},
                                          "openai": {"configured": False}, "openrouter": {"configured": False}}
    assert settings.gemini_api_key not in response.get_data(as_text=True)
    assert CLIENT_KEY not in response.get_data(as_text=True)


def test_health_names_the_default_model_and_what_each_alias_means(client):
    body = client.get("/health").json
    assert body["default_model"] == "gemini-3-pro-image"
    assert body["aliases"]["nano-banana"] == "gemini-2.5-flash-image"
    assert body["aliases"]["dall-e-3"] == "gemini-3-pro-image"


def test_health_is_a_503_naming_the_setting_when_no_provider_is_configured(settings):
    client = create_app(dataclasses.replace(settings, gemini_api_key="")).test_client()
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json == {"error": True, "status": 503, "message": (
        "Not ready: no provider is configured (set GEMINI_API_KEY (or GOOGLE_API_KEY) or VERTEX_PROJECT or "
        "OPENAI_API_KEY or OPENROUTER_API_KEY).")}
