"""Per-key rate and concurrency limits (docs/keys-and-budgets.md): `rpm` and `ipm` as moving
windows of per-second buckets, `max_concurrent` as leases that expire. Counted in the database
(SqlCounters, inside the admission's transaction), in Redis (RedisCounters, one Lua script per
admission, for several instances), or in this process only (MemoryCounters: the fallback while
the shared store fails). The decision itself is one pure function, `decide`."""
import math
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, func, insert, select

from .errors import GatewayError
from .store import leases, rate_buckets

WINDOW = 60  # seconds: rpm and ipm are moving windows of one minute
CONCURRENCY_RETRY_AFTER = 5  # seconds: when a call in flight ends cannot be known


def reset_text(seconds):
    """OpenAI's duration format for x-ratelimit-reset-*: `1s`, `6m0s`, `250ms`."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    minutes, whole = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{whole}s" if minutes else f"{whole}s"


@dataclass(frozen=True)
class Window:
    """A rate window's state after a request: for the x-ratelimit-* headers."""
    limit: int
    remaining: int
    reset: float  # seconds until its oldest counted request leaves the window


class RateLimited(GatewayError):
    def __init__(self, message, wait, windows=()):
        headers = {"Retry-After": str(min(60, max(1, math.ceil(wait)))), **window_headers(windows)}
        super().__init__(429, message, headers, code="rate_limit_exceeded")


RATE_LIMIT_HEADERS = [f"x-ratelimit-{part}-{kind}" for kind in ("requests", "images")
                      for part in ("limit", "remaining", "reset")]


def window_headers(windows):
    headers = {}
    for kind, window in windows:
        headers.update({f"x-ratelimit-limit-{kind}": str(window.limit),
                        f"x-ratelimit-remaining-{kind}": str(window.remaining),
                        f"x-ratelimit-reset-{kind}": reset_text(window.reset)})
    return headers


def decide(policy, buckets, held, n, now):
    """The windows after admitting a request of `n` images, or the RateLimited refusal. `buckets`
    are the (second, requests, images) counted in the last minute, oldest first; `held` the calls
    in flight. A bucket leaves the window 60 s after its second began."""
    waits, windows = [], []
    requests, images = sum(bucket[1] for bucket in buckets), sum(bucket[2] for bucket in buckets)
    reset = (buckets[0][0] if buckets else now) + WINDOW - now

    def leaving(excess, column):
        """Seconds until the oldest buckets holding `excess` of `column` have left the window."""
        for bucket in buckets:
            excess -= bucket[column]
            if excess <= 0:
                return bucket[0] + WINDOW - now
        return WINDOW

    if policy.rpm is not None:
        if requests + 1 > policy.rpm:
            waits.append((leaving(requests + 1 - policy.rpm, 1), f"{policy.rpm} requests per minute"))
        windows.append(("requests", Window(policy.rpm, max(0, policy.rpm - requests - 1), reset)))
    if policy.ipm is not None:
        if images + n > policy.ipm:
            waits.append((leaving(images + n - policy.ipm, 2), f"{policy.ipm} images per minute"))
        windows.append(("images", Window(policy.ipm, max(0, policy.ipm - images - n), reset)))
    if policy.max_concurrent is not None and held + n > policy.max_concurrent:
        waits.append((CONCURRENCY_RETRY_AFTER, f"{policy.max_concurrent} image calls in flight ({held} running)"))
    if waits:
        wait = max(seconds for seconds, _ in waits)
        reasons = " and ".join(reason for _, reason in waits)
        raise RateLimited(f"Rate limit reached for this API key: {reasons}. Try again in {math.ceil(wait)} s.",
                          wait, [(kind, Window(w.limit, 0, w.reset)) for kind, w in windows])
    return windows


@dataclass
class Grant:
    """What admitting a request counted: its windows (for the headers), and what undoing or
    releasing it needs: the counter that took it, the second it was counted in, its lease."""
    windows: list
    counter: object
    second: int
    n: int
    lease: str | None = None

    def release(self, name):
        """Give back the concurrency lease, as soon as the request's calls end."""
        if self.lease is not None:
            self.counter.release(name, self)


class SqlCounters:
    """Rate windows (a row per key and second) and concurrency leases in the database, checked
    and counted inside the caller's transaction, which holds the key's lock."""

    def __init__(self, store, lease_seconds):
        self.store, self.lease_seconds = store, lease_seconds
        bucket, lease = rate_buckets.c, leases.c
        name, since = bindparam("name"), bindparam("since")
        self.buckets = select(bucket.second, bucket.requests, bucket.images).where(
            bucket.key_name == name, bucket.second > since).order_by(bucket.second)
        self.old_buckets = delete(rate_buckets).where(bucket.key_name == name, bucket.second <= since)
        count = store.upsert(rate_buckets).values(key_name=name, second=bindparam("second"), requests=1,
                                                  images=bindparam("n"))
        self.count = count.on_conflict_do_update(index_elements=["key_name", "second"], set_={
            "requests": bucket.requests + 1, "images": bucket.images + count.excluded.images})
        self.held = select(func.coalesce(func.sum(lease.calls), 0)).where(lease.key_name == name,
                                                                          lease.expires_at > bindparam("now"))
        self.old_leases = delete(leases).where(lease.key_name == name, lease.expires_at <= bindparam("now"))
        self.lease = insert(leases).values(id=bindparam("id"), key_name=name, calls=bindparam("n"),
                                           expires_at=bindparam("expires"))
        self.release_lease = delete(leases).where(lease.id == bindparam("id"))

    def acquire(self, conn, name, policy, n, now):
        buckets, held = [], 0
        if policy.limits_rate:
            buckets = [tuple(row) for row in conn.execute(self.buckets, {"name": name,
                                                                         "since": math.floor(now) - WINDOW})]
        if policy.max_concurrent is not None:
            held = conn.scalar(self.held, {"name": name, "now": now})
        windows = decide(policy, buckets, held, n, now)
        if policy.limits_rate:
            conn.execute(self.count, {"name": name, "second": math.floor(now), "n": n})
        lease = None
        if policy.max_concurrent is not None:
            lease = uuid.uuid4().hex
            conn.execute(self.lease, {"id": lease, "name": name, "n": n, "expires": now + self.lease_seconds})
        return Grant(windows, self, math.floor(now), n, lease)

    def release(self, name, grant):
        self.store.run(lambda conn, now: conn.execute(self.release_lease, {"id": grant.lease}), name, durable=False)

    def forget(self, conn, name, now):
        """Delete the key's buckets that left the window and its leases that expired."""
        conn.execute(self.old_buckets, {"name": name, "since": math.floor(now) - WINDOW})
        conn.execute(self.old_leases, {"name": name, "now": now})


class MemoryCounters:
    """The same windows and leases in this process only: the fallback while the shared store
    cannot be reached (each worker then applies the key's whole limit)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.buckets, self.held = defaultdict(deque), defaultdict(int)

    def acquire(self, name, policy, n):
        with self.lock:
            now, buckets = time.time(), self.buckets[name]
            second = math.floor(now)
            while buckets and buckets[0][0] <= second - WINDOW:
                buckets.popleft()
            windows = decide(policy, list(buckets), self.held[name], n, now)
            if policy.limits_rate:
                self._add(buckets, second, 1, n)
            lease = "held" if policy.max_concurrent is not None else None
            self.held[name] += n if lease else 0
        return Grant(windows, self, second, n, lease)

    @staticmethod
    def _add(buckets, second, requests, images):
        last = buckets[-1] if buckets else None
        if last is not None and last[0] == second:
            buckets[-1] = (second, last[1] + requests, last[2] + images)
        else:
            buckets.append((second, requests, images))

    def release(self, name, grant):
        with self.lock:
            self.held[name] -= grant.n

    def undo(self, name, grant, policy):
        """Take back what `acquire` counted (the request was refused after all)."""
        with self.lock:
            buckets = self.buckets[name]
            for index, (second, requests, images) in enumerate(buckets):
                if second == grant.second and policy.limits_rate:
                    buckets[index] = (second, requests - 1, images - grant.n)
            if grant.lease is not None:
                self.held[name] -= grant.n


ACQUIRE = """
local time = redis.call('TIME')
local now, second = tonumber(time[1]) + tonumber(time[2]) / 1000000, tonumber(time[1])
local rpm, ipm, most, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local lease_seconds, window = tonumber(ARGV[6]), tonumber(ARGV[7])
local buckets, requests, images, held = {}, 0, 0, 0
if rpm > 0 or ipm > 0 then
  local counted = redis.call('HGETALL', KEYS[1])
  for i = 1, #counted, 2 do
    local at = tonumber(counted[i])
    if at > second - window then
      local made = tonumber(redis.call('HGET', KEYS[2], counted[i]) or '0')
      requests, images = requests + tonumber(counted[i + 1]), images + made
      table.insert(buckets, at); table.insert(buckets, tonumber(counted[i + 1])); table.insert(buckets, made)
    else
      redis.call('HDEL', KEYS[1], counted[i]); redis.call('HDEL', KEYS[2], counted[i])
    end
  end
end
if most > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  for _, lease in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    held = held + tonumber(string.match(lease, ':(%d+)$'))
  end
end
local admitted = (rpm == 0 or requests + 1 <= rpm) and (ipm == 0 or images + n <= ipm)
  and (most == 0 or held + n <= most)
if admitted then
  if rpm > 0 or ipm > 0 then
    redis.call('HINCRBY', KEYS[1], second, 1); redis.call('HINCRBY', KEYS[2], second, n)
    redis.call('EXPIRE', KEYS[1], 2 * window); redis.call('EXPIRE', KEYS[2], 2 * window)
  end
  if most > 0 then
    redis.call('ZADD', KEYS[3], now + lease_seconds, ARGV[5] .. ':' .. n)
    redis.call('EXPIRE', KEYS[3], math.ceil(lease_seconds) + window)
  end
end
local reply = {admitted and 1 or 0, tostring(now), held}
for _, value in ipairs(buckets) do table.insert(reply, value) end
return reply
"""
UNDO = """
if ARGV[1] ~= '' then
  redis.call('HINCRBY', KEYS[1], ARGV[1], -1); redis.call('HINCRBY', KEYS[2], ARGV[1], -tonumber(ARGV[2]))
end
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[3], ARGV[3]) end
"""


class RedisCounters:
    """The windows and leases in Redis, shared by every instance: one Lua script checks and counts
    atomically on Redis's own clock. A key's three Redis keys share a hash tag, {name}, so they
    live in one slot of a Redis Cluster."""

    def __init__(self, client, prefix, lease_seconds):
        self.redis, self.prefix, self.lease_seconds = client, prefix, lease_seconds
        self.acquire_script, self.undo_script = client.register_script(ACQUIRE), client.register_script(UNDO)

    def keys(self, name):
        tag = f"{self.prefix}:{{{name}}}"
        return [f"{tag}:requests", f"{tag}:images", f"{tag}:leases"]

    def acquire(self, name, policy, n):
        lease = uuid.uuid4().hex if policy.max_concurrent is not None else ""
        reply = self.acquire_script(keys=self.keys(name), args=[
            policy.rpm or 0, policy.ipm or 0, policy.max_concurrent or 0, n, lease, self.lease_seconds, WINDOW])
        admitted, now, held, flat = int(reply[0]), float(reply[1]), int(reply[2]), [int(v) for v in reply[3:]]
        buckets = sorted(zip(flat[0::3], flat[1::3], flat[2::3], strict=True))
        windows = decide(policy, buckets, held, n, now)  # refuses exactly when the script did
        if not admitted:  # the script and `decide` apply the same rules; this is only a guard
            raise RateLimited("Rate limit reached for this API key.", CONCURRENCY_RETRY_AFTER)
        return Grant(windows, self, math.floor(now), n, f"{lease}:{n}" if lease else None)

    def release(self, name, grant):
        self.redis.zrem(self.keys(name)[2], grant.lease)

    def undo(self, name, grant, policy):
        self.undo_script(keys=self.keys(name), args=[grant.second if policy.limits_rate else "", grant.n,
                                                     grant.lease or ""])


def shared_counters(client, settings):
    """RedisCounters on the process's Redis client (gateway/shared.py), or None without one (the
    database counts); a Redis that fails is handled by Accounts (gateway/accounting.py)."""
    return None if client is None else RedisCounters(client, settings.redis_prefix, settings.upstream_timeout + 60)
