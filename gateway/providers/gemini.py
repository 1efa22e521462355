"""The Gemini Developer API adapter (DESIGN.md section 5): build the body, parse the answer,
map its errors; the shared transport sends it."""
import base64
import re
from dataclasses import dataclass, field

from .. import media
from ..errors import NO_IMAGE_MESSAGE, UpstreamError
from ..jsonchunks import json_chunks
from . import transport

RETRYABLE_STATUSES = {429, 500, 502, 503, 504}
SAFETY_FINISH_REASONS = {
    "SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT",
    "BLOCKLIST", "SPII", "RECITATION", "IMAGE_RECITATION",
}
KEY_LIKE = re.compile(r"AIza[0-9A-Za-z_\-]{20,}|(?i:key=)[^&\s\"']+")
DEFAULT_RETRY_AFTER = 10


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
        retry_after = transport.retry_after(response)
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
        self.transport = transport.Transport(settings, "the Gemini API", session)

    @property
    def configured(self):
        return bool(self.api_key)

    @staticmethod
    def request_for(model_id, prompt, images=(), image_config=None):
        return UpstreamRequest(model_id, build_body(prompt, images, image_config))

    def generate(self, upstream):
        """One image call, retried as needed (the shared transport)."""
        return self.transport.call(
            upstream.model_id, f"{self.base_url}/v1beta/models/{upstream.model_id}:generateContent",
            {"x-goog-api-key": self.api_key}, upstream.body, parse_answer,
            lambda response: error_for(response, self.api_key))
