"""The models the gateway serves, as data (DESIGN.md section 3)."""
from dataclasses import dataclass

from .errors import InvalidRequest, shorten

TEN_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")


@dataclass(frozen=True)
class Model:
    id: str
    provider: str
    upstream_id: str
    aliases: tuple
    aspect_ratios: tuple
    image_sizes: tuple  # resolution tiers sent as imageConfig.imageSize; () = never sent
    max_input_images: int
    created: int  # Unix time of the model's release, for GET /v1/models
    owned_by: str = "google"
    transparent_background: bool = False


MODELS = (
    Model(
        id="gemini-2.5-flash-image",
        provider="gemini",
        upstream_id="gemini-2.5-flash-image",
        aliases=("gemini-2.5-flash-image-preview", "nano-banana"),
        aspect_ratios=TEN_RATIOS,
        image_sizes=(),
        max_input_images=3,
        created=1759363200,  # 2025-10-02, general availability
    ),
    Model(
        id="gemini-3-pro-image",
        provider="gemini",
        upstream_id="gemini-3-pro-image",
        aliases=("gemini-3-pro-image-preview", "nano-banana-pro"),
        aspect_ratios=TEN_RATIOS,
        image_sizes=("1K", "2K", "4K"),
        max_input_images=14,
        created=1779926400,  # 2026-05-28, general availability
    ),
    Model(
        id="gemini-3.1-flash-image",
        provider="gemini",
        upstream_id="gemini-3.1-flash-image",
        aliases=("gemini-3.1-flash-image-preview", "nano-banana-2"),
        aspect_ratios=TEN_RATIOS + ("1:4", "4:1", "1:8", "8:1"),
        image_sizes=("1K", "2K", "4K"),
        max_input_images=14,
        created=1779926400,  # 2026-05-28, general availability
    ),
)

_BY_NAME = {name: model for model in MODELS for name in (model.id, *model.aliases)}


def resolve_model(name, default_model, aliases=None):
    """The catalog entry for a client's model name: an operator's alias (GATEWAY_MODEL_ALIASES)
    first, then the catalog's ids and aliases; `auto` (or none) means the default."""
    requested = name or "auto"
    wanted = default_model if requested == "auto" else (aliases or {}).get(requested, requested)
    model = _BY_NAME.get(wanted)
    if model is None:
        supported = ", ".join(["auto"] + [m.id for m in MODELS])
        raise InvalidRequest.field("model", f"unknown model {shorten(requested)!r}; supported models: {supported}")
    return model


def listed_models(aliases):
    """(name, catalog model) for GET /v1/models: every model, its aliases, then the operator's."""
    return ([(model.id, model) for model in MODELS] + [(alias, model) for model in MODELS for alias in model.aliases]
            + [(alias, _BY_NAME[target]) for alias, target in aliases.items()])


def upstream_id(model, overrides):
    """The id sent upstream; operators can point a model at a new Google id without a release."""
    return overrides.get(model.id, model.upstream_id)
