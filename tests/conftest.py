import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from gateway import create_app
from gateway.config import Settings
from gateway.store import Store, engine_url, metadata
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


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory):
    """A SQLite file with the schema applied, copied for each test (migrating each would be slow)."""
    path = tmp_path_factory.mktemp("database") / "template.db"
    store = Store(f"sqlite:///{path}")
    store.upgrade()
    store.close()
    return path


@pytest.fixture
def sqlite_url(tmp_path, migrated_database):
    shutil.copy(migrated_database, tmp_path / "gateway.db")
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
def database_url(request):
    """The test's database: SQLite, or each of STORES in turn in a module marked `both_stores`."""
    return request.getfixturevalue(f"{getattr(request, 'param', 'sqlite')}_url")


def pytest_generate_tests(metafunc):
    if metafunc.definition.get_closest_marker("both_stores") and "database_url" in metafunc.fixturenames:
        metafunc.parametrize("database_url", STORES, indirect=True)


POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def postgres_database():
    """A throwaway PostgreSQL database with the schema applied, dropped at the end. Without a
    server the tests that need it skip, except in CI (CI=true), where they fail."""
    server = create_engine(engine_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    try:
        connection = server.connect()
    except OperationalError as error:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"no PostgreSQL server at {POSTGRES_URL} ({type(error).__name__}); scripts/test starts one")
    name = f"gateway_test_{uuid.uuid4().hex[:12]}"
    with connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(engine_url(POSTGRES_URL)).set(database=name).render_as_string(hide_password=False)
    store = Store(url)
    store.upgrade()
    store.close()
    yield url
    with server.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    server.dispose()


@pytest.fixture
def postgres_url(postgres_database):
    """The throwaway PostgreSQL database, emptied for this test."""
    store = Store(postgres_database)
    store.run(lambda conn, now: conn.execute(text("TRUNCATE " + ", ".join(t.name for t in metadata.sorted_tables))))
    store.close()
    return postgres_database


STORES = ["sqlite", "postgres"]
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_server():
    """The Redis the tests share; skipped without one, except in CI (CI=true), where they fail."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as error:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"no Redis at {REDIS_URL} ({type(error).__name__}); scripts/test starts one")
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_server):
    """A key prefix of this test's own, whose keys are deleted after it."""
    prefix = f"gateway-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    for key in redis_server.scan_iter(f"{prefix}:*"):
        redis_server.delete(key)


@pytest.fixture
def own_redis(tmp_path):
    """(url, servers, start): a redis-server of this test's own on a free port, to stop and start
    again. Skipped without redis-server, except in CI (CI=true), where the test fails."""
    import redis

    if not shutil.which("redis-server"):
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(tmp_path)]

    def start():
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                return process
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    servers = [start()]
    yield f"redis://127.0.0.1:{port}/0", servers, start
    for process in servers:
        process.kill()
        process.wait()


@pytest.fixture
def settings(database_url):
    return Settings(
        database_url=database_url,
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
        """Every response's headers and body; a file streamed by send_file (a stored image) cannot
        be read here, so only its headers are."""
        body = b"" if response.direct_passthrough else response.get_data()
        WATCH.check_response(f"response to {response.status_code}", response.headers, body)
        return response

    yield app
    app.config["STORE"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth():
    return {"Authorization": f"Bearer {CLIENT_KEY}"}
