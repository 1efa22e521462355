"""Where the gateway reaches into gunicorn's internals (gunicorn==27.0.1, pinned in
requirements.txt). None of these is a speed-up: each gives a deadline, a JSON page or a drain
that gunicorn has no public hook for. tests/unit/test_patches.py checks what each relies on.
gunicorn itself is imported only by the patches that need its module: gateway/drain.py imports
this one, and the package (with its providers) must not import gunicorn."""
PINNED = "27.0.1"


def wrap_request_body(req, wrap):
    """In the pre_request hook: `req`'s body reader becomes `wrap(reader, sock, send_continue)`,
    and gunicorn does not send `100 Continue` itself. Needed for the body's wall-clock deadline
    (gunicorn bounds each read, not the whole body) and to send `100 Continue` only once the app
    reads the body, after the key check (gunicorn sends it before the app sees the request).
    Relies on `Request.body.reader`, `Request.unreader.sock` and `Request._expected_100_continue`,
    which `gunicorn.http.wsgi.create` reads after pre_request."""
    if req.body is not None:
        req.body.reader = wrap(req.body.reader, req.unreader.sock, req._expected_100_continue)
    req._expected_100_continue = False


def wrap_response_writes(wrap):
    """`gunicorn.util.write` and `write_chunk` become `wrap(write)`, once, in the master (the
    workers fork with it). Needed for a deadline on each response write: gevent's sendall has
    none, so a client that stops reading would hold its connection for as long as TCP keeps it.
    Relies on gunicorn's Response writing through these two module functions, looked up on the
    module at each call."""
    from gunicorn import util

    for name in ("write", "write_chunk"):
        setattr(util, name, wrap(getattr(util, name)))


def replace_error_page(write_error):
    """gunicorn's own refusals (400 bad framing, 414, 431...) are written by `write_error(sock,
    status_int, reason, mesg)` instead of gunicorn's HTML page, so every error the gateway's
    port answers is in the one JSON shape. Relies on the worker's `handle_error` calling
    `gunicorn.util.write_error`, looked up on the module."""
    from gunicorn import util

    util.write_error = write_error


def close_after_response(req):
    """In the pre_request hook: `req`'s response goes out with `Connection: close` and the
    connection is closed after it (the drain sends kept-alive clients elsewhere). Relies on
    `Request.force_close()`, which gunicorn's Response reads back through `req.should_close()`."""
    req.force_close()


def before_sigterm_stop(arbiter, before):
    """In the on_starting hook: on SIGTERM the master runs `before()` (the drain), then gunicorn's
    own stop. gunicorn has no hook between the master's SIGTERM and its stopping of the workers.
    Relies on the main loop calling `arbiter.handle_<signal name>()`, looked up on the instance
    for each queued signal, and on `handle_term` stopping by raising StopIteration."""
    stop = arbiter.handle_term

    def then_stop():
        before()
        stop()

    arbiter.handle_term = then_stop
