"""The client key check (docs/api.md)."""
import hashlib
import hmac
from dataclasses import dataclass
from functools import wraps

from flask import current_app, g, request

from .errors import GatewayError


def presented_key():
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key", "").strip()


def key_id(key):
    """A short, stable, non-reversible name for a client key, for logs and per-key limits."""
    return hashlib.sha256(key.encode()).hexdigest()[:12] if key else "-"


def client_id():
    """The key id of the current request's client."""
    return key_id(presented_key())


@dataclass(frozen=True)
class Client:
    id: str  # the key's hash prefix: per-key limits
    name: str  # from GATEWAY_API_KEYS (`name:key`), else `key-<id>`: logs and the `client` metric label


ANONYMOUS = Client("-", "-")  # a request without a valid key: never named after what it sent


def current_client():
    """Who the current request is from, once its key was found valid; names come only from configuration."""
    return g.get("client", ANONYMOUS)


def key_is_valid(key, keys):
    """Compare against every configured key in constant time, without stopping early."""
    matches = [hmac.compare_digest(key.encode(), known.encode()) for known in keys]
    return any(matches)


def require_api_key(view):
    @wraps(view)
    def checked(*args, **kwargs):
        keys = current_app.config["SETTINGS"].api_keys
        key = presented_key()
        if not keys:
            raise GatewayError(401, "Unauthorized: this gateway has no client keys configured (GATEWAY_API_KEYS).")
        if not key:
            raise GatewayError(
                401, "Unauthorized: send your key as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.")
        if not key_is_valid(key, keys):
            raise GatewayError(401, "Unauthorized: the API key is not valid.")
        ident = key_id(key)
        g.client = Client(ident, current_app.config["SETTINGS"].client_names.get(key) or f"key-{ident}")
        return view(*args, **kwargs)

    return checked
