"""Budgets, admission and the usage ledger (docs/keys-and-budgets.md). A request is admitted
before any upstream call: its key's policy allows the model, its rate windows and concurrency
have room (gateway/counters.py), and its budget can hold the request's estimated cost, which is
reserved; when its calls end its lease is released, and once its response is sent its
reservation is settled with the real cost in the same transaction as its ledger row (queued, and
written with the others queued in the same few milliseconds by one writer per process)."""
import logging
import os
import threading
import time
import uuid
import weakref
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from redis.exceptions import RedisError
from sqlalchemy import bindparam, delete, func, insert, select

from .counters import Grant, MemoryCounters, SqlCounters, window_headers
from .errors import GatewayError, InvalidRequest
from .keys import naive
from .metrics import LEDGER_ERRORS, LIMITER_ERRORS
from .store import StoreUnavailable, ledger, reservations, spend

log = logging.getLogger(__name__)

MICRO = 1_000_000
BACKLOG = 10_000  # ledger rows kept in memory while the database is unreachable


def micro_usd(usd):
    return round((usd or 0.0) * MICRO)


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

    def settle(self, conn, settlements, now):
        """For each (ledger row, reservation): release the reservation, add the real cost, write the
        row; and delete the keys' reservations that expired. It needs no lock on a key: `reserve`
        reads the spend and the reservations in one statement, which sees this whole transaction or
        none of it. Keys and days go in sorted order, so two workers' transactions take
        PostgreSQL's spend row locks in the same order (one that still meets another's over an
        expired reservation is aborted by PostgreSQL and retried RETRY_SECONDS later)."""
        rows = [row for row, _ in settlements]
        released = [{"id": reservation} for _, reservation in settlements if reservation is not None]
        if released:
            conn.execute(self.release, released)
        costs = Counter()
        for row in rows:
            costs[row["key_name"], row["day"]] += row["micro_usd"]
        for (name, day), micro in sorted(costs.items()):
            if micro:
                conn.execute(self.add_spend, {"name": name, "day": day, "micro": micro})
        for name in sorted({row["key_name"] for row in rows}):
            conn.execute(self.expired, {"name": name, "now": now})
        conn.execute(self.add_row, rows)


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
        if self.grant is not None:
            self.accounts.release(self.client.name, self.grant)

    def answered(self, status):
        """The status the client got, where it differs from the calls' (made images it never got)."""
        self.entry.status = status

    def settle(self):
        if not self.settled:
            self.settled = True
            self.accounts.settle(self)


class Accounts:
    """Admission and settlement of every image request. Counters in the database are taken in the
    admission's one transaction with the budget's reservation; counters in Redis (`shared`) just
    before it. While a shared store fails (and for RETRY_SECONDS after), limits are counted per
    process (logged, gateway_limiter_errors_total), keys with a budget are refused with a 503 (or
    served: GATEWAY_BUDGET_FAIL_OPEN), and ledger rows wait in a bounded backlog.

    Settlements queue in that backlog too: one writer per process (a thread, a greenlet under
    gevent, started by the first settlement after the fork) writes all that is queued in one
    transaction every FLUSH_SECONDS, and `flush` writes them at once (at a worker's exit)."""
    RETRY_SECONDS = 5.0
    FLUSH_SECONDS = 0.05  # how long a settlement waits for others to share its transaction
    IDLE_SECONDS = 1.0  # the writer ends after this long with nothing queued; the next settlement starts another

    def __init__(self, store, settings, shared=None):
        self.store, self.fail_open, self.shared = store, settings.budget_fail_open, shared
        lease_seconds = settings.upstream_timeout + 60  # a dead instance's leases and reservations expire
        self.sql, self.local = SqlCounters(store, lease_seconds), MemoryCounters()
        self.ledger = Ledger(store, lease_seconds)
        self.down_until = {"database": 0.0, "redis": 0.0}
        self.backlog, self.lock = deque(maxlen=BACKLOG), threading.Lock()
        self.writing, self.writer = threading.Lock(), None
        ALL.add(self)

    def failing(self, which):
        return time.monotonic() < self.down_until[which]

    def _failed(self, which, error):
        if not self.failing(which):
            log.error("%s failed (%s): limits count per process, budgets are %s, for %gs", which, error,
                      "not checked" if self.fail_open else "refused", self.RETRY_SECONDS)
        self.down_until[which] = time.monotonic() + self.RETRY_SECONDS

    def admit(self, client, model, n, estimate, request_id):
        """Admit `client`'s request for `n` images of `model` costing up to `estimate` USD, or refuse it."""
        policy = client.policy
        if not policy.allows(model):
            raise GatewayError(403, f"This API key may not use the model {model.id!r}; it may use: "
                                    f"{', '.join(policy.models)}.", code="model_not_allowed")
        for limit, name in ((policy.ipm, "images per minute (ipm)"), (policy.max_concurrent, "calls in flight")):
            if limit is not None and n > limit:
                raise InvalidRequest.field("n", f"{n} is more than this API key's limit of {limit} {name}")
        grant = self._count_shared(client, n) if policy.counted and self.shared is not None else None
        try:
            grant, reservation = self._take(client, n, estimate, grant)
        except BaseException:
            if grant is not None and grant.counter is not self.sql:
                grant.counter.undo(client.name, grant, policy)
            raise
        return Admission(self, client, grant, reservation,
                         Entry(request_id, datetime.now(UTC), client.name, model.id, n))

    def _count_shared(self, client, n):
        """The request counted in Redis, or in this process while Redis fails."""
        if not self.failing("redis"):
            try:
                return self.shared.acquire(client.name, client.policy, n)
            except RedisError as error:
                self._failed("redis", error)
        LIMITER_ERRORS.inc()
        return self.local.acquire(client.name, client.policy, n)

    def _take(self, client, n, estimate, grant):
        """(grant, reservation): the database's counters (unless counted elsewhere) and the budget's
        reservation, in one transaction under the key's lock."""
        policy = client.policy
        count = policy.counted and grant is None
        if not (count or policy.budget_usd is not None):
            return grant, None
        if self.failing("database"):
            return self._without_database(client, n, grant, "failed moments ago")

        def take(conn, now):
            taken = self.sql.acquire(conn, client.name, policy, n, now) if count else grant
            return taken, (self.ledger.reserve(conn, client, estimate, now) if policy.budget_usd is not None
                           else None)

        try:
            return self.store.run(take, client.name, durable=False)
        except StoreUnavailable as error:
            self._failed("database", error)
            return self._without_database(client, n, grant, error)

    def _without_database(self, client, n, grant, error):
        """Admission while the database fails: per-process limits, and the budget's rule."""
        counted_here = None
        if client.policy.counted and grant is None:
            LIMITER_ERRORS.inc()
            grant = counted_here = self.local.acquire(client.name, client.policy, n)
        if client.policy.budget_usd is not None and not self.fail_open:
            if counted_here is not None:  # a grant from Redis is undone by `admit`
                self.local.undo(client.name, counted_here, client.policy)
            raise GatewayError(503, "This API key has a budget and the gateway's budget store (its database) "
                                    "cannot be reached; try again shortly.", {"Retry-After": "5"})
        return grant, None

    def release(self, name, grant):
        """A request's concurrency lease, given back as soon as its calls end; one that cannot be
        given back expires by itself."""
        try:
            grant.release(name)
        except (StoreUnavailable, RedisError) as error:
            LIMITER_ERRORS.inc()
            log.error("a concurrency lease could not be released (%s); it expires by itself", error)

    def settle(self, admission):
        """Queue the request's ledger row and reservation for this process's writer (started here if
        none runs). The row is built now, from the request's final figures."""
        row = admission.entry.row()
        with self.lock:
            self.backlog.append((row, admission.reservation))
            if self.writer is None or not self.writer.is_alive():
                self.writer = threading.Thread(target=self._write_queued, daemon=True, name="ledger-writer")
                self.writer.start()

    def _write_queued(self):
        """The writer: every FLUSH_SECONDS, all that was queued meanwhile, in one transaction (after a
        failure, again RETRY_SECONDS later); it ends once nothing was queued for IDLE_SECONDS."""
        quiet, pause = 0.0, threading.Event()  # never set: a sleep that a test patching time.sleep cannot make spin
        while True:
            pause.wait(self.FLUSH_SECONDS)
            with self.lock:
                if not self.backlog:
                    quiet += self.FLUSH_SECONDS
                    if quiet >= self.IDLE_SECONDS:
                        self.writer = None  # under the lock: a settlement from now on starts another
                        return
                    continue
            quiet = 0.0
            if not self.flush():
                pause.wait(self.RETRY_SECONDS)

    def flush(self):
        """Write every queued settlement now, in one transaction: False if the database failed (they
        stay queued, up to BACKLOG rows)."""
        with self.writing:  # one transaction at a time, so rows are written in order
            with self.lock:
                pending = list(self.backlog)
                self.backlog.clear()
            if not pending:
                return True

            def write(conn, now):
                self.ledger.settle(conn, pending, now)
                for name in sorted({row["key_name"] for row, _ in pending}):
                    self.sql.forget(conn, name, now)

            try:
                self.store.run(write, "ledger", locked=False)
            except StoreUnavailable as error:
                LEDGER_ERRORS.inc()
                log.error("ledger rows could not be written (%s); %d kept to write later", error, len(pending))
                with self.lock:
                    self.backlog.extendleft(reversed(pending))
                return False
            except Exception:  # noqa: BLE001 - a bug: these rows cannot be written, the next ones can
                LEDGER_ERRORS.inc()
                log.exception("%d ledger rows could not be written and are dropped", len(pending))
            return True


ALL = weakref.WeakSet()  # this process's Accounts, for `flush_all`


def _in_a_forked_child():
    """A forked child starts with none of its parent's queued rows (they are the parent's to write),
    no writer, and locks no thread of the parent can be holding."""
    for accounts in list(ALL):
        accounts.backlog.clear()
        accounts.lock, accounts.writing, accounts.writer = threading.Lock(), threading.Lock(), None


os.register_at_fork(after_in_child=_in_a_forked_child)


def flush_all():
    """Write every Accounts' queued settlements now (a worker's exit, gunicorn.conf.py)."""
    for accounts in list(ALL):
        accounts.flush()


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
