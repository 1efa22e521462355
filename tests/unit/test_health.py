"""GET /health/live, /health/ready and /health: liveness, and readiness as a list of checks."""
import dataclasses

import pytest

from gateway import create_app
from gateway.drain import DrainFlag

NO_PROVIDER = ("no provider is configured (set GEMINI_API_KEY (or GOOGLE_API_KEY) or VERTEX_PROJECT or "
               "OPENROUTER_API_KEY)")


@pytest.fixture
def draining(app):
    """The app with a drain flag of its own, already set (the shared one belongs to gunicorn)."""
    app.config["DRAIN"] = DrainFlag()
    app.config["DRAIN"].begin()
    return app


def test_live_is_200_and_needs_no_key(client):
    response = client.get("/health/live")
    assert (response.status_code, response.json) == (200, {"status": "ok"})


@pytest.mark.parametrize("path", ["/health/ready", "/health"])
def test_ready_is_200_with_the_providers_and_models(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.json["status"] == "ok"
    assert response.json["providers"]["gemini"] == {"configured": True}
    assert "gemini-3-pro-image" in response.json["models"]


@pytest.mark.parametrize("path", ["/health/ready", "/health"])
def test_draining_makes_ready_503_in_the_error_shape(draining, path):
    response = draining.test_client().get(path)
    assert response.status_code == 503
    assert response.json == {"error": True, "status": 503, "message": "Not ready: draining before shutdown."}


def test_draining_leaves_live_at_200(draining):
    assert draining.test_client().get("/health/live").status_code == 200


def test_every_reason_is_named(settings):
    app = create_app(dataclasses.replace(settings, gemini_api_key=""))
    app.config["DRAIN"] = DrainFlag()
    app.config["DRAIN"].begin()
    message = app.test_client().get("/health/ready").json["message"]
    assert message == f"Not ready: {NO_PROVIDER}; draining before shutdown."


def test_not_ready_follows_the_openai_error_format(settings):
    app = create_app(dataclasses.replace(settings, gemini_api_key="", error_format="openai"))
    response = app.test_client().get("/health/ready")
    assert response.status_code == 503
    assert response.json["error"]["message"] == f"Not ready: {NO_PROVIDER}."


def test_probes_are_not_logged_as_requests(client, caplog):
    client.get("/health/live")
    client.get("/health/ready")
    assert not [record for record in caplog.records if record.getMessage() == "request"]
