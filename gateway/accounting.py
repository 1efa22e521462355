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

from sqlalchemy import delete, func, insert, select

from .errors import GatewayError, InvalidRequest
from .keys import naive
from .metrics import LEDGER_ERRORS, LIMITER_ERRORS
from .store import StoreUnavailable, leases, ledger, rate_hits, reservations, spend

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


def decide(policy, hits, held, n, now):
    """The windows after admitting a request of `n` images, or the RateLimited refusal. `hits` are
    the (time, images) admitted in the last minute, oldest first; `held` the calls in flight."""
    waits, windows, used = [], [], sum(images for _, images in hits)
    oldest = hits[0][0] if hits else now
    if policy.rpm is not None:
        if len(hits) + 1 > policy.rpm:
            waits.append((hits[len(hits) - policy.rpm][0] + WINDOW - now, f"{policy.rpm} requests per minute"))
        windows.append(("requests", Window(policy.rpm, max(0, policy.rpm - len(hits) - 1), oldest + WINDOW - now)))
    if policy.ipm is not None:
        if used + n > policy.ipm:
            excess, leaving = used + n - policy.ipm, now
            for at, images in hits:
                excess, leaving = excess - images, at
                if excess <= 0:
                    break
            waits.append((leaving + WINDOW - now, f"{policy.ipm} images per minute"))
        windows.append(("images", Window(policy.ipm, max(0, policy.ipm - used - n), oldest + WINDOW - now)))
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
    local: bool = False  # counted by the per-process fallback


class SqlCounters:
    """Rate windows and concurrency leases in the database, one key's at a time under its lock."""

    def __init__(self, store, lease_seconds):
        self.store, self.lease_seconds = store, lease_seconds

    def acquire(self, name, policy, n):
        with self.store.write(name) as conn:
            now = self.store.now(conn)
            hits, held = [], 0
            if policy.limits_rate:
                conn.execute(delete(rate_hits).where(rate_hits.c.key_name == name, rate_hits.c.at <= now - WINDOW))
                hits = [tuple(row) for row in conn.execute(
                    select(rate_hits.c.at, rate_hits.c.images).where(rate_hits.c.key_name == name)
                    .order_by(rate_hits.c.at))]
            if policy.max_concurrent is not None:
                conn.execute(delete(leases).where(leases.c.key_name == name, leases.c.expires_at <= now))
                held = conn.scalar(select(func.coalesce(func.sum(leases.c.calls), 0))
                                   .where(leases.c.key_name == name))
            windows = decide(policy, hits, held, n, now)
            if policy.limits_rate:
                conn.execute(insert(rate_hits).values(key_name=name, at=now, images=n))
            lease = None
            if policy.max_concurrent is not None:
                lease = uuid.uuid4().hex
                conn.execute(insert(leases).values(id=lease, key_name=name, calls=n,
                                                   expires_at=now + self.lease_seconds))
        return Grant(windows, lease)

    def release(self, name, lease):
        with self.store.write() as conn:
            conn.execute(delete(leases).where(leases.c.id == lease))


class MemoryCounters:
    """The same windows and leases in this process only: the fallback while the shared store
    cannot be reached (each worker then applies the key's whole limit)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.hits, self.held = defaultdict(deque), defaultdict(int)

    def acquire(self, name, policy, n):
        with self.lock:
            now, hits = time.time(), self.hits[name]
            while hits and hits[0][0] <= now - WINDOW:
                hits.popleft()
            windows = decide(policy, list(hits), self.held[name], n, now)
            if policy.limits_rate:
                hits.append((now, n))
            self.held[name] += n if policy.max_concurrent is not None else 0
        return Grant(windows, f"{n}" if policy.max_concurrent is not None else None, local=True)

    def release(self, name, lease):
        with self.lock:
            self.held[name] -= int(lease)


class Counters:
    """The shared counters, falling back to per-process counting (with a log line and
    gateway_limiter_errors_total) while the shared store fails."""

    def __init__(self, shared, retry_seconds=5.0):
        self.shared, self.local, self.retry_seconds = shared, MemoryCounters(), retry_seconds
        self.down_until = 0.0

    def acquire(self, name, policy, n):
        if time.monotonic() >= self.down_until:
            try:
                return self.shared.acquire(name, policy, n)
            except StoreUnavailable as error:
                self.down_until = time.monotonic() + self.retry_seconds
                LIMITER_ERRORS.inc()
                log.error("the shared limit counters failed (%s); counting per process for %gs", error,
                          self.retry_seconds)
        return self.local.acquire(name, policy, n)

    def release(self, name, grant):
        if grant.lease is None:
            return
        try:
            (self.local if grant.local else self.shared).release(name, grant.lease)
        except StoreUnavailable as error:  # the lease expires on its own
            LIMITER_ERRORS.inc()
            log.error("a concurrency lease could not be released (%s); it expires by itself", error)


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
    """Budgets and the ledger in the database. A row that cannot be written waits in a bounded
    backlog and is written with the next one that can."""

    def __init__(self, store, reservation_seconds, fail_open):
        self.store, self.reservation_seconds, self.fail_open = store, reservation_seconds, fail_open
        self.backlog, self.lock = deque(maxlen=BACKLOG), threading.Lock()

    @staticmethod
    def spent(conn, name, period, today):
        return conn.scalar(select(func.coalesce(func.sum(spend.c.micro_usd), 0))
                           .where(spend.c.key_name == name, spend.c.day >= period_start(period, today)))

    def reserve(self, client, estimate):
        """Hold `estimate` USD of the key's budget for a request; its id, or the 429 that says
        what was spent and when the budget resets."""
        policy, today = client.policy, datetime.now(UTC).date()
        try:
            with self.store.write(client.name) as conn:
                now = self.store.now(conn)
                conn.execute(delete(reservations).where(reservations.c.key_name == client.name,
                                                        reservations.c.expires_at <= now))
                spent = self.spent(conn, client.name, policy.budget_period, today)
                held = conn.scalar(select(func.coalesce(func.sum(reservations.c.micro_usd), 0))
                                   .where(reservations.c.key_name == client.name))
                if spent + held + micro_usd(estimate) > micro_usd(policy.budget_usd):
                    raise BudgetSpent(self._spent_message(policy, spent, held, estimate, today))
                reservation = uuid.uuid4().hex
                conn.execute(insert(reservations).values(id=reservation, key_name=client.name,
                                                         micro_usd=micro_usd(estimate),
                                                         expires_at=now + self.reservation_seconds))
                return reservation
        except StoreUnavailable:
            if self.fail_open:
                log.error("the budget store cannot be reached; serving %s without its budget "
                          "(GATEWAY_BUDGET_FAIL_OPEN)", client.name)
                return None
            raise GatewayError(503, "This API key has a budget and the gateway's budget store (its database) "
                                    "cannot be reached; try again shortly.", {"Retry-After": "5"}) from None

    @staticmethod
    def _spent_message(policy, spent, held, estimate, today):
        resets = period_end(policy.budget_period, today)
        when = f"it resets at {resets}" if resets else "it does not reset"
        in_flight = f" (and ${held / MICRO:.6f} held by requests in flight)" if held else ""
        return (f"This API key's {policy.budget_period} budget of ${policy.budget_usd:.2f} is spent: "
                f"${spent / MICRO:.6f} used{in_flight}, and this request may cost up to ${estimate:.6f}; {when}.")

    def record(self, entry, reservation=None):
        """Settle the reservation with the real cost and write the ledger row, in one transaction."""
        with self.lock:
            self.backlog.append((entry, reservation))
            pending = list(self.backlog)
            self.backlog.clear()
        try:
            while pending:
                self._write(*pending[0])
                pending.pop(0)
        except StoreUnavailable as error:
            LEDGER_ERRORS.inc()
            log.error("ledger rows could not be written (%s); %d kept to write later", error, len(pending))
            with self.lock:
                self.backlog.extendleft(reversed(pending))

    def _write(self, entry, reservation):
        row = entry.row()
        with self.store.write(entry.key_name) as conn:
            if reservation is not None:
                conn.execute(delete(reservations).where(reservations.c.id == reservation))
            if row["micro_usd"]:
                upsert = self.store.upsert(spend).values(key_name=entry.key_name, day=row["day"],
                                                         micro_usd=row["micro_usd"])
                conn.execute(upsert.on_conflict_do_update(
                    index_elements=["key_name", "day"], set_={"micro_usd": spend.c.micro_usd + row["micro_usd"]}))
            conn.execute(insert(ledger).values(**row))


@dataclass
class Admission:
    """What admitting one request holds: its lease, its reservation, and its ledger row to fill."""
    accounts: "Accounts"
    client: object
    grant: Grant | None
    reservation: str | None
    entry: Entry
    started: float = field(default_factory=time.monotonic)

    @property
    def headers(self):
        return window_headers(self.grant.windows) if self.grant else {}

    def finish(self, images, usage, providers, status):
        """Release the lease and settle the budget with what the request really made and cost."""
        if self.grant is not None:
            self.accounts.counters.release(self.client.name, self.grant)
        entry = self.entry
        entry.n_made, entry.providers, entry.status = images, providers, status
        entry.input_tokens, entry.output_tokens = usage.input_tokens, usage.output_tokens
        entry.cost_usd = usage.cost or 0.0
        entry.duration_ms = round((time.monotonic() - self.started) * 1000)
        self.accounts.ledger.record(entry, self.reservation)


class Accounts:
    """Admission and accounting for every image request."""

    def __init__(self, store, settings):
        lease_seconds = settings.upstream_timeout + 60  # a dead instance's leases and reservations expire
        self.counters = Counters(SqlCounters(store, lease_seconds))
        self.ledger = Ledger(store, lease_seconds, settings.budget_fail_open)

    def admit(self, client, model, n, estimate, request_id):
        """Admit `client`'s request for `n` images of `model` costing up to `estimate` USD, or refuse it."""
        policy = client.policy
        if not policy.allows(model):
            raise GatewayError(403, f"This API key may not use the model {model.id!r}; it may use: "
                                    f"{', '.join(policy.models)}.", code="model_not_allowed")
        for limit, name in ((policy.ipm, "images per minute (ipm)"), (policy.max_concurrent, "calls in flight")):
            if limit is not None and n > limit:
                raise InvalidRequest.field("n", f"{n} is more than this API key's limit of {limit} {name}")
        grant = self.counters.acquire(client.name, policy, n) if policy.counted else None
        reservation = None
        if policy.budget_usd is not None:
            try:
                reservation = self.ledger.reserve(client, estimate)
            except GatewayError:
                if grant is not None:
                    self.counters.release(client.name, grant)
                raise
        entry = Entry(request_id, datetime.now(UTC), client.name, model.id, n)
        return Admission(self, client, grant, reservation, entry)


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
    with store.read() as conn:
        micro = Ledger.spent(conn, name, period or "total", datetime.now(UTC).date())
    return round(int(micro) / MICRO, 6)
