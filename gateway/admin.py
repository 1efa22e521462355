"""The admin API (docs/keys-and-budgets.md), on when GATEWAY_ADMIN_KEY is set: managed keys and the
usage ledger; and GET /v1/usage, where a client key reads its own policy and spend."""
from datetime import UTC, date, datetime, time

from flask import Blueprint, current_app, request

from .accounting import GROUPS, spent_usd, usage
from .auth import current_client, require_admin_key, require_api_key
from .errors import GatewayError, InvalidRequest, shorten
from .images import json_body
from .keys import Conflict
from .policies import KeyCreateSchema, Policy, PolicySchema, build_policy, normalized, policy_fields, rfc3339

bp = Blueprint("admin", __name__)
CREATE, CHANGE = KeyCreateSchema(), PolicySchema()


def _keys():
    return current_app.config["KEYS"]


def _models(fields_):
    settings = current_app.config["SETTINGS"]
    return normalized(fields_, settings.default_model, settings.model_aliases)


def _described(name, policy, created_at, revoked, source):
    """One key as the admin API shows it: never its secret or hash."""
    return {"name": name, "created_at": rfc3339(created_at.replace(tzinfo=UTC)) if created_at else None,
            "revoked": revoked, "source": source,
            "spent_usd": spent_usd(current_app.config["STORE"], name, policy.budget_period), **policy.public()}


def _managed(row):
    return _described(row["name"], Policy.from_stored(row["policy"]), row["created_at"],
                      row["revoked_at"] is not None, "managed")


def _static():
    keys = _keys()
    return [_described(name, keys.static_policies.get(name, Policy()), None, False, "static")
            for name in keys.static.values()]


def _one(name):
    rows = _keys().managed(name)
    if rows:
        return rows[0]
    if name in _keys().static.values():
        raise Conflict(f"{name!r} is a static key: it is changed in GATEWAY_API_KEYS and GATEWAY_KEY_POLICIES.")
    raise GatewayError(404, f"No managed key is named {shorten(name)!r}.")


@bp.post("/v1/admin/keys")
@require_admin_key
def create_key():
    """Create a managed key; its secret is in this answer only."""
    fields_ = _models(policy_fields(CREATE, json_body()))
    name = fields_.pop("name")
    policy = build_policy(fields_)
    row, secret = _keys().create(name, policy)
    return {"name": name, "key": secret, "created_at": rfc3339(row["created_at"].replace(tzinfo=UTC)),
            **policy.public()}, 201


@bp.get("/v1/admin/keys")
@require_admin_key
def list_keys():
    """Every key, managed and static, with its policy and spend."""
    return {"object": "list", "data": [_managed(row) for row in _keys().managed()] + _static()}


@bp.get("/v1/admin/keys/<name>")
@require_admin_key
def get_key(name):
    for key in _static():
        if key["name"] == name:
            return key
    rows = _keys().managed(name)
    if not rows:
        raise GatewayError(404, f"No key is named {shorten(name)!r}.")
    return _managed(rows[0])


@bp.patch("/v1/admin/keys/<name>")
@require_admin_key
def change_key(name):
    """Change a managed key's policy: the fields given (null clears one)."""
    _one(name)
    return _managed(_keys().change(name, _models(policy_fields(CHANGE, json_body()))))


@bp.delete("/v1/admin/keys/<name>")
@require_admin_key
def revoke_key(name):
    """Revoke a managed key: refused on every instance within a second."""
    _one(name)
    return _managed(_keys().revoke(name))


def _moment(name):
    """A query parameter as a UTC time: RFC 3339, or a date (its midnight, UTC)."""
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        if len(raw) == 10:
            return datetime.combine(date.fromisoformat(raw), time(), UTC)
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidRequest.field(name, "must be an RFC 3339 time with its offset, or a date (YYYY-MM-DD)")
    return moment


@bp.get("/v1/admin/usage")
@require_admin_key
def admin_usage():
    """The ledger summed by key, model, provider or day."""
    group_by = [name.strip() for name in request.args.get("group_by", "key").split(",") if name.strip()]
    unknown = [name for name in group_by if name not in GROUPS]
    if unknown or not group_by:
        raise InvalidRequest.field("group_by", f"must be one or more of {', '.join(GROUPS)}, comma-separated")
    return {"object": "list", "data": usage(current_app.config["STORE"], list(dict.fromkeys(group_by)),
                                            request.args.get("key"), request.args.get("model"),
                                            _moment("since"), _moment("until"))}


@bp.get("/v1/usage")
@require_api_key
def own_usage():
    """The calling key's own policy, spend and what is left of its budget."""
    client = current_client()
    policy = client.policy
    spent = spent_usd(current_app.config["STORE"], client.name, policy.budget_period)
    remaining = None if policy.budget_usd is None else round(max(0.0, policy.budget_usd - spent), 6)
    return {"name": client.name, **policy.public(), "spent_usd": spent, "remaining_usd": remaining}
