"""Routing that remembers (docs/providers.md#circuit-breakers): a provider whose calls keep failing
in a way that fails over is skipped for a cool-down, so the requests after the first few go
straight to the next provider instead of spending their retries and time on it. Then one call
probes it; a success closes the breaker, a failure opens it for another cool-down.

State is per process, behind the small interface of `Breaker` (`admit`, `succeeded`, `failed`,
`released`), so a shared implementation (Redis, like the rate counters) can replace `LocalBreaker`
without touching the failover loop."""
import logging
import threading
import time

from .metrics import BREAKER_OPEN

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
                log.info("circuit breaker for %s: probing it with one call", self.provider)
                return True
            return False

    def would_admit(self):
        with self.lock:
            return self.state == CLOSED or (self.state == OPEN and self._cooled_down())

    def succeeded(self):
        with self.lock:
            reopened, self.state, self.consecutive = self.state != CLOSED, CLOSED, 0
        if reopened:
            BREAKER_OPEN.labels(self.provider).set(0)
            log.warning("circuit breaker for %s closed: it answered again", self.provider)

    def failed(self):
        with self.lock:
            self.consecutive += 1
            opening = self.state == PROBING or (self.state == CLOSED and self.consecutive >= self.failures)
            if self.state != CLOSED or opening:  # a failure while open starts the cool-down again
                self.state, self.opened_at = OPEN, self.clock()
        if opening:
            BREAKER_OPEN.labels(self.provider).set(1)
            log.warning("circuit breaker for %s opened after %d consecutive failed calls: skipping it for %gs",
                        self.provider, self.consecutive, self.seconds)

    def released(self):
        with self.lock:
            if self.state == PROBING:  # no verdict: the next call may probe
                self.state = OPEN

    def _cooled_down(self):
        return self.clock() - self.opened_at >= self.seconds


def breaker_for(provider, settings):
    """The breaker of the provider named `provider` in this process (GATEWAY_BREAKER_FAILURES and
    GATEWAY_BREAKER_SECONDS; no failures count means no breaker)."""
    if not settings.breaker_failures:
        return Breaker()
    return LocalBreaker(provider, settings.breaker_failures, settings.breaker_seconds)
