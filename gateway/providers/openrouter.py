"""OpenAI-compatible chat completions that answer with images (docs/providers.md), the shape
OpenRouter defined and llmgateway or a LiteLLM proxy also speak: the neutral call as a
`chat/completions` body, the answer's `message.images` as a Generation, the error bodies
(`{"error": {"code", "message"}}`) as the neutral errors; the shared transport sends it."""
import base64

from ..errors import Blocked, NoCredits, NoImage, UpstreamUnavailable
from ..jsonchunks import json_chunks
from . import GeneratedImage, Generation, Provider, Usage, count, error_object, google, status_error, transport

SUBJECT = "The OpenRouter API"
TIER_NAMES = {"512": "0.5K"}  # OpenRouter's name for a tier, where it differs from Google's
DATA_URL_PREFIX = b"data:image/"
MAX_CALL_COST = 1000.0  # USD; a call's cost above it is not a real figure (and would not fit the ledger)


def build_body(call):
    """The chat-completions body as bytes; each image's data URL is written straight into it."""
    content = [{"type": "text", "text": call.prompt}]
    content += [{"type": "image_url", "image_url": {"url": ""}} for _ in call.images]
    body = {"model": call.model, "messages": [{"role": "user", "content": content}],
            "modalities": ["image"] if call.image_only else ["image", "text"]}
    aspect_ratio, tier = google.image_shape(call.catalog, call.params)  # a passthrough model has no tiers
    image_config = {key: value for key, value in (("aspect_ratio", aspect_ratio),
                                                  ("image_size", TIER_NAMES.get(tier, tier))) if value}
    if image_config:
        body["image_config"] = image_config
    urls = [f"data:{image.mime_type};base64,".encode() + base64.b64encode(image.data) for image in call.images]
    return b"".join(json_chunks(body, "url", urls))


def _image(item):
    """One `message.images[]` entry: its data URL's base64, checked like any upstream image."""
    url = ((item.get("image_url") if isinstance(item, dict) else None) or {}).get("url")
    url = url.encode("ascii", "replace") if isinstance(url, str) else url
    head, _, b64 = url.partition(b",") if isinstance(url, bytes) else (b"", b"", None)
    if not (head.startswith(DATA_URL_PREFIX) and head.endswith(b";base64")):
        raise UpstreamUnavailable(f"{SUBJECT} returned an image that is not a base64 data URL.", cause="bad_image")
    return GeneratedImage.read(b64, SUBJECT)


def _words(content):
    """`message.content`: a string, or (some compatible servers) a list of text parts."""
    if isinstance(content, list):
        texts = (part.get("text") for part in content if isinstance(part, dict))
        content = "".join(text for text in texts if isinstance(text, str))
    return content.strip() if isinstance(content, str) else ""


def parse_answer(payload, secret=""):
    """Images, the model's words and usage (with `cost` when present), or a neutral error (whose
    upstream message never carries `secret`)."""
    if not isinstance(payload, dict):
        raise UpstreamUnavailable(f"{SUBJECT} returned a malformed response (not a JSON object).", cause="malformed")
    choices = payload.get("choices") or []
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    failure = payload.get("error") or choice.get("error")
    if isinstance(failure, dict):  # an upstream model's failure, reported inside a 200
        raise error_from(failure.get("code"), failure, secret)
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    images = [_image(item) for item in message.get("images") or []]
    if not images and choice.get("finish_reason") == "content_filter":
        reason = choice.get("native_finish_reason") or "content_filter"
        raise Blocked(f"The image was withheld by the model's safety filters (finish_reason: {reason}).",
                      cause="blocked")
    if not images:
        raise NoImage()
    return Generation(images=images, text=_words(message.get("content")), usage=parse_usage(payload.get("usage")))


def _details(usage, name):
    return usage.get(name) if isinstance(usage.get(name), dict) else {}


def parse_usage(usage):
    """Neutral usage; the text and thinking output is the completion less its image tokens (the
    reasoning alone when the image tokens are not given), for an endpoint that sends no `cost`."""
    usage = usage if isinstance(usage, dict) else {}
    input_tokens, output_tokens = count(usage.get("prompt_tokens")), count(usage.get("completion_tokens"))
    image_tokens = count(_details(usage, "prompt_tokens_details").get("image_tokens"))
    completion = _details(usage, "completion_tokens_details")
    cost = usage.get("cost")
    return Usage(
        input_text_tokens=max(0, input_tokens - image_tokens),
        input_image_tokens=image_tokens,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        output_text_tokens=(max(0, output_tokens - count(completion["image_tokens"])) if "image_tokens" in completion
                            else count(completion.get("reasoning_tokens"))),
        total_tokens=count(usage.get("total_tokens")) or input_tokens + output_tokens,
        cost=cost if _credits(cost) else None,
    )


def _credits(cost):
    """Whether an answer's `usage.cost` is a figure to pass on: a number of credits from 0 to
    MAX_CALL_COST (JSON may say NaN, Infinity, -1 or 1e300; the price table is used instead)."""
    return isinstance(cost, (int, float)) and not isinstance(cost, bool) and 0 <= cost <= MAX_CALL_COST


def error_from(status, error, secret="", wait=None):
    """The neutral error for an OpenRouter error (`{"code", "message", "metadata"}`) with `status`."""
    status = status if isinstance(status, int) else 502
    message = transport.scrub(str(error.get("message") or ""), secret) or f"HTTP {status}"
    cause = f"upstream_{status}"
    metadata = error.get("metadata") if isinstance(error.get("metadata"), dict) else {}
    if status == 403 and metadata.get("reasons"):  # the moderation of models that require it
        reasons = ", ".join(map(str, metadata["reasons"]))
        return Blocked(f"The prompt was blocked by the OpenRouter API's moderation ({reasons}).", cause="blocked")
    if status == 402:
        return NoCredits(f"{SUBJECT} account of this gateway has no credits left (HTTP 402); the operator "
                         f"must add credits: {message}", cause)
    return status_error(SUBJECT, status, message, OpenRouterProvider.missing_setting, wait)


def error_for(response, secret=""):
    """The neutral error for a non-2xx answer (docs/api.md and docs/providers.md)."""
    return error_from(response.status_code, error_object(response), secret, transport.retry_after(response))


class OpenRouterProvider(Provider):
    name, subject, missing_setting = "openrouter", SUBJECT, "OPENROUTER_API_KEY"
    build_body = staticmethod(build_body)

    def __init__(self, settings, session=None):
        super().__init__(settings, session)
        self.api_key = settings.openrouter_api_key
        self.base_url = settings.openrouter_base_url

    @property
    def configured(self):
        return bool(self.api_key)

    def generate(self, request, scope, on_partial=None):  # no interim images on this shape
        """One image call, retried as needed (the shared transport)."""
        return self.transport.call(
            request.label, f"{self.base_url}/chat/completions", {"Authorization": f"Bearer {self.api_key}"},
            request.body, lambda payload: parse_answer(payload, self.api_key),
            lambda response: error_for(response, self.api_key), scope)
