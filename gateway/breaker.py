"""Routing that remembers (docs/providers.md#circuit-breakers): a provider whose calls keep failing
in a way that fails over is skipped for a cool-down, so the requests after the first few go
straight to the next provider instead of spending their retries and time on it. Then one call
probes it; a success closes it, a failure opens it for another cool-down.

The failover loop sees only the small interface of `Breaker` (`admit`, `would_admit`,
`succeeded`, `failed`, `released`). Behind it the state is this process's (`LocalBreaker`), or,
with GATEWAY_REDIS_URL, shared by every process of every instance (`RedisBreaker`)."""
import logging
import threading
import time
import uuid

from redis.exceptions import RedisError

from .metrics import BREAKER_OPEN
from .shared import Outage

log = logging.getLogger(__name__)

CLOSED, OPEN, PROBING = "closed", "open", "probing"


class Breaker:
    """The interface the failover loop uses; this one never opens (GATEWAY_BREAKER_FAILURES=0)."""

    def admit(self):
        """Whether a call may go to the provider now. A True from a breaker whose cool-down has
        passed makes this call its one probe: it must end in `succeeded`, `failed` or `released`."""
        return True

    def would_admit(self):
        """Whether `admit` would say True now, without taking a probe."""
        return True

    def succeeded(self):
        """The provider answered (an image, or an answer that does not fail over)."""

    def failed(self):
        """A call ended in a failure that fails over (429, 5xx, timeout, connection error)."""

    def released(self):
        """A call ended with no verdict on the provider (the client went away)."""


class LocalBreaker(Breaker):
    """One provider's breaker in this process: opens after `failures` consecutive failed calls,
    skips the provider for `seconds`, then lets exactly one call probe it."""

    def __init__(self, provider, failures, seconds, clock=time.monotonic):
        self.provider, self.failures, self.seconds, self.clock = provider, failures, seconds, clock
        self.state, self.consecutive, self.opened_at, self.lock = CLOSED, 0, 0.0, threading.Lock()
        BREAKER_OPEN.labels(provider).set(0)

    def admit(self):
        with self.lock:
            if self.state == CLOSED:
                return True
            if self.state == OPEN and self._cooled_down():
                self.state = PROBING
                _probing(self.provider)
                return True
            return False

    def would_admit(self):
        with self.lock:
            return self.state == CLOSED or (self.state == OPEN and self._cooled_down())

    def succeeded(self):
        with self.lock:
            reopened, self.state, self.consecutive = self.state != CLOSED, CLOSED, 0
        if reopened:
            _closed(self.provider)

    def failed(self):
        with self.lock:
            self.consecutive += 1
            opening = self.state == PROBING or (self.state == CLOSED and self.consecutive >= self.failures)
            if self.state != CLOSED or opening:  # a failure while open starts the cool-down again
                self.state, self.opened_at = OPEN, self.clock()
        if opening:
            _opened(self.provider, self.consecutive, self.seconds)

    def released(self):
        with self.lock:
            if self.state == PROBING:  # no verdict: the next call may probe
                self.state = OPEN

    def _cooled_down(self):
        return self.clock() - self.opened_at >= self.seconds


NOW = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
"""
# KEYS: the state (a hash: `failures`, and `opened_at` in ms while open), the probe's lease.
SCRIPTS = {
    # ARGV: cool-down ms, the probe's lease ms (0: only ask, take no probe), this process's token.
    # Reply: {admitted, open}.
    "admit": NOW + """
local opened = redis.call('HGET', KEYS[1], 'opened_at')
if not opened then return {1, 0} end
if now - tonumber(opened) < tonumber(ARGV[1]) then return {0, 1} end
if ARGV[2] == '0' then return {1 - redis.call('EXISTS', KEYS[2]), 1} end
return {redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[2]) and 1 or 0, 1}
""",
    # ARGV: the failures that open it. Reply: {opening, consecutive failures, open}.
    "failed": NOW + """
local count = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local open = redis.call('HEXISTS', KEYS[1], 'opened_at') == 1
local opening = (open and redis.call('EXISTS', KEYS[2]) == 1) or (not open and count >= tonumber(ARGV[1]))
if open or opening then
  redis.call('HSET', KEYS[1], 'opened_at', now)
  redis.call('DEL', KEYS[2])
end
return {opening and 1 or 0, count, (open or opening) and 1 or 0}
""",
    # Reply: whether it was open.
    "succeeded": """
local was_open = redis.call('HEXISTS', KEYS[1], 'opened_at')
redis.call('DEL', KEYS[1], KEYS[2])
return was_open
""",
    # ARGV: this process's token. Reply: whether this process's probe was given back.
    "released": """
if redis.call('GET', KEYS[2]) == ARGV[1] then return redis.call('DEL', KEYS[2]) end
return 0
""",
}


class RedisBreaker(Breaker):
    """One provider's breaker shared by every process of every instance: the same states as
    LocalBreaker's, each step one Lua script on Redis's clock. The probe is a lease that expires
    after `probe_seconds`, so a probe whose process died cannot hold the provider. The two Redis
    keys share a hash tag, {provider}. While Redis fails, this process decides alone, with a
    LocalBreaker that starts closed (the breaker fails open), and asks Redis again later."""

    def __init__(self, provider, failures, seconds, client, prefix, probe_seconds):
        self.provider, self.failures, self.seconds = provider, failures, seconds
        tag = f"{prefix}:breaker:{{{provider}}}"
        self.keys, self.token = [tag, f"{tag}:probe"], uuid.uuid4().hex  # token: the probes of this process
        self.cool_down_ms, self.probe_ms = round(seconds * 1000), max(1, round(probe_seconds * 1000))
        self.scripts = {step: client.register_script(source) for step, source in SCRIPTS.items()}
        self.outage, self.local = Outage(f"the circuit breaker for {provider} decides per process"), None
        self.gauge = BREAKER_OPEN.labels(provider)
        self.gauge.set(0)

    def admit(self):
        reply = self._shared("admit", self.cool_down_ms, self.probe_ms, self.token)
        if reply is None:
            return self.local.admit()
        admitted, is_open = reply
        self.gauge.set(is_open)
        if admitted and is_open:
            _probing(self.provider)
        return admitted == 1

    def would_admit(self):
        reply = self._shared("admit", self.cool_down_ms, 0, self.token)
        if reply is None:
            return self.local.would_admit()
        self.gauge.set(reply[1])
        return reply[0] == 1

    def succeeded(self):
        reply = self._shared("succeeded")
        if reply is None:
            self.local.succeeded()
        elif reply == 1:
            _closed(self.provider)
        else:
            self.gauge.set(0)

    def failed(self):
        reply = self._shared("failed", self.failures)
        if reply is None:
            self.local.failed()
            return
        opening, consecutive, is_open = reply
        if opening:
            _opened(self.provider, consecutive, self.seconds)
        else:
            self.gauge.set(is_open)

    def released(self):
        if self._shared("released", self.token) is None:
            self.local.released()

    def _shared(self, step, *args):
        """The script's reply, or None while Redis fails (then `self.local` decides)."""
        if self.outage.ongoing:
            return None
        try:
            reply = self.scripts[step](keys=self.keys, args=args)
        except RedisError as error:
            if self.outage.began(error):
                self.local = LocalBreaker(self.provider, self.failures, self.seconds)
            return None
        self.outage.ended()
        return reply


def _probing(provider):
    log.info("circuit breaker for %s: probing it with one call", provider)


def _opened(provider, consecutive, seconds):
    BREAKER_OPEN.labels(provider).set(1)
    log.warning("circuit breaker for %s opened after %d consecutive failed calls: skipping it for %gs",
                provider, consecutive, seconds)


def _closed(provider):
    BREAKER_OPEN.labels(provider).set(0)
    log.warning("circuit breaker for %s closed: it answered again", provider)


def breaker_for(provider, settings, redis=None):
    """The breaker of the provider named `provider` (GATEWAY_BREAKER_FAILURES and
    GATEWAY_BREAKER_SECONDS; no failures count means no breaker): shared through `redis`, the
    process's client of GATEWAY_REDIS_URL, else this process's own. A probe lasts at most its
    request's UPSTREAM_TIMEOUT, so that is its lease."""
    if not settings.breaker_failures:
        return Breaker()
    if redis is not None:
        return RedisBreaker(provider, settings.breaker_failures, settings.breaker_seconds, redis,
                            settings.redis_prefix, settings.upstream_timeout)
    return LocalBreaker(provider, settings.breaker_failures, settings.breaker_seconds)
