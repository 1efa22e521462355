"""An OpenAI-compatible images API served by image models reached as chat models (Gemini, OpenRouter)."""
import logging

from .catalog import is_catalog_name, resolve_model
from .config import ConfigError, Settings
from .drain import DRAINING
from .errors import InvalidRequest

log = logging.getLogger(__name__)


def _check_models(settings):
    """Refuse to start on a default model or alias that no request could use."""
    try:
        resolve_model("auto", settings.default_model)
    except InvalidRequest:
        raise ConfigError(f"GATEWAY_DEFAULT_MODEL names an unknown model: {settings.default_model!r}") from None
    for alias, target in settings.model_aliases.items():
        if is_catalog_name(alias):
            raise ConfigError(f"GATEWAY_MODEL_ALIASES: {alias} is a model of the catalog and cannot be an alias")
        try:
            resolve_model(target, settings.default_model)
        except InvalidRequest:
            raise ConfigError(f"GATEWAY_MODEL_ALIASES: {alias} names an unknown model: {target!r}") from None


def _install_catalog(settings):
    """The process's catalog: the built-in models and GATEWAY_MODELS_FILE's (checked here)."""
    from .catalog import install
    from .catalog_file import load_catalog
    from .providers import provider_types

    install(load_catalog(settings.models_file, provider_types(), settings.model_aliases,
                         settings.openrouter_image_only))


def create_app(settings=None):
    # The modules that use `requests` are imported here, not with the package: gunicorn.conf.py
    # imports gateway.config in the master, and urllib3 must first be imported in a worker,
    # after gevent has patched ssl and sockets. Flask too, so that the exceptions and the
    # providers are imported without the web framework.
    from flask import Flask
    from werkzeug.middleware.proxy_fix import ProxyFix

    from . import observability
    from .http_errors import register_error_handlers
    from .images import GatewayRequest

    settings = settings or Settings.from_env()
    _install_catalog(settings)
    _check_models(settings)
    observability.configure_logging()
    app = Flask(__name__)
    app.request_class = GatewayRequest
    app.config.update(SETTINGS=settings, MAX_CONTENT_LENGTH=settings.max_content_length, **_services(settings),
                      DRAIN=DRAINING)  # DRAIN is set in every worker at once by gunicorn's master on SIGTERM
    app.json.sort_keys = False
    if settings.trusted_proxies:
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops)
    register_error_handlers(app)
    observability.init_app(app)
    _allow_browsers(app, settings)
    _register_blueprints(app, settings)
    return app


def _services(settings):
    """What a process serves with, built once per process (after gunicorn forks): its providers,
    its keys, its database and the accounting of every request."""
    from .accounting import Accounts
    from .asyncjobs import Jobs
    from .counters import shared_counters
    from .keys import Keys
    from .policies import static_policies
    from .providers import build_providers
    from .shared import shared_redis
    from .storage import storage_for

    if settings.admin_key and settings.admin_key in settings.api_keys:
        raise ConfigError("GATEWAY_ADMIN_KEY must differ from every key in GATEWAY_API_KEYS")
    # the policies are checked before the database is opened, so a bad one stops the start with nothing open
    policies = static_policies(settings.key_policies, Keys.static_names(settings), settings.default_model,
                               settings.model_aliases)
    store, redis = _database(settings), shared_redis(settings)
    keys = Keys(settings, store, policies, redis)
    if not settings.api_keys and not settings.admin_key:
        log.warning("GATEWAY_API_KEYS is empty: every /v1 request will be refused with 401")
    providers = build_providers(settings, redis)
    for provider in providers.values():
        if not provider.configured:
            log.warning("%s is not set: the %s provider is off", provider.missing_setting, provider.name)
    storage = storage_for(settings)  # images answered as URLs, and those of jobs
    return {"PROVIDERS": providers, "KEYS": keys, "STORE": store,
            "ACCOUNTS": Accounts(store, settings, shared_counters(redis, settings)), "STORAGE": storage,
            "JOBS": Jobs(store, storage, settings)}


def _database(settings):
    """The database, its schema brought up to date; a database that cannot be reached yet is
    logged, and the instance is not ready until it can be (gateway/health.py)."""
    from .store import Store, StoreUnavailable

    store = Store(settings.database_url, settings.database_pool_size)
    try:
        store.upgrade()
    except StoreUnavailable as error:
        log.error("the database cannot be reached (%s): keys with a budget and managed keys are refused "
                  "until it can", error)
    return store


def _allow_browsers(app, settings):
    """CORS_ALLOW_ORIGINS: which browser pages may call /v1/*, preflight included."""
    from flask_cors import CORS

    from .counters import RATE_LIMIT_HEADERS

    if not settings.cors_allow_origins:
        return
    anyone = "*" in settings.cors_allow_origins
    CORS(app, resources={r"/v1/*": {"origins": "*" if anyone else list(settings.cors_allow_origins)}},
         send_wildcard=anyone, allow_headers=["Authorization", "x-api-key", "Content-Type", "X-Request-ID",
                                                r"X-Stainless-.*"],  # the Node SDK in a browser
         expose_headers=["X-Request-ID", "Location", "x-gateway-images-failed", "x-gateway-provider", "Retry-After",
                         "x-should-retry", *RATE_LIMIT_HEADERS],
         max_age=600)


def _register_blueprints(app, settings):
    from .admin import bp as admin_bp
    from .health import bp as health_bp
    from .images.edits import bp as edits_bp
    from .images.files import bp as files_bp
    from .images.generations import bp as generations_bp
    from .images.jobs import bp as jobs_bp
    from .models import bp as models_bp
    from .openapi import bp as openapi_bp
    from .playground import bp as playground_bp

    for blueprint in (health_bp, generations_bp, edits_bp, jobs_bp, models_bp, openapi_bp, admin_bp):
        app.register_blueprint(blueprint)
    if app.config["STORAGE"].serves_files:  # the directory store's images, under signed URLs
        app.register_blueprint(files_bp)
    if settings.playground:
        app.register_blueprint(playground_bp)
