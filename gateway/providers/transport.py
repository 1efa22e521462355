"""The HTTP transport every provider shares: one pooled session per process, the cancellation of
a request's calls, bounded retries with backoff, jitter and Retry-After, all within one
wall-clock deadline, a capped read that the deadline bounds however slowly the answer trickles,
and per-attempt metrics. A provider brings its URL, headers, body, and how to read answers."""
import contextlib
import contextvars
import email.utils
import logging
import random
import re
import threading
import time
from functools import cache
from urllib.parse import urlsplit

import gevent
import requests
from gevent import monkey
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError, ReadTimeoutError

from .. import tracing
from ..errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from ..jsonchunks import loads_carving
from ..metrics import record_attempt

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20
KEY_LIKE = re.compile(r"AIza[0-9A-Za-z_\-]{20,}|sk-[0-9A-Za-z_\-]{20,}|(?i:key=)[^&\s\"']+")


class Cancel:
    """A client request's calls, stopped together when the client goes away: no attempt starts
    after `set()`, and an attempt waiting on the network is interrupted at once, wherever it
    waits (connecting, for the answer's head, or reading its body), so it frees its in-flight
    slot. Under gevent (production) the waiting greenlet gets the error thrown in; plain
    threads (tests) can only have an answer's body cut off. A call waiting for a slot is woken."""

    def __init__(self):
        self.done, self.waiting, self.lock = False, {}, threading.Lock()  # waiting: waiter -> response
        self.events = set()  # set when the calls are cancelled

    def set(self):
        with self.lock:
            self.done = True
            waiting, events = list(self.waiting.items()), list(self.events)
        for waiter, response in waiting:
            self._interrupt(waiter, response)
        for event in events:
            event.set()

    @contextlib.contextmanager
    def wakes(self, event):
        """`event` (a threading.Event) is set when the calls are cancelled, while the block runs."""
        with self.lock:
            self.events.add(event)
            if self.done:
                event.set()
        try:
            yield
        finally:
            with self.lock:
                self.events.discard(event)

    @contextlib.contextmanager
    def attempt(self):
        """Around the network part of one attempt; `see(response)` once its head has come."""
        waiter = gevent.getcurrent() if PATCHED else threading.current_thread()
        with self.lock:
            if self.done:
                raise UpstreamError("The client went away.", cause="cancelled")
            self.waiting[waiter] = None

        def see(response):
            with self.lock:
                self.waiting[waiter] = response
                gone = self.done
            if gone:
                self._interrupt(waiter, response)

        try:
            yield see
        finally:
            with self.lock:
                self.waiting.pop(waiter, None)

    def _interrupt(self, waiter, response):
        if PATCHED:  # thrown from the hub, and only if the attempt is still waiting by then
            gevent.get_hub().loop.run_callback(self._throw, waiter)
        elif response is not None:
            response.raw.shutdown()

    def _throw(self, waiter):
        with self.lock:
            inside = waiter in self.waiting
        if inside:
            waiter.throw(UpstreamError("The client went away.", cause="cancelled"))


CANCEL = contextvars.ContextVar("cancel", default=None)  # the current request's Cancel, if it has one
PATCHED = monkey.is_module_patched("socket")


def cancelled():
    return CANCEL.get() is not None and CANCEL.get().done


class Session(requests.Session):
    """The upstream session. `post_json` hands a request it prepared itself straight to the
    mounted adapter (requests' connection pools), skipping `Session.request`, which on every call
    reads the proxy variables from os.environ, looks for ~/.netrc, merges cookie jars, headers
    and hooks, and watches for redirects: a third of a small call's CPU in requests
    (docs/benchmarks.md). What differs, on purpose: the proxy and CA-bundle variables are read once per
    upstream origin (the environment does not change while the gateway runs); no cookie is kept,
    so one client's upstream cookies never ride along on another client's call; and a redirect is
    not followed (the API key header would go with it) but is an upstream error like any non-2xx
    answer. Other users of the session (google-auth's token requests) get requests' usual way."""

    def __init__(self):
        super().__init__()
        self.environment = {}

    def post_json(self, url, headers, body, timeout):
        """The answer to POSTing the JSON bytes `body`, its body left unread (stream=True)."""
        request = requests.PreparedRequest()
        request.prepare(method="POST", url=url, data=body,
                        headers={**self.headers, **headers, "Content-Type": "application/json"})
        origin = urlsplit(url)[:2]
        if origin not in self.environment:
            self.environment[origin] = self.merge_environment_settings(url, {}, True, None, None)
        return self.get_adapter(url).send(request, timeout=timeout, **self.environment[origin])


@cache
def shared_session():
    """One pooled session per process (created lazily, so after gunicorn forks)."""
    session = Session()
    session.mount("https://", HTTPAdapter(pool_connections=4, pool_maxsize=64))
    session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=64))
    return session


def scrub(text, secret=""):
    """Upstream text with the gateway's key and anything else that looks like a key removed."""
    if secret:
        text = text.replace(secret, "[redacted]")
    return KEY_LIKE.sub("[redacted]", text)


def retry_after(response):
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, int(when.timestamp() - time.time()))


class EventStream:
    """A server-sent event stream read as it arrives: each event's `data:` JSON goes to
    `on_event` at once, and all of them are the answer."""

    def __init__(self, subject, on_event):
        self.subject, self.on_event, self.pending, self.events = subject, on_event, b"", []

    def feed(self, chunk):
        *complete, self.pending = re.split(rb"\r?\n\r?\n", self.pending + chunk)
        for block in complete:
            self._event(block)

    def close(self):
        self._event(self.pending)
        return self.events

    def _event(self, block):
        data = b"\n".join(line[5:].lstrip(b" ") for line in block.splitlines() if line.startswith(b"data:"))
        if not data:
            return
        try:
            payload = loads_carving(data)
        except ValueError:
            raise UpstreamUnavailable(f"{self.subject} sent a malformed event (not JSON).", cause="malformed") from None
        self.events.append(payload)
        self.on_event(payload)


class Transport:
    """Sends the calls of the provider `name`; `subject` names its upstream in messages ("The Gemini API")."""

    def __init__(self, settings, name, subject, session=None):
        self.name, self.subject = name, subject
        self.api = "the " + subject.removeprefix("The ") if subject.startswith("The ") else subject
        self.timeout = settings.upstream_timeout
        self.connect_timeout = settings.upstream_connect_timeout
        self.max_retries = settings.upstream_max_retries
        self.base_delay = settings.upstream_retry_base_delay
        self.max_response_bytes = settings.upstream_max_response_bytes
        self.session = session or shared_session()

    def call(self, model_id, url, headers, body, parse, error_for, deadline, on_event=None):
        """`model_id` names the model in metrics and logs (a catalog id, not client input).
        `parse(payload)` of the JSON answer to POST `body`, retried as needed until `deadline`
        (a time.monotonic() value, the client request's); `error_for(response)` turns a non-2xx
        answer into one of the neutral UpstreamErrors. With `on_event`, the answer is a server-sent
        event stream: each event's JSON goes to `on_event` as it arrives, and `parse` gets the list
        of them at the end. The caller holds the call's in-flight slot (limits.UpstreamSlots)."""
        for attempt in range(self.max_retries + 1):
            started = time.monotonic()
            if started >= deadline:  # no attempt starts after the deadline
                raise self._late()
            try:
                with tracing.upstream_attempt(self.name, model_id, url) as traced:
                    answer = traced.answered(parse(self._post(url, headers, body, deadline, error_for, on_event)))
            except UpstreamError as error:
                failure = UpstreamError("The client went away.", cause="cancelled") if cancelled() else error
                record_attempt(model_id, self.name, failure.cause, time.monotonic() - started, attempt > 0)
                delay = self._delay_before_retry(failure, attempt, deadline)
                if delay is None:
                    raise failure from None
                log.warning("upstream attempt %d for %s failed (%s); retrying in %.1fs",
                            attempt + 1, model_id, failure.status, delay)
                time.sleep(delay)
            else:
                record_attempt(model_id, self.name, "ok", time.monotonic() - started, attempt > 0)
                answer.attempts = attempt + 1
                return answer

    def _post(self, url, headers, body, deadline, error_for, on_event):
        cancel = CANCEL.get() or Cancel()
        with cancel.attempt() as see:
            return self._send(url, headers, body, deadline, error_for, on_event, see)

    def _send(self, url, headers, body, deadline, error_for, on_event, see):
        remaining = deadline - time.monotonic()
        try:
            response = self.session.post_json(
                url, {**headers, "Accept-Encoding": "identity"},  # base64 barely compresses
                body, timeout=(min(self.connect_timeout, remaining), remaining))
            see(response)
            tracing.upstream_status(response.status_code)
            if not 200 <= response.status_code < 300:
                raise error_for(response)
            if on_event is not None:
                return self._read(response, deadline, EventStream(self.subject, on_event))
            content = self._read(response, deadline)
        except requests.exceptions.ConnectTimeout:
            raise UpstreamUnavailable(f"Could not connect to {self.api} (connect timeout).",
                                      cause="connect_timeout") from None
        except (requests.exceptions.Timeout, ReadTimeoutError, TimeoutError):
            raise self._late() from None
        except (requests.exceptions.RequestException, HTTPError) as error:  # HTTPError: urllib3's, from read1
            if isinstance(error.args[0] if error.args else None, ReadTimeoutError):
                raise self._late() from None
            raise UpstreamUnavailable(f"Could not reach {self.api} ({type(error).__name__}).",
                                      cause="connection_error") from None
        try:
            return loads_carving(content)
        except ValueError:
            raise UpstreamUnavailable(f"{self.subject} returned a malformed response (not JSON).",
                                      cause="malformed") from None

    def _late(self):
        return UpstreamTimeout(f"{self.subject} did not answer within {self.timeout:g} seconds.", cause="timeout")

    def _read(self, response, deadline, events=None):
        """The body, up to the size limit and by the deadline however slowly it trickles: each
        read takes what has arrived (one socket read, up to 1 MB) and may wait only until then.
        With `events` (an EventStream) each piece goes to it as it arrives, and its events are the answer."""
        too_large = UpstreamError(f"{self.subject} answer is larger than the gateway's limit of "
                                  f"{self.max_response_bytes} bytes (UPSTREAM_MAX_RESPONSE_BYTES).", cause="too_large")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_response_bytes:
            response.close()
            raise too_large
        connection = response.raw.connection
        decode = "Content-Encoding" in response.headers  # only if compressed all the same
        chunks, size = [], 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                response.close()
                raise self._late()
            if connection is not None and connection.sock is not None:
                connection.sock.settimeout(remaining)
            chunk = response.raw.read1(READ_CHUNK, decode_content=decode)
            if not chunk:
                return events.close() if events else b"".join(chunks)
            size += len(chunk)
            if size > self.max_response_bytes:
                response.close()
                raise too_large
            if events:
                events.feed(chunk)
            else:
                chunks.append(chunk)

    def _delay_before_retry(self, error, attempt, deadline):
        """Seconds to wait before the next attempt, or None when the error is final."""
        if not error.retryable or attempt >= self.max_retries:
            return None
        backoff = self.base_delay * 2 ** attempt * random.uniform(0.5, 1.5)
        delay = error.retry_after if error.retry_after is not None else backoff
        if time.monotonic() + delay >= deadline:
            return None
        return delay
