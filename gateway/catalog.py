"""The models the gateway serves and who serves them, as data (docs/providers.md)."""
import re
from dataclasses import dataclass

from .errors import InvalidRequest, shorten

TEN_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
TALL_AND_WIDE = ("1:4", "4:1", "1:8", "8:1")
TIERS = ("1K", "2K", "4K")
ALL_TIERS = ("512", *TIERS)
HIGH_QUALITY = {"hd", "high"}
GOOGLE_IDS = ("gemini", "vertex")  # providers that call Google's own model ids
OPENAI_SIZES = {"1024x1024": "1:1", "1536x1024": "3:2", "1024x1536": "2:3"}  # what OpenAI's gpt-image models draw
PASSTHROUGH = re.compile(r"openrouter/([A-Za-z0-9][\w.-]*)/([A-Za-z0-9][\w.:-]*)")
# The default of OPENROUTER_IMAGE_ONLY_MODELS: prefixes of the OpenRouter ids whose models answer
# with images only (`architecture.output_modalities: ["image"]` in OpenRouter's models API), so they
# must be asked for `"modalities": ["image"]`. OpenRouter's image generation guide names FLUX and
# Sourceful (openrouter.ai/docs/guides/overview/multimodal/image-generation); its model comparison
# lists Seedream's output as images only. docs/providers.md says how an operator adds one.
IMAGE_ONLY_PREFIXES = ("black-forest-labs/", "sourceful/", "bytedance-seed/seedream")


@dataclass(frozen=True)
class Model:
    id: str
    served_by: dict  # provider name -> the provider's own id for the model
    aspect_ratios: tuple
    tiers: tuple  # resolution tiers the model takes ("512", "1K", "2K", "4K"); () = never sent
    max_input_images: int
    created: int  # Unix time of the model's release, for GET /v1/models
    aliases: tuple = ()
    owned_by: str = "google"
    transparent_background: bool = False
    image_only: bool = False  # answers with images only, never words
    passthrough: bool = False  # an `openrouter/<vendor>/<model>` name, not a catalog entry
    image_price: dict = None  # USD per output image by resolution tier ("1K" for a model without tiers)
    input_price: float = 0.0  # USD per million input tokens (text, and images unless input_image_price says)
    input_image_price: float | None = None  # USD per million input image tokens, where they cost otherwise
    output_price: float = 0.0  # USD per million output tokens not priced per image: text and thinking
    interim_images: bool = False  # draws interim "thought" images (Gemini 3), sent as partial images
    sizes: tuple = ()  # pixel sizes of a model that takes OpenAI's sizes; its aspect_ratios are theirs

    def tier_for(self, size=None, quality=None):
        """The resolution tier a request for `size` (OpenAI's WxH) and `quality` is made and priced
        at: its long edge's (512 up to 640 px, 1K up to 1536, 2K up to 3072, else 4K), at least
        2K for quality `hd` or `high`, each the nearest the model takes; None for a model without
        tiers, or a request that leaves the size to the model."""
        if not self.tiers:
            return None
        long_edge = max(map(int, size.split("x"))) if size and size != "auto" else None
        wanted = None if long_edge is None else (
            "512" if long_edge <= 640 else "1K" if long_edge <= 1536 else "2K" if long_edge <= 3072 else "4K")
        if quality in HIGH_QUALITY and wanted in (None, "512", "1K"):
            wanted = "2K"
        return self.nearest_tier(wanted) if wanted else None

    def nearest_tier(self, wanted):
        """`wanted`, else the model's largest tier below it, else its smallest: a model of the models
        file may take fewer tiers than Google's."""
        below = [tier for tier in self.tiers if ALL_TIERS.index(tier) <= ALL_TIERS.index(wanted)]
        return max(below, key=ALL_TIERS.index) if below else min(self.tiers, key=ALL_TIERS.index)

    def estimate(self, tier, images, input_images, prompt_chars):
        """The most a request may cost, reserved from a budget before its calls: the price table's
        per image (for a model without a per-image price, the built-in catalog's highest), its text
        and thinking output at THINKING_TOKENS an image, and its input counted generously: a token
        per prompt character plus 1,000 for instructions, 1,290 per input image."""
        per_image = self.image_price[tier or "1K"] if self.image_price else UNPRICED_IMAGE_USD
        image_tokens = 1290 * input_images
        input_usd = self._input_cost(prompt_chars + 1000 + image_tokens, image_tokens)
        tokens_usd = input_usd + images * THINKING_TOKENS * self.output_price / 1e6
        return round(images * per_image + tokens_usd, 6)

    def cost(self, tier, images, usage):
        """USD for one call by the price table: its images per image and its text and thinking
        output per token (all its output per token for a model without a per-image price), plus
        its input; None for a model without prices."""
        if not (self.image_price or self.input_price or self.input_image_price or self.output_price):
            return None
        if self.image_price:
            output = images * self.image_price[tier or "1K"] + usage.output_text_tokens * self.output_price / 1e6
        else:
            output = usage.output_tokens * self.output_price / 1e6
        return round(output + self._input_cost(usage.input_tokens, usage.input_image_tokens), 6)

    def _input_cost(self, input_tokens, image_tokens):
        """USD for a call's input tokens: its image tokens at the image price where the model has one."""
        if self.input_image_price is None:
            return input_tokens * self.input_price / 1e6
        return ((input_tokens - image_tokens) * self.input_price + image_tokens * self.input_image_price) / 1e6

    @property
    def label(self):
        """The model's name in metrics: a catalog id, never a name a client made up (a passthrough
        name would let any client add label values without end)."""
        return "openrouter/other" if self.passthrough else self.id


def _google(google_id, openrouter_id):
    """Who serves a Google model: the Gemini API and Vertex AI under Google's id, OpenRouter under its own."""
    return {"gemini": google_id, "vertex": google_id, "openrouter": openrouter_id}


# Google's list prices (ai.google.dev/gemini-api/docs/pricing and cloud.google.com/vertex-ai pricing,
# the same on both): output per image by tier, read there 2026-11; input per million tokens, written
# from memory and not re-read; text and thinking output per million tokens from third-party listings
# or estimated (docs/providers.md#cost says which).
# OpenRouter reports what it charged (`usage.cost`), which wins over this table.
MODELS = (
    Model(
        id="gemini-2.5-flash-image",
        served_by=_google("gemini-2.5-flash-image", "google/gemini-2.5-flash-image"),
        aliases=("gemini-2.5-flash-image-preview", "nano-banana"),
        aspect_ratios=TEN_RATIOS,
        tiers=(),
        max_input_images=3,
        created=1759363200,  # 2025-10-02, general availability
        image_price={"1K": 0.039},
        input_price=0.30,
        output_price=2.50,
    ),
    Model(
        id="gemini-3-pro-image",
        served_by=_google("gemini-3-pro-image", "google/gemini-3-pro-image-preview"),
        aliases=("gemini-3-pro-image-preview", "nano-banana-pro"),
        aspect_ratios=TEN_RATIOS,
        tiers=TIERS,
        max_input_images=14,
        created=1779926400,  # 2026-05-28, general availability
        interim_images=True,
        image_price={"1K": 0.134, "2K": 0.134, "4K": 0.24},
        input_price=2.00,
        output_price=12.00,
    ),
    Model(
        id="gemini-3.1-flash-image",
        served_by=_google("gemini-3.1-flash-image", "google/gemini-3.1-flash-image-preview"),
        aliases=("gemini-3.1-flash-image-preview", "nano-banana-2"),
        aspect_ratios=TEN_RATIOS + TALL_AND_WIDE,
        tiers=("512", *TIERS),
        max_input_images=14,
        created=1779926400,  # 2026-05-28, general availability
        interim_images=True,
        image_price={"512": 0.045, "1K": 0.067, "2K": 0.101, "4K": 0.151},
        input_price=0.50,
        output_price=3.00,
    ),
    *(Model(
        id=model_id,
        served_by={"openai": model_id},
        aspect_ratios=tuple(OPENAI_SIZES.values()),
        sizes=tuple(OPENAI_SIZES),
        tiers=(),
        max_input_images=16,
        created=created,
        owned_by="openai",
        transparent_background=True,
        image_only=True,
        interim_images=True,  # partial_images 0-3, streamed by OpenAI itself
        input_price=text_in,
        input_image_price=image_in,
        output_price=image_out,
    ) for model_id, created, text_in, image_in, image_out in (
        # OpenAI's prices per million tokens (docs/providers.md says where each was read): text
        # input, image input, image output. OpenAI bills its images as output tokens.
        ("gpt-image-1", 1745366400, 5.00, 10.00, 40.00),  # 2025-04-23
        ("gpt-image-1-mini", 1759708800, 2.00, 2.50, 8.00),  # 2025-10-06
        ("gpt-image-1.5", 1765843200, 5.00, 8.00, 32.00),  # 2025-12-16
    )),
)

UNPRICED_IMAGE_USD = max(price for model in MODELS if model.image_price for price in model.image_price.values())
THINKING_TOKENS = 2000  # text and thinking output tokens reserved per image (Gemini 3 thinks before drawing)


def _passthrough(name, image_only_prefixes):
    """`openrouter/<vendor>/<model>`: any other OpenRouter image model, as OpenRouter takes it. No
    resolution tier is sent (`image_size` is Google's vocabulary, which another vendor's model may
    refuse); the catalog's ids reach Google's models through OpenRouter with their tiers. It answers
    images only when its OpenRouter id starts with one of `image_only_prefixes`."""
    match = PASSTHROUGH.fullmatch(name)
    if match is None:
        return None
    upstream = f"{match[1]}/{match[2]}"
    return Model(id=name, served_by={"openrouter": upstream}, aspect_ratios=TEN_RATIOS + TALL_AND_WIDE, tiers=(),
                 max_input_images=16, created=0, owned_by=match[1],
                 image_only=upstream.startswith(image_only_prefixes), passthrough=True)


class Catalog:
    """A set of models by id and alias: the built-in MODELS, or those with the models file's
    entries added or overriding by id (gateway.catalog_file); and the OpenRouter id prefixes of
    the passthrough models that answer images only (OPENROUTER_IMAGE_ONLY_MODELS)."""

    def __init__(self, models, image_only_prefixes=IMAGE_ONLY_PREFIXES):
        self.models = tuple(models)
        self.by_name = {name: model for model in self.models for name in (model.id, *model.aliases)}
        self.image_only_prefixes = tuple(image_only_prefixes)

    def is_name(self, name):
        return name == "auto" or name in self.by_name

    def resolve(self, name, default_model, aliases=None):
        requested = name or "auto"
        wanted = (aliases or {}).get(requested, requested)
        wanted = default_model if wanted == "auto" else wanted
        model = self.by_name.get(wanted) or _passthrough(wanted, self.image_only_prefixes)
        if model is None:
            supported = ", ".join(["auto"] + [m.id for m in self.models] + ["openrouter/<vendor>/<model>"])
            raise InvalidRequest.field("model", f"unknown model {shorten(requested)!r}; supported models: {supported}")
        return model

    def listed(self, aliases, default_model):
        return ([(model.id, model) for model in self.models]
                + [(alias, model) for model in self.models for alias in model.aliases]
                + [(alias, self.resolve(target, default_model)) for alias, target in aliases.items()])


BUILT_IN = Catalog(MODELS)
_installed = BUILT_IN  # the process's catalog, set by create_app before any request


def install(catalog):
    """Make `catalog` the one every request resolves names in. A registry rather than an argument
    because the catalog is fixed for the process's life, like its providers, and every caller
    (the service, policies, /v1/models, health) would otherwise carry it through each call."""
    global _installed
    _installed = catalog


def models():
    """The installed catalog's models, built-in and from the models file."""
    return _installed.models


def is_catalog_name(name):
    """Whether `name` is a catalog id or alias, or `auto`: names an operator's alias may not take."""
    return _installed.is_name(name)


def resolve_model(name, default_model, aliases=None):
    """The catalog entry for a client's model name: an operator's alias (GATEWAY_MODEL_ALIASES)
    first, then the catalog's ids and aliases, then `openrouter/...`; `auto` (or none) means the
    default, also as an alias's target."""
    return _installed.resolve(name, default_model, aliases)


def listed_models(aliases, default_model):
    """(name, catalog model) for GET /v1/models: every model, its aliases, then the operator's."""
    return _installed.listed(aliases, default_model)


def upstream_id(model, provider, overrides):
    """The id `provider` is sent for `model`. Operators can point a model at a new id without a
    release (GATEWAY_UPSTREAM_MODELS): `provider:model=id` for one provider, `model=id` for the
    providers that call Google's own ids."""
    default = model.served_by[provider]
    return overrides.get(f"{provider}:{model.id}") or (
        overrides.get(model.id, default) if provider in GOOGLE_IDS else default)
