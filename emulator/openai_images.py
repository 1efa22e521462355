"""Speaks OpenAI's Images API for the gpt-image models (docs/testing.md): `POST /v1/images/generations`
(JSON) and `POST /v1/images/edits` (multipart: `image[]` files, an optional `mask` file, the other
fields as form fields), with `Authorization: Bearer`. Strict like the real one, so a wrong wire
fails the tests: an unknown field (`response_format` and `style` included), a size or quality the
models do not take, `stream` with `n` > 1, a mask without alpha or of another size are 400s in
OpenAI's error shape. Answers real PNGs of the asked size with `usage`, or with `stream` the
`image_generation.*` / `image_edit.*` events; the fault directives of emulator/server.py apply (emulator/faults.py)."""
import base64
import io
import json
import time

from flask import Response, jsonify, request
from PIL import Image

from .faults import deliver
from .models import Spec
from .pictures import Job

RATIOS = {"1024x1024": "1:1", "1536x1024": "3:2", "1024x1536": "2:3"}  # the sizes the models draw
SPEC = Spec({ratio: tuple(map(int, size.split("x"))) for size, ratio in RATIOS.items()}, {"1K": 0})
MODELS = ("gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5")
# Output tokens of one image by quality and size, as OpenAI bills them
OUTPUT_TOKENS = {"low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
                 "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
                 "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208}}
CHOICES = {"size": (*RATIOS, "auto"), "quality": ("low", "medium", "high", "auto"),
           "background": ("transparent", "opaque", "auto"), "output_format": ("png", "jpeg", "webp"),
           "moderation": ("low", "auto"), "input_fidelity": ("low", "high")}
INTEGERS = {"n": (1, 10), "output_compression": (0, 100), "partial_images": (0, 3)}
GENERATION_FIELDS = {"model", "prompt", "n", "stream", "user", *CHOICES, *INTEGERS} - {"input_fidelity"}
EDIT_FIELDS = GENERATION_FIELDS | {"input_fidelity"}


class Invalid(Exception):
    """A request OpenAI would refuse with a 400; `param` names the field."""

    def __init__(self, message, param=None, code="invalid_value"):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def openai_error(status, message, param=None, code=None):
    kind = {401: "invalid_request_error", 429: "requests", 400: "invalid_request_error"}.get(status, "server_error")
    response = jsonify({"error": {"message": message, "type": kind, "param": param, "code": code}})
    response.status_code = status
    return response


def _form_value(name, text):
    """A multipart field as its JSON type."""
    if name in INTEGERS:
        try:
            return int(text)
        except ValueError:
            raise Invalid(f"Invalid type for '{name}': expected an integer, but got a string instead.", name,
                          "invalid_type") from None
    if name == "stream":
        return {"true": True, "false": False}.get(text, text)
    return text


def checked(fields, allowed):
    """The request's fields as OpenAI checks them for a gpt-image model."""
    for name in fields:
        if name not in allowed:
            raise Invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    if fields.get("model") not in MODELS:
        raise Invalid(f"Invalid value for 'model': '{fields.get('model')}'.", "model")
    if not isinstance(fields.get("prompt"), str) or not fields["prompt"].strip():
        raise Invalid("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    for name, choices in CHOICES.items():
        if name in fields and fields[name] not in choices:
            raise Invalid(f"Invalid value: '{fields[name]}'. Supported values are: "
                          + ", ".join(f"'{choice}'" for choice in choices) + ".", name)
    for name, (low, high) in INTEGERS.items():
        value = fields.get(name, low)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise Invalid(f"Invalid '{name}': must be an integer between {low} and {high}.", name)
    if fields.get("stream") not in (None, True, False):
        raise Invalid("Invalid type for 'stream': expected a boolean.", "stream", "invalid_type")
    if fields.get("stream") and fields.get("n", 1) > 1:
        raise Invalid("Streaming is not supported with n > 1.", "n")
    if fields.get("background") == "transparent" and fields.get("output_format") == "jpeg":
        raise Invalid("Transparent background is not supported for the jpeg output format.", "background")
    return fields


def _mask_checked(mask, first):
    if mask is None:
        return
    if mask.format != "PNG" or "A" not in mask.getbands():
        raise Invalid("Invalid mask image format - mask image missing alpha channel", "mask")
    if mask.size != first.size:
        raise Invalid("The mask and the image must have the same dimensions.", "mask")


def register(app, api_key, faults):
    """Add the two routes to the emulator `app`; `faults(api, job, config)` logs a call and says
    which fault directives it obeys (emulator/faults.py)."""

    def authorized():
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        return scheme == "Bearer" and key and (not api_key or key == api_key)

    @app.post("/v1/images/generations")
    def openai_generations():
        if not authorized():
            return openai_error(401, "Incorrect API key provided.", code="invalid_api_key")
        body = request.get_json(silent=True)
        try:
            fields = checked(body if isinstance(body, dict) else {}, GENERATION_FIELDS)
        except Invalid as invalid:
            return openai_error(400, invalid.message, invalid.param, invalid.code)
        return _answer("image_generation", fields, [], faults)

    @app.post("/v1/images/edits")
    def openai_edits():
        if not authorized():
            return openai_error(401, "Incorrect API key provided.", code="invalid_api_key")
        try:
            fields, inputs = _edit_request()
        except Invalid as invalid:
            return openai_error(400, invalid.message, invalid.param, invalid.code)
        return _answer("image_edit", fields, inputs, faults)


def _edit_request():
    """The multipart edit's fields and input images, checked as OpenAI checks them (Invalid if not)."""
    fields = checked({name: _form_value(name, value) for name, value in request.form.items()}, EDIT_FIELDS)
    unknown = [name for name in request.files if name not in ("image[]", "image", "mask")]
    if unknown:
        raise Invalid(f"Unknown parameter: '{unknown[0]}'.", unknown[0], "unknown_parameter")
    inputs = [_image(upload) for upload in request.files.getlist("image[]") + request.files.getlist("image")]
    if not inputs:
        raise Invalid("Missing required parameter: 'image'.", "image", "missing_required_parameter")
    _mask_checked(_image(request.files["mask"]) if "mask" in request.files else None, inputs[0])
    return fields, inputs


def _answer(kind, fields, inputs, faults):
    """The images of a checked request (JSON, or events when streamed), or the fault it asks for."""
    size = fields.get("size", "auto")
    size = size if size in RATIOS else ("1024x1024" if not inputs else _nearest(inputs[0].size))
    job = Job(fields["model"], SPEC, fields["prompt"], inputs, RATIOS[size], None)
    wanted = faults("openai", job, {key: value for key, value in fields.items() if key != "prompt"})
    failure = _fault(wanted)
    if failure is not None:
        return failure
    pictures = job.pictures({**wanted, "images": wanted.get("images", fields.get("n", 1))})[0]
    quality = fields.get("quality", "auto")
    usage = _usage(job, OUTPUT_TOKENS.get(quality, OUTPUT_TOKENS["medium"])[size] * len(pictures))
    shape = {"size": size, "quality": "medium" if quality == "auto" else quality,
             "background": fields.get("background", "auto"), "output_format": fields.get("output_format", "png")}
    if fields.get("stream"):
        return _stream(kind, pictures, fields.get("partial_images", 0), shape, usage)
    return deliver({"created": int(time.time()), "data": [{"b64_json": data} for data in pictures],
                    "usage": usage, **shape}, wanted)


def _fault(wanted):
    """The response of a fault directive that replaces the answer (fail, block, malformed), or None."""
    if "fail" in wanted:
        response = openai_error(int(wanted["fail"]), f"emulated failure {wanted['fail']}")
        if "retry_after" in wanted:
            response.headers["Retry-After"] = wanted["retry_after"]
        return response
    if "block" in wanted:
        return openai_error(400, "Your request was rejected by the safety system. safety_violations=["
                                 f"{wanted['block']}].", code="moderation_blocked")
    if "malformed" in wanted:
        return "<html>upstream proxy error</html>", 200, {"Content-Type": "text/html"}
    return None


def _usage(job, output_tokens):
    text_tokens, image_tokens = job.tokens_in()
    return {"input_tokens": text_tokens + image_tokens, "output_tokens": output_tokens,
            "total_tokens": text_tokens + image_tokens + output_tokens,
            "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens}}


def _image(upload):
    try:
        image = Image.open(io.BytesIO(upload.read()))
        image.load()
        return image
    except OSError:
        raise Invalid("Invalid image file or mode for image, please check your image file.", "image") from None


def _nearest(size):
    """`auto` for an edit: the size nearest the input's shape."""
    width, height = size
    return "1024x1024" if 0.8 < width / height < 1.25 else ("1536x1024" if width > height else "1024x1536")


def _stream(kind, pictures, partial_images, shape, usage):
    """OpenAI's events: `partial_images` interim images, then each image's completed event."""
    def event(event_type, fields):
        data = {"type": event_type, "created_at": int(time.time()), **shape, **fields}
        return f"event: {event_type}\ndata: {json.dumps(data)}\n\n".encode()

    def events():
        for index in range(partial_images):
            preview = base64.b64encode(_preview(index)).decode()
            yield event(f"{kind}.partial_image", {"b64_json": preview, "partial_image_index": index})
        for data in pictures:
            yield event(f"{kind}.completed", {"b64_json": data, "usage": usage})

    return Response(events(), content_type="text/event-stream")


def _preview(index):
    """A small PNG that stands for the `index`-th interim image."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (index * 60 % 256, 90, 160)).save(buffer, "PNG")
    return buffer.getvalue()
