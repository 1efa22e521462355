"""The ledger's writer, on SQLite and PostgreSQL: settlements queue in memory and one writer per
process writes all that is queued in one transaction every FLUSH_SECONDS; a database that fails
keeps them queued to write later; `flush_all` (a worker's exit) writes them at once."""
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, insert, select

from gateway import accounting
from gateway.accounting import Accounts, Entry, spent_usd
from gateway.store import Store, StoreUnavailable, ledger, reservations

pytestmark = [pytest.mark.ledger_writer, pytest.mark.both_stores]


@pytest.fixture
def store(database_url):
    store = Store(database_url)
    yield store
    store.close()


@pytest.fixture
def accounts(store, settings, monkeypatch):
    """Accounts whose writer waits 0.3 s between writes and retries 0.1 s after a failure; every
    transaction it runs is counted in `accounts.transactions`."""
    monkeypatch.setattr(Accounts, "FLUSH_SECONDS", 0.3)
    monkeypatch.setattr(Accounts, "RETRY_SECONDS", 0.1)
    monkeypatch.setattr(Accounts, "IDLE_SECONDS", 0.6)
    accounts = Accounts(store, settings)
    run, accounts.transactions = store.run, []

    def counted(work, *args, **kwargs):
        accounts.transactions.append(args)
        return run(work, *args, **kwargs)

    monkeypatch.setattr(store, "run", counted)
    yield accounts
    accounts.flush()


def settlement(key, cost=0.0, reservation=None):
    return SimpleNamespace(entry=Entry(f"req-{time.monotonic_ns()}", datetime.now(UTC), key, "gemini-3-pro-image", 1,
                                       n_made=1, cost_usd=cost), reservation=reservation)


def rows(store):
    with store.read() as conn:
        return conn.scalar(select(func.count()).select_from(ledger))


def held(store):
    with store.read() as conn:
        return conn.scalar(select(func.count()).select_from(reservations))


def until(condition, seconds=5):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_settlements_are_written_together_in_one_transaction_shortly_after(accounts, store):
    def hold(conn, now):
        conn.execute(insert(reservations), [{"id": f"r{i}", "key_name": "team-a", "micro_usd": 200_000,
                                             "expires_at": now + 60} for i in range(3)])

    store.run(hold, "team-a")
    accounts.transactions.clear()
    started = time.monotonic()
    for i in range(3):
        accounts.settle(settlement("team-a", 0.134, f"r{i}"))
    accounts.settle(settlement("team-b", 0.0))

    assert until(lambda: rows(store) == 4)
    assert time.monotonic() - started < 2
    assert len(accounts.transactions) == 1
    assert held(store) == 0  # each reservation ended in the transaction that added its cost
    assert spent_usd(store, "team-a", None) == pytest.approx(3 * 0.134)
    assert spent_usd(store, "team-b", None) == 0


def test_the_writer_ends_when_idle_and_the_next_settlement_starts_another(accounts, store):
    accounts.settle(settlement("team-a"))
    assert until(lambda: accounts.writer is None, 3)
    assert rows(store) == 1
    accounts.settle(settlement("team-a"))
    assert accounts.writer is not None
    assert until(lambda: rows(store) == 2)


def failing_once(accounts, monkeypatch, error):
    """The accounts' first transaction raises `error`; the list returned fills when it has."""
    run, failures = accounts.store.run, []

    def failing(work, *args, **kwargs):
        if not failures:
            failures.append(error)
            raise error
        return run(work, *args, **kwargs)

    monkeypatch.setattr(accounts.store, "run", failing)
    return failures


def test_a_failed_write_keeps_the_rows_queued_and_writes_them_later(accounts, store, monkeypatch):
    failures = failing_once(accounts, monkeypatch, StoreUnavailable("OperationalError: the database is restarting"))
    errors = REGISTRY.get_sample_value("gateway_ledger_errors_total")
    accounts.settle(settlement("team-a", 0.1))
    accounts.settle(settlement("team-a", 0.1))

    assert until(lambda: rows(store) == 2)
    assert failures and REGISTRY.get_sample_value("gateway_ledger_errors_total") == errors + 1
    assert spent_usd(store, "team-a", None) == pytest.approx(0.2)


def test_rows_that_cannot_be_written_for_another_reason_are_dropped_and_the_writer_goes_on(accounts, store,
                                                                                          monkeypatch):
    failures = failing_once(accounts, monkeypatch, ValueError("a bug"))
    accounts.settle(settlement("team-a", 0.1))
    assert until(lambda: failures)
    accounts.settle(settlement("team-a", 0.2))
    assert until(lambda: rows(store) == 1)
    assert spent_usd(store, "team-a", None) == pytest.approx(0.2)


def test_flush_all_writes_what_is_queued_at_once(accounts, store):
    accounts.settle(settlement("team-a"))
    accounts.settle(settlement("team-b"))
    accounting.flush_all()  # a worker's exit (gunicorn.conf.py): before the writer's 0.3 s are up
    assert rows(store) == 2


def test_rows_waiting_for_a_failed_database_are_bounded(store, settings, monkeypatch):
    """BACKLOG rows at most per process (here 3), however long the database stays down."""
    monkeypatch.setattr(accounting, "BACKLOG", 3)
    accounts = Accounts(store, settings)

    def down(*args, **kwargs):
        raise StoreUnavailable("OperationalError: the database is down")

    monkeypatch.setattr(store, "run", down)
    for _ in range(5):
        accounts.backlog.append((settlement("team-a").entry.row(), None))
        accounts.flush()
    assert len(accounts.backlog) == 3
