"""Per-key limits, budgets and the usage ledger (docs/keys-and-budgets.md). A request is admitted
before any upstream call: its key's policy allows the model, its rate windows (`rpm`, `ipm`) and
concurrency (`max_concurrent`) have room, and its budget can hold the request's estimated cost,
which is reserved; when the request ends its lease is released and its reservation settled with
the real cost, in the same transaction as its ledger row. The counters live in the database
(exact across every worker and every instance that shares it); the budget and the ledger too."""
import logging
import math
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, delete, func, insert, select

from .errors import GatewayError, InvalidRequest
from .keys import naive
from .metrics import LEDGER_ERRORS, LIMITER_ERRORS
from .store import StoreUnavailable, leases, ledger, rate_buckets, reservations, spend

log = logging.getLogger(__name__)

WINDOW = 60.0  # seconds: rpm and ipm are moving windows of one minute
CONCURRENCY_RETRY_AFTER = 5  # seconds: when a call in flight ends cannot be known
MICRO = 1_000_000
BACKLOG = 10_000  # ledger rows kept in memory while the database is unreachable


def micro_usd(usd):
    return round((usd or 0.0) * MICRO)


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
    windows: list
    lease: str | None = None
    local: bool = False  # counted by this process alone (the shared store was down)


class SqlCounters:
    """Rate windows (a row per key and second) and concurrency leases in the database, checked
    and counted inside the caller's transaction, which holds the key's lock."""

    def __init__(self, store, lease_seconds):
        self.lease_seconds = lease_seconds
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
        self.release = delete(leases).where(lease.id == bindparam("id"))

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
        return Grant(windows, lease)

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
            while buckets and buckets[0][0] <= math.floor(now) - WINDOW:
                buckets.popleft()
            windows = decide(policy, list(buckets), self.held[name], n, now)
            if policy.limits_rate:
                if buckets and buckets[-1][0] == math.floor(now):
                    buckets[-1] = (buckets[-1][0], buckets[-1][1] + 1, buckets[-1][2] + n)
                else:
                    buckets.append((math.floor(now), 1, n))
            concurrent = policy.max_concurrent is not None
            self.held[name] += n if concurrent else 0
        return Grant(windows, str(n) if concurrent else None, local=True)

    def release(self, name, lease):
        with self.lock:
            self.held[name] -= int(lease)


def period_start(period, today):
    """The first day (YYYY-MM-DD) a budget period counts: today, this month's first, or ever."""
    if period == "day":
        return today.isoformat()
    if period == "month":
        return today.replace(day=1).isoformat()
    return "0000-00-00"


def period_end(period, today):
    """When the period resets, as RFC 3339, or None for a budget that never resets."""
    if period == "day":
        return (today + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
    if period == "month":
        year, month = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
        return f"{year:04d}-{month:02d}-01T00:00:00Z"
    return None


class BudgetSpent(GatewayError):
    def __init__(self, message):
        super().__init__(429, message, {"x-should-retry": "false"}, code="insufficient_quota")


@dataclass
class Entry:
    """One image request's ledger row."""
    request_id: str
    created_at: datetime
    key_name: str
    model: str
    n_requested: int
    providers: str = ""
    n_made: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    status: int = 200
    duration_ms: int = 0

    def row(self):
        values = {name: getattr(self, name) for name in (
            "request_id", "key_name", "model", "providers", "n_requested", "n_made", "input_tokens",
            "output_tokens", "status", "duration_ms")}
        return {**values, "created_at": naive(self.created_at), "day": self.created_at.date().isoformat(),
                "micro_usd": micro_usd(self.cost_usd), "providers": self.providers[:128]}


class Ledger:
    """Budgets, settlements and the ledger in the database, with their statements built once."""

    def __init__(self, store, reservation_seconds):
        self.reservation_seconds = reservation_seconds
        held, name, now = reservations.c, bindparam("name"), bindparam("now")
        self.expired = delete(reservations).where(held.key_name == name, held.expires_at <= now)
        reserved = select(func.coalesce(func.sum(held.micro_usd), 0)).where(held.key_name == name,
                                                                            held.expires_at > now)
        self.balance = select(spent_query().scalar_subquery(), reserved.scalar_subquery())
        self.hold = insert(reservations).values(id=bindparam("id"), key_name=name, micro_usd=bindparam("micro"),
                                                expires_at=bindparam("expires"))
        self.release = delete(reservations).where(held.id == bindparam("id"))
        add = store.upsert(spend).values(key_name=name, day=bindparam("day"), micro_usd=bindparam("micro"))
        self.add_spend = add.on_conflict_do_update(index_elements=["key_name", "day"], set_={
            "micro_usd": spend.c.micro_usd + add.excluded.micro_usd})
        self.add_row = insert(ledger)

    def reserve(self, conn, client, estimate, now):
        """Hold `estimate` USD of the key's budget for a request (in the caller's transaction, which
        holds the key's lock): the reservation's id, or the 429 that says what was spent and when
        the budget resets."""
        policy, today, name = client.policy, datetime.now(UTC).date(), client.name
        spent, held = conn.execute(self.balance, {"name": name, "now": now,
                                                  "since": period_start(policy.budget_period, today)}).one()
        if spent + held + micro_usd(estimate) > micro_usd(policy.budget_usd):
            raise BudgetSpent(self._spent_message(policy, spent, held, estimate, today))
        reservation = uuid.uuid4().hex
        conn.execute(self.hold, {"id": reservation, "name": name, "micro": micro_usd(estimate),
                                 "expires": now + self.reservation_seconds})
        return reservation

    @staticmethod
    def _spent_message(policy, spent, held, estimate, today):
        resets = period_end(policy.budget_period, today)
        when = f"it resets at {resets}" if resets else "it does not reset"
        in_flight = f" (and ${held / MICRO:.6f} held by requests in flight)" if held else ""
        return (f"This API key's {policy.budget_period} budget of ${policy.budget_usd:.2f} is spent: "
                f"${spent / MICRO:.6f} used{in_flight}, and this request may cost up to ${estimate:.6f}; {when}.")

    def settle(self, conn, entry, reservation, now):
        """Release the reservation, add the real cost, write the ledger row, and delete the key's
        reservations that expired."""
        row = entry.row()
        if reservation is not None:
            conn.execute(self.release, {"id": reservation})
        conn.execute(self.expired, {"name": entry.key_name, "now": now})
        if row["micro_usd"]:
            conn.execute(self.add_spend, {"name": entry.key_name, "day": row["day"], "micro": row["micro_usd"]})
        conn.execute(self.add_row, row)


def spent_query():
    return select(func.coalesce(func.sum(spend.c.micro_usd), 0)).where(
        spend.c.key_name == bindparam("name"), spend.c.day >= bindparam("since"))


@dataclass
class Admission:
    """What admitting one request holds: its lease, its reservation, and its ledger row to fill.
    `finish` releases the lease as soon as the request's calls end; `settle` writes the rest, once,
    after the response has been sent (the HTTP layer calls it when the response closes)."""
    accounts: "Accounts"
    client: object
    grant: Grant | None
    reservation: str | None
    entry: Entry
    started: float = field(default_factory=time.monotonic)
    settled: bool = False

    @property
    def headers(self):
        return window_headers(self.grant.windows) if self.grant else {}

    def finish(self, images, usage, providers, status):
        """What the request really made and cost, and its lease released."""
        entry = self.entry
        entry.n_made, entry.providers, entry.status = images, providers, status
        entry.input_tokens, entry.output_tokens = usage.input_tokens, usage.output_tokens
        entry.cost_usd = usage.cost or 0.0
        entry.duration_ms = round((time.monotonic() - self.started) * 1000)
        if self.grant is not None and self.grant.lease is not None:
            self.accounts.release(self.client.name, self.grant)

    def settle(self):
        if not self.settled:
            self.settled = True
            self.accounts.settle(self)


class Accounts:
    """Admission and settlement of every image request, each one transaction under the key's lock.
    While the database fails (and for RETRY_SECONDS after), limits are counted per process
    (logged, gateway_limiter_errors_total), keys with a budget are refused with a 503 (or served,
    GATEWAY_BUDGET_FAIL_OPEN), and ledger rows wait in a bounded backlog."""
    RETRY_SECONDS = 5.0

    def __init__(self, store, settings):
        lease_seconds = settings.upstream_timeout + 60  # a dead instance's leases and reservations expire
        self.store, self.fail_open = store, settings.budget_fail_open
        self.counters, self.local = SqlCounters(store, lease_seconds), MemoryCounters()
        self.ledger = Ledger(store, lease_seconds)
        self.down_until, self.backlog, self.lock = 0.0, deque(maxlen=BACKLOG), threading.Lock()

    @property
    def store_failing(self):
        return time.monotonic() < self.down_until

    def admit(self, client, model, n, estimate, request_id):
        """Admit `client`'s request for `n` images of `model` costing up to `estimate` USD, or refuse it."""
        policy = client.policy
        if not policy.allows(model):
            raise GatewayError(403, f"This API key may not use the model {model.id!r}; it may use: "
                                    f"{', '.join(policy.models)}.", code="model_not_allowed")
        for limit, name in ((policy.ipm, "images per minute (ipm)"), (policy.max_concurrent, "calls in flight")):
            if limit is not None and n > limit:
                raise InvalidRequest.field("n", f"{n} is more than this API key's limit of {limit} {name}")
        grant = reservation = None
        if policy.counted or policy.budget_usd is not None:
            try:
                grant, reservation = self._take(client, n, estimate)
            except StoreUnavailable as error:
                grant, reservation = self._without_store(client, n, error)
        return Admission(self, client, grant, reservation,
                         Entry(request_id, datetime.now(UTC), client.name, model.id, n))

    def _take(self, client, n, estimate):
        if time.monotonic() < self.down_until:
            raise StoreUnavailable("failed moments ago")
        policy = client.policy

        def take(conn, now):
            grant = self.counters.acquire(conn, client.name, policy, n, now) if policy.counted else None
            reservation = (self.ledger.reserve(conn, client, estimate, now) if policy.budget_usd is not None
                           else None)
            return grant, reservation

        return self.store.run(take, client.name, durable=False)

    def _without_store(self, client, n, error):
        """Admission while the database fails: per-process limits, and the budget's rule."""
        if time.monotonic() >= self.down_until:
            self.down_until = time.monotonic() + self.RETRY_SECONDS
            log.error("the database failed (%s): limits count per process, budgets are %s, for %gs", error,
                      "not checked" if self.fail_open else "refused", self.RETRY_SECONDS)
        grant = None
        if client.policy.counted:
            LIMITER_ERRORS.inc()
            grant = self.local.acquire(client.name, client.policy, n)
        if client.policy.budget_usd is not None and not self.fail_open:
            if grant is not None:
                self.release(client.name, grant)
            raise GatewayError(503, "This API key has a budget and the gateway's budget store (its database) "
                                    "cannot be reached; try again shortly.", {"Retry-After": "5"})
        return grant, None

    def release(self, name, grant):
        """A request's concurrency lease, given back as soon as its calls end."""
        if grant.local:
            self.local.release(name, grant.lease)
            return
        try:
            self.store.run(lambda conn, now: conn.execute(self.counters.release, {"id": grant.lease}), name,
                           durable=False)
        except StoreUnavailable as error:  # it expires by itself
            LIMITER_ERRORS.inc()
            log.error("a concurrency lease could not be released (%s); it expires by itself", error)

    def settle(self, admission):
        """The request's settlement, with any that waited for the database before it."""
        with self.lock:
            self.backlog.append((admission.entry, admission.reservation))
            pending = list(self.backlog)
            self.backlog.clear()
        try:
            while pending:
                entry, reservation = pending[0]

                def write(conn, now, entry=entry, reservation=reservation):
                    self.ledger.settle(conn, entry, reservation, now)
                    self.counters.forget(conn, entry.key_name, now)

                self.store.run(write, entry.key_name)
                pending.pop(0)
        except StoreUnavailable as error:
            LEDGER_ERRORS.inc()
            log.error("ledger rows could not be written (%s); %d kept to write later", error, len(pending))
            with self.lock:
                self.backlog.extendleft(reversed(pending))


GROUPS = {"key": ledger.c.key_name, "model": ledger.c.model, "provider": ledger.c.providers, "day": ledger.c.day}


def usage(store, group_by, key=None, model=None, since=None, until=None):
    """The ledger summed per group (`group_by`: names from GROUPS), filtered by key, model and time."""
    columns = [GROUPS[name].label(name) for name in group_by]
    query = select(*columns, func.count().label("requests"), func.coalesce(func.sum(ledger.c.n_made), 0)
                   .label("images"), func.coalesce(func.sum(ledger.c.micro_usd), 0).label("micro_usd"))
    for column, value in ((ledger.c.key_name, key), (ledger.c.model, model)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(ledger.c.created_at >= naive(since))
    if until is not None:
        query = query.where(ledger.c.created_at < naive(until))
    query = query.group_by(*columns).order_by(*columns)
    with store.read() as conn:
        rows = conn.execute(query).mappings().all()
    return [{**{name: row[name] for name in group_by}, "requests": row["requests"], "images": int(row["images"]),
             "cost_usd": round(int(row["micro_usd"]) / MICRO, 6)} for row in rows]


def spent_usd(store, name, period):
    """What a key spent in its budget's current period (all time without one), in USD."""
    since = period_start(period or "total", datetime.now(UTC).date())
    with store.read() as conn:
        micro = conn.scalar(spent_query(), {"name": name, "since": since})
    return round(int(micro) / MICRO, 6)
