"""The Redis that several instances share (GATEWAY_REDIS_URL, docs/running-several-instances.md):
one client per process, for whatever holds state there (the rate counters, gateway/counters.py)."""


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
