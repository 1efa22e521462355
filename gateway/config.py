"""Settings read once from the environment (docs/configuration.md).

Each setting is one field of `Settings` declared with `setting(variable, parser, default)`: the
variable (a tuple names fallbacks, read when the earlier ones are unset), the parser that turns
its text into the value and holds its bounds, and the default an unset or blank variable keeps.
`Settings.from_env` is one loop over those declarations; a bad value is a ConfigError that names
the variable it came from. To add a setting: one commented line in `Settings`, and its variable
in .env.example and docs/configuration.md (tests/unit/test_config.py checks both)."""
import json
import os
import re
from dataclasses import dataclass, field, fields

from .catalog import IMAGE_ONLY_PREFIXES


class ConfigError(ValueError):
    """A setting in the environment cannot be used; the message names it."""


class Invalid(ValueError):
    """What a parser found wrong with a text; `Settings.from_env` puts the variable's name first."""


def setting(variables, parse, default):
    """A field of Settings read from `variables` by `parse`; a dict default is copied per instance,
    so no two Settings share (and mutate) one."""
    variables = (variables,) if isinstance(variables, str) else variables
    metadata = {"variables": variables, "parse": parse}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _number(kind, at_least):
    """A parser of `kind` numbers no smaller than `at_least`."""
    def parse(raw):
        try:
            value = kind(raw)
        except ValueError:
            raise Invalid(f"must be a number, got {raw!r}") from None
        if value < at_least:
            raise Invalid(f"must be at least {at_least}, got {raw!r}")
        return value
    return parse


def integer(at_least):
    return _number(int, at_least)


def number(at_least):
    return _number(float, at_least)


def url(raw):
    """A root URL without its trailing slashes, so a path is appended with exactly one."""
    return raw.rstrip("/")


def comma_list(raw):
    """`a, b,,c` as ("a", "b", "c")."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def lowercase_list(raw):
    """A comma list of names compared without case (host names, providers)."""
    return tuple(item.lower() for item in comma_list(raw))


def choice(*choices):
    """A parser that accepts one of `choices`, in any case."""
    def parse(raw):
        value = raw.lower()
        if value not in choices:
            raise Invalid(f"must be one of {', '.join(choices)}, got {value!r}")
        return value
    return parse


def switch(on, off):
    """A boolean spelled `on` or `off` (e.g. true/false), in any case."""
    either = choice(on, off)
    return lambda raw: either(raw) == on


def json_object(raw):
    try:
        return json.loads(raw)
    except ValueError as error:
        raise Invalid(f"must be JSON: {error}") from None


def pairs(shape, removable=False):
    """A parser of `a=b,c=d` as {a: b, c: d}; `shape` names the two sides in the error message.
    `removable`: `a=` (nothing after `=`) is kept as {a: ""}, to remove a default."""
    def parse(raw):
        found = {}
        for item in comma_list(raw):
            key, sep, value = item.partition("=")
            if not sep or not key.strip() or not (value.strip() or removable):
                raise Invalid(f"entries must look like {shape}, got {item!r}")
            found[key.strip()] = value.strip()
        return found
    return parse


# OpenAI's older model names mean the default model, so tools that send them work unchanged;
# OpenAI's own current names (gpt-image-*) are left for OpenAI's models.
OPENAI_ALIASES = {"dall-e-2": "auto", "dall-e-3": "auto"}
_alias_pairs = pairs("alias=model", removable=True)


def aliases(raw):
    """GATEWAY_MODEL_ALIASES over OPENAI_ALIASES; `dall-e-3=` removes one."""
    aliases = {**OPENAI_ALIASES, **_alias_pairs(raw)}
    return {alias: model for alias, model in aliases.items() if model}


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _named_keys(raw):
    """GATEWAY_API_KEYS entries as (key, name): `name:key` names a key; any other entry is a bare
    key (which may hold a colon), named later from its hash."""
    named = []
    for entry in comma_list(raw):
        name, sep, key = entry.partition(":")
        named.append((key.strip(), name) if sep and NAME.fullmatch(name) and key.strip() else (entry, ""))
    return named


STORAGE_URL = re.compile(r"file:.+|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?")


def storage_url(raw):
    """A directory (`file:`) or an S3-compatible bucket (`s3://bucket/prefix`)."""
    if not STORAGE_URL.fullmatch(raw):
        raise Invalid(f"must be file:///abs/path, file:relative/path or s3://bucket/prefix, got {raw!r}")
    return raw


def public_url(raw):
    """An http(s) root URL without its trailing slashes."""
    if not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", raw):
        raise Invalid(f"must be an http(s) URL like https://images.example.com, got {raw!r}")
    return raw.rstrip("/")


def client_keys(raw):
    return tuple(key for key, _ in _named_keys(raw))


def key_names(raw):
    return {key: name for key, name in _named_keys(raw) if name}


@dataclass(frozen=True)
class Settings:
    """Every setting of the gateway and of its gunicorn.conf.py; tests build one with only the
    fields they need, the process reads one with `from_env`."""

    # Client keys, each bare or `name:key`; none = every /v1 request is a 401.
    api_keys: tuple = setting("GATEWAY_API_KEYS", client_keys, ())
    # Key -> its name, from the `name:key` entries of GATEWAY_API_KEYS.
    client_names: dict = setting("GATEWAY_API_KEYS", key_names, {})
    # Google AI Studio key of the gemini provider; none = that provider is off.
    gemini_api_key: str = setting(("GEMINI_API_KEY", "GOOGLE_API_KEY"), str, "")
    # Root of the Gemini API.
    gemini_base_url: str = setting("GEMINI_BASE_URL", url, "https://generativelanguage.googleapis.com")
    # Google Cloud project of the vertex provider; none = that provider is off.
    vertex_project: str = setting("VERTEX_PROJECT", str, "")
    # Vertex AI location (global, us-central1, europe-west4, ...).
    vertex_location: str = setting("VERTEX_LOCATION", str, "global")
    # Empty: Vertex's endpoint for vertex_location.
    vertex_base_url: str = setting("VERTEX_BASE_URL", url, "")
    # Empty: google-auth's default credentials.
    google_application_credentials: str = setting("GOOGLE_APPLICATION_CREDENTIALS", str, "")
    # Key of the openrouter provider (any OpenAI-compatible chat endpoint); none = that provider is off.
    openrouter_api_key: str = setting("OPENROUTER_API_KEY", str, "")
    # That endpoint's root; /chat/completions is appended.
    openrouter_base_url: str = setting("OPENROUTER_BASE_URL", url, "https://openrouter.ai/api/v1")
    # Key of the openai provider (OpenAI's Images API, or any compatible one); none = that provider is off.
    openai_api_key: str = setting("OPENAI_API_KEY", str, "")
    # That API's root; /images/generations and /images/edits are appended.
    openai_base_url: str = setting("OPENAI_BASE_URL", url, "https://api.openai.com/v1")
    # The providers in use, in the order requests try them.
    providers: tuple = setting("GATEWAY_PROVIDERS", lowercase_list, ("gemini", "vertex", "openai", "openrouter"))
    # What `auto` (or no model) means.
    default_model: str = setting("GATEWAY_DEFAULT_MODEL", str, "gemini-3-pro-image")
    # "[provider:]model" -> the upstream id it calls.
    upstream_models: dict = setting("GATEWAY_UPSTREAM_MODELS", pairs("[provider:]model=upstream-id"), {})
    # Extra model names over OPENAI_ALIASES, e.g. dall-e-3=gemini-3-pro-image.
    model_aliases: dict = setting("GATEWAY_MODEL_ALIASES", aliases, OPENAI_ALIASES)
    # A YAML or JSON file of catalog entries added or overridden (docs/providers.md#the-models-file).
    models_file: str = setting("GATEWAY_MODELS_FILE", str, "")
    # Prefixes of the OpenRouter ids of `openrouter/<vendor>/<model>` models that answer images only.
    openrouter_image_only: tuple = setting("OPENROUTER_IMAGE_ONLY_MODELS", comma_list, IMAGE_ONLY_PREFIXES)
    # Seconds for all upstream work of one request, retries and failover included.
    upstream_timeout: float = setting("UPSTREAM_TIMEOUT", number(at_least=1), 180.0)
    upstream_connect_timeout: float = 10.0  # fixed, not read from the environment (docs/configuration.md)
    # Retries of 429/5xx, connection errors and malformed answers.
    upstream_max_retries: int = setting("UPSTREAM_MAX_RETRIES", integer(at_least=0), 2)
    # Consecutive failed calls (429, 5xx, timeout, connection error) after which a provider is skipped; 0 = never.
    breaker_failures: int = setting("GATEWAY_BREAKER_FAILURES", integer(at_least=0), 3)
    # Seconds an open circuit breaker skips its provider before one call probes it.
    breaker_seconds: float = setting("GATEWAY_BREAKER_SECONDS", number(at_least=0), 30.0)
    # Seconds; backoff is base * 2^attempt, jittered, unless the upstream sends Retry-After.
    upstream_retry_base_delay: float = setting("UPSTREAM_RETRY_BASE_DELAY", number(at_least=0), 1.0)
    # Bytes of the largest upstream answer read; larger is a 502.
    upstream_max_response_bytes: int = setting("UPSTREAM_MAX_RESPONSE_BYTES", integer(at_least=1024), 134217728)
    # Per process, shared fairly between keys; waiting greenlets cost little.
    upstream_max_in_flight: int = setting("UPSTREAM_MAX_IN_FLIGHT", integer(at_least=1), 1024)
    # Seconds a call may wait for a free upstream slot before a 503.
    upstream_queue_timeout: float = setting("UPSTREAM_QUEUE_TIMEOUT", number(at_least=0), 30.0)
    # Pixels of one input image; the largest model output is 12288x1536.
    image_max_pixels: int = setting("IMAGE_MAX_PIXELS", integer(at_least=1024), 20_000_000)
    # Per process: threads that decode, composite and encode images.
    image_workers: int = setting("IMAGE_WORKERS", integer(at_least=1), 2)
    # Seconds a request may wait for a free image thread before a 503.
    image_queue_timeout: float = setting("IMAGE_QUEUE_TIMEOUT", number(at_least=0), 30.0)
    # Seconds between `: keep-alive` comments of a quiet event stream.
    stream_keepalive: float = setting("STREAM_KEEPALIVE_SECONDS", number(at_least=0.1), 15.0)
    # Seconds a client has to send a request head; also how long an idle kept-alive connection stays.
    client_header_timeout: int = setting("CLIENT_HEADER_TIMEOUT", integer(at_least=1), 10)
    # Seconds a client has to send a request body once its head arrived.
    client_body_timeout: float = setting("CLIENT_BODY_TIMEOUT", number(at_least=1), 60.0)
    # Seconds one write of a response may wait for the client to read.
    client_send_timeout: float = setting("CLIENT_SEND_TIMEOUT", number(at_least=1), 60.0)
    # Request body limit in bytes.
    max_content_length: int = setting("MAX_CONTENT_LENGTH", integer(at_least=1024), 52428800)
    # Bytes of one https image fetched for an edit.
    image_fetch_max_bytes: int = setting("IMAGE_FETCH_MAX_BYTES", integer(at_least=1024), 20971520)
    # Host names exempt from the private-address block of edit image fetches.
    image_fetch_allow_hosts: tuple = setting("IMAGE_FETCH_ALLOW_HOSTS", lowercase_list, ())
    # Seconds for one edit image fetch, redirects included.
    image_fetch_timeout: float = setting("IMAGE_FETCH_TIMEOUT", number(at_least=1), 30.0)
    # CA file for fetching edit images; empty = certifi's bundle.
    ca_bundle: str = setting(("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"), str, "")
    # Proxies in front whose X-Forwarded-* headers are trusted.
    trusted_proxies: int = setting("TRUSTED_PROXIES", integer(at_least=0), 0)
    # OpenAI's error body for OpenAI's SDKs and the gateway's for others (auto), or always one.
    error_format: str = setting("GATEWAY_ERROR_FORMAT", choice("auto", "seed", "openai"), "auto")
    # GET / serves the browser playground (off: a 404).
    playground: bool = setting("GATEWAY_PLAYGROUND", switch("on", "off"), True)
    # Browser origins allowed to call /v1/*; ("*",) for any.
    cors_allow_origins: tuple = setting("CORS_ALLOW_ORIGINS", comma_list, ())
    # Keys, spend, the ledger (docs/keys-and-budgets.md); DATABASE_URL is Heroku's.
    database_url: str = setting(("GATEWAY_DATABASE_URL", "DATABASE_URL"), str, "sqlite:///var/gateway.db")
    # Turns the admin API on.
    admin_key: str = setting("GATEWAY_ADMIN_KEY", str, "")
    # Static key name -> its policy.
    key_policies: dict = setting("GATEWAY_KEY_POLICIES", json_object, {})
    # Serve keys with a budget while the database is unreachable.
    budget_fail_open: bool = setting("GATEWAY_BUDGET_FAIL_OPEN", switch("true", "false"), False)
    # Database connections per worker process (PostgreSQL: instances x workers x this < max_connections).
    database_pool_size: int = setting("GATEWAY_DATABASE_POOL_SIZE", integer(at_least=1), 10)
    # Redis for the shared rate and concurrency counters; none = the database counts them.
    redis_url: str = setting(("GATEWAY_REDIS_URL", "REDIS_URL"), str, "")
    # The start of every Redis key the gateway writes.
    redis_prefix: str = setting("GATEWAY_REDIS_PREFIX", str, "gateway")
    # An OTLP endpoint is set: export traces (docs/operations.md#tracing); the SDK reads the rest.
    tracing: bool = setting(("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), bool, False)
    # Where images answered as URLs and the images of jobs are stored (docs/long-generations.md).
    storage_url: str = setting("GATEWAY_STORAGE_URL", storage_url, "file:var/images")
    # Seconds stored images, their URLs and finished jobs live.
    image_ttl_seconds: int = setting("GATEWAY_IMAGE_TTL_SECONDS", integer(at_least=1), 3600)
    # Root of the gateway's own image URLs; empty = the request's scheme://host.
    public_url: str = setting("GATEWAY_PUBLIC_URL", public_url, "")
    # HMAC key of the image URLs, the same on every instance; empty = derived from the admin or first client key.
    url_signing_key: str = setting("GATEWAY_URL_SIGNING_KEY", str, "")
    # The bucket's region for s3:// storage; empty = botocore's AWS_DEFAULT_REGION.
    s3_region: str = setting("AWS_REGION", str, "")
    # Asynchronous jobs of one key queued or in progress at once; one more is a 429.
    max_jobs_per_key: int = setting("GATEWAY_MAX_JOBS_PER_KEY", integer(at_least=1), 100)
    # Seconds after SIGTERM during which readiness is 503 but requests are still served.
    drain_seconds: float = setting("GATEWAY_DRAIN_SECONDS", number(at_least=0), 5.0)
    # Set (by gunicorn.conf.py) when several workers share metrics.
    prometheus_multiproc_dir: str = setting("PROMETHEUS_MULTIPROC_DIR", str, "")
    # 127.0.0.1 behind a proxy on the same host, so clients cannot go around it.
    host: str = setting("HOST", str, "0.0.0.0")
    # Listen port.
    port: int = setting("PORT", integer(at_least=1), 8000)
    # gunicorn worker processes.
    workers: int = setting("WEB_CONCURRENCY", integer(at_least=1), 2)
    # Connections one gunicorn worker holds at once (gevent greenlets).
    worker_connections: int = setting("GUNICORN_WORKER_CONNECTIONS", integer(at_least=1), 10000)
    # A worker is replaced after this many served image requests, plus up to 20 % (0: never).
    image_requests_per_worker: int = setting("GUNICORN_MAX_REQUESTS", integer(at_least=0), 2000)

    @classmethod
    def from_env(cls, environ=None):
        """Each declared field from the first of its variables that is set (blank counts as
        unset); the rest keep their defaults."""
        env = os.environ if environ is None else environ
        values = {}
        for declared in fields(cls):
            name, raw = _first_set(env, declared.metadata.get("variables", ()))
            if raw:
                try:
                    values[declared.name] = declared.metadata["parse"](raw)
                except Invalid as error:
                    raise ConfigError(f"{name} {error}") from None
        return cls(**values)


def _first_set(env, variables):
    """The first of `variables` set to more than blanks, and its text stripped; else (None, "")."""
    for name in variables:
        raw = (env.get(name) or "").strip()
        if raw:
            return name, raw
    return None, ""
