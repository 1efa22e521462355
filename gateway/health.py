"""GET /health/live, GET /health/ready and GET /health: cheap, unauthenticated, and free of secrets."""
import logging

from flask import Blueprint, current_app

from .catalog import listed_models, models
from .errors import GatewayError
from .store import StoreUnavailable

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/health/live")
def live():
    """Liveness: 200 while the process serves, draining or not, so an orchestrator restarts only
    a process that stopped answering."""
    return {"status": "ok"}


@bp.get("/health")
@bp.get("/health/ready")
def ready():
    """Readiness: 200 when this instance can serve, else 503 naming why, so a load balancer
    sends no traffic to an instance that could only answer 503 or is about to stop."""
    reasons = [reason for check in READINESS_CHECKS if (reason := check(current_app))]
    if reasons:
        raise GatewayError(503, "Not ready: " + "; ".join(reasons) + ".")
    providers, settings = current_app.config["PROVIDERS"], current_app.config["SETTINGS"]
    return {
        "status": "ok",
        "providers": {name: {"configured": provider.configured} for name, provider in providers.items()},
        "default_model": settings.default_model,
        "models": [model.id for model in models()],
        "aliases": _aliases(settings),
        **_stores(current_app.config["ACCOUNTS"]),
    }


def _stores(accounts):
    """Each shared store and whether it answers (an outage after start leaves the instance ready)."""
    stores = {"database": "unreachable" if accounts.failing("database") else "ok"}
    if accounts.shared is not None:
        stores["redis"] = "unreachable" if accounts.failing("redis") else "ok"
    return stores


def _aliases(settings):
    """{alias: model id} of the catalog's and the operator's aliases, so the playground can list
    each model once with its other names."""
    return {name: model.id for name, model in listed_models(settings.model_aliases, settings.default_model)
            if name != model.id}


def no_provider(app):
    providers = app.config["PROVIDERS"].values()
    if not any(provider.configured for provider in providers):
        return "no provider is configured (set " + " or ".join(p.missing_setting for p in providers) + ")"
    return None


def draining(app):
    return "draining before shutdown" if app.config["DRAIN"].draining else None


def database_unreached(app):
    """Not ready until the schema has been applied once; an outage after that leaves the instance
    ready (every instance shares the database, and docs/keys-and-budgets.md says how requests
    behave meanwhile)."""
    store = app.config["STORE"]
    if store.schema_applied:
        return None
    try:
        store.upgrade()
    except StoreUnavailable as error:
        log.warning("the database is still unreachable (%s)", error)
        return "the database has not been reached since start (GATEWAY_DATABASE_URL)"
    return None


READINESS_CHECKS = (no_provider, draining, database_unreached)  # each returns why the instance is not ready, or None
