"""The key checks: client keys on /v1 (static and managed, gateway/keys.py) and the admin key on
/v1/admin (docs/keys-and-budgets.md)."""
import hashlib
import hmac
from dataclasses import dataclass
from functools import wraps

from flask import current_app, g, request
from werkzeug.exceptions import NotFound

from .errors import GatewayError
from .policies import Policy


@dataclass(frozen=True)
class Client:
    id: str  # the key's hash prefix: never the key
    name: str  # the key's name: logs, metrics, the ledger
    policy: Policy = Policy()
    source: str = "static"  # or "managed"


ANONYMOUS = Client("-", "-")  # a request without a valid key: never named after what it sent


def key_hash(key):
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(key):
    """A short, stable, non-reversible name for a key, for logs."""
    return key_hash(key)[:12] if key else "-"


def presented_key():
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key", "").strip()


def client_id():
    """The key id of the current request's client."""
    return key_id(presented_key())


def current_client():
    """Who the current request is from, once its key was found valid; names come only from configuration."""
    return g.get("client", ANONYMOUS)


def require_api_key(view):
    @wraps(view)
    def checked(*args, **kwargs):
        g.client = current_app.config["KEYS"].authenticate(presented_key())
        return view(*args, **kwargs)

    return checked


def require_admin_key(view):
    """The admin API: a 404 unless GATEWAY_ADMIN_KEY is set, then only for that key."""
    @wraps(view)
    def checked(*args, **kwargs):
        admin_key = current_app.config["SETTINGS"].admin_key
        if not admin_key:
            raise NotFound("The requested URL was not found on the server.")
        if not hmac.compare_digest(presented_key().encode(), admin_key.encode()):
            raise GatewayError(401, "Unauthorized: the admin API needs the admin key (GATEWAY_ADMIN_KEY).")
        return view(*args, **kwargs)

    return checked
