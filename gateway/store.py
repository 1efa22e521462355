"""The database (docs/keys-and-budgets.md): managed keys, spend, budget reservations, the embedded
rate and concurrency counters, and the usage ledger, through SQLAlchemy Core. SQLite (a file
created on first start) by default, PostgreSQL for several instances; the schema is versioned by
Alembic (gateway/migrations) and upgraded at start, or by `python -m gateway.store upgrade`."""
import contextlib
import fcntl
import hashlib
import random
import sys
import time
from pathlib import Path

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from .errors import GatewayError

MIGRATIONS = Path(__file__).with_name("migrations")
NAME_LENGTH = 64

metadata = MetaData()

api_keys = Table(
    "api_keys", metadata,
    Column("name", String(NAME_LENGTH), primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),  # sha256 of the secret, hex
    Column("policy", JSON, nullable=False),
    Column("created_at", DateTime, nullable=False),  # naive UTC, as every time here
    Column("revoked_at", DateTime),
)
spend = Table(  # what each key spent per UTC day, in millionths of a dollar: the budget's source
    "spend", metadata,
    Column("key_name", String(NAME_LENGTH), primary_key=True),
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD
    Column("micro_usd", BigInteger, nullable=False),
)
reservations = Table(  # budget held for requests in flight; expires if its instance dies
    "reservations", metadata,
    Column("id", String(32), primary_key=True),
    Column("key_name", String(NAME_LENGTH), nullable=False, index=True),
    Column("micro_usd", BigInteger, nullable=False),
    Column("expires_at", Float, nullable=False),  # Unix seconds, the database's clock
)
rate_buckets = Table(  # requests and images admitted per key and second, for rpm and ipm
    "rate_buckets", metadata,
    Column("key_name", String(NAME_LENGTH), primary_key=True),
    Column("second", BigInteger, primary_key=True, autoincrement=False),  # Unix seconds, the database's clock
    Column("requests", Integer, nullable=False),
    Column("images", Integer, nullable=False),
)
leases = Table(  # upstream calls in flight, for max_concurrent; expires if its instance dies
    "leases", metadata,
    Column("id", String(32), primary_key=True),
    Column("key_name", String(NAME_LENGTH), nullable=False, index=True),
    Column("calls", Integer, nullable=False),
    Column("expires_at", Float, nullable=False),
)
ledger = Table(
    "ledger", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("day", String(10), nullable=False),
    Column("key_name", String(NAME_LENGTH), nullable=False),
    Column("model", String(256), nullable=False),
    Column("providers", String(128), nullable=False),
    Column("n_requested", Integer, nullable=False),
    Column("n_made", Integer, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("micro_usd", BigInteger, nullable=False),
    Column("status", Integer, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Index("ix_ledger_key_created", "key_name", "created_at"),
    Index("ix_ledger_created", "created_at"),
)


class StoreUnavailable(GatewayError):
    """The database could not be reached or used; `detail` says how, for the log."""

    def __init__(self, detail):
        super().__init__(503, "The gateway's database cannot be reached; try again shortly.", {"Retry-After": "5"})
        self.detail = detail

    def __str__(self):
        return self.detail


def engine_url(url):
    """An SQLAlchemy URL from GATEWAY_DATABASE_URL / DATABASE_URL: Heroku's `postgres://` and a
    bare `postgresql://` mean PostgreSQL through psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class Store:
    """One engine per process (connections are not shared across gunicorn's fork), and `run`, the
    transaction every write goes through."""

    def __init__(self, url, pool_size=10):
        self.url = make_url(engine_url(url))
        self.sqlite = self.url.get_backend_name() == "sqlite"
        if self.sqlite and self.url.database not in (None, "", ":memory:"):
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        options = {} if self.sqlite else {"connect_args": {"connect_timeout": 3}, "pool_recycle": 1800}
        # at most `pool_size` connections per process (PostgreSQL's max_connections is shared by every
        # worker of every instance); more greenlets wait for one, up to 10 s
        self.engine = create_engine(self.url, pool_size=pool_size, max_overflow=0, pool_timeout=10, **options)
        if self.sqlite:
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
            self.start = text("SELECT (julianday('now') - 2440587.5) * 86400.0")
        else:  # one round trip: the commit's durability, the key's lock, the clock
            self.start = text("SELECT set_config('synchronous_commit', :commit, true), pg_advisory_xact_lock(:lock), "
                              "extract(epoch from clock_timestamp())")
            self.start_unlocked = text("SELECT set_config('synchronous_commit', :commit, true), :lock, "
                                       "extract(epoch from clock_timestamp())")
        self.upsert = sqlite.insert if self.sqlite else postgresql.insert
        self.schema_applied = False

    @contextlib.contextmanager
    def read(self):
        with self._errors(), self.engine.connect() as conn:
            yield conn

    def run(self, work, name=None, durable=True, locked=True):
        """`work(conn, now)` in one transaction, committed when it returns. With `name`, `now` is the
        database's clock, the same for every instance (else None), and unless `locked` is False the
        transaction is the only locked one for that key at a time on every worker and instance
        (PostgreSQL: a transaction-scoped advisory lock on the name; SQLite's BEGIN IMMEDIATE takes
        its one write lock anyway). `durable=False` lets PostgreSQL confirm the commit before it is
        on disk (counters and reservations, which expire by themselves). A connection the database
        had closed (a restart) is retried once."""
        reconnected, deadline = False, time.monotonic() + BUSY_SECONDS
        while True:
            try:
                with self._errors(), self.engine.connect().execution_options(immediate=True) as conn, conn.begin():
                    return work(conn, self._now(conn, name, durable, locked) if name is not None else None)
            except StoreUnavailable as error:
                if _busy(error) and time.monotonic() < deadline:
                    time.sleep(random.uniform(0.0001, 0.001))  # cooperative under gevent, unlike SQLite's own wait
                elif getattr(error.__cause__, "connection_invalidated", False) and not reconnected:
                    reconnected = True
                else:
                    raise

    def _now(self, conn, name, durable, locked):
        if self.sqlite:
            return float(conn.scalar(self.start))
        row = conn.execute(self.start if locked else self.start_unlocked,
                           {"commit": "on" if durable else "off", "lock": _lock_id(name)}).one()
        return float(row[-1])

    @contextlib.contextmanager
    def _errors(self):
        try:
            yield
        except SQLAlchemyError as error:
            cause = getattr(error, "orig", None) or error
            raise StoreUnavailable(f"{type(cause).__name__}: {str(cause).splitlines()[0][:200]}") from error

    def upgrade(self):
        """Bring the schema to the newest version, one process at a time (several workers or
        instances may start together)."""
        from alembic import command
        from alembic.config import Config

        with self._errors(), self._migration_lock(), self.engine.begin() as conn:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        self.schema_applied = True

    @contextlib.contextmanager
    def _migration_lock(self):
        if self.sqlite:
            path = Path(self.url.database or "var/gateway.db").with_suffix(".migrate.lock")
            with open(path, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                yield
            return
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:lock)"), {"lock": _lock_id("schema")})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:lock)"), {"lock": _lock_id("schema")})
                conn.commit()

    def close(self):
        self.engine.dispose()


BUSY_SECONDS = 10.0  # how long a write waits for another process's SQLite write lock
SQLITE_BUSY = 5


def _busy(error):
    """SQLite's write lock is held by another process: BEGIN IMMEDIATE fails at once (busy_timeout
    is 0), before any work, so the transaction can simply be tried again."""
    return getattr(getattr(error.__cause__, "orig", None), "sqlite_errorcode", None) == SQLITE_BUSY


def _lock_id(name):
    """A signed 64-bit advisory lock number for a name."""
    return int.from_bytes(hashlib.sha256(f"gateway:{name}".encode()).digest()[:8], "big", signed=True)


def _sqlite_connect(dbapi_connection, record):
    """SQLite: WAL so readers never wait for writers; transactions begun by SQLAlchemy's event; no
    waiting inside SQLite for a lock (it would sleep, blocking every greenlet of the worker):
    Store.run waits between tries instead."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=0"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(conn):
    """Writers take SQLite's write lock at BEGIN, so two workers never read the same counters
    and both write; readers begin as usual."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")


def main(argv):
    """`python -m gateway.store upgrade`: apply the schema (a release phase's one command)."""
    from .config import Settings

    if argv[1:] != ["upgrade"]:
        print("usage: python -m gateway.store upgrade", file=sys.stderr)
        return 2
    Store(Settings.from_env().database_url).upgrade()
    print("database schema is up to date", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
