"""The Redis that several instances share (GATEWAY_REDIS_URL, docs/running-several-instances.md):
one client per process for the rate counters (gateway/counters.py), the circuit breakers
(gateway/breaker.py) and the managed keys' changes (gateway/keys.py). Redis is never needed to
serve: each of them works per process while it fails, and asks it again a few seconds later."""
import logging
import time

log = logging.getLogger(__name__)


def shared_redis(settings):
    """The process's Redis client, or None without GATEWAY_REDIS_URL. Short timeouts and no
    retries: a Redis that does not answer costs a request at most 0.25 s before its users work
    per process for a few seconds."""
    if not settings.redis_url:
        return None
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(settings.redis_url, socket_connect_timeout=0.25, socket_timeout=0.25,
                                retry=Retry(NoBackoff(), 0), health_check_interval=0)


class Outage:
    """How one user of Redis lives with it failing: after a failure it works per process for
    RETRY_SECONDS before asking Redis again, and logs once per outage (again only after Redis
    has answered in between)."""
    RETRY_SECONDS = 5.0

    def __init__(self, consequence):
        self.consequence, self.until, self.logged = consequence, 0.0, False

    @property
    def ongoing(self):
        return time.monotonic() < self.until

    def began(self, error):
        """Redis failed: True when this starts an outage (it answered since the last failure)."""
        starting, self.logged = not self.logged, True
        if starting:
            log.error("Redis failed (%s): %s, asking it again every %gs", error, self.consequence,
                      self.RETRY_SECONDS)
        self.until = time.monotonic() + self.RETRY_SECONDS
        return starting

    def ended(self):
        """Redis answered."""
        self.logged = False
