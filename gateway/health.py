"""GET /health: cheap, unauthenticated, and free of secrets."""
from flask import Blueprint, current_app

from .catalog import MODELS

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    """Say the service is up and which providers have credentials."""
    settings = current_app.config["SETTINGS"]
    return {
        "status": "ok",
        "providers": {"gemini": {"configured": bool(settings.gemini_api_key)}},
        "default_model": settings.default_model,
        "models": [model.id for model in MODELS],
    }
