"""GET /health: cheap, unauthenticated, and free of secrets."""
from flask import Blueprint, current_app

from .catalog import MODELS, listed_models

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    """Readiness: 200 when a provider can serve the models, else 503 naming the missing setting,
    so a load balancer sends no traffic to an instance that could only answer 503."""
    providers, settings = current_app.config["PROVIDERS"], current_app.config["SETTINGS"]
    ready = any(provider.configured for provider in providers.values())
    body = {
        "status": "ok" if ready else "unconfigured",
        "providers": {name: {"configured": provider.configured} for name, provider in providers.items()},
        "default_model": settings.default_model,
        "models": [model.id for model in MODELS],
        "aliases": _aliases(settings),
    }
    if not ready:
        body["missing"] = " or ".join(provider.missing_setting for provider in providers.values())
    return body, 200 if ready else 503


def _aliases(settings):
    """{alias: model id} of the catalog's and the operator's aliases, so the playground can list
    each model once with its other names."""
    return {name: model.id for name, model in listed_models(settings.model_aliases, settings.default_model)
            if name != model.id}
