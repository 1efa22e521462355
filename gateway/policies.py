"""A key's policy (docs/keys-and-budgets.md): rate, image-rate and concurrency limits, a budget
with its period, the models it may use, and when it expires. The same schema checks the admin
API's bodies and GATEWAY_KEY_POLICIES, so both refuse the same values with the same words."""
import math
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from .catalog import resolve_model
from .errors import InvalidRequest
from .fields import StrictInteger, flatten_messages

NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
PERIODS = ("day", "month", "total")
MAX_COUNT = 10_000_000  # per minute or in flight: anything larger is a typo
MAX_BUDGET = 1_000_000_000.0
MAX_MODELS = 100


@dataclass(frozen=True)
class Policy:
    rpm: int | None = None
    ipm: int | None = None
    max_concurrent: int | None = None
    budget_usd: float | None = None
    budget_period: str | None = None
    models: tuple | None = None  # catalog ids (aliases resolved) or openrouter/... names; None = all
    expires_at: datetime | None = None  # aware, UTC

    @property
    def limits_rate(self):
        return self.rpm is not None or self.ipm is not None

    @property
    def counted(self):
        """The policy needs the shared counters (rate or concurrency)."""
        return self.limits_rate or self.max_concurrent is not None

    def allows(self, model):
        return self.models is None or model.id in self.models

    def expired(self, now):
        return self.expires_at is not None and now >= self.expires_at

    def public(self):
        """The policy's fields as the API shows them (absent limits as null)."""
        fields_ = asdict(self)
        fields_["models"] = list(self.models) if self.models is not None else None
        fields_["expires_at"] = rfc3339(self.expires_at)
        return fields_

    def stored(self):
        """The policy as the database's JSON keeps it: only the fields that are set."""
        return {name: value for name, value in self.public().items() if value is not None}

    @classmethod
    def from_stored(cls, stored):
        expires = stored.get("expires_at")
        return cls(**{**stored, "models": tuple(stored["models"]) if stored.get("models") is not None else None,
                      "expires_at": datetime.fromisoformat(expires) if expires else None})


def rfc3339(moment):
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


class Budget(fields.Float):
    """A dollar amount: a JSON number, never a string, a boolean, NaN or an infinity."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.make_error("invalid")
        return float(value)


class Moment(fields.AwareDateTime):
    """An RFC 3339 time with its offset (a time without one is ambiguous)."""

    def __init__(self, **kwargs):
        super().__init__(format="iso", **kwargs)


def _count(name):
    return StrictInteger(allow_none=True, validate=validate.Range(
        min=1, max=MAX_COUNT, error=f"must be a whole number between 1 and {MAX_COUNT}"), metadata={
        "description": name})


class PolicySchema(Schema):
    """Every field optional; null clears a field (PATCH)."""

    class Meta:
        unknown = RAISE

    rpm = _count("requests per minute")
    ipm = _count("images per minute (a request counts n)")
    max_concurrent = _count("upstream calls in flight (a request holds n)")
    budget_usd = Budget(allow_none=True, validate=validate.Range(
        min=0, max=MAX_BUDGET, error=f"must be between 0 and {MAX_BUDGET:.0f}"))
    budget_period = fields.String(allow_none=True, validate=validate.OneOf(
        PERIODS, error="must be one of: " + ", ".join(PERIODS)))
    models = fields.List(fields.String(validate=validate.Length(min=1, max=256)), allow_none=True,
                         validate=validate.Length(min=1, max=MAX_MODELS,
                                                  error=f"must list between 1 and {MAX_MODELS} models"))
    expires_at = Moment(allow_none=True)


class KeyCreateSchema(PolicySchema):
    name = fields.String(required=True, error_messages={"required": "Required"}, validate=validate.Regexp(
        NAME, error="must be 1-64 characters of A-Z a-z 0-9 . _ -"))


def policy_fields(schema, data, context="Invalid request parameters"):
    """The validated fields of `data`, or a 400 naming each wrong one (`context` starts the message)."""
    if not isinstance(data, dict):
        raise InvalidRequest(f"{context}: body: must be a JSON object")
    try:
        loaded = schema.load(data)
    except ValidationError as error:
        raise InvalidRequest(f"{context}: " + "; ".join(sorted(flatten_messages(error.messages)))) from None
    if "name" in loaded and not NAME.fullmatch(loaded["name"]):
        raise InvalidRequest(f"{context}: name: must be 1-64 characters of A-Z a-z 0-9 . _ -")
    return loaded


def normalized(loaded, default_model, aliases, context="Invalid request parameters"):
    """`loaded` with every model name resolved to its catalog id (unknown names are a 400 naming the entry)."""
    if loaded.get("models") is None:
        return loaded
    ids = []
    for index, name in enumerate(loaded["models"]):
        try:
            ids.append(resolve_model(name, default_model, aliases).id)
        except InvalidRequest:
            raise InvalidRequest(f"{context}: models[{index}]: unknown model {name[:64]!r}") from None
    return {**loaded, "models": tuple(dict.fromkeys(ids))}


def build_policy(fields_):
    """A Policy from validated fields; a budget without a period never resets ('total')."""
    values = {name: fields_.get(name) for name in Policy.__dataclass_fields__}
    if values["budget_usd"] is not None and values["budget_period"] is None:
        values["budget_period"] = "total"
    if values["expires_at"] is not None:
        values["expires_at"] = values["expires_at"].astimezone(UTC)
    return Policy(**values)


def static_policies(raw, names, default_model, aliases):
    """GATEWAY_KEY_POLICIES (`{"<key name>": {<policy>}}`) as {name: Policy}, or a ConfigError
    naming the entry and the field."""
    from .config import ConfigError

    if not isinstance(raw, dict):
        raise ConfigError("GATEWAY_KEY_POLICIES must be a JSON object of key name -> policy")
    policies = {}
    for name, fields_ in raw.items():
        context = f"GATEWAY_KEY_POLICIES: {name[:64]}"
        if name not in names:
            raise ConfigError(f"{context}: no key in GATEWAY_API_KEYS has this name (names: {', '.join(names)})")
        try:
            policies[name] = build_policy(normalized(policy_fields(PolicySchema(), fields_, context),
                                                     default_model, aliases, context))
        except InvalidRequest as error:
            raise ConfigError(error.message) from None
    return policies
