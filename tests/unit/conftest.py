import json
import logging

import pytest
import responses

from gateway.observability import JsonFormatter, RequestIdFilter
from tests.conftest import UPSTREAM_KEY
from tests.support import GENERATE, STREAM, assert_valid_gemini_request


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
