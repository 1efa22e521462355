"""Settings come from the environment once, with the names and defaults of docs/configuration.md."""
import logging
import re
from dataclasses import fields
from pathlib import Path

import pytest

from gateway import create_app
from gateway.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_defaults():
    settings = Settings.from_env({})
    assert settings.api_keys == ()
    assert settings.gemini_api_key == ""
    assert settings.gemini_base_url == "https://generativelanguage.googleapis.com"
    assert settings.default_model == "gemini-3-pro-image"
    assert (settings.upstream_timeout, settings.upstream_connect_timeout) == (180, 10)
    assert settings.upstream_max_retries == 2
    assert settings.max_content_length == 52428800
    assert settings.image_fetch_max_bytes == 20971520
    assert settings.image_fetch_allow_hosts == ()
    assert settings.port == 8000


def test_values_are_read_and_typed():
    settings = Settings.from_env({
        "GATEWAY_API_KEYS": " a, b ,,c ", "GEMINI_API_KEY": "g", "GEMINI_BASE_URL": "http://127.0.0.1:9/",
        "GATEWAY_DEFAULT_MODEL": "nano-banana", "UPSTREAM_TIMEOUT": "30", "UPSTREAM_MAX_RETRIES": "0",
        "MAX_CONTENT_LENGTH": "4096", "IMAGE_FETCH_MAX_BYTES": "2048", "IMAGE_FETCH_ALLOW_HOSTS": "Img.Example, cdn",
        "PORT": "5000", "GATEWAY_UPSTREAM_MODELS": "gemini-3-pro-image=gemini-3-pro-image-preview",
    })
    assert settings.api_keys == ("a", "b", "c")
    assert settings.gemini_base_url == "http://127.0.0.1:9"
    assert settings.default_model == "nano-banana"
    assert (settings.upstream_timeout, settings.upstream_max_retries) == (30.0, 0)
    assert (settings.max_content_length, settings.image_fetch_max_bytes, settings.port) == (4096, 2048, 5000)
    assert settings.image_fetch_allow_hosts == ("img.example", "cdn")
    assert settings.upstream_models == {"gemini-3-pro-image": "gemini-3-pro-image-preview"}


def test_google_api_key_is_the_fallback():
    assert Settings.from_env({"GOOGLE_API_KEY": "google"}).gemini_api_key == "google"
    assert Settings.from_env({"GOOGLE_API_KEY": "google", "GEMINI_API_KEY": "gemini"}).gemini_api_key == "gemini"


@pytest.mark.parametrize("name, value", [
    ("UPSTREAM_TIMEOUT", "soon"), ("UPSTREAM_MAX_RETRIES", "-1"), ("PORT", "http"),
    ("MAX_CONTENT_LENGTH", "1.5"), ("GATEWAY_UPSTREAM_MODELS", "just-a-name"),
])
def test_a_malformed_value_names_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_an_unknown_default_model_stops_the_start():
    with pytest.raises(ConfigError, match="GATEWAY_DEFAULT_MODEL"):
        create_app(Settings(default_model="dall-e-3"))


def test_start_up_log_says_why_nothing_is_authorized(caplog, database_url):
    with caplog.at_level(logging.WARNING):
        create_app(Settings(database_url=database_url))
    assert "GATEWAY_API_KEYS" in caplog.text and "GEMINI_API_KEY" in caplog.text


def test_an_unexpected_exception_is_a_generic_500_without_details(client, auth, monkeypatch, caplog):
    def explode(*args, **kwargs):
        raise RuntimeError("internal detail /etc/secret")

    monkeypatch.setattr("gateway.images.generations.generate_images", explode)
    response = client.post("/v1/images/generations", json={"prompt": "x"}, headers=auth)
    assert response.status_code == 500
    assert response.json == {"error": True, "status": 500,
                             "message": "Internal server error; the details are in the gateway's log."}
    assert "internal detail" in caplog.text  # the traceback goes to the log only


def test_resource_client_and_deploy_settings_are_read():
    settings = Settings.from_env({
        "IMAGE_MAX_PIXELS": "4000000", "IMAGE_WORKERS": "3", "IMAGE_QUEUE_TIMEOUT": "5",
        "UPSTREAM_MAX_IN_FLIGHT": "7", "CLIENT_HEADER_TIMEOUT": "4", "CLIENT_BODY_TIMEOUT": "9.5",
        "GATEWAY_ERROR_FORMAT": "OpenAI", "CORS_ALLOW_ORIGINS": "https://a.example, https://b.example",
        "HOST": "127.0.0.1", "GATEWAY_MODEL_ALIASES": "dall-e-3=gemini-3-pro-image, house-image=nano-banana-2",
        "OPENROUTER_IMAGE_ONLY_MODELS": "acme/, black-forest-labs/",
    })
    assert (settings.image_max_pixels, settings.image_workers, settings.image_queue_timeout) == (4000000, 3, 5.0)
    assert settings.upstream_max_in_flight == 7
    assert (settings.client_header_timeout, settings.client_body_timeout) == (4, 9.5)
    assert (settings.error_format, settings.host) == ("openai", "127.0.0.1")
    assert settings.cors_allow_origins == ("https://a.example", "https://b.example")
    assert settings.model_aliases == {
        "dall-e-2": "auto", "dall-e-3": "gemini-3-pro-image", "house-image": "nano-banana-2"}
    assert settings.openrouter_image_only == ("acme/", "black-forest-labs/")


@pytest.mark.parametrize("environ, named", [
    ({"GATEWAY_ERROR_FORMAT": "xml"}, "GATEWAY_ERROR_FORMAT must be one of auto, seed, openai"),
    ({"GATEWAY_MODEL_ALIASES": "dall-e-3"}, "GATEWAY_MODEL_ALIASES entries must look like alias=model"),
    ({"CLIENT_HEADER_TIMEOUT": "0"}, "CLIENT_HEADER_TIMEOUT must be at least 1"),
])
def test_bad_new_settings_name_the_variable(environ, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(environ)


def read_variables():
    """Every environment variable the gateway and its gunicorn.conf.py read: those of the table."""
    return {name for declared in fields(Settings) for name in declared.metadata.get("variables", ())}


@pytest.mark.parametrize("page", [".env.example", "docs/configuration.md"])
def test_every_variable_read_is_listed_with_its_default(page):
    listed = (ROOT / page).read_text()
    assert len(read_variables()) > 40
    assert [name for name in sorted(read_variables()) if name not in listed] == []


def shown_defaults():
    """(first variable, default as the docs write it) of every setting whose default is text or a
    number or a list, not a switch or a mapping."""
    def shown(default):
        if isinstance(default, tuple):
            return ",".join(default)
        return f"{default:g}" if isinstance(default, float) else str(default)

    return [(item.metadata["variables"][0], shown(item.default)) for item in fields(Settings)
            if item.metadata and isinstance(item.default, str | int | float | tuple)
            and not isinstance(item.default, bool)]


def test_env_example_shows_the_defaults():
    listed = dict(re.findall(r"^# ([A-Z][A-Z0-9_]+)=(.*)$", (ROOT / ".env.example").read_text(), re.M))
    assert len(shown_defaults()) > 35
    assert [(name, listed.get(name), default) for name, default in shown_defaults()
            if listed.get(name) != default] == []


def test_the_configuration_page_shows_the_defaults():
    page = (ROOT / "docs" / "configuration.md").read_text()
    listed = dict(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`[^|]*\| ([^|]*) \|", page, re.M))
    assert [(name, listed.get(name), default) for name, default in shown_defaults()
            if default and listed.get(name) != f"`{default}`"] == []


def test_no_two_settings_share_a_default_dict():
    assert Settings().model_aliases is not Settings().model_aliases
