"""The models file (GATEWAY_MODELS_FILE, docs/providers.md): catalog entries added, or overriding
the built-in ones by id, so an operator can follow a renamed model or a new price without a
release. Checked once at start; any mistake stops the start with the entry and the field named."""
import dataclasses
import math
import re

import yaml
from marshmallow import Schema, ValidationError, fields, post_load, validate, validates, validates_schema

from .catalog import ALL_TIERS, BUILT_IN, GOOGLE_IDS, IMAGE_ONLY_PREFIXES, TEN_RATIOS, Catalog, Model
from .config import ConfigError
from .fields import StrictInteger, flatten_messages
from .policies import Budget

# Anchored at the end: marshmallow's Regexp matches from the start only
ID = re.compile(r"[A-Za-z0-9][\w.-]{0,127}\Z", re.ASCII)
NAME_RULE = "must be 1-128 characters of A-Z a-z 0-9 . _ - (starting with a letter or digit)"
UPSTREAM_ID = re.compile(r"[A-Za-z0-9][\w.:/-]{0,255}\Z", re.ASCII)  # goes into upstream URLs and bodies as it is
RATIO = re.compile(r"[1-9]\d{0,2}:[1-9]\d{0,2}\Z")
SIZE = re.compile(r"([1-9]\d{1,4})x([1-9]\d{1,4})\Z")
MAX_INPUT_IMAGES = 64
MAX_PARTIAL_IMAGES = 3
# A new model's capabilities when the file does not give them: the ten ratios every Gemini image
# model takes, no tier sent, and the fewest input images any takes
NEW_MODEL = {"aspect_ratios": TEN_RATIOS, "tiers": (), "max_input_images": 3, "created": 0}


def _strings(pattern, shape):
    return fields.List(fields.String(validate=validate.Regexp(pattern, error=f"must look like {shape}")),
                       validate=validate.Length(min=1, error="must list at least one"))


def _price(**kwargs):
    return Budget(validate=validate.Range(min=0, error="must not be negative"), **kwargs)


class CapabilitiesSchema(Schema):
    aspect_ratios = _strings(RATIO, "16:9")
    sizes = _strings(SIZE, "1024x1024")
    tiers = fields.List(fields.String(validate=validate.OneOf(ALL_TIERS, error="must be one of: {choices}")))
    max_input_images = StrictInteger(validate=validate.Range(min=0, max=MAX_INPUT_IMAGES))
    interim_images = StrictInteger(data_key="partial_images", validate=validate.Range(min=0, max=MAX_PARTIAL_IMAGES))
    image_only = fields.Boolean(truthy={True}, falsy={False})  # answers images only, never words

    @validates_schema
    def _one_shape(self, data, **kwargs):
        if "aspect_ratios" in data and "sizes" in data:
            raise ValidationError("give aspect_ratios or sizes, not both", "sizes")

    @post_load
    def _as_model_fields(self, data, **kwargs):
        """Model fields: tuples, interim images as a flag, and a sizes model's aspect ratios taken
        from its sizes, so the service maps a client's size to the nearest one the model takes."""
        values = {name: tuple(value) if isinstance(value, list) else value for name, value in data.items()}
        if "interim_images" in values:
            values["interim_images"] = values["interim_images"] > 0
        if "sizes" in values:
            values["aspect_ratios"] = tuple(dict.fromkeys(_ratio(size) for size in values["sizes"]))
        return values


def _ratio(size):
    width, height = map(int, SIZE.fullmatch(size).groups())
    divisor = math.gcd(width, height)
    return f"{width // divisor}:{height // divisor}"


class PricesSchema(Schema):
    image_price = fields.Dict(data_key="per_image", keys=fields.String(validate=validate.OneOf(
        ALL_TIERS, error="must be one of: {choices}")), values=_price(), validate=validate.Length(min=1))
    input_price = _price(data_key="input_per_million")
    input_image_price = _price(data_key="input_image_per_million")
    output_price = _price(data_key="output_per_million")


class EntrySchema(Schema):
    """One entry of `models`, loaded as the Model fields it sets."""
    id = fields.String(required=True, validate=validate.Regexp(ID, error=NAME_RULE))
    aliases = fields.List(fields.String(validate=validate.Regexp(ID, error=NAME_RULE)))
    served_by = fields.Dict(data_key="providers", required=True, keys=fields.String(), values=fields.String(
        validate=validate.Regexp(UPSTREAM_ID, error="must be an upstream model id")), validate=validate.Length(
        min=1, error="must name at least one provider"))
    capabilities = fields.Nested(CapabilitiesSchema)
    prices = fields.Nested(PricesSchema)

    def __init__(self, provider_names, **kwargs):
        super().__init__(**kwargs)
        self.provider_names = tuple(provider_names)

    @validates("served_by")
    def _known_providers(self, value, **kwargs):
        unknown = [name for name in value if name not in self.provider_names]
        if unknown:
            raise ValidationError(f"unknown provider {unknown[0]!r}; known: {', '.join(self.provider_names)}")

    @post_load
    def _as_model_fields(self, data, **kwargs):
        nested = {**data.pop("capabilities", {}), **data.pop("prices", {})}
        return {**data, **nested, **({"aliases": tuple(data["aliases"])} if "aliases" in data else {})}


class FileSchema(Schema):
    models = fields.List(fields.Raw(), required=True)


def load_catalog(path, provider_names, operator_aliases, image_only_prefixes=IMAGE_ONLY_PREFIXES):
    """The built-in catalog with the file at `path` applied (the built-in models without a path):
    `provider_names` are the providers there are, `operator_aliases` GATEWAY_MODEL_ALIASES,
    `image_only_prefixes` OPENROUTER_IMAGE_ONLY_MODELS."""
    models = {model.id: model for model in BUILT_IN.models}
    if not path:
        return Catalog(models.values(), image_only_prefixes)
    origins = {}  # model id -> its entry's name in messages
    schema = EntrySchema(provider_names)
    for index, raw in enumerate(_entries(path)):
        origin = f"GATEWAY_MODELS_FILE: models[{index}]" + (f" {raw['id']}" if _named(raw) else "")
        values = _loaded(schema, raw, origin)
        if values["id"] in origins:
            raise ConfigError(f"{origin}: id: {values['id']!r} is given twice")
        model = _model(values, models.get(values["id"]))
        _check_prices(model, origin)
        models[model.id], origins[model.id] = model, origin
    catalog = Catalog(models.values(), image_only_prefixes)
    _check_names(catalog, origins, operator_aliases)
    return catalog


def _entries(path):
    """The raw entries of the file (YAML, of which JSON is a part)."""
    try:
        with open(path, encoding="utf-8") as file:
            document = yaml.safe_load(file)
    except OSError as error:
        raise ConfigError(f"GATEWAY_MODELS_FILE: cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"GATEWAY_MODELS_FILE: {path} is neither YAML nor JSON: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"GATEWAY_MODELS_FILE: {path} must hold a mapping with a `models` list")
    return _loaded(FileSchema(), document, f"GATEWAY_MODELS_FILE: {path}")["models"]


def _named(raw):
    return isinstance(raw, dict) and isinstance(raw.get("id"), str) and ID.fullmatch(raw["id"])


def _loaded(schema, raw, origin):
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: must be a mapping")
    try:
        return schema.load(raw)
    except ValidationError as error:
        raise ConfigError(f"{origin}: " + "; ".join(sorted(flatten_messages(error.messages)))) from None


def _model(values, built_in):
    """The built-in model with the entry's fields replacing its own, or a new model."""
    if built_in is not None:
        return dataclasses.replace(built_in, **values)
    owner = "google" if set(values["served_by"]) <= set(GOOGLE_IDS) else "system"
    return Model(**{**NEW_MODEL, "owned_by": owner, **values})


def _check_prices(model, origin):
    """A model priced per image has a price for each tier it may be asked for."""
    if model.image_price:
        missing = [tier for tier in model.tiers or ("1K",) if tier not in model.image_price]
        if missing:
            raise ConfigError(f"{origin}: prices.per_image: no price for tier {missing[0]} "
                              f"(the model's tiers: {', '.join(model.tiers or ('1K',))})")


def _check_names(catalog, origins, operator_aliases):
    """Every id and alias names one model, and none of the file's is `auto` or an operator's alias."""
    owners = {}
    for model in catalog.models:
        for name in (model.id, *model.aliases):
            owner = owners.setdefault(name, model)
            if owner is not model:
                culprit, other = (model, owner) if model.id in origins else (owner, model)
                _refuse(origins[culprit.id], culprit, name, f"is already a name of {other.id}")
            if model.id in origins and (reason := _reserved(name, operator_aliases)):
                _refuse(origins[model.id], model, name, reason)


def _reserved(name, operator_aliases):
    if name == "auto":
        return "is reserved: it means GATEWAY_DEFAULT_MODEL"
    if name in operator_aliases:
        return f"is an alias of GATEWAY_MODEL_ALIASES or its defaults (`{name}=` there removes it)"
    return None


def _refuse(origin, model, name, reason):
    raise ConfigError(f"{origin}: {'id' if name == model.id else 'aliases'}: {name!r} {reason}")
