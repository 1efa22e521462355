"""CORS for browser apps (docs/api.md): only for the configured origins, on /v1/*."""
import dataclasses

import pytest

from gateway import create_app

ORIGIN = "https://app.example"


def client_for(settings, origins):
    return create_app(dataclasses.replace(settings, cors_allow_origins=origins)).test_client()


def preflight(client, origin=ORIGIN, path="/v1/images/generations"):
    return client.options(path, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                         "Access-Control-Request-Headers": "authorization, content-type"})


def test_a_preflight_from_an_allowed_origin_is_answered_without_a_key(settings):
    response = preflight(client_for(settings, (ORIGIN,)))
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_a_preflight_for_the_node_sdks_own_headers_is_allowed(settings):
    sdk_headers = "authorization, content-type, x-stainless-lang, x-stainless-package-version, x-stainless-os, " \
                  "x-stainless-arch, x-stainless-runtime, x-stainless-runtime-version, x-stainless-retry-count, " \
                  "x-stainless-timeout"
    response = client_for(settings, (ORIGIN,)).options("/v1/images/generations", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": sdk_headers})
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed == set(sdk_headers.split(", "))


def test_answers_to_an_allowed_origin_expose_the_gateways_headers(settings, auth):
    client = client_for(settings, (ORIGIN,))
    response = client.post("/v1/images/generations", json={}, headers={**auth, "Origin": ORIGIN})
    assert response.status_code == 400
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    exposed = {h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"x-request-id", "x-gateway-images-failed", "retry-after"} <= exposed


@pytest.mark.parametrize("origins", [("https://other.example",), ()])
def test_other_origins_and_an_unset_setting_get_no_cors_headers(settings, origins):
    response = preflight(client_for(settings, origins))
    assert "Access-Control-Allow-Origin" not in response.headers


def test_a_wildcard_allows_any_origin(settings):
    response = preflight(client_for(settings, ("*",)), origin="https://anyone.example")
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_cors_covers_only_the_api(settings):
    assert "Access-Control-Allow-Origin" not in client_for(settings, ("*",)).get(
        "/health", headers={"Origin": ORIGIN}).headers
