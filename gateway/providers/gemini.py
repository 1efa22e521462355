"""The Gemini Developer API (docs/api.md): the neutral call as a generateContent body,
the answer as a Generation, Google's errors as the neutral ones; the shared transport sends it."""
import base64

from ..errors import Blocked, NoImage, UpstreamError, UpstreamUnavailable
from ..jsonchunks import json_chunks
from . import GeneratedImage, Generation, Provider, Usage, count, credentials_refused, google, status_error, transport

SUBJECT = "The Gemini API"
SAFETY_FINISH_REASONS = {
    "SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT",
    "BLOCKLIST", "SPII", "RECITATION", "IMAGE_RECITATION",
}


def image_config(call):
    """`generationConfig.imageConfig` for the call: its aspect ratio and resolution tier, if any."""
    aspect_ratio, tier = google.image_shape(call.catalog, call.params)
    return {key: value for key, value in (("aspectRatio", aspect_ratio), ("imageSize", tier)) if value}


def build_body(call):
    """The generateContent body as bytes; each image's base64 is written straight into it."""
    parts = [{"inlineData": {"mimeType": image.mime_type, "data": ""}} for image in call.images]
    parts.append({"text": call.prompt})
    generation_config = {"responseModalities": ["IMAGE"] if call.image_only else ["TEXT", "IMAGE"]}
    if config := image_config(call):
        generation_config["imageConfig"] = config
    if call.interim_images:  # Gemini 3 sends the images it draws while thinking only when asked
        generation_config["thinkingConfig"] = {"includeThoughts": True}
    body = {"contents": [{"role": "user", "parts": parts}], "generationConfig": generation_config}
    return b"".join(json_chunks(body, "data", [base64.b64encode(image.data) for image in call.images]))


def parse_answer(payload, subject=SUBJECT):
    """Images (thought parts skipped), the model's words and usage, or a neutral error; `subject`
    names the API that answered (Vertex AI answers alike)."""
    if not isinstance(payload, dict):
        raise UpstreamUnavailable(f"{subject} returned a malformed response (not a JSON object).", cause="malformed")
    block_reason = (payload.get("promptFeedback") or {}).get("blockReason")
    if block_reason:
        raise Blocked(f"The prompt was blocked by Gemini's safety filters (blockReason: {block_reason}).",
                      cause="blocked")
    candidates = payload.get("candidates") or []
    candidate = candidates[0] if candidates and isinstance(candidates[0], dict) else {}
    parts = (candidate.get("content") or {}).get("parts") or []
    images, words = [], []
    for part in parts:
        if not isinstance(part, dict) or part.get("thought"):
            continue
        if "inlineData" in part:
            images.append(GeneratedImage.read(_data(part), subject))
        elif isinstance(part.get("text"), str):
            words.append(part["text"])
    thought_images = [part for part in parts if isinstance(part, dict) and part.get("thought") and "inlineData" in part]
    if not images and thought_images:  # the only image came as a thought: it is the final one
        images.append(GeneratedImage.read(_data(thought_images[-1]), subject))
    finish_reason = candidate.get("finishReason")
    if not images and finish_reason in SAFETY_FINISH_REASONS:
        raise Blocked(f"The image was withheld by Gemini's safety filters (finishReason: {finish_reason}).",
                      cause="blocked")
    if not images:
        raise NoImage()
    return Generation(images=images, text="".join(words).strip(), usage=parse_usage(payload.get("usageMetadata")))


def _data(part):
    inline = part["inlineData"]
    return inline.get("data") if isinstance(inline, dict) else None


def merge_stream(payloads):
    """The events of `streamGenerateContent` as one answer: every event's parts in order, and the
    last block reason, finish reason and usage that any event sent."""
    parts, merged, candidate = [], {}, {}
    for payload in payloads:
        if not isinstance(payload, dict):
            continue
        merged.update({key: payload[key] for key in ("promptFeedback", "usageMetadata") if payload.get(key)})
        candidates = payload.get("candidates") or [{}]
        event_candidate = candidates[0] if isinstance(candidates[0], dict) else {}
        parts += (event_candidate.get("content") or {}).get("parts") or []
        candidate.update({"finishReason": event_candidate["finishReason"]} if event_candidate.get("finishReason")
                         else {})
    return {**merged, "candidates": [{**candidate, "content": {"parts": parts}}]}


def interim_images(payload):
    """The base64 of the thought images in one event of the stream."""
    candidates = (payload.get("candidates") if isinstance(payload, dict) else None) or [{}]
    parts = ((candidates[0] if isinstance(candidates[0], dict) else {}).get("content") or {}).get("parts") or []
    return [_data(part) for part in parts if isinstance(part, dict) and part.get("thought") and "inlineData" in part]


def send(transport_, url, headers, request, scope, on_partial, subject=SUBJECT, **errors):
    """One generateContent call, or with interim images wanted a `streamGenerateContent` call
    whose thought images go to `on_partial` as they arrive; the Gemini API and Vertex AI alike."""
    def answer(payload):
        return parse_answer(payload, subject)

    def error(response):
        return error_for(response, subject=subject, **errors)

    if not request.stream:
        return transport_.call(request.label, f"{url}:generateContent", headers, request.body, answer, error, scope)

    def on_event(payload):
        for b64 in interim_images(payload):
            try:
                image = GeneratedImage.read(b64, subject)
            except UpstreamError:
                continue  # an unusable preview is skipped; the final image is checked as ever
            on_partial(image)

    return transport_.call(request.label, f"{url}:streamGenerateContent?alt=sse", headers, request.body,
                           lambda payloads: answer(merge_stream(payloads)), error, scope, on_event)


def _by_modality(details):
    """{modality: tokens} of a usageMetadata `*TokensDetails` list."""
    return {d.get("modality"): count(d.get("tokenCount")) for d in details or [] if isinstance(d, dict)}


def parse_usage(metadata):
    """Neutral usage; the text and thinking output is what the per-image price does not cover
    (without `candidatesTokensDetails` to split the output, the thinking alone)."""
    metadata = metadata if isinstance(metadata, dict) else {}
    by_modality = _by_modality(metadata.get("promptTokensDetails"))
    input_tokens = count(metadata.get("promptTokenCount"))
    thoughts = count(metadata.get("thoughtsTokenCount"))
    output_tokens = count(metadata.get("candidatesTokenCount")) + thoughts
    return Usage(
        input_text_tokens=by_modality.get("TEXT", 0),
        input_image_tokens=by_modality.get("IMAGE", 0),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        output_text_tokens=_by_modality(metadata.get("candidatesTokensDetails")).get("TEXT", 0) + thoughts,
        total_tokens=count(metadata.get("totalTokenCount")) or input_tokens + output_tokens,
    )


def _upstream_message(response, secret):
    try:
        error = response.json().get("error") or {}
        message, details = error.get("message") or "", error.get("details") or []
    except (ValueError, AttributeError):
        message, details = "", []
    reasons = {d.get("reason") for d in details if isinstance(d, dict)}
    return transport.scrub(str(message), secret) or f"HTTP {response.status_code}", reasons


def error_for(response, secret="", subject=SUBJECT, credentials="GEMINI_API_KEY"):
    """The neutral error for a non-2xx answer from Google (docs/api.md); `credentials`
    names what the operator should check when Google refuses them."""
    status = response.status_code
    message, reasons = _upstream_message(response, secret)
    if "API_KEY_INVALID" in reasons:  # Google refuses a bad key with a 400
        return credentials_refused(subject, status, credentials)
    return status_error(subject, status, message, credentials, transport.retry_after(response))


class GeminiProvider(Provider):
    name, subject, missing_setting = "gemini", SUBJECT, "GEMINI_API_KEY (or GOOGLE_API_KEY)"
    build_body = staticmethod(build_body)

    def __init__(self, settings, session=None):
        super().__init__(settings, session)
        self.api_key = settings.gemini_api_key
        self.base_url = settings.gemini_base_url

    @property
    def configured(self):
        return bool(self.api_key)

    def generate(self, request, scope, on_partial=None):
        """One image call, retried as needed (the shared transport)."""
        return send(self.transport, f"{self.base_url}/v1beta/models/{request.model}", {"x-goog-api-key": self.api_key},
                    request, scope, on_partial, secret=self.api_key)
