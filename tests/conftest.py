import pytest

from gateway import create_app
from gateway.config import Settings
from tests.secrets import WATCH, watching_logs

CLIENT_KEY = "client-key-0123456789"
UPSTREAM_KEY = "upstream-key-abcdefghij"
OPENROUTER_KEY = "or-key-0123456789abcdef"
WATCH.secrets |= {CLIENT_KEY, "second-client-key", UPSTREAM_KEY, OPENROUTER_KEY}


@pytest.fixture(autouse=True)
def no_key_leaks():
    """Every test: no key in any log line or response (the integration conftest adds the
    gateway processes' logs and the HTTP responses of the real servers)."""
    stop_watching = watching_logs()
    yield
    stop_watching()
    leaks = WATCH.take()
    assert not leaks, f"a key leaked: {leaks}"


@pytest.fixture
def settings():
    return Settings(
        api_keys=(CLIENT_KEY, "second-client-key"),
        gemini_api_key=UPSTREAM_KEY,
        gemini_base_url="https://gemini.test",
        upstream_timeout=5,
        upstream_max_retries=2,
        upstream_retry_base_delay=0,
    )


@pytest.fixture
def app(settings):
    app = create_app(settings)

    @app.after_request
    def check_for_keys(response):
        WATCH.check_response(f"response to {response.status_code}", response.headers, response.get_data())
        return response

    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth():
    return {"Authorization": f"Bearer {CLIENT_KEY}"}
