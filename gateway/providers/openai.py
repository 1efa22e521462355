"""OpenAI's own Images API (docs/providers.md): the client's OpenAI parameters mapped to what the
gpt-image models take, a generation as a JSON body and an edit as multipart files, the answer's
`data[].b64_json` (or its streamed events) as a Generation, and OpenAI's error bodies
(`{"error": {"message", "type", "code"}}`) as the neutral errors; the shared transport sends it."""
import json
import math

from ..catalog import OPENAI_SIZES
from ..errors import Blocked, NoCredits, NoImage, UpstreamError, UpstreamUnavailable
from . import GeneratedImage, Generation, Provider, UpstreamRequest, Usage, count, error_object, status_error, transport

SUBJECT = "The OpenAI API"
QUALITIES = {"standard": "medium", "hd": "high"}  # DALL-E's names; the others are OpenAI's own
PASSED_THROUGH = ("background", "output_format", "output_compression", "moderation", "user")
EDIT_ONLY = ("input_fidelity",)
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def _ratio(width, height):
    return math.log(width / height)


def size_for(params):
    """One of the sizes the gpt-image models draw, or None (OpenAI's `auto`): the client's own if
    it is one, else the nearest by aspect ratio to its `aspect_ratio` or `size`."""
    size, aspect_ratio = params.get("size"), params.get("aspect_ratio")
    if aspect_ratio is None and size in (None, "auto"):
        return None
    if aspect_ratio is None and size in OPENAI_SIZES:
        return size
    width, height = map(int, aspect_ratio.split(":") if aspect_ratio else size.split("x"))
    return min(OPENAI_SIZES, key=lambda known: abs(_ratio(width, height) - _ratio(*map(int, known.split("x")))))


def wire_fields(call, edit=False):
    """The body's fields, in OpenAI's names, from the client's parameters; `n` is the call's (all
    the request's images, or one of a stream's `n` calls). The prompt is the client's own: masks and
    `input_fidelity` are OpenAI's, and `style` is DALL-E 3's only, so no instruction is added."""
    params = call.params
    fields = {"model": call.model, "prompt": params["prompt"], "n": call.n}
    if size_for(params):
        fields["size"] = size_for(params)
    if params.get("quality"):
        fields["quality"] = QUALITIES.get(params["quality"], params["quality"])
    fields.update({name: params[name] for name in PASSED_THROUGH + (EDIT_ONLY if edit else ()) if name in params})
    if call.interim_images:
        fields.update(stream=True, partial_images=params.get("partial_images", 0))
    return fields


def build_body(call):
    """A generation's JSON body, as bytes."""
    return json.dumps(wire_fields(call)).encode()


def build_form(call):
    """An edit's multipart body and its content type: each input under `image[]`, the mask under
    `mask`, the other fields as form fields (booleans as `true`)."""
    fields = [(name, json.dumps(value) if isinstance(value, bool) else value)
              for name, value in wire_fields(call, edit=True).items()]
    files = [("image[]", f"image-{index}.{EXTENSIONS[image.mime_type]}", image.data, image.mime_type)
             for index, image in enumerate(call.edit_images)]
    if call.mask is not None:
        files.append(("mask", "mask.png", call.mask.data, call.mask.mime_type))
    return transport.multipart(fields, files)


def parse_answer(payload, prompt=""):
    """The images of `data[].b64_json` and the usage, or a neutral error. OpenAI sends no words
    with a gpt-image image, so its text is `prompt`, the prompt sent."""
    if not isinstance(payload, dict):
        raise UpstreamUnavailable(f"{SUBJECT} returned a malformed response (not a JSON object).", cause="malformed")
    items = payload.get("data") if isinstance(payload.get("data"), list) else []
    images = [GeneratedImage.read(item.get("b64_json") if isinstance(item, dict) else None, SUBJECT)
              for item in items]
    if not images:
        raise NoImage()
    return Generation(images=images, text=prompt, usage=parse_usage(payload.get("usage")))


def merge_stream(events):
    """The events of a streamed call as one answer: its completed images and their usage; an
    `error` event is the call's error."""
    completed = [event for event in events if isinstance(event, dict)
                 and str(event.get("type", "")).endswith(".completed")]
    failure = next((event.get("error") for event in events if isinstance(event, dict)
                    and event.get("type") == "error"), None)
    if isinstance(failure, dict) and not completed:
        raise error_from(_status_of(failure), failure)
    usage = sum((parse_usage(event.get("usage")) for event in completed), Usage())
    return {"data": [{"b64_json": event.get("b64_json")} for event in completed], "usage": usage}


def _status_of(error):
    """The HTTP status an error inside a stream stands for."""
    return 400 if error.get("code") == "moderation_blocked" or error.get("type") == "invalid_request_error" else 502


def interim_image(event):
    """The base64 of a streamed partial image, or None for any other event."""
    if isinstance(event, dict) and str(event.get("type", "")).endswith(".partial_image"):
        return event.get("b64_json")
    return None


def parse_usage(usage):
    """Neutral usage from OpenAI's (`input_tokens_details` splits text and images); a Usage passes
    as it is (merged from a stream)."""
    if isinstance(usage, Usage):
        return usage
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("input_tokens_details") if isinstance(usage.get("input_tokens_details"), dict) else {}
    output_details = usage.get("output_tokens_details") if isinstance(usage.get("output_tokens_details"), dict) else {}
    input_tokens, output_tokens = count(usage.get("input_tokens")), count(usage.get("output_tokens"))
    return Usage(
        input_text_tokens=count(details.get("text_tokens")),
        input_image_tokens=count(details.get("image_tokens")),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        output_text_tokens=count(output_details.get("text_tokens")),
        total_tokens=count(usage.get("total_tokens")) or input_tokens + output_tokens,
    )


def error_from(status, error, secret="", wait=None):
    """The neutral error for an OpenAI error object (`{"message", "type", "code"}`) with `status`."""
    message = transport.scrub(str(error.get("message") or ""), secret) or f"HTTP {status}"
    cause = f"upstream_{status}"
    if error.get("code") == "moderation_blocked":
        return Blocked(f"The request was refused by the OpenAI API's moderation: {message}", cause="blocked")
    if status == 429 and error.get("code") == "insufficient_quota":
        return NoCredits(f"The OpenAI API account of this gateway has no quota left (HTTP 429); the operator "
                         f"must add credits: {message}", cause)
    return status_error(SUBJECT, status, message, OpenAIProvider.missing_setting, wait)


def error_for(response, secret=""):
    """The neutral error for a non-2xx answer (docs/api.md and docs/providers.md)."""
    return error_from(response.status_code, error_object(response), secret, transport.retry_after(response))


class OpenAIProvider(Provider):
    name, subject, missing_setting = "openai", SUBJECT, "OPENAI_API_KEY"
    takes_n = True

    def __init__(self, settings, session=None):
        super().__init__(settings, session)
        self.api_key = settings.openai_api_key
        self.base_url = settings.openai_base_url

    @property
    def configured(self):
        return bool(self.api_key)

    def request_for(self, call):
        """A generation as JSON, an edit (input images given as files) as multipart."""
        label, prompt = call.label or call.model, call.params["prompt"]
        if not call.edit_images:
            return UpstreamRequest(call.model, build_body(call), call.interim_images, label, prompt=prompt)
        body, content_type = build_form(call)
        return UpstreamRequest(call.model, body, call.interim_images, label, content_type, prompt)

    def generate(self, request, scope, on_partial=None):
        """One call, retried as needed (the shared transport); streamed when partial images are wanted."""
        def on_event(event):
            b64 = interim_image(event)
            if b64 is not None:
                try:
                    on_partial(GeneratedImage.read(b64, SUBJECT))
                except UpstreamError:
                    pass  # an unusable preview is skipped; the final image is checked as ever

        return self.transport.call(
            request.label, f"{self.base_url}/images/{_endpoint(request)}",
            {"Authorization": f"Bearer {self.api_key}", "Content-Type": request.content_type}, request.body,
            lambda payload: parse_answer(merge_stream(payload) if request.stream else payload, request.prompt),
            lambda response: error_for(response, self.api_key), scope, on_event if request.stream else None)



def _endpoint(request):
    """`generations` for a JSON body, `edits` for the multipart one of an edit."""
    return "generations" if request.content_type == "application/json" else "edits"
