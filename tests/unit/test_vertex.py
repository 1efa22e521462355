"""Gemini on Vertex AI (docs/providers.md): the regional URL, Google's body with a role on every
entry, OAuth access tokens from a service account (cached, refreshed, one refresh at a time,
failures said without the key), and the provider behind the images endpoint."""
import dataclasses
import json
import threading
import time
from urllib.parse import parse_qs

import pytest
import requests
import responses

from emulator.oauth import JWT_BEARER, TokenIssuer, write_service_account
from gateway import create_app
from gateway.catalog import resolve_model
from gateway.errors import UpstreamError, UpstreamUnavailable
from gateway.media import SourceImage
from gateway.providers import ImageCall
from gateway.providers.transport import Scope
from gateway.providers.vertex import VertexProvider
from tests.support import assert_valid_gemini_request, gemini_answer, generate, png_bytes

TOKEN_URI = "https://oauth.test/token"
MODEL = "gemini-3-pro-image"
PRO = resolve_model(MODEL, MODEL)
VERTEX_URL = ("https://us-central1-aiplatform.googleapis.com/v1/projects/proj/locations/us-central1"
              f"/publishers/google/models/{MODEL}:generateContent")
PNG, JPEG = SourceImage(png_bytes(), "image/png", (64, 48)), SourceImage(b"\xff\xd8jpeg", "image/jpeg", (8, 8))


@pytest.fixture
def account(tmp_path):
    path = tmp_path / "service-account.json"
    return path, write_service_account(path, TOKEN_URI)


@pytest.fixture
def vertex_settings(settings, account):
    return dataclasses.replace(settings, gemini_api_key="", vertex_project="proj", vertex_location="us-central1",
                               google_application_credentials=str(account[0]))


@pytest.fixture
def provider(vertex_settings, web):
    web.add(responses.POST, VERTEX_URL, json=gemini_answer())
    return VertexProvider(vertex_settings)


def token_endpoint(web, expires_in=3600, delay=0.0):
    """A mocked token endpoint handing out ya29.token-1, ya29.token-2...; returns them as issued."""
    issued, lock = [], threading.Lock()

    def grant(request):
        time.sleep(delay)
        with lock:
            issued.append(f"ya29.token-{len(issued) + 1}")
            token = issued[-1]
        return 200, {}, json.dumps({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"})

    web.add_callback(responses.POST, TOKEN_URI, callback=grant)
    return issued


def generate_with(provider, call=None):
    request = provider.request_for(call or ImageCall(model=MODEL, prompt="a fox", catalog=PRO))
    return provider.generate(request, Scope(time.monotonic() + 30))


def bearers(web):
    return [call.request.headers["Authorization"] for call in web.calls if call.request.url == VERTEX_URL]


def token_requests(web):
    return [call.request for call in web.calls if call.request.url == TOKEN_URI]


@pytest.mark.parametrize(("location", "host"), [
    ("global", "https://aiplatform.googleapis.com"),
    ("us-central1", "https://us-central1-aiplatform.googleapis.com"),
    ("europe-west4", "https://europe-west4-aiplatform.googleapis.com"),
])
def test_the_url_is_the_locations_endpoint(settings, location, host):
    provider = VertexProvider(dataclasses.replace(settings, vertex_project="P", vertex_location=location))
    assert provider.url_for("M") + ":generateContent" == \
        f"{host}/v1/projects/P/locations/{location}/publishers/google/models/M:generateContent"


def test_vertex_base_url_overrides_the_host(settings):
    provider = VertexProvider(dataclasses.replace(settings, vertex_project="P", vertex_location="us-central1",
                                                  vertex_base_url="http://127.0.0.1:9"))
    assert provider.url_for("M") + ":generateContent" == \
        "http://127.0.0.1:9/v1/projects/P/locations/us-central1/publishers/google/models/M:generateContent"


@pytest.mark.parametrize("call", [
    ImageCall(model=MODEL, prompt="a fox", catalog=PRO),
    ImageCall(model=MODEL, prompt="make it blue", images=(PNG,), params={"aspect_ratio": "16:9", "size": "2048x2048"},
              catalog=PRO),
    ImageCall(model=MODEL, prompt="merge them", images=(PNG, JPEG), catalog=PRO, image_only=True),
], ids=["text", "one-image", "two-images"])
def test_the_body_gives_every_entry_a_role_with_images_before_the_text(settings, call):
    body = json.loads(VertexProvider(settings).request_for(call).body)
    assert_valid_gemini_request(body)
    assert [entry["role"] for entry in body["contents"]] == ["user"]
    parts = body["contents"][0]["parts"]
    assert [part["inlineData"]["mimeType"] for part in parts[:-1]] == [image.mime_type for image in call.images]
    assert parts[-1] == {"text": call.prompt}


def test_the_access_token_from_the_token_endpoint_is_the_bearer(provider, web):
    token_endpoint(web)
    assert len(generate_with(provider).images) == 1
    assert bearers(web) == ["Bearer ya29.token-1"]


def test_the_token_is_cached_between_calls(provider, web):
    issued = token_endpoint(web)
    generate_with(provider)
    generate_with(provider)
    assert len(issued) == 1
    assert bearers(web) == ["Bearer ya29.token-1"] * 2


def test_a_token_that_expires_soon_is_refreshed_on_the_next_call(provider, web):
    issued = token_endpoint(web, expires_in=60)  # google-auth counts under 3 min 45 s left as expired
    generate_with(provider)
    generate_with(provider)
    assert len(issued) == 2
    assert bearers(web) == ["Bearer ya29.token-1", "Bearer ya29.token-2"]


def test_the_token_request_is_a_signed_jwt_bearer_grant(provider, web, account):
    token_endpoint(web)
    generate_with(provider)
    (sent,) = token_requests(web)
    form = {name: values[0] for name, values in parse_qs(sent.body.decode()).items()}
    assert form["grant_type"] == JWT_BEARER
    answer, refusal = TokenIssuer(account[1]).grant(form)  # the emulator checks signature, issuer, scope
    assert refusal is None and answer["access_token"]


def test_concurrent_first_calls_share_one_token_request(provider, web):
    issued = token_endpoint(web, delay=0.3)
    start = threading.Barrier(8)

    def call():
        start.wait()
        generate_with(provider)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert issued == ["ya29.token-1"]
    assert bearers(web) == ["Bearer ya29.token-1"] * 8


def test_a_refused_refresh_is_a_502_naming_the_credentials_without_the_key(provider, web, account):
    web.add(responses.POST, TOKEN_URI, status=400,
            json={"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
    with pytest.raises(UpstreamError) as caught:
        generate_with(provider)
    error = caught.value
    assert (type(error), error.status, error.retryable) == (UpstreamError, 502, False)
    assert error.message.startswith("Vertex AI access token could not be had")
    assert "GOOGLE_APPLICATION_CREDENTIALS" in error.message
    key_lines = [line for line in account[1]["private_key"].splitlines() if line and "PRIVATE KEY" not in line]
    assert not [line for line in key_lines if line in error.message]
    assert "PRIVATE KEY" not in error.message and bearers(web) == []


def test_an_unreachable_token_endpoint_is_retryable(provider, web):
    web.add(responses.POST, TOKEN_URI, body=requests.exceptions.ConnectionError())
    with pytest.raises(UpstreamUnavailable) as caught:
        generate_with(provider)
    assert (caught.value.status, caught.value.retryable, caught.value.fails_over) == (502, True, True)
    assert bearers(web) == []


def test_a_missing_credentials_file_is_a_502_naming_it(vertex_settings, web, tmp_path):
    missing = tmp_path / "nowhere.json"
    provider = VertexProvider(dataclasses.replace(vertex_settings, google_application_credentials=str(missing)))
    with pytest.raises(UpstreamError) as caught:
        generate_with(provider)
    assert (type(caught.value), caught.value.status) == (UpstreamError, 502)
    assert str(missing) in caught.value.message and "No such file or directory" in caught.value.message


def test_after_a_failed_refresh_the_next_call_tries_again(provider, web):
    web.add(responses.POST, TOKEN_URI, status=400, json={"error": "invalid_grant"})
    issued = token_endpoint(web)
    with pytest.raises(UpstreamError):
        generate_with(provider)
    assert len(generate_with(provider).images) == 1
    assert len(token_requests(web)) == 2 and bearers(web) == [f"Bearer {issued[0]}"]


@pytest.fixture
def gateway(vertex_settings, web):
    token_endpoint(web)
    return create_app(vertex_settings).test_client()


def test_the_gateway_serves_a_request_through_vertex(gateway, auth, web):
    web.add(responses.POST, VERTEX_URL, json=gemini_answer())
    response = generate(gateway, auth, size="1792x1024")
    assert response.status_code == 200, response.get_json()
    assert response.headers["x-gateway-provider"] == "vertex"
    (sent,) = [call.request for call in web.calls if call.request.url == VERTEX_URL]
    body = json.loads(sent.body)
    assert_valid_gemini_request(body)
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}
    assert sent.headers["Authorization"] == "Bearer ya29.token-1"


def test_a_vertex_403_names_the_role_to_grant(gateway, auth, web):
    web.add(responses.POST, VERTEX_URL, status=403, json={"error": {"code": 403, "message": "Permission denied"}})
    response = generate(gateway, auth)
    assert response.status_code == 502
    message = response.get_json()["message"]
    assert message.startswith("Vertex AI refused the gateway's credentials")
    assert "roles/aiplatform.user" in message


def test_a_vertex_429_after_retries_is_a_429_with_retry_after(gateway, auth, web, monkeypatch):
    monkeypatch.setattr("gateway.providers.transport.Cancel.sleep", lambda cancel, seconds: None)
    web.add(responses.POST, VERTEX_URL, status=429, headers={"Retry-After": "3"},
            json={"error": {"code": 429, "message": "Resource exhausted"}})
    response = generate(gateway, auth)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert len(bearers(web)) == 3  # the first attempt and UPSTREAM_MAX_RETRIES=2 retries
