"""Settings read once from the environment (docs/configuration.md)."""
import json
import os
import re
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A setting in the environment cannot be used; the message names it."""


def _csv(value):
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


def _number(environ, name, default, kind, minimum):
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _pairs(environ, name, shape, removable=False):
    """`NAME=a=b,c=d` as {a: b, c: d}; `shape` names the two sides in the error message.
    `removable`: `a=` (nothing after `=`) is kept as {a: ""}, to remove a default."""
    pairs = {}
    for item in _csv(environ.get(name)):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not (value.strip() or removable):
            raise ConfigError(f"{name} entries must look like {shape}, got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs


# OpenAI's older model names mean the default model, so tools that send them work unchanged;
# OpenAI's own current names (gpt-image-*) are left for OpenAI's models.
OPENAI_ALIASES = {"dall-e-2": "auto", "dall-e-3": "auto"}


def _aliases(environ):
    """GATEWAY_MODEL_ALIASES over OPENAI_ALIASES; `dall-e-3=` removes one."""
    aliases = {**OPENAI_ALIASES, **_pairs(environ, "GATEWAY_MODEL_ALIASES", "alias=model", removable=True)}
    return {alias: model for alias, model in aliases.items() if model}


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _named_keys(environ):
    """GATEWAY_API_KEYS entries as (key, name): `name:key` names a key; any other entry is a bare
    key (which may hold a colon), named later from its hash."""
    named = []
    for entry in _csv(environ.get("GATEWAY_API_KEYS")):
        name, sep, key = entry.partition(":")
        named.append((key.strip(), name) if sep and NAME.fullmatch(name) and key.strip() else (entry, ""))
    return named


def _database_url(environ):
    """GATEWAY_DATABASE_URL, else DATABASE_URL (Heroku's), else a SQLite file under the working directory."""
    return (environ.get("GATEWAY_DATABASE_URL") or environ.get("DATABASE_URL") or "").strip() or Settings.database_url


def _json_object(environ, name):
    raw = (environ.get(name) or "").strip()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError as error:
        raise ConfigError(f"{name} must be JSON: {error}") from None


def _choice(environ, name, default, choices):
    value = (environ.get(name) or default).strip().lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    api_keys: tuple = ()
    client_names: dict = field(default_factory=dict)  # key -> its name from `name:key` entries
    gemini_api_key: str = ""
    gemini_base_url: str = "https://generativelanguage.googleapis.com"
    vertex_project: str = ""
    vertex_location: str = "global"
    vertex_base_url: str = ""  # empty: Vertex's endpoint for vertex_location
    google_application_credentials: str = ""  # empty: google-auth's default credentials
    openrouter_api_key: str = ""
    openrouter_base_url: str = "https://openrouter.ai/api/v1"
    providers: tuple = ("gemini", "vertex", "openrouter")  # GATEWAY_PROVIDERS: the order requests try them in
    default_model: str = "gemini-3-pro-image"
    upstream_models: dict = field(default_factory=dict)  # "[provider:]model" -> upstream id
    model_aliases: dict = field(default_factory=lambda: dict(OPENAI_ALIASES))  # e.g. dall-e-3=gemini-3-pro-image
    models_file: str = ""  # GATEWAY_MODELS_FILE: catalog entries added or overridden (docs/providers.md)
    upstream_timeout: float = 180.0
    upstream_connect_timeout: float = 10.0
    upstream_max_retries: int = 2
    upstream_retry_base_delay: float = 1.0
    upstream_max_response_bytes: int = 134217728
    upstream_max_in_flight: int = 1024  # per process, shared fairly between keys; waiting greenlets cost little
    upstream_queue_timeout: float = 30.0
    image_max_pixels: int = 20_000_000  # per input image; the largest model output is 12288x1536
    image_workers: int = 2  # per process: threads that decode, composite and encode images
    image_queue_timeout: float = 30.0
    stream_keepalive: float = 15.0  # seconds between `: keep-alive` comments of a quiet event stream
    client_header_timeout: int = 10
    client_body_timeout: float = 60.0
    client_send_timeout: float = 60.0  # seconds one write of a response may wait for the client to read
    max_content_length: int = 52428800
    image_fetch_max_bytes: int = 20971520
    image_fetch_allow_hosts: tuple = ()
    image_fetch_timeout: float = 30.0
    ca_bundle: str = ""  # CA file for fetching edit images; empty = certifi's bundle
    trusted_proxies: int = 0
    error_format: str = "auto"  # OpenAI's error body for OpenAI's SDKs, the gateway's for others; or "seed", "openai"
    playground: bool = True  # GET / serves the browser playground (GATEWAY_PLAYGROUND=off: a 404)
    cors_allow_origins: tuple = ()  # browser origins allowed to call /v1/*; ("*",) for any
    database_url: str = "sqlite:///var/gateway.db"  # keys, spend, the ledger (docs/keys-and-budgets.md)
    admin_key: str = ""  # GATEWAY_ADMIN_KEY: turns the admin API on
    key_policies: dict = field(default_factory=dict)  # GATEWAY_KEY_POLICIES: static key name -> policy (JSON)
    budget_fail_open: bool = False  # serve keys with a budget while the database is unreachable
    drain_seconds: float = 5.0  # after SIGTERM: readiness is 503 but requests are still served
    prometheus_multiproc_dir: str = ""  # set (by gunicorn.conf.py) when several workers share metrics
    host: str = "0.0.0.0"  # 127.0.0.1 behind a proxy on the same host, so clients cannot go around it
    port: int = 8000

    @classmethod
    def from_env(cls, environ=None):
        env = os.environ if environ is None else environ
        named_keys = _named_keys(env)
        return cls(
            api_keys=tuple(key for key, _ in named_keys),
            client_names={key: name for key, name in named_keys if name},
            gemini_api_key=(env.get("GEMINI_API_KEY") or env.get("GOOGLE_API_KEY") or "").strip(),
            gemini_base_url=(env.get("GEMINI_BASE_URL") or cls.gemini_base_url).rstrip("/"),
            vertex_project=(env.get("VERTEX_PROJECT") or "").strip(),
            vertex_location=(env.get("VERTEX_LOCATION") or cls.vertex_location).strip(),
            vertex_base_url=(env.get("VERTEX_BASE_URL") or "").strip().rstrip("/"),
            google_application_credentials=(env.get("GOOGLE_APPLICATION_CREDENTIALS") or "").strip(),
            openrouter_api_key=(env.get("OPENROUTER_API_KEY") or "").strip(),
            openrouter_base_url=(env.get("OPENROUTER_BASE_URL") or cls.openrouter_base_url).rstrip("/"),
            providers=tuple(name.lower() for name in _csv(env.get("GATEWAY_PROVIDERS"))) or cls.providers,
            default_model=(env.get("GATEWAY_DEFAULT_MODEL") or cls.default_model).strip(),
            upstream_models=_pairs(env, "GATEWAY_UPSTREAM_MODELS", "[provider:]model=upstream-id"),
            model_aliases=_aliases(env),
            models_file=(env.get("GATEWAY_MODELS_FILE") or "").strip(),
            upstream_timeout=_number(env, "UPSTREAM_TIMEOUT", cls.upstream_timeout, float, 1),
            upstream_max_retries=_number(env, "UPSTREAM_MAX_RETRIES", cls.upstream_max_retries, int, 0),
            upstream_retry_base_delay=_number(
                env, "UPSTREAM_RETRY_BASE_DELAY", cls.upstream_retry_base_delay, float, 0),
            upstream_max_response_bytes=_number(
                env, "UPSTREAM_MAX_RESPONSE_BYTES", cls.upstream_max_response_bytes, int, 1024),
            upstream_max_in_flight=_number(env, "UPSTREAM_MAX_IN_FLIGHT", cls.upstream_max_in_flight, int, 1),
            upstream_queue_timeout=_number(env, "UPSTREAM_QUEUE_TIMEOUT", cls.upstream_queue_timeout, float, 0),
            image_max_pixels=_number(env, "IMAGE_MAX_PIXELS", cls.image_max_pixels, int, 1024),
            image_workers=_number(env, "IMAGE_WORKERS", cls.image_workers, int, 1),
            image_queue_timeout=_number(env, "IMAGE_QUEUE_TIMEOUT", cls.image_queue_timeout, float, 0),
            stream_keepalive=_number(env, "STREAM_KEEPALIVE_SECONDS", cls.stream_keepalive, float, 0.1),
            client_header_timeout=_number(env, "CLIENT_HEADER_TIMEOUT", cls.client_header_timeout, int, 1),
            client_body_timeout=_number(env, "CLIENT_BODY_TIMEOUT", cls.client_body_timeout, float, 1),
            client_send_timeout=_number(env, "CLIENT_SEND_TIMEOUT", cls.client_send_timeout, float, 1),
            max_content_length=_number(env, "MAX_CONTENT_LENGTH", cls.max_content_length, int, 1024),
            image_fetch_max_bytes=_number(env, "IMAGE_FETCH_MAX_BYTES", cls.image_fetch_max_bytes, int, 1024),
            image_fetch_allow_hosts=tuple(h.lower() for h in _csv(env.get("IMAGE_FETCH_ALLOW_HOSTS"))),
            image_fetch_timeout=_number(env, "IMAGE_FETCH_TIMEOUT", cls.image_fetch_timeout, float, 1),
            ca_bundle=env.get("REQUESTS_CA_BUNDLE") or env.get("SSL_CERT_FILE") or "",
            drain_seconds=_number(env, "GATEWAY_DRAIN_SECONDS", cls.drain_seconds, float, 0),
            prometheus_multiproc_dir=env.get("PROMETHEUS_MULTIPROC_DIR", ""),
            trusted_proxies=_number(env, "TRUSTED_PROXIES", cls.trusted_proxies, int, 0),
            error_format=_choice(env, "GATEWAY_ERROR_FORMAT", cls.error_format, ("auto", "seed", "openai")),
            playground=_choice(env, "GATEWAY_PLAYGROUND", "on", ("on", "off")) == "on",
            cors_allow_origins=_csv(env.get("CORS_ALLOW_ORIGINS")),
            database_url=_database_url(env),
            admin_key=(env.get("GATEWAY_ADMIN_KEY") or "").strip(),
            key_policies=_json_object(env, "GATEWAY_KEY_POLICIES"),
            budget_fail_open=_choice(env, "GATEWAY_BUDGET_FAIL_OPEN", "false", ("true", "false")) == "true",
            host=(env.get("HOST") or cls.host).strip(),
            port=_number(env, "PORT", cls.port, int, 1),
        )
