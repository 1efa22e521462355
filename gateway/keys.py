"""Client keys (docs/keys-and-budgets.md): static ones from GATEWAY_API_KEYS with their policies
from GATEWAY_KEY_POLICIES, and managed ones created through the admin API, stored only as a hash
and seen by every worker and instance within a second of a change, or at once with Redis."""
import hmac
import logging
import secrets
import threading
import time
from datetime import UTC, datetime

from redis.exceptions import RedisError
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from .auth import Client, key_hash, key_id
from .errors import GatewayError
from .policies import Policy, build_policy, rfc3339
from .shared import Outage
from .store import StoreUnavailable, api_keys

log = logging.getLogger(__name__)

CACHE_SECONDS = 0.5  # without Redis, a revoked or changed key is refused everywhere within this, plus a query
CACHE_ENTRIES = 10_000
SECRET_PREFIX = "sk-gw-"


def utcnow():
    return datetime.now(UTC)


def naive(moment):
    """UTC without its offset, as the database keeps times."""
    return moment.astimezone(UTC).replace(tzinfo=None)


class Conflict(GatewayError):
    def __init__(self, message):
        super().__init__(409, message)


class KeyChanges:
    """How a process hears of a managed key changed or revoked by another: without Redis it does
    not, and the row it cached expires by itself within CACHE_SECONDS."""
    seen = 0  # changes heard so far

    def tell(self, name):
        """The key named `name` was changed or revoked here (its transaction committed)."""

    def heard(self):
        """The names of the keys changed since the last call."""
        return []


class RedisKeyChanges(KeyChanges):
    """Changes published on Redis's `<prefix>:keys` channel by the process that made them, and
    read by every process just before it looks a managed key up, without waiting: no round trip,
    only a look at its subscription's socket. A change published while a process's subscription
    was down is missed, which CACHE_SECONDS still bounds."""

    def __init__(self, client, prefix):
        self.redis, self.channel = client, f"{prefix}:keys"
        self.subscription, self.lock = None, threading.Lock()
        self.outage = Outage(f"a managed key changed elsewhere is seen within {CACHE_SECONDS:g}s instead of at once")

    def tell(self, name):
        try:
            self.redis.publish(self.channel, name)
        except RedisError as error:
            log.error("Redis failed (%s): the change to the key %s is seen elsewhere within %gs instead of at once",
                      error, name, CACHE_SECONDS)

    def heard(self):
        if self.outage.ongoing:
            return []
        with self.lock:
            try:
                names = self._published()
            except RedisError as error:
                self.subscription.close()
                self.subscription = None
                self.outage.began(error)
                return []
            self.seen += len(names)
        self.outage.ended()
        return names

    def _published(self):
        """The names waiting on the subscription (subscribing first, the first time)."""
        if self.subscription is None:
            self.subscription = self.redis.pubsub()
            self.subscription.subscribe(self.channel)
        names = []
        while (message := self.subscription.get_message(timeout=0)) is not None:
            if message["type"] == "message":
                names.append(message["data"].decode())
        return names


class Keys:
    def __init__(self, settings, store, static_policies, redis=None):
        self.static = dict(zip(settings.api_keys, self.static_names(settings), strict=True))
        self.static_policies = static_policies
        self.store, self.managed_keys = store, bool(settings.admin_key)
        self.cache, self.lock = {}, threading.Lock()
        self.changes = KeyChanges() if redis is None else RedisKeyChanges(redis, settings.redis_prefix)

    @staticmethod
    def static_names(settings):
        """The names of GATEWAY_API_KEYS in order: `name:key`'s name, else `key-<hash prefix>`."""
        return [settings.client_names.get(key) or f"key-{key_id(key)}" for key in settings.api_keys]

    def authenticate(self, presented):
        """The Client behind a presented key, or the 401 that says why not."""
        if not presented:
            raise GatewayError(
                401, "Unauthorized: send your key as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.")
        name = self._static_name(presented)
        if name is not None:
            client = Client(key_id(presented), name, self.static_policies.get(name, Policy()))
        else:
            row = self._managed(key_hash(presented))
            if row is None and not (self.static or self.managed_keys):
                raise GatewayError(401, "Unauthorized: this gateway has no client keys configured "
                                        "(GATEWAY_API_KEYS, or managed keys with GATEWAY_ADMIN_KEY).")
            if row is None:
                raise GatewayError(401, "Unauthorized: the API key is not valid.")
            if row["revoked_at"] is not None:
                raise GatewayError(401, "Unauthorized: the API key has been revoked.")
            client = Client(key_id(presented), row["name"], Policy.from_stored(row["policy"]), "managed")
        if client.policy.expired(utcnow()):
            raise GatewayError(401, f"Unauthorized: the API key expired at {rfc3339(client.policy.expires_at)}.")
        return client

    def _static_name(self, presented):
        """Compare against every static key in constant time, without stopping early."""
        found = None
        for key, name in self.static.items():
            if hmac.compare_digest(presented.encode(), key.encode()):
                found = name
        return found

    def _managed(self, digest):
        """The managed key's row by its hash, from a cache at most CACHE_SECONDS old that forgets a
        key as soon as this process hears it was changed."""
        self._forget(self.changes.heard())
        now = time.monotonic()
        with self.lock:
            cached = self.cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        seen = self.changes.seen
        try:
            with self.store.read() as conn:
                row = conn.execute(select(api_keys).where(api_keys.c.key_hash == digest)).mappings().first()
        except StoreUnavailable:
            raise GatewayError(503, "The gateway's key store (its database) cannot be reached; "
                                    "try again shortly.", headers={"Retry-After": "5"}) from None
        row = dict(row) if row else None
        with self.lock:
            if len(self.cache) >= CACHE_ENTRIES:
                self.cache.clear()
            if seen == self.changes.seen:  # else a change heard meanwhile may be newer than the row
                self.cache[digest] = (now + CACHE_SECONDS, row)
        return row

    def _forget(self, names):
        """Drop the cached rows of the keys named."""
        if names:
            with self.lock:
                self.cache = {digest: cached for digest, cached in self.cache.items()
                              if cached[1] is None or cached[1]["name"] not in names}

    # --- the admin API's operations on managed keys -------------------------------------------

    def create(self, name, policy):
        """(row, secret): the secret exists only in this answer; the database keeps its hash."""
        if name in self.static.values():
            raise Conflict(f"A static key (GATEWAY_API_KEYS) is already named {name!r}.")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        row = {"name": name, "key_hash": key_hash(secret), "policy": policy.stored(),
               "created_at": naive(utcnow()), "revoked_at": None}
        try:
            self.store.run(lambda conn, now: conn.execute(insert(api_keys).values(**row)))
        except StoreUnavailable as error:
            if isinstance(error.__cause__, IntegrityError):
                raise Conflict(f"A key named {name!r} already exists.") from None
            raise
        return row, secret

    def managed(self, name=None):
        """Managed keys' rows (one by name, or all), without their hashes."""
        query = select(api_keys.c.name, api_keys.c.policy, api_keys.c.created_at, api_keys.c.revoked_at)
        if name is not None:
            query = query.where(api_keys.c.name == name)
        with self.store.read() as conn:
            return [dict(row) for row in conn.execute(query.order_by(api_keys.c.name)).mappings()]

    def change(self, name, fields_):
        """Apply the given policy fields (null clears one) to a managed key; its new row."""
        rows = self.managed(name)
        if not rows:
            return None
        merged = {**Policy.from_stored(rows[0]["policy"]).public(), **fields_}
        policy = build_policy({**merged, "expires_at": _moment(merged["expires_at"])})
        self.store.run(lambda conn, now: conn.execute(
            update(api_keys).where(api_keys.c.name == name).values(policy=policy.stored())))
        self.changes.tell(name)
        return {**rows[0], "policy": policy.stored()}

    def revoke(self, name):
        self.store.run(lambda conn, now: conn.execute(
            update(api_keys).where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=naive(utcnow()))))
        self.changes.tell(name)
        rows = self.managed(name)
        return rows[0] if rows else None


def _moment(value):
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
