"""Per-process bounds that keep one client, or one request, from taking everything: the upstream
calls each client key has in flight, and the image work (decode, composite, encode) running at
once, on a few real threads."""
import concurrent.futures
import threading
from collections import Counter
from contextlib import contextmanager
from functools import cache

from gevent import monkey

from .errors import GatewayError


class KeyQuota:
    """Upstream calls in flight per client key."""

    def __init__(self):
        self.lock = threading.Lock()
        self.in_flight = Counter()

    @contextmanager
    def hold(self, client, calls, limit):
        """Count `calls` for `client` while the block runs; a 429 when that would pass `limit`
        (a client with nothing in flight may always start one request, even with n > limit)."""
        with self.lock:
            held = self.in_flight[client]
            if held and held + calls > limit:
                raise GatewayError(429, f"Too many image calls in flight for this API key: {held} are running "
                                        f"and each key may have {limit} (UPSTREAM_MAX_IN_FLIGHT_PER_KEY). "
                                        "Try again when some have finished.", headers={"Retry-After": "5"})
            self.in_flight[client] += calls
        try:
            yield
        finally:
            with self.lock:
                self.in_flight[client] -= calls
                if not self.in_flight[client]:
                    del self.in_flight[client]


KEY_QUOTA = KeyQuota()


@cache
def _image_threads(workers):
    """Real threads even under gevent, where a patched thread would be a greenlet and its
    Pillow work would stall every connection of the worker; waiting on them yields."""
    if monkey.is_module_patched("threading"):
        from gevent.threadpool import ThreadPoolExecutor
        return ThreadPoolExecutor(max_workers=workers)
    return concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image")


@cache
def _image_slots(workers):
    return threading.BoundedSemaphore(workers)


def image_thread_lock():
    """A lock between image threads. They are real threads even under gevent, whose patched
    `threading.Lock` is for greenlets: a real thread waiting on one can miss its wake-up and
    hang for good, with its request (a masked edit with n=2 did, 1 in 40 under load)."""
    return monkey.get_original("threading", "Lock")()


def image_work(settings, work, *args):
    """`work(*args)` on one of the process's IMAGE_WORKERS threads, waiting up to
    IMAGE_QUEUE_TIMEOUT seconds for one to be free."""
    slots = _image_slots(settings.image_workers)
    if not slots.acquire(timeout=settings.image_queue_timeout):
        raise GatewayError(503, "The gateway is busy: too many images are being decoded or encoded. "
                                "Try again shortly.", headers={"Retry-After": "5"})
    try:
        done, result = _image_threads(settings.image_workers).submit(_outcome, work, *args).result()
    finally:
        slots.release()
    if not done:
        raise result  # here, in the request's context (gevent's pool would print it as a crash)
    return result


def _outcome(work, *args):
    try:
        return True, work(*args)
    except Exception as error:  # noqa: BLE001  (re-raised by image_work)
        return False, error
