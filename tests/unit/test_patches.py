"""What each patch in gateway/patches/ relies on inside gunicorn and urllib3, checked against the
installed library, so an upgrade that changes it fails here, naming the library and the version
the patch was written against, instead of silently losing a deadline, a JSON page or the drain
(docs/decisions.md lists the patches)."""
import inspect
import logging
import signal
import socket
import threading
import time
from importlib.metadata import version
from pathlib import Path

import gunicorn.http.wsgi
import gunicorn.workers.base
import gunicorn.workers.base_async
import pytest
import requests
import urllib3
from gunicorn import util
from gunicorn.arbiter import Arbiter
from gunicorn.config import Config
from gunicorn.http.parser import RequestParser

from gateway.patches import gunicorn as gunicorn_patches
from gateway.patches import urllib3 as urllib3_patches

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = f"gunicorn {gunicorn_patches.PINNED} (gateway/patches/gunicorn.py)"
URLLIB3 = f"urllib3 {urllib3_patches.PINNED} (gateway/patches/urllib3.py)"


def changed(library, what):
    return f"{library} changed underneath the patch: {what}. Check the patch against the new version, then re-pin."


@pytest.mark.parametrize("name, pinned", [("gunicorn", gunicorn_patches.PINNED), ("urllib3", urllib3_patches.PINNED)])
def test_the_patched_libraries_are_the_versions_the_patches_were_written_for(name, pinned):
    assert f"{name}=={pinned}" in (ROOT / "requirements.txt").read_text().split(), (
        f"requirements.txt does not pin {name}=={pinned}, the version gateway/patches/{name}.py was written for")
    assert version(name) == pinned, (
        f"{name} is {version(name)}, but gateway/patches/{name}.py was written and checked against {pinned}: "
        f"run tests/unit/test_patches.py, fix what fails, then change its PINNED and requirements.txt together.")


def source(function):
    return inspect.getsource(function)


def parameters(function):
    return list(inspect.signature(function).parameters)


# --- gunicorn: the request body's reader and 100 Continue (wrap_request_body) -------------------

def parsed(raw):
    """A request as gunicorn's parser makes it from bytes on a socket, and the client's end."""
    server, client = socket.socketpair()
    client.sendall(raw)
    return next(RequestParser(Config(), server, ("127.0.0.1", 1))), server, client


def test_gunicorn_lets_pre_request_replace_the_body_reader_and_the_100_continue():
    req, server, client = parsed(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                                 b"Content-Length: 3\r\n\r\nabc")
    with server, client:
        assert req._expected_100_continue is True, changed(GUNICORN, "Request._expected_100_continue is gone")
        seen = []

        def wrap(reader, sock, send_continue):
            seen.append((sock, send_continue))
            return reader

        gunicorn_patches.wrap_request_body(req, wrap)
        assert seen == [(server, True)], changed(GUNICORN, "Request.unreader.sock is not the client's socket")
        assert req.body.read(3) == b"abc", changed(GUNICORN, "Body no longer reads through Body.reader")
        assert req._expected_100_continue is False


def test_gunicorn_reads_the_100_continue_flag_after_pre_request():
    """The gevent worker calls pre_request, then wsgi.create, which sends the interim answer."""
    handle = source(gunicorn.workers.base_async.AsyncWorker.handle_request)
    assert handle.index("self.cfg.pre_request(self, req)") < handle.index("wsgi.create("), changed(
        GUNICORN, "pre_request no longer runs before wsgi.create in AsyncWorker.handle_request")
    assert "if req._expected_100_continue:" in source(gunicorn.http.wsgi.create), changed(
        GUNICORN, "wsgi.create no longer decides on 100 Continue from req._expected_100_continue")


# --- gunicorn: each response write under a deadline (wrap_response_writes) -----------------------

def test_gunicorn_writes_responses_through_util_write_and_write_chunk():
    assert parameters(util.write) == ["sock", "data", "chunked"], changed(GUNICORN, "util.write's signature")
    assert parameters(util.write_chunk) == ["sock", "data"], changed(GUNICORN, "util.write_chunk's signature")
    response = source(gunicorn.http.wsgi.Response)
    for call in ("util.write(self.sock", "util.write_chunk(self.sock"):
        assert call in response, changed(GUNICORN, f"Response no longer writes with {call}...)")
    for module in (gunicorn.http.wsgi, gunicorn.workers.base, gunicorn.workers.base_async):
        text = inspect.getsource(module)
        assert "from gunicorn.util import" not in text and "from .util import" not in text, changed(
            GUNICORN, f"{module.__name__} binds util's functions at import, so wrapping them on the module misses it")


def test_wrapped_writes_are_what_gunicorn_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(util, "write", util.write)
    monkeypatch.setattr(util, "write_chunk", util.write_chunk)

    def wrap(write):
        def recorded(sock, *args):
            calls.append(write.__name__)
            return write(sock, *args)
        return recorded

    gunicorn_patches.wrap_response_writes(wrap)
    server, client = socket.socketpair()
    with server, client:
        util.write(server, b"data", True)  # chunked: write calls write_chunk through the module too
        assert client.recv(100) == b"4\r\ndata\r\n"
    assert calls == ["write", "write_chunk"], changed(GUNICORN, "util.write no longer calls util.write_chunk")


# --- gunicorn: its own refusals as JSON (replace_error_page) -------------------------------------

def test_gunicorn_writes_its_refusals_with_util_write_error():
    assert parameters(util.write_error) == ["sock", "status_int", "reason", "mesg"], changed(
        GUNICORN, "util.write_error's signature")
    assert parameters(util.write_nonblock) == ["sock", "data", "chunked"], changed(
        GUNICORN, "util.write_nonblock's signature (serving.write_json_error writes the JSON page with it)")
    assert "util.write_error(client, status_int, reason, mesg)" in source(gunicorn.workers.base.Worker.handle_error), \
        changed(GUNICORN, "Worker.handle_error no longer writes its page with util.write_error")


def test_the_error_page_is_replaced_on_the_module(monkeypatch):
    monkeypatch.setattr(util, "write_error", util.write_error)
    pages = []
    gunicorn_patches.replace_error_page(lambda *args: pages.append(args))
    util.write_error("sock", 400, "Bad Request", "Invalid header")
    assert pages == [("sock", 400, "Bad Request", "Invalid header")]


# --- gunicorn: Connection: close while draining (close_after_response) --------------------------

def test_gunicorn_closes_a_connection_that_pre_request_marked():
    req, server, client = parsed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with server, client:
        assert not req.should_close()
        gunicorn_patches.close_after_response(req)
        assert req.should_close(), changed(GUNICORN, "Request.force_close() no longer makes should_close() true")
        response = gunicorn.http.wsgi.Response(req, server, Config())
        assert response.should_close(), changed(GUNICORN, "Response no longer closes when its request must close")
        assert "Connection: close\r\n" in response.default_headers(), changed(
            GUNICORN, "Response no longer sends Connection: close for a request that must close")


# --- gunicorn: the drain between SIGTERM and the stop (before_sigterm_stop) ----------------------

def bare_arbiter():
    """gunicorn's Arbiter without its __init__, which would configure logging and the environment
    of this whole test process."""
    arbiter = Arbiter.__new__(Arbiter)
    arbiter.log = logging.getLogger("tests.patches")
    return arbiter


def test_gunicorns_main_loop_calls_the_handler_named_after_the_signal():
    """The handler is replaced on the arbiter instance: that only works while the main loop
    looks it up by name on each signal."""
    assert signal.SIGTERM in Arbiter.SIGNALS, changed(GUNICORN, "the arbiter no longer handles SIGTERM")
    assert 'getattr(self, "handle_%s" % signame' in source(Arbiter.run), changed(
        GUNICORN, "Arbiter.run no longer looks up handle_<signal> on the instance")


def test_gunicorns_term_handler_stops_by_raising_stop_iteration():
    with pytest.raises(StopIteration):
        bare_arbiter().handle_term()


def test_sigterm_runs_the_drain_then_gunicorns_stop():
    arbiter, ran = bare_arbiter(), []
    gunicorn_patches.before_sigterm_stop(arbiter, lambda: ran.append("drain"))
    with pytest.raises(StopIteration):
        getattr(arbiter, "handle_" + Arbiter.SIG_NAMES[signal.SIGTERM])()
    assert ran == ["drain"]


# --- urllib3: a body read bounded by the deadline (read_available) -------------------------------

@pytest.fixture
def trickling_server():
    """An HTTP server that sends its head and two bytes of a ten-byte body, then nothing."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve():
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
            done.wait(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    done.set()
    thread.join()
    listener.close()


def test_urllib3_reads_what_has_arrived_and_bounds_the_wait(trickling_server):
    assert {"amt", "decode_content"} <= set(parameters(urllib3.response.HTTPResponse.read1)), changed(
        URLLIB3, "HTTPResponse.read1's signature")
    with requests.get(trickling_server, stream=True, timeout=(5, 30)) as response:
        assert isinstance(response.raw.connection.sock, socket.socket), changed(
            URLLIB3, "HTTPResponse.connection.sock is not the socket the body is read from")
        assert urllib3_patches.read_available(response, 1024, within=5) == b"ab", changed(
            URLLIB3, "HTTPResponse.read1 no longer returns what has arrived")
        started = time.monotonic()
        with pytest.raises(urllib3.exceptions.ReadTimeoutError):
            urllib3_patches.read_available(response, 1024, within=0.2)
        assert time.monotonic() - started < 5, changed(
            URLLIB3, "a timeout set on connection.sock no longer bounds read1's wait (requests' 30 s did)")
