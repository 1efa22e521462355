"""Helpers for the schemathesis fuzz tests (tests/integration/test_fuzz.py): real image bytes for
the positive cases, the per-case preparation hook, the response checks and request counters."""
import base64
import io
import json
import os
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field

import jsonschema_rs
import requests
from PIL import Image
from schemathesis.transport.serialization import Binary  # how schemathesis holds a multipart file
from werkzeug.formparser import FormDataParser
from werkzeug.http import parse_options_header

from gateway.errors import NO_IMAGE_MESSAGE
from tests.integration.conftest import CLIENT_KEY

GENERATIONS, EDITS = "/v1/images/generations", "/v1/images/edits"
JSON, MULTIPART = "application/json", "multipart/form-data"
IMAGE_FIELDS = ("image", "image[]", "file")
DIRECTIVE = "[emulator:"  # the emulator's fault directives (emulator/server.py) must not reach it by chance
KNOWN_MODELS = ("auto", "gemini-2.5-flash-image", "gemini-2.5-flash-image-preview", "nano-banana",
                "gemini-3-pro-image", "gemini-3-pro-image-preview", "nano-banana-pro",
                "gemini-3.1-flash-image", "gemini-3.1-flash-image-preview", "nano-banana-2")
SIZE = (24, 16)  # every real input image has this size, so a generated valid mask always fits


def _encode(mode, image_format, colour):
    buffer = io.BytesIO()
    Image.new(mode, SIZE, colour).save(buffer, image_format)
    return buffer.getvalue()


# Real, small input images: formats Gemini takes (PNG, JPEG, WebP) and ones the gateway converts.
IMAGES = {
    "png": _encode("RGB", "PNG", (200, 30, 30)),
    "png_rgba": _encode("RGBA", "PNG", (30, 200, 30, 128)),
    "jpeg": _encode("RGB", "JPEG", (30, 30, 200)),
    "webp": _encode("RGB", "WEBP", (200, 200, 30)),
    "gif": _encode("P", "GIF", 3),
    "bmp": _encode("RGB", "BMP", (30, 200, 200)),
}
MIME = {"png": "image/png", "png_rgba": "image/png", "jpeg": "image/jpeg", "webp": "image/webp",
        "gif": "image/gif", "bmp": "image/bmp"}


def _mask():
    """An OpenAI mask for the inputs above: the left half fully transparent (= edit there)."""
    mask = Image.new("RGBA", SIZE, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, SIZE[0] // 2, SIZE[1]))
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return buffer.getvalue()


MASK = _mask()


def sample_data_url(name):
    """One of the sample images, by name, as a data URL."""
    return f"data:{MIME[name]};base64,{base64.b64encode(IMAGES[name]).decode()}"


SIGNATURES = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff", "webp": b"RIFF"}


@dataclass
class Stats:
    """What one fuzz test sent, for its summary and its minimum-volume assertion."""
    requests: int = 0
    by_kind: Counter = field(default_factory=Counter)  # (media type, mode, key) -> requests
    statuses: Counter = field(default_factory=Counter)
    messages: Counter = field(default_factory=Counter)

    def record(self, case, response):
        self.requests += 1
        self.by_kind[(case.media_type, mode_of(case), key_kind(case))] += 1
        self.statuses[response.status_code] += 1
        if response.status_code == 400 and os.environ.get("FUZZ_DEBUG"):
            self.messages[(mode_of(case), key_kind(case), _message(response)[:60])] += 1

    def summary(self, name, seconds):
        kinds = ", ".join(f"{media} {mode} {key}: {count}"
                          for (media, mode, key), count in sorted(self.by_kind.items(), key=str))
        statuses = ", ".join(f"{status}: {count}" for status, count in sorted(self.statuses.items()))
        return f"{name}: {self.requests} requests in {seconds:.1f} s [{kinds}] statuses {{{statuses}}}"


def mode_of(case):
    return "positive" if case.meta is not None and case.meta.generation.mode.is_positive else "negative"


def key_kind(case):
    """'key', 'no key' or 'wrong key': how the prepared case authenticates."""
    presented = case.headers.get("Authorization", "") + case.headers.get("x-api-key", "")
    if not presented:
        return "no key"
    return "key" if CLIENT_KEY in presented else "wrong key"


def is_post(case):
    """The declared method (schemathesis also probes undeclared ones: 405, or OPTIONS' empty 200)."""
    return case.method.upper() == "POST"


def _choices(case):
    """Deterministic pseudo-random numbers from the generated case, so a case replays the same."""
    body = case.body if isinstance(case.body, (dict, list, str, bytes, int, float, bool)) else None  # not NOT_SET
    seed = zlib.crc32(repr((case.method, case.media_type, body)).encode("utf-8", "surrogatepass"))
    while True:
        seed = zlib.crc32(seed.to_bytes(4, "big"))
        yield seed


def _scrub(value):
    """Same-length text with any emulator directive defused (validity and length unchanged)."""
    if isinstance(value, str) and not isinstance(value, Binary):
        return value.replace(DIRECTIVE, "[emulator;")
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    if isinstance(value, dict):
        return {key: _scrub(item) for key, item in value.items()}
    return value


class CasePreparer:
    """The `map_case` hook: every case gets a key (a small share none or a wrong one), no
    emulator directive, and positive cases get real images and mostly known models, so that
    valid requests get past the image checks to the upstream instead of all being the same 400.

    Every edit is made in place (`case.body[...] = ...`, never `case.body = ...`): assigning a
    container makes schemathesis revalidate the case, and a multipart body holding files never
    validates, which would relabel a positive case negative. The choices are pseudo-random but
    derived from the generated case, so a replayed or shrunk case is prepared the same way."""

    def __init__(self, https_urls):
        # the local https host (tests.tls.ImageServer): IMAGES and "mask" by name, "missing" a prefix for any path
        self.https_urls = https_urls

    def __call__(self, context, case):
        numbers = _choices(case)
        if isinstance(case.body, dict):
            for key, value in list(case.body.items()):
                scrubbed = _scrub(value)
                if scrubbed != value:
                    case.body[key] = scrubbed
        auth = next(numbers) % 40
        if auth < 3:
            pass  # no key: 401
        elif auth == 3:
            case.headers["Authorization"] = "Bearer not-the-key"
        elif auth % 2:
            case.headers["Authorization"] = f"Bearer {CLIENT_KEY}"
        else:
            case.headers["x-api-key"] = CLIENT_KEY
        if mode_of(case) == "positive" and isinstance(case.body, dict):
            self._make_useful(case, numbers)
        return case

    def _make_useful(self, case, numbers):
        body = case.body
        if "model" in body and next(numbers) % 4:
            body["model"] = KNOWN_MODELS[next(numbers) % len(KNOWN_MODELS)]
        _cap_cost(body)
        if case.path != EDITS:
            return
        names = list(IMAGES)
        if case.media_type == MULTIPART:
            self._real_files(body, names, numbers)
        elif isinstance(body.get("images"), list):
            self._real_urls(body, names, numbers)

    def _real_files(self, body, names, numbers):
        files = [(name, index) for name in IMAGE_FIELDS if isinstance(body.get(name), list)
                 for index in range(len(body[name]))]
        if not files:
            body["image"] = [Binary(IMAGES["png"])]  # at least one real PNG
            files = [("image", 0)]
        for position, (name, index) in enumerate(files):
            choice = next(numbers) % (len(names) + 2)
            if position == 0 or choice < len(names):  # the first part is always a real image
                body[name][index] = Binary(IMAGES[names[choice % len(names)]])
        if "mask" in body:
            choice = next(numbers) % 3
            if choice == 0:
                body["mask"] = Binary(MASK)
            elif choice == 1:
                del body["mask"]

    def _real_urls(self, body, names, numbers):
        """Each image_url becomes a real image (a data URL or the local https host), a
        generated string under the local https host or after a data URL prefix (a 400 naming
        the item), or stays as generated; the first one is always a real image."""
        real = [sample_data_url(name) for name in names] + [self.https_urls[name] for name in names]
        for position, item in enumerate(body["images"]):
            generated = item["image_url"]
            odd = [self.https_urls["missing"] + generated, "data:image/png;base64," + generated, generated]
            options = real if position == 0 else real + odd
            item["image_url"] = options[next(numbers) % len(options)]
        if isinstance(body.get("mask"), dict):
            choice = next(numbers) % 4
            if choice == 0:
                body["mask"]["image_url"] = "data:image/png;base64," + base64.b64encode(MASK).decode()
            elif choice == 1:
                body["mask"]["image_url"] = self.https_urls["mask"]
            elif choice == 2:
                del body["mask"]


def _long_edge(size):
    match = re.fullmatch(r"([0-9]+)x([0-9]+)", size) if isinstance(size, str) else None
    return max(map(int, match.groups())) if match else 0


def _cap_cost(body):
    """Keep a valid request cheap on a 2-core box: 4K images are rendered, PNG-compressed and
    often re-encoded for every one of `n`, so bigger tiers get fewer images (still valid)."""
    n = body.get("n")
    if not isinstance(n, int) or isinstance(n, bool):
        return
    big = _long_edge(body.get("size")) > 3072
    high = body.get("quality") in ("hd", "high")
    limit = 1 if big else 2 if high or _long_edge(body.get("size")) > 1536 else 4
    if n > limit:
        body["n"] = limit


# --- response checks (plain schemathesis check functions: (ctx, response, case)) -------------

def error_body_shape(ctx, response, case):
    """Every error is exactly {"error": true, "status": <the HTTP status>, "message": "<text>"}."""
    if response.status_code < 400 or case.method.upper() == "HEAD":  # a HEAD answer has no body
        return None
    content_type = response.headers.get("content-type") or response.headers.get("Content-Type") or [""]
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    assert content_type.startswith("application/json"), f"{response.status_code} as {content_type!r}"
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"{response.status_code} with a non-JSON body: {response.content[:200]!r}") from None
    assert isinstance(body, dict) and set(body) == {"error", "status", "message"}, f"error body {body!r}"
    assert body["error"] is True, f"error body {body!r}"
    assert body["status"] == response.status_code and type(body["status"]) is int, f"error body {body!r}"
    assert isinstance(body["message"], str) and body["message"].strip(), f"error body {body!r}"
    return None


def only_documented_server_errors(ctx, response, case):
    """5xx only for upstream-caused reasons: 502/503/504, and 500 only for 'no image'."""
    status = response.status_code
    if status < 500 or status in (502, 503, 504):
        return None
    message = _message(response)
    assert status == 500 and message.startswith(NO_IMAGE_MESSAGE.split(".")[0]), \
        f"undocumented server error {status}: {message!r}"
    return None


def unauthenticated_is_401(ctx, response, case):
    """Without the client key, any request to an endpoint is a 401 before its body is looked at
    (an undeclared method is still the router's 405, which comes first)."""
    if key_kind(case) != "key" and is_post(case):
        assert response.status_code == 401, f"{key_kind(case)}: expected 401, got {response.status_code}"
    return None


# 400s that a schema-valid request may still get, by the documented design (docs/api.md "Errors",
# docs/providers.md): things JSON Schema cannot express.
DOCUMENTED_VALID_400 = (
    r"Invalid request parameters: model: unknown model ",
    r"Invalid request parameters: background: 'transparent' is not supported by ",
    r"Invalid request parameters: response_format: 'url' cannot be streamed",
    r"Invalid request parameters: images: \S+ takes at most \d+ input images",
    r"Invalid request parameters: image: Required \(send at least one input image\)",
    r"(images\[\d+\]|mask)\.image_url must be an https URL or a base64 data URL$",
    r"(images\[\d+\]|mask)\.image_url: ",
    r"(images|image)\[\d+\]: ",
    r"mask: ",
)


def valid_requests_are_served(ctx, response, case):
    """A positive (schema-valid) request with the key is served (200), or is one of the
    documented 400s a JSON schema cannot express (unknown model, unusable image, ...)."""
    if mode_of(case) != "positive" or key_kind(case) != "key" or response.status_code == 200 or not is_post(case):
        return None
    message = _message(response)
    assert response.status_code == 400 and any(re.match(p, message) for p in DOCUMENTED_VALID_400), \
        f"valid request refused: {response.status_code} {message!r}"
    return None


def images_as_asked(ctx, response, case):
    """A 200 has exactly `n` images, each really base64 of the asked `output_format` (or, with
    response_format url, a URL that serves one)."""
    if response.status_code != 200 or not isinstance(case.body, dict) or not is_post(case):
        return None
    wanted_n = _form_int(case.body.get("n"), 1)
    output_format = case.body.get("output_format") or "png"
    if response.headers.get("content-type", [""])[0].startswith("text/event-stream"):  # stream: true
        body = {"output_format": output_format, "size": "1x1",
                "data": [json.loads(line[6:]) for line in response.text.splitlines()
                         if line.startswith("data: ") and '.completed"' in line]}
    else:
        body = response.json()
    assert len(body["data"]) == wanted_n, f"{len(body['data'])} images for n={wanted_n}"
    assert body["output_format"] == output_format, body["output_format"]
    assert re.fullmatch(r"[1-9][0-9]*x[1-9][0-9]*", body["size"]), body["size"]
    for item in body["data"]:
        assert item.get("output_format", output_format) == output_format, item
        head = (requests.get(item["url"], timeout=30).content[:48] if "url" in item
                else base64.b64decode(item["b64_json"][:64]))
        assert head.startswith(SIGNATURES[output_format]), f"not {output_format}: {head[:12]!r}"
    return None


class FailureFilter:
    """The `filter_failure` hook. It drops an 'invalid data accepted' failure only when the
    request was not invalid as sent."""

    def __init__(self, form_schema):
        self.form_validator = jsonschema_rs.Draft4Validator(form_schema)
        self.form_schema = form_schema

    def __call__(self, context, failure, case, response):
        if type(failure).__name__ != "AcceptedNegativeData":
            return True
        return not (case.media_type == MULTIPART and self.sent_form_is_valid(response))

    def sent_form_is_valid(self, response):
        """Whether the multipart body, as the server reads it, is valid. Every form field is text
        on the wire: an object schemathesis generated for `prompt` arrives as its JSON text,
        which is a perfectly valid prompt, so such a 'negative' case is not one."""
        request = response.request
        mimetype, options = parse_options_header(request.headers.get("Content-Type", ""))
        body = request.body if isinstance(request.body, bytes) else (request.body or "").encode()
        _, form, files = FormDataParser().parse(io.BytesIO(body), mimetype, len(body), options)
        properties = self.form_schema["properties"]
        read = {}
        for name in set(form) | set(files):
            texts, uploads = form.getlist(name), files.getlist(name)
            if texts and uploads or len(texts) > 1:
                return False  # the gateway refuses a text part under a file's name; a repeated field is ambiguous
            if uploads:
                read[name] = ["<file>"] * len(uploads) if properties.get(name, {}).get("type") == "array" \
                    else "<file>"
            else:
                read[name] = _as_form_value(texts[0], properties.get(name, {}))
        return self.form_validator.is_valid(read)


def _as_form_value(text, schema):
    """A form string read as its declared type, like the gateway does (docs/api.md: 'n=2 works')."""
    if schema.get("type") == "integer" and re.fullmatch(r"-?[0-9]{1,9}", text.strip()):
        return int(text)
    if schema.get("type") == "boolean" and text in ("true", "false"):
        return text == "true"
    return text


def _form_int(value, default):
    if value is None:
        return default
    return int(value) if isinstance(value, str) else value


def _message(response):
    try:
        return str(response.json().get("message", ""))
    except (ValueError, AttributeError):
        return response.text[:200]


CHECKS = [error_body_shape, only_documented_server_errors, unauthenticated_is_401, valid_requests_are_served,
          images_as_asked]
