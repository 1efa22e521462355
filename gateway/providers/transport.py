"""The HTTP transport every provider shares: one pooled session per process, the cancellation of
a request's calls, bounded retries with backoff, jitter and Retry-After, all within one
wall-clock deadline (the deadline, the cancellation and the retry limit travel together in each
call's `Scope`), a capped read that the deadline bounds however slowly the answer trickles,
and per-attempt metrics. A provider brings its URL, headers, body, and how to read answers."""
import contextlib
import email.utils
import http.cookiejar
import logging
import random
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from functools import cache

import gevent
import requests
from gevent import monkey
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError, ReadTimeoutError
from urllib3.filepost import encode_multipart_formdata

from .. import tracing
from ..errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from ..jsonchunks import loads_carving
from ..metrics import record_attempt
from ..patches.urllib3 import read_available

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

    def sleep(self, seconds):
        """Wait `seconds` (a retry's backoff), or less if the calls are cancelled meanwhile: a
        client that went away does not keep its in-flight slot for the rest of the backoff."""
        event = threading.Event()
        with self.wakes(event):
            event.wait(seconds)

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


PATCHED = monkey.is_module_patched("socket")


@dataclass(frozen=True)
class Scope:
    """What bounds one upstream call, passed explicitly from the job through the provider to the
    transport: its `deadline` (a time.monotonic() value, the client request's, failover included),
    the request's `cancel`, and its own retry limit below UPSTREAM_MAX_RETRIES (`retries`; None
    for the transport's own, 0 while the call has another provider to fail over to, so a failing
    provider costs one attempt, not its retries and backoff)."""
    deadline: float
    cancel: Cancel = field(default_factory=Cancel)
    retries: int | None = None


class Session(requests.Session):
    """The upstream session: requests' own, through its public API. It keeps no cookie (a cookie
    policy that refuses every domain), so one client's upstream cookies never ride along on
    another client's call; and `post_json` follows no redirect (the API key header would go with
    it): a 3xx is an upstream error like any non-2xx answer. The proxy and CA-bundle variables are
    read as requests reads them, once per origin (a process's environment does not change under
    it) instead of on every call, which took 0.15 ms of CPU per call (docs/benchmarks.md); a
    ~/.netrc is never read, so no credential of the host's rides along with the API key."""

    def __init__(self):
        super().__init__()
        self.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        self.trust_env = False  # the environment is read by `_environment`, once per origin
        self.environments = {}

    def post_json(self, url, headers, body, timeout):
        """The answer to POSTing `body`, JSON unless `headers` give another Content-Type (a
        multipart form), its body left unread (stream=True)."""
        return self.post(url, data=body, headers={"Content-Type": "application/json", **headers},
                         timeout=timeout, stream=True, allow_redirects=False, **self._environment(url))

    def _environment(self, url):
        """The proxies and CA bundle requests would take from the environment for `url`'s origin."""
        origin = urllib.parse.urlsplit(url)[:2]
        if origin not in self.environments:
            with requests.Session() as reader:  # trust_env on: requests' own reading
                read = reader.merge_environment_settings(url, {}, None, None, None)
            self.environments[origin] = {"proxies": read["proxies"], "verify": read["verify"]}
        return self.environments[origin]


@cache
def shared_session():
    """One pooled session per process (created lazily, so after gunicorn forks)."""
    session = Session()
    session.mount("https://", HTTPAdapter(pool_connections=4, pool_maxsize=64))
    session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=64))
    return session


def multipart(fields, files):
    """(body, content type) of a multipart/form-data body, for a wire request built once and sent
    by `Transport.call` with that Content-Type: `fields` are (name, text) pairs, `files` (name,
    filename, bytes, MIME type) tuples, each part in the order given."""
    parts = [(name, str(value)) for name, value in fields]
    parts += [(name, (filename, data, mime_type)) for name, filename, data, mime_type in files]
    return encode_multipart_formdata(parts)


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

    def call(self, model_id, url, headers, body, parse, error_for, scope, on_event=None):
        """`model_id` names the model in metrics and logs (a catalog id, not client input).
        `parse(payload)` of the JSON answer to POST `body` (JSON, unless `headers` give another
        Content-Type, such as `multipart`'s), retried as needed within `scope` (its deadline,
        cancellation and retry limit); `error_for(response)` turns a non-2xx
        answer into one of the neutral UpstreamErrors. With `on_event`, the answer is a server-sent
        event stream: each event's JSON goes to `on_event` as it arrives, and `parse` gets the list
        of them at the end. The caller holds the call's in-flight slot (limits.UpstreamSlots)."""
        retries = self.max_retries if scope.retries is None else min(scope.retries, self.max_retries)
        deadline = scope.deadline
        for attempt in range(retries + 1):
            started = time.monotonic()
            if started >= deadline:  # no attempt starts after the deadline
                raise self._late()
            try:
                with tracing.upstream_attempt(self.name, model_id, url) as traced:
                    answer = traced.answered(parse(self._post(url, headers, body, scope, error_for, on_event)))
            except UpstreamError as error:
                failure = UpstreamError("The client went away.", cause="cancelled") if scope.cancel.done else error
                record_attempt(model_id, self.name, failure.cause, time.monotonic() - started, attempt > 0)
                delay = self._delay_before_retry(failure, attempt, retries, deadline)
                if delay is None:
                    raise failure from None
                log.warning("upstream attempt %d for %s failed (%s); retrying in %.1fs",
                            attempt + 1, model_id, failure.outcome, delay)
                scope.cancel.sleep(delay)
            else:
                record_attempt(model_id, self.name, "ok", time.monotonic() - started, attempt > 0)
                answer.attempts = attempt + 1
                return answer

    def _post(self, url, headers, body, scope, error_for, on_event):
        with scope.cancel.attempt() as see:
            return self._send(url, headers, body, scope.deadline, error_for, on_event, see)

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
        except (requests.exceptions.RequestException, HTTPError) as error:  # HTTPError: urllib3's, from the read
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
        decode = "Content-Encoding" in response.headers  # only if compressed all the same
        chunks, size = [], 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                response.close()
                raise self._late()
            chunk = read_available(response, READ_CHUNK, within=remaining, decode=decode)
            if not chunk:
                return events.close() if events else b"".join(chunks)
            size += len(chunk)
            if size > self.max_response_bytes:
                response.close()
                raise too_large
            if events:
                self._feed(events, chunk, response)
            else:
                chunks.append(chunk)

    @staticmethod
    def _feed(events, chunk, response):
        """A piece of an event stream to `events`; the answer closed when its events fail the call
        (a malformed event, or a partial image not finished by the request's deadline)."""
        try:
            events.feed(chunk)
        except BaseException:
            response.close()
            raise

    def _delay_before_retry(self, error, attempt, retries, deadline):
        """Seconds to wait before the next attempt, or None when the error is final."""
        if not error.retryable or attempt >= retries:
            return None
        backoff = self.base_delay * 2 ** attempt * random.uniform(0.5, 1.5)
        delay = error.retry_after if error.retry_after is not None else backoff
        if time.monotonic() + delay >= deadline:
            return None
        return delay
