"""One client request's upstream work, as events: its calls (one per image, or one for all `n` on
a provider that takes `n`) run in parallel (each failing over on its own), and each image is
finished (re-encoded, composited under a mask) as soon as its call answers. The HTTP layer streams
the events (docs/api.md) or collects them into one body (section 8): one service, two renderings."""
import base64
import contextlib
import contextvars
import logging
import queue
import threading
import time
from dataclasses import dataclass, replace

from . import media
from .errors import GatewayError, UpstreamError, every_failure, internal_error
from .limits import image_thread_lock, image_work, upstream_slots
from .metrics import UPSTREAM_IN_FLIGHT, record_cost, record_failover, record_images
from .providers import Usage, transport

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """An asynchronous job was cancelled by its key while its calls ran."""


@dataclass
class Partial:
    """An interim image of call `index`, the `partial_index`-th it sent, drawn by `provider`."""
    index: int
    partial_index: int
    b64: str
    size: tuple
    provider: str


@dataclass
class Completed:
    """A finished image of call `index`; `usage` is that call's (on its first image only)."""
    index: int
    b64: str
    size: tuple
    revised_prompt: str
    usage: Usage
    provider: str
    last: bool = False  # the call's last event


@dataclass
class Failed:
    """Call `index` (or one of its images) failed; `error` is what the client would be told."""
    index: int
    error: GatewayError
    last: bool = False  # the call's last event


@dataclass
class Mask:
    source: bytes  # the first input image, as sent upstream
    region: bytes  # PNG, white where the model may edit


@dataclass
class ImageResult:
    body: dict
    failed: int
    provider: str  # the providers that made the images ("gemini, vertex" when calls failed over)


class _Finisher:
    """Each image in the asked format, on an image thread when it needs work; a masked edit's
    source is decoded once, by the first image that needs it, and its images are composited one
    at a time."""

    def __init__(self, settings, output_format, compression, mask):
        self.settings, self.output_format, self.compression, self.mask = settings, output_format, compression, mask
        self.masked, self.lock = None, image_thread_lock()

    def passes_through(self, image):
        return self.mask is None and image.format == media.FORMATS[self.output_format] and self.compression is None

    def __call__(self, image, deadline):
        """(base64, (width, height)), or the MediaError that made the image unusable; a
        GatewayError raised when no image thread came free in time, or `deadline` passed first."""
        if self.passes_through(image):
            return image.b64, image.size
        return image_work(self.settings, self._work, image, deadline=deadline)

    def _work(self, image):
        try:
            if not self.mask:
                return self._encoded(media.open_image(image.data))
            # One composite and encode at a time per request: each holds several full-size copies
            # of the source (up to IMAGE_MAX_PIXELS), and a masked n=10 edit at the pixel limit
            # peaked at +710 MB with two at once, against +490 MB one by one.
            with self.lock:
                if self.masked is None:
                    self.masked = media.MaskedSource(self.mask.source, self.mask.region)
                return self._encoded(self.masked.composite(image.data))
        except (media.MediaError, OSError) as error:
            return media.MediaError(str(error))

    def _encoded(self, picture):
        return base64.b64encode(media.encode_image(picture, self.output_format, self.compression)), picture.size


class ImageJob:
    """The calls of one client request, planned by the service and run by `events()`."""

    def __init__(self, settings, client, model, chain, wire_request, prompt, params, admission, mask=None,
                 partial_images=0, calls=None):
        self.settings, self.client, self.model, self.chain = settings, client, model, chain
        self.tier = model.tier_for(params.get("size"), params.get("quality"))  # the price tier of its images
        self.wire_request, self.prompt, self.params, self.admission = wire_request, prompt, params, admission
        self.n, self.partial_images = params.get("n", 1), partial_images
        self.calls = calls or self.n  # upstream calls: one per image, or one that makes all `n`
        self.output_format = params.get("output_format", "png")
        self.finish = _Finisher(settings, self.output_format, params.get("output_compression"), mask)
        self.usage, self.images, self.lock = Usage(), 0, threading.Lock()
        self.failures, self.providers = [], {}  # what the calls ended in, for the ledger
        self.serving = [None] * self.calls  # the provider each call is with (None: none yet, or it failed)

    def events(self, idle=None):
        """Partial, Completed and Failed events as they happen (every call ends in one Completed per
        image or one Failed); None after `idle` seconds without any. Closing the generator early
        (the client went away) cancels the calls still running or waiting for an in-flight slot."""
        events = queue.Queue()
        scope = transport.Scope(time.monotonic() + self.settings.upstream_timeout)  # all calls, failover included
        inline = idle is None and self.calls == 1  # one call and nothing to say meanwhile: it runs here
        calls = [] if inline else [
            threading.Thread(target=contextvars.copy_context().run, name=f"upstream-{index}", daemon=True,
                             args=(self._call, index, scope, events.put))
            for index in range(self.calls)]  # each in a copy of this context: request id, counters
        try:
            if inline:
                self._call(0, scope, events.put)
            for call in calls:
                call.start()
            yield from self._drain(events, idle)
        finally:
            scope.cancel.set()
            for call in calls:
                if call.ident is not None:  # started
                    call.join()
            record_images(self.model.label, self.client.name, self.images, self.usage)
            self.admission.finish(self.images, self.usage, ", ".join(self.providers), self._status())

    def serving_providers(self):
        """The providers the calls are with now, in call order: the one that made a call's images,
        or that a running call is trying; none for a call that failed or still waits for a slot."""
        return ", ".join(dict.fromkeys(name for name in list(self.serving) if name))

    def _drain(self, events, idle):
        running = self.calls
        while running:
            try:
                event = events.get(timeout=idle)
            except queue.Empty:
                yield None
                continue
            if isinstance(event, Completed):
                self.images += 1
                self.providers[event.provider] = True
            elif isinstance(event, Failed):
                self.failures.append(event)
            running -= getattr(event, "last", False)  # a Partial never ends its call
            yield event

    def _call(self, index, scope, emit):
        """One upstream call, failing over as needed; its images become events. Whatever goes wrong,
        the call ends in an event with `last` set, a bug included (logged, and a 500 for the
        client), so the request never waits for a call that is gone."""
        try:
            events = self._images(index, scope, emit)
        except GatewayError as error:  # e.g. no in-flight slot or image thread within its queue timeout
            events = [Failed(index, error)]
        except Exception:  # noqa: BLE001 - reported to the client as the 500 it is
            log.exception("image call %d failed", index)
            events = [Failed(index, internal_error())]
        if not any(isinstance(event, Completed) for event in events):
            self.serving[index] = None
        events[-1].last = True
        for event in events:
            emit(event)

    def _images(self, index, scope, emit):
        """The events of one call's images (its partial images are emitted as they come). The call
        holds one of the process's in-flight slots through its retries and failover."""
        sent = []

        def partial(image):
            if len(sent) < self.partial_images:
                finished = self.finish(image, scope.deadline)
                if not isinstance(finished, media.MediaError):
                    emit(Partial(index, len(sent), *finished, self.serving[index]))
                    sent.append(image)

        slot = upstream_slots(self.settings.upstream_max_in_flight).hold(
            self.client.id, self.settings.upstream_queue_timeout, scope.cancel)
        with slot, UPSTREAM_IN_FLIGHT.track_inprogress():
            generation, provider = self._with_failover(index, scope, partial)
        if generation.usage.cost is None:  # an upstream's own figure (OpenRouter's) wins over the price table
            generation.usage.cost = self.model.cost(self.tier, len(generation.images), generation.usage)
        record_cost(self.model.label, provider.name, self.client.name, generation.usage.cost)
        with self.lock:
            self.usage += generation.usage
        return [self._finished(index, number, image, generation, provider, scope.deadline)
                for number, image in enumerate(generation.images)]

    def _finished(self, index, number, image, generation, provider, deadline):
        """Image `number` of a call's answer as a Completed event, or the Failed one that says why
        it was not: unusable, or not finished by the request's deadline (docs/api.md#errors)."""
        try:
            finished = self.finish(image, deadline)
        except GatewayError as error:
            return Failed(index, error)
        if isinstance(finished, media.MediaError):
            return Failed(index, UpstreamError(f"{provider.subject} returned an image that cannot be used: "
                                               f"{finished}.", cause="bad_image"))
        usage = generation.usage if number == 0 else Usage()
        return Completed(index, *finished, generation.text or self.prompt, usage, provider.name)

    def _with_failover(self, index, scope, on_partial, skipping=True):
        """(Generation, provider) from the first provider of the chain whose circuit breaker lets
        the call through, or from the next one when a provider's failure may be its own
        (docs/providers.md), until the scope's deadline. When every breaker is open, the chain is tried
        anyway (`skipping` False): refusing would fail a call that might have succeeded."""
        skipping = skipping and any(provider.breaker.would_admit() for provider in self.chain)
        failures = []  # (provider name, its error, or None when its breaker skipped it)
        for position, provider in enumerate(self.chain):
            if skipping and not provider.breaker.admit():
                failures.append((provider.name, None))
                continue
            following = [later for later in self.chain[position + 1:] if not skipping or later.breaker.would_admit()]
            self.serving[index] = provider.name
            try:
                return self._generate(provider, bool(following), scope, on_partial), provider
            except UpstreamError as error:
                failures.append((provider.name, error))
                if not (error.fails_over and following and time.monotonic() < scope.deadline) or scope.cancel.done:
                    raise every_failure(failures) from None
                log.warning("%s failed for %s (%s); failing over to %s", provider.name, self.model.id, error.outcome,
                            following[0].name)
                record_failover(self.model.label, provider.name, following[0].name)
        if any(error is not None for _, error in failures):  # the providers after the last failure were skipped
            raise every_failure(failures)
        return self._with_failover(index, scope, on_partial, skipping=False)  # every breaker opened meanwhile

    def _generate(self, provider, can_fail_over, scope, on_partial):
        """One provider's call, its outcome told to the provider's circuit breaker. With another
        provider to fail over to, the call makes one attempt instead of spending its retries and
        their backoff on a provider that may be down (docs/providers.md#circuit-breakers)."""
        try:
            generation = provider.generate(self.wire_request(provider),
                                           replace(scope, retries=0 if can_fail_over else None), on_partial)
        except UpstreamError as error:
            if scope.cancel.done:
                provider.breaker.released()
            elif error.fails_over:
                provider.breaker.failed()
            else:  # it answered; the request itself was the trouble
                provider.breaker.succeeded()
            raise
        except BaseException:
            provider.breaker.released()
            raise
        provider.breaker.succeeded()
        return generation

    def _status(self):
        """The request's status for the ledger: 200 when it made images, else its first failure's
        (499 when the client went away first)."""
        if self.images:
            return 200
        return first_failure(self.failures).status if self.failures else 499

    def result(self, cancelled=None, every=5.0):
        """The section 8 body of every image made (never more than `n`), in call order; the
        first failure when none could be made. `cancelled()`, asked every `every` seconds, stops
        the calls of an asynchronous job that its key cancelled (JobCancelled)."""
        completed = []
        events = self.events(idle=every if cancelled else None)
        with contextlib.closing(events):  # closing it cancels the calls still running
            for event in events:
                if event is None and cancelled():
                    raise JobCancelled()
                if isinstance(event, Completed):
                    completed.append(event)
        if not completed:
            raise first_failure(self.failures)  # the Failed events, as _drain collected them
        completed.sort(key=lambda event: event.index)  # stable: a call's images keep their order
        made = completed[:self.n]
        failed_count = min(len(self.failures), self.n - len(made))
        if failed_count:
            log.warning("%d of %d images failed; returning %d", failed_count, self.n, len(made))
        return ImageResult(body=self.body(made), failed=failed_count,
                           provider=", ".join(dict.fromkeys(event.provider for event in made)))

    def body(self, made):
        """The response body of docs/api.md (with the upstream's `cost` in `usage` when it says)."""
        width, height = made[0].size
        body = {
            "created": int(time.time()),
            "data": [{"b64_json": event.b64, "revised_prompt": event.revised_prompt} for event in made],
            "model": self.model.id,
            "size": f"{width}x{height}",
            "output_format": self.output_format,
            "usage": usage_body(self.usage),
        }
        return body


def first_failure(failures):
    """The error of the lowest-numbered call among Failed events: the one a client is told."""
    return min(failures, key=lambda event: event.index).error


def usage_body(usage):
    body = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "input_tokens_details": {"text_tokens": usage.input_text_tokens, "image_tokens": usage.input_image_tokens},
    }
    if usage.cost is not None:
        body["cost"] = round(usage.cost, 6)
    return body

