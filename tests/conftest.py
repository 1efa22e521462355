import pytest

from gateway import create_app
from gateway.config import Settings

CLIENT_KEY = "client-key-0123456789"
UPSTREAM_KEY = "upstream-key-abcdefghij"


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
    return create_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth():
    return {"Authorization": f"Bearer {CLIENT_KEY}"}
