import json
import logging
import threading

import pytest
import responses

from emulator import create_emulator
from gateway import fetch
from gateway.accounting import Accounts
from gateway.jobs import ImageJob
from gateway.observability import JsonFormatter, RequestIdFilter
from tests.conftest import UPSTREAM_KEY
from tests.support import GENERATE, STREAM, FakeProvider, assert_valid_gemini_request, serve_with


@pytest.fixture(autouse=True)
def ledger_written_at_once(request, monkeypatch):
    """In-process tests read the ledger and budgets right after a response: each settlement is
    queued and written at once (`flush`), with any that waited for the database, and no writer
    is started. Tests marked `ledger_writer` (tests/unit/test_ledger_writer.py) test the writer."""
    if request.node.get_closest_marker("ledger_writer"):
        return

    def settle_at_once(self, admission):
        with self.lock:
            self.backlog.append((admission.entry.row(), admission.reservation))
        self.flush()

    monkeypatch.setattr(Accounts, "settle", settle_at_once)


@pytest.fixture
def upstream():
    """Mocked Gemini API; after the test, every request it saw is checked against Google's
    published schema, the key header, and a key-free URL."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock
        for call in mock.calls:
            if GENERATE.fullmatch(call.request.url.split("?")[0]) or STREAM.fullmatch(call.request.url):
                assert "key=" not in call.request.url
                assert call.request.headers["x-goog-api-key"] == UPSTREAM_KEY
                assert_valid_gemini_request(json.loads(call.request.body))


@pytest.fixture
def emulator():
    """The offline emulator in process, as a Flask test client."""
    return create_emulator().test_client()


@pytest.fixture
def pinned(monkeypatch):
    """(address, hostname) of every PinnedAdapter the image fetcher (gateway.fetch) builds, in order."""
    built = []

    class Recording(fetch.PinnedAdapter):
        def __init__(self, address, hostname):
            built.append((address, hostname))
            super().__init__(address, hostname)

    monkeypatch.setattr(fetch, "PinnedAdapter", Recording)
    return built


@pytest.fixture
def web():
    """The mocked web for function-level fetch tests (endpoint tests use `upstream` instead)."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


class Collect(logging.Handler):
    """The JSON lines the gateway prints, formatted and stamped as they are logged."""

    def __init__(self):
        super().__init__()
        self.lines = []
        self.setFormatter(JsonFormatter())
        self.addFilter(RequestIdFilter())

    def emit(self, record):
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def json_lines():
    handler, root = Collect(), logging.getLogger()
    root.addHandler(handler)
    yield lambda: handler.lines
    root.removeHandler(handler)


@pytest.fixture
def fake(app):
    """One FakeProvider, named gemini, in place of the app's providers: the service's own
    behaviour with no wire format (script it with `fake.will(Answer(...), ...)`)."""
    provider = FakeProvider("gemini")
    serve_with(app, provider)
    return provider


@pytest.fixture
def call_index(monkeypatch):
    """A function that tells, on an upstream call's thread, which of the request's `n` calls it is
    (for `FakeProvider.by_call`)."""
    current = threading.local()
    original = ImageJob._call

    def tagged(self, index, *args):
        current.index = index
        return original(self, index, *args)

    monkeypatch.setattr(ImageJob, "_call", tagged)
    return lambda: current.index
