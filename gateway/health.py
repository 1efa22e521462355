"""GET /health: cheap, unauthenticated, and free of secrets."""
from flask import Blueprint, current_app

from .catalog import MODELS

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    """Readiness: 200 when a provider can serve the models, else 503 naming the missing setting,
    so a load balancer sends no traffic to an instance that could only answer 503."""
    settings = current_app.config["SETTINGS"]
    configured = bool(settings.gemini_api_key)
    body = {
        "status": "ok" if configured else "unconfigured",
        "providers": {"gemini": {"configured": configured}},
        "default_model": settings.default_model,
        "models": [model.id for model in MODELS],
    }
    if not configured:
        body["missing"] = "GEMINI_API_KEY (or GOOGLE_API_KEY)"
    return body, 200 if configured else 503
