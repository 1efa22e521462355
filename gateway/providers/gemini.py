"""The Gemini Developer API adapter (DESIGN.md section 5): build the body, send it, parse it."""
import base64
import email.utils
import json
import logging
import random
import re
import threading
import time
from dataclasses import dataclass, field
from functools import cache

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError, ReadTimeoutError

from .. import media
from ..errors import NO_IMAGE_MESSAGE, GatewayError, UpstreamError
from ..jsonchunks import json_chunks
from ..metrics import UPSTREAM_IN_FLIGHT, record_attempt

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = {429, 500, 502, 503, 504}
SAFETY_FINISH_REASONS = {
    "SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT",
    "BLOCKLIST", "SPII", "RECITATION", "IMAGE_RECITATION",
}
KEY_LIKE = re.compile(r"AIza[0-9A-Za-z_\-]{20,}|(?i:key=)[^&\s\"']+")
DEFAULT_RETRY_AFTER = 10
READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class UpstreamRequest:
    """One request's upstream call, built once and sent by each of its `n` calls and retries."""
    model_id: str
    body: bytes


@dataclass
class GeneratedImage:
    b64: str  # exactly as the upstream sent it, so it can be passed through without a copy
    format: str  # Pillow's name: PNG, JPEG, WEBP
    size: tuple  # (width, height) from the image's own header

    @property
    def data(self):
        return base64.b64decode(self.b64)


@dataclass
class Usage:
    input_text_tokens: int = 0
    input_image_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other):
        return Usage(*(a + b for a, b in zip(vars(self).values(), vars(other).values(), strict=True)))


@dataclass
class Generation:
    images: list
    text: str = ""
    usage: Usage = field(default_factory=Usage)
    attempts: int = 1


@cache
def in_flight_slots(limit):
    """The process-wide bound on upstream calls in flight (one semaphore per process)."""
    return threading.BoundedSemaphore(limit)


@cache
def shared_session():
    """One pooled session per process (created lazily, so after gunicorn forks)."""
    session = requests.Session()
    session.mount("https://", HTTPAdapter(pool_connections=4, pool_maxsize=64))
    session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=64))
    return session


def scrub(text, secret=""):
    """Upstream text with the gateway's key and anything else that looks like a key removed."""
    if secret:
        text = text.replace(secret, "[redacted]")
    return KEY_LIKE.sub("[redacted]", text)


def build_body(prompt, images=(), image_config=None):
    """The generateContent body as bytes; each image's base64 is written straight into it."""
    parts = [{"inlineData": {"mimeType": image.mime_type, "data": ""}} for image in images]
    parts.append({"text": prompt})
    generation_config = {"responseModalities": ["TEXT", "IMAGE"]}
    if image_config:
        generation_config["imageConfig"] = dict(image_config)
    body = {"contents": [{"role": "user", "parts": parts}], "generationConfig": generation_config}
    return b"".join(json_chunks(body, "data", [base64.b64encode(image.data) for image in images]))


def parse_answer(payload):
    """Images (thought parts skipped), the model's words and usage, or a typed error."""
    if not isinstance(payload, dict):
        raise UpstreamError(502, "The Gemini API returned a malformed response (not a JSON object).", retryable=True,
                            cause="malformed")
    block_reason = (payload.get("promptFeedback") or {}).get("blockReason")
    if block_reason:
        raise UpstreamError(400, f"The prompt was blocked by Gemini's safety filters (blockReason: {block_reason}).",
                            cause="blocked")
    candidates = payload.get("candidates") or []
    candidate = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
    parts = (candidate.get("content") or {}).get("parts") or []
    images, words = [], []
    for part in parts:
        if not isinstance(part, dict) or part.get("thought"):
            continue
        if "inlineData" in part:
            images.append(_decode_image(part["inlineData"]))
        elif isinstance(part.get("text"), str):
            words.append(part["text"])
    finish_reason = candidate.get("finishReason")
    if not images and finish_reason in SAFETY_FINISH_REASONS:
        raise UpstreamError(400, f"The image was withheld by Gemini's safety filters (finishReason: {finish_reason}).",
                            cause="blocked")
    if not images:
        raise UpstreamError(500, NO_IMAGE_MESSAGE, cause="no_image")
    return Generation(images=images, text="".join(words).strip(), usage=parse_usage(payload.get("usageMetadata")))


def _decode_image(inline):
    """An inlineData part, checked (cheaply: header and end) to be a complete image; anything
    else is a malformed answer, retried like one."""
    try:
        image_format, size = media.describe_base64(inline.get("data") if isinstance(inline, dict) else None)
    except media.MediaError as error:
        raise UpstreamError(502, f"The Gemini API returned an image that cannot be used: {error}.",
                            retryable=True, cause="bad_image") from None
    return GeneratedImage(b64=inline["data"], format=image_format, size=size)


def parse_usage(metadata):
    metadata = metadata if isinstance(metadata, dict) else {}
    by_modality = {d.get("modality"): d.get("tokenCount", 0)
                   for d in metadata.get("promptTokensDetails") or [] if isinstance(d, dict)}
    input_tokens = metadata.get("promptTokenCount", 0)
    output_tokens = metadata.get("candidatesTokenCount", 0) + metadata.get("thoughtsTokenCount", 0)
    return Usage(
        input_text_tokens=by_modality.get("TEXT", 0),
        input_image_tokens=by_modality.get("IMAGE", 0),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=metadata.get("totalTokenCount", input_tokens + output_tokens),
    )


def _upstream_message(response, secret):
    try:
        error = response.json().get("error") or {}
        message, details = error.get("message") or "", error.get("details") or []
    except (ValueError, AttributeError):
        message, details = "", []
    reasons = {d.get("reason") for d in details if isinstance(d, dict)}
    return scrub(str(message), secret) or f"HTTP {response.status_code}", reasons


def _retry_after(response):
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, int(when.timestamp() - time.time()))


def error_for(response, secret=""):
    """The gateway error for a non-2xx upstream answer (DESIGN.md section 6)."""
    status = response.status_code
    message, reasons = _upstream_message(response, secret)
    cause = f"upstream_{status}"
    if status in (401, 403) or "API_KEY_INVALID" in reasons:
        return UpstreamError(502, f"The Gemini API refused the gateway's credentials (HTTP {status}); "
                                  "the operator should check GEMINI_API_KEY.", cause=cause)
    if status == 400:
        return UpstreamError(400, message, cause=cause)
    if status == 404:
        return UpstreamError(502, f"The Gemini API does not serve this model (HTTP 404): {message}", cause=cause)
    if status == 429:
        retry_after = _retry_after(response)
        client_wait = retry_after if retry_after is not None else DEFAULT_RETRY_AFTER
        return UpstreamError(429, f"The Gemini API rate limit was reached: {message}", retryable=True,
                             retry_after=retry_after, headers={"Retry-After": str(client_wait)}, cause=cause)
    return UpstreamError(502, f"The Gemini API failed (HTTP {status}): {message}",
                         retryable=status in RETRYABLE_STATUSES, cause=cause)


class GeminiProvider:
    name, title, missing_setting = "gemini", "Gemini", "GEMINI_API_KEY (or GOOGLE_API_KEY)"

    def __init__(self, settings, session=None):
        self.api_key = settings.gemini_api_key
        self.base_url = settings.gemini_base_url
        self.timeout = settings.upstream_timeout
        self.connect_timeout = settings.upstream_connect_timeout
        self.max_retries = settings.upstream_max_retries
        self.base_delay = settings.upstream_retry_base_delay
        self.max_response_bytes = settings.upstream_max_response_bytes
        self.slots = in_flight_slots(settings.upstream_max_in_flight)
        self.queue_timeout = settings.upstream_queue_timeout
        self.session = session or shared_session()

    @property
    def configured(self):
        return bool(self.api_key)

    @staticmethod
    def request_for(model_id, prompt, images=(), image_config=None):
        return UpstreamRequest(model_id, build_body(prompt, images, image_config))

    def generate(self, upstream):
        """One image call, retried as needed, holding one of the process's in-flight slots."""
        if not self.slots.acquire(timeout=self.queue_timeout):
            raise GatewayError(503, "The gateway is busy: too many upstream calls are in flight. "
                                    "Try again shortly.", headers={"Retry-After": "5"})
        UPSTREAM_IN_FLIGHT.inc()
        try:
            return self._generate(upstream.model_id, upstream.body)
        finally:
            UPSTREAM_IN_FLIGHT.dec()
            self.slots.release()

    def _generate(self, model_id, body):
        url = f"{self.base_url}/v1beta/models/{model_id}:generateContent"
        deadline = time.monotonic() + self.timeout
        for attempt in range(self.max_retries + 1):
            started = time.monotonic()
            try:
                generation = parse_answer(self._post(url, body, deadline))
            except UpstreamError as error:
                record_attempt(model_id, error.cause, time.monotonic() - started, attempt > 0)
                delay = self._delay_before_retry(error, attempt, deadline)
                if delay is None:
                    raise
                log.warning("upstream attempt %d for %s failed (%s); retrying in %.1fs",
                            attempt + 1, model_id, error.status, delay)
                time.sleep(delay)
            else:
                record_attempt(model_id, "ok", time.monotonic() - started, attempt > 0)
                generation.attempts = attempt + 1
                return generation

    def _post(self, url, body, deadline):
        remaining = deadline - time.monotonic()
        try:
            response = self.session.post(
                url, data=body, headers={"x-goog-api-key": self.api_key, "Content-Type": "application/json",
                                         "Accept-Encoding": "identity"},  # base64 barely compresses
                stream=True, timeout=(min(self.connect_timeout, remaining), remaining))
            if not response.ok:
                raise error_for(response, self.api_key)
            content = self._read(response, deadline)
        except requests.exceptions.ConnectTimeout:
            raise UpstreamError(502, "Could not connect to the Gemini API (connect timeout).", retryable=True,
                                cause="connect_timeout") from None
        except (requests.exceptions.Timeout, ReadTimeoutError, TimeoutError):
            raise self._late() from None
        except (requests.exceptions.RequestException, HTTPError) as error:  # HTTPError: urllib3's, from read1
            if isinstance(error.args[0] if error.args else None, ReadTimeoutError):
                raise self._late() from None
            raise UpstreamError(502, f"Could not reach the Gemini API ({type(error).__name__}).",
                                retryable=True, cause="connection_error") from None
        try:
            return json.loads(content)
        except ValueError:
            raise UpstreamError(502, "The Gemini API returned a malformed response (not JSON).",
                                retryable=True, cause="malformed") from None

    def _late(self):
        return UpstreamError(504, f"The Gemini API did not answer within {self.timeout:g} seconds.", cause="timeout")

    def _read(self, response, deadline):
        """The body, up to the size limit and by the deadline however slowly it trickles: each
        read takes what has arrived (one socket read, up to 1 MB) and may wait only until then."""
        too_large = UpstreamError(502, f"The Gemini API answer is larger than the gateway's limit of "
                                       f"{self.max_response_bytes} bytes (UPSTREAM_MAX_RESPONSE_BYTES).",
                                  cause="too_large")
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
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_response_bytes:
                response.close()
                raise too_large
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
