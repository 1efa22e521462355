"""The HTTP server's share of resource safety, used by gunicorn.conf.py (gevent workers): a
deadline for each request body and for each write of a response, `100 Continue` only once the
app reads the body (after the key check), gunicorn's own refusals as JSON (to the client, in the
log, in /metrics), enough file descriptors for the connections a worker holds, recycling
counted on served image requests, and freed memory given back to the system."""
import ctypes
import ctypes.util
import errno
import functools
import gc
import json
import logging
import random
import resource
import signal
import time

from gunicorn import util
from werkzeug.exceptions import RequestTimeout

from .patches import gunicorn as gunicorn_patches

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MMAP_THRESHOLD, TRIM_THRESHOLD = 4 * 2**20, 32 * 2**20
LOG_CONFIG = {  # gunicorn's own log lines (refusals, worker starts and exits) as JSON too
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "gateway.observability.JsonFormatter"}},
    "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "loggers": {"gunicorn.error": {"level": "INFO", "handlers": ["json"], "propagate": False},
                "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False}},
    "root": {"level": "INFO", "handlers": []},  # the app adds its own (observability.configure_logging)
}


class BodyReader:
    """gunicorn's body reader with one wall-clock deadline for the whole body, however slowly
    it drips; the interim `100 Continue` goes out at the first read."""

    def __init__(self, reader, sock, seconds, send_continue):
        self.reader, self.sock, self.seconds = reader, sock, seconds
        self.deadline = time.monotonic() + seconds
        self.send_continue = send_continue

    def read(self, size):
        import gevent  # only ever called inside a gevent worker, after its monkey-patching

        if self.send_continue:
            self.send_continue = False
            self.sock.sendall(CONTINUE)
        late = RequestTimeout(f"the request body did not arrive within {self.seconds:g} seconds "
                              "(CLIENT_BODY_TIMEOUT).")
        # Past the deadline a read may still return what has arrived (or the end of a complete
        # body, which gunicorn checks after the response); it just may not wait for more.
        remaining = max(self.deadline - time.monotonic(), 0.001)
        with gevent.Timeout(remaining, late):  # raised as an Exception: gunicorn then closes the connection
            return self.reader.read(size)


def limit_body(req, seconds):
    """Put `req`'s body behind a BodyReader (gunicorn's pre_request hook)."""
    gunicorn_patches.wrap_request_body(
        req, lambda reader, sock, send_continue: BodyReader(reader, sock, seconds, send_continue))


def bound_writes(seconds):
    """Give every write of a response (its head, a JSON body's part, a stream's event) `seconds`
    to be taken by the client. A client that stops reading would otherwise hold its connection,
    greenlet and response bytes for as long as TCP keeps the connection (gevent's sendall has no
    deadline); past it the connection is closed as if the client had reset it, which also ends a
    stream and cancels its upstream calls. Wraps gunicorn's two write functions (once, in the
    master; the workers fork with it: gateway/patches/gunicorn.py). Reads keep their own
    deadlines: the socket has none between writes."""
    gunicorn_patches.wrap_response_writes(lambda write: _with_deadline(write, seconds))


def answer_refusals_as_json(error_format):
    """gunicorn's own refusals written by write_json_error (once, in the master)."""
    gunicorn_patches.replace_error_page(functools.partial(write_json_error, error_format=error_format))


def _with_deadline(write, seconds):
    @functools.wraps(write)
    def write_within(sock, *args):
        previous = sock.gettimeout()  # None, or 0.0 for gunicorn's non-blocking error writes
        sock.settimeout(seconds if previous is None else min(previous, seconds))
        try:
            return write(sock, *args)
        except TimeoutError:
            logging.getLogger("gunicorn.error").warning(
                "A client did not take a response write within %g seconds; closing its connection "
                "(CLIENT_SEND_TIMEOUT).", seconds)
            raise ConnectionResetError(errno.ECONNRESET, "client stopped reading") from None
        finally:
            sock.settimeout(previous)
    return write_within


def start_recycling_count(worker, image_requests):
    """post_worker_init: this worker retires after `image_requests` served image requests, plus
    up to 20 % (so workers do not all retire together); 0 means never."""
    worker.image_requests_left = image_requests + random.randint(0, image_requests // 5) if image_requests else None


def count_image_request(worker, environ, resp):
    """post_request: count a served image request; at the limit the worker stops accepting,
    finishes what it holds and is replaced. gunicorn's own max_requests would count every
    request, so a flood of cheap ones (no key needed) could retire every worker at once."""
    if worker.image_requests_left is None or resp is None or resp.status_code != 200:
        return
    if not environ.get("PATH_INFO", "").startswith("/v1/images/"):
        return
    worker.image_requests_left -= 1
    if worker.image_requests_left <= 0 and worker.alive:
        worker.log.info("Recycling worker after its image requests (GUNICORN_MAX_REQUESTS).")
        worker.alive = False


def write_json_error(sock, status_int, reason, mesg, error_format="seed"):
    """gunicorn's own refusals (400 bad framing, 414, 431...) in the gateway's JSON error shape,
    counted in gateway_requests_total{endpoint="unparsed"} (gunicorn logs them itself). The
    request's headers may be unread or unreadable here, so `auto` cannot tell an SDK and answers
    in the gateway's own body; OpenAI's SDKs do not send what gunicorn refuses."""
    from .errors import error_body
    from .http_errors import error_format_for
    from .metrics import REQUESTS  # in the worker, after PROMETHEUS_MULTIPROC_DIR is set

    body = json.dumps(error_body(status_int, f"{reason}: {mesg}", error_format_for(error_format, {})))
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    REQUESTS.labels("unparsed", str(status_int), "-").inc()
    util.write_nonblock(sock, (head + body).encode("latin1"))


def raise_open_files_limit(wanted):
    """Lift the soft limit on open files towards `wanted` (each held connection is one); returns
    the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def stop_signals_stop_at_once():
    """In a just-forked worker (gunicorn's post_fork hook): SIGTERM, SIGINT and SIGQUIT take their
    default action, ending the process. The fork copies the master's handlers, which only queue
    the signal for the master's loop, a loop the worker never runs; gunicorn installs the worker's
    own once gevent has patched it, about 0.1 s later. A stop in between (a deploy while a worker
    is being replaced) was lost, and the worker lived on, loading the app and serving, until the
    master's graceful timeout (UPSTREAM_TIMEOUT + 30 s) killed it. Such a worker has served nothing."""
    for stop in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(stop, signal.SIG_DFL)


def freeze_loaded_objects():
    """Take the objects alive now (once the worker has loaded the app: its modules, settings,
    schemas and clients, about 140,000) out of the garbage collector's sight (`gc.freeze()`,
    after one last collection). A full collection walks every tracked object; with them in view,
    each took 90-270 ms in a worker, and a burst of 1,000 concurrent requests set off two per
    worker: 0.2-0.6 s of CPU while the answers queued (docs/benchmarks.md). Objects made later
    are collected as before; the frozen ones live as long as the worker, as they would anyway."""
    gc.collect()
    gc.freeze()


def return_freed_memory(every=10.0):
    """Give memory the process no longer uses back to the system (glibc only; a no-op elsewhere).
    glibc raises its mmap threshold each time a large block is freed, up to 32 MB, after which
    the 15-20 MB strings of a large edit come from the heap and fragment it: a fixed 4 MB
    threshold keeps each larger block in its own mapping, returned when freed. Blocks below it
    (a 1K image's upstream answer and base64 are about 2 MB) come from the heap, whose free top
    is kept up to 32 MB: a fresh mapping per block would cost a page fault per 4 KB touched,
    which was a third of the CPU of passing an image through (docs/benchmarks.md). Thousands of
    small objects (a flood of connections) leave the heap fragmented: malloc_trim every `every`
    seconds, on one of gevent's native threads, returns its free pages, the kept top included."""
    import gevent

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not hasattr(libc, "gnu_get_libc_version"):
        return
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)

    def trim_forever():
        while True:
            gevent.sleep(every)
            gevent.get_hub().threadpool.apply(libc.malloc_trim, (0,))

    gevent.spawn(trim_forever)
