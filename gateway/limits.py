"""Per-process bounds that keep one client, or one request, from taking everything: the upstream
calls in flight, shared fairly between client keys while they are contended, and the image work
(decode, composite, encode) running at once, on a few real threads."""
import concurrent.futures
import threading
import time
from collections import Counter
from contextlib import contextmanager
from functools import cache

from gevent import monkey

from .errors import GatewayError, UpstreamError
from .metrics import IMAGE_WORK_TIMEOUTS


class UpstreamSlots:
    """The process's UPSTREAM_MAX_IN_FLIGHT upstream call slots, shared between client keys only
    while they are contended: a call takes a free slot at once when no call waits, and otherwise
    waits in its key's queue; a freed slot goes to the waiting key that holds the fewest (ties: the
    one waiting longest since its last slot, so keys take turns), so one key's backlog never stands
    in front of another key's first call. No key is refused for being busy: a call that waits
    UPSTREAM_QUEUE_TIMEOUT gets the 503 any call would. Under gevent the lock and events are
    gevent's, as the calls are greenlets there."""

    def __init__(self, capacity):
        self.capacity, self.in_use, self.lock = capacity, 0, threading.Lock()
        self.held = Counter()  # key -> slots it holds
        self.waiting = {}  # key -> {Event: None} of its waiting calls, oldest first; keys in turn order

    @contextmanager
    def hold(self, key, timeout, cancel):
        """One slot for `key` while the block runs. Waiting ends with a 503 after `timeout`
        seconds, or at once when `cancel` (the request's transport.Cancel) is set."""
        self._take(key, timeout, cancel)
        try:
            yield
        finally:
            with self.lock:
                self._give_back(key)

    def _take(self, key, timeout, cancel):
        with self.lock:
            if not self.waiting and self.in_use < self.capacity:
                self._grant(key)
                return
            event = threading.Event()
            self.waiting.setdefault(key, {})[event] = None
        try:
            with cancel.wakes(event):
                event.wait(timeout)
        except BaseException:  # e.g. the greenlet killed: a slot handed to it meanwhile goes back
            with self.lock:
                if not self._dequeue(key, event):
                    self._give_back(key)
            raise
        with self.lock:
            if not self._dequeue(key, event):
                return  # handed a slot
        if cancel.done:
            raise UpstreamError("The client went away.", cause="cancelled")
        raise GatewayError(503, "The gateway is busy: too many upstream calls are in flight. Try again shortly.",
                           headers={"Retry-After": "5"})

    def _dequeue(self, key, event):
        """Take the call waiting on `event` out of `key`'s queue; False when it had left, handed a slot."""
        queue = self.waiting.get(key, {})
        if event not in queue:
            return False
        del queue[event]
        if not queue:
            del self.waiting[key]
        return True

    def _grant(self, key):
        self.in_use += 1
        self.held[key] += 1

    def _give_back(self, key):
        """Free `key`'s slot and hand it to the waiting key that holds the fewest (`min` takes the
        first of equals: the key waiting longest), which then waits at the back for its next one."""
        self.in_use -= 1
        self.held[key] -= 1
        if not self.held[key]:
            del self.held[key]
        if self.waiting:
            fewest = min(self.waiting, key=lambda waiting_key: self.held[waiting_key])
            event = next(iter(self.waiting[fewest]))
            self._dequeue(fewest, event)
            if fewest in self.waiting:
                self.waiting[fewest] = self.waiting.pop(fewest)
            self._grant(fewest)
            event.set()


@cache
def upstream_slots(capacity):
    """The process's one UpstreamSlots (created lazily, so after gunicorn forks)."""
    return UpstreamSlots(capacity)


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


def image_work(settings, work, *args, deadline=None):
    """`work(*args)` on one of the process's IMAGE_WORKERS threads, waiting up to
    IMAGE_QUEUE_TIMEOUT seconds for one to be free; with a `deadline` (the request's, a
    time.monotonic() value), no later than it for the thread and the work together. Work still
    running at the deadline is not stopped (a thread cannot be, safely): it keeps its thread
    until it ends, and its result is dropped."""
    slots = _image_slots(settings.image_workers)
    _take_image_thread(slots, settings, deadline)
    future = _image_threads(settings.image_workers).submit(_outcome, work, *args)
    try:
        done, result = future.result(timeout=_left(deadline))
    except BaseException as error:  # no longer waiting (the deadline, or the greenlet killed); the work goes on
        # Its thread is given back when it ends, by a thread of the caller's kind (a greenlet under gevent).
        threading.Thread(target=_release_when_done, args=(slots, future), name="image-slot", daemon=True).start()
        if isinstance(error, concurrent.futures.TimeoutError):
            raise _too_late(settings, "work") from None
        raise
    slots.release()
    if not done:
        raise result  # here, in the request's context (gevent's pool would print it as a crash)
    return result


def _take_image_thread(slots, settings, deadline):
    """One of `slots`, waited for up to IMAGE_QUEUE_TIMEOUT (then a 503) and never past `deadline` (a 504)."""
    left = _left(deadline)
    if left == 0:  # the request's earlier images took its time
        raise _too_late(settings, "work")
    queue_timeout = settings.image_queue_timeout
    if slots.acquire(timeout=queue_timeout if left is None else min(queue_timeout, left)):
        return
    if left is not None and left <= queue_timeout:
        raise _too_late(settings, "queue")
    raise GatewayError(503, "The gateway is busy: too many images are being decoded or encoded. "
                            "Try again shortly.", headers={"Retry-After": "5"})


def _left(deadline):
    """Seconds until `deadline` (0 once it passed), or None for no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


LATE = {"queue": "no image thread (IMAGE_WORKERS) came free before it",
        "work": "decoding and re-encoding them (with a mask, compositing) went on past it"}


def _too_late(settings, stage):
    """The 504 of an image not finished by the request's deadline, counted by `stage` (what it
    waited for). Not worth a retry: the upstream answered, and was paid for."""
    IMAGE_WORK_TIMEOUTS.labels(stage).inc()
    return GatewayError(504, f"The images were not finished within the request's deadline (UPSTREAM_TIMEOUT, "
                             f"{settings.upstream_timeout:g} seconds): {LATE[stage]}.",
                        headers={"x-should-retry": "false"})


def _release_when_done(slots, future):
    try:
        future.exception()  # waits for the work, whatever it ends in
    finally:
        slots.release()


def _outcome(work, *args):
    try:
        return True, work(*args)
    except Exception as error:  # noqa: BLE001  (re-raised by image_work)
        return False, error
