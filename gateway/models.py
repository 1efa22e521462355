"""GET /v1/models and /v1/models/{id}: what this gateway serves, in OpenAI's list shape, so
`client.models.list()` and tools that discover models (LibreChat, Open WebUI) work."""
from flask import Blueprint, current_app

from .auth import require_api_key
from .catalog import listed_models
from .errors import GatewayError, shorten
from .providers import serving

bp = Blueprint("models", __name__)


def _served():
    """{name: entry} of every model and alias a configured provider serves."""
    providers, settings = current_app.config["PROVIDERS"], current_app.config["SETTINGS"]
    return {name: {"id": name, "object": "model", "created": model.created, "owned_by": model.owned_by}
            for name, model in listed_models(settings.model_aliases, settings.default_model)
            if any(provider.configured for provider in serving(model, providers))}


@bp.get("/v1/models")
@require_api_key
def list_models():
    """The models and aliases this gateway serves."""
    return {"object": "list", "data": list(_served().values())}


@bp.get("/v1/models/<path:name>")
@require_api_key
def get_model(name):
    """One model or alias, or a 404."""
    entry = _served().get(name)
    if entry is None:
        raise GatewayError(404, f"The model {shorten(name)!r} does not exist or is not served by this gateway.")
    return entry
