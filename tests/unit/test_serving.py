"""gunicorn's side of resource safety (gateway/serving.py), without a server: the body deadline,
the deferred `100 Continue`, the deadline of each response write, and recycling counted on
served image requests."""
import gc
import os
import signal
import socket
import subprocess
import sys
import time
import weakref
from pathlib import Path
from types import SimpleNamespace

import gevent
import pytest
from gunicorn import util
from werkzeug.exceptions import RequestTimeout

from gateway.serving import (
    BodyReader,
    _with_deadline,
    count_image_request,
    freeze_loaded_objects,
    start_recycling_count,
)

ROOT = Path(__file__).resolve().parents[2]


class DrippingReader:
    """A body that yields one byte per `every` seconds."""

    def __init__(self, every):
        self.every = every

    def read(self, size):
        gevent.sleep(self.every)
        return b"x"


class Socket:
    def __init__(self):
        self.sent = []

    def sendall(self, data):
        self.sent.append(data)


def test_a_body_that_drips_past_its_deadline_is_a_408():
    reader = BodyReader(DrippingReader(0.05), Socket(), seconds=0.2, send_continue=False)
    with pytest.raises(RequestTimeout, match="did not arrive within 0.2 seconds"):
        while True:
            reader.read(1024)


def test_reads_within_the_deadline_pass_through():
    assert BodyReader(DrippingReader(0), Socket(), seconds=5, send_continue=False).read(10) == b"x"


def test_100_continue_goes_out_once_at_the_first_read():
    sock = Socket()
    reader = BodyReader(DrippingReader(0), sock, seconds=5, send_continue=True)
    assert sock.sent == []
    reader.read(1)
    reader.read(1)
    assert sock.sent == [b"HTTP/1.1 100 Continue\r\n\r\n"]


def worker(limit):
    served = SimpleNamespace(alive=True, log=SimpleNamespace(info=lambda *args: None))
    start_recycling_count(served, limit)
    return served


def served(worker_, path="/v1/images/generations", status=200):
    count_image_request(worker_, {"PATH_INFO": path}, SimpleNamespace(status_code=status))


def test_a_write_the_client_never_takes_ends_as_a_reset_at_its_deadline():
    """50 MB to a peer that reads nothing: a ConnectionResetError (which gunicorn treats as the
    client going away) after the deadline, and the socket is blocking again afterwards."""
    server, client = socket.socketpair()
    with server, client:
        started = time.monotonic()
        with pytest.raises(ConnectionResetError):
            _with_deadline(util.write, 0.3)(server, b"x" * 50_000_000)
        assert time.monotonic() - started < 5
        assert server.gettimeout() is None


def test_a_non_blocking_write_stays_non_blocking():
    """gunicorn writes its own error answers without waiting (util.write_nonblock)."""
    server, client = socket.socketpair()
    with server, client:
        server.settimeout(0.0)
        with pytest.raises(BlockingIOError):
            _with_deadline(util.write, 30)(server, b"x" * 50_000_000)
        assert server.gettimeout() == 0.0


def test_a_write_the_client_takes_passes_through():
    server, client = socket.socketpair()
    with server, client:
        _with_deadline(util.write, 0.3)(server, b"an answer")
        assert client.recv(100) == b"an answer"


def test_a_worker_retires_after_its_image_requests_and_jitter():
    retiring = worker(5)
    assert 5 <= retiring.image_requests_left <= 6
    for _ in range(retiring.image_requests_left - 1):
        served(retiring)
    assert retiring.alive
    served(retiring)
    assert not retiring.alive


@pytest.mark.parametrize("path, status", [("/health", 200), ("/v1/images/generations", 401),
                                          ("/v1/images/edits", 400)])
def test_only_served_image_requests_count(path, status):
    counting = worker(1)
    served(counting, path, status)
    assert counting.alive and counting.image_requests_left == 1


def test_zero_means_never():
    never = worker(0)
    served(never)
    assert never.alive and never.image_requests_left is None


def test_the_loaded_app_is_frozen_out_of_the_collectors_sight_after_its_garbage_is_collected():
    class Node:
        pass

    garbage, kept = Node(), Node()
    garbage.cycle = garbage  # only a collection frees it
    gone = weakref.ref(garbage)
    del garbage
    try:
        freeze_loaded_objects()
        assert gone() is None  # collected first, not frozen for the worker's life
        assert gc.get_freeze_count() > 0
        gc.collect()
        assert not any(item is kept for item in gc.get_objects())  # a frozen object is in no generation
    finally:
        gc.unfreeze()
    assert any(item is kept for item in gc.get_objects())


def test_a_worker_stopped_before_it_installs_its_own_handlers_stops_at_once():
    """Between the fork and gunicorn's worker handlers, SIGTERM must not reach the master's copied
    handler (which only queues it for a loop the worker never runs)."""
    stopped = subprocess.run(
        [sys.executable, "-c", "import os, signal, time; "
                               "signal.signal(signal.SIGTERM, lambda *args: None); "  # the master's, as copied
                               "exec(open('gunicorn.conf.py').read()); post_fork(None, None); "
                               "os.kill(os.getpid(), signal.SIGTERM); time.sleep(10)"],
        cwd=ROOT, timeout=30)
    assert stopped.returncode == -signal.SIGTERM


def test_gunicorns_master_imports_neither_urllib3_nor_sqlalchemy():
    """gevent patches ssl, sockets and threading in each worker: urllib3 imported before that
    recurses on its SSL context, and a lock SQLAlchemy made before it would block a whole worker."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys; exec(open('gunicorn.conf.py').read()); "
                               "print(sorted({'urllib3', 'requests', 'sqlalchemy', 'psycopg'} & set(sys.modules)))"],
        cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_gunicorns_own_settings_are_read_through_settings():
    read = subprocess.run(
        [sys.executable, "-c", "exec(open('gunicorn.conf.py').read()); print(workers, worker_connections)"],
        cwd=ROOT, capture_output=True, text=True, check=True,
        env={**os.environ, "WEB_CONCURRENCY": "3", "GUNICORN_WORKER_CONNECTIONS": "500"})
    assert read.stdout.split() == ["3", "500"]


@pytest.mark.parametrize("name, value, message", [
    ("WEB_CONCURRENCY", "0", "WEB_CONCURRENCY must be at least 1, got '0'"),  # not a number: gunicorn's own int()
    ("GUNICORN_WORKER_CONNECTIONS", "0", "GUNICORN_WORKER_CONNECTIONS must be at least 1, got '0'"),
    ("GUNICORN_MAX_REQUESTS", "-1", "GUNICORN_MAX_REQUESTS must be at least 0, got '-1'"),
    ("GATEWAY_DRAIN_SECONDS", "soon", "GATEWAY_DRAIN_SECONDS must be a number, got 'soon'"),
])
def test_a_bad_gunicorn_setting_stops_its_start_naming_the_variable(name, value, message, tmp_path):
    """gunicorn reads its config file before it binds or forks: a bad value stops it there, and
    its traceback ends with the ConfigError's message."""
    with socket.socket() as unused:  # where a gunicorn that did start would listen
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    started = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"], cwd=ROOT, capture_output=True,
        text=True, timeout=60, env={**os.environ, name: value, "HOST": "127.0.0.1", "PORT": str(port),
                                    "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    assert started.returncode == 1
    assert f"ConfigError: {message}" in started.stderr
