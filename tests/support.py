"""The tests' one helpers module (fixtures live in the conftests): requests and error checks with
a Flask test client, real image bytes, Gemini and OpenRouter answers, Google's published request
schema, a fake DNS, Prometheus samples, and a FakeProvider for the service's own behaviour."""
import base64
import hashlib
import io
import ipaddress
import json
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import responses
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from gateway.breaker import Breaker
from gateway.providers import GeneratedImage, Generation, UpstreamRequest, Usage
from tests.secrets import WATCH

GENERATE_URL = "https://gemini.test/v1beta/models/{model}:generateContent"
GENERATE = re.compile(r"https://gemini\.test/v1beta/models/[^/]+:generateContent")
STREAM = re.compile(r"https://gemini\.test/v1beta/models/[^/]+:streamGenerateContent\?alt=sse")
CHAT = "https://openrouter.test/api/v1/chat/completions"
ADMIN_KEY = "admin-key-0123456789abcdef"
WATCH.secrets.add(ADMIN_KEY)
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def create_key(client, name="team-a", **policy):
    """POST /v1/admin/keys with a Flask test client; the new secret is watched for from then on."""
    response = client.post("/v1/admin/keys", json={"name": name, **policy}, headers=ADMIN)
    if response.status_code == 201:  # from here on no answer or log line may hold the secret or its hash
        WATCH.secrets |= {response.json["key"], hashlib.sha256(response.json["key"].encode()).hexdigest()}
    return response


def generate(client, headers, prompt="a lighthouse", **params):
    """POST /v1/images/generations with a Flask test client."""
    return client.post("/v1/images/generations", json={"prompt": prompt, **params}, headers=headers)


def fetch(client, url, **kwargs):
    """GET `url` with a Flask test client, its body read and the response closed (as a server
    closes it), so a file it streamed is closed too."""
    with client.get(url, **kwargs) as response:
        response.get_data()
    return response


def generate_as(client, key, **params):
    """POST /v1/images/generations with a Flask test client and `key`, its body read as a client
    would (the request's ledger row is written once its body has been sent)."""
    response = generate(client, {"Authorization": f"Bearer {key}"}, **params)
    response.get_data()
    return response


def b64(data):
    """Bytes as base64 text."""
    return base64.b64encode(data).decode("ascii")


def data_url(data, mime_type="image/png"):
    return f"data:{mime_type};base64,{b64(data)}"


def encoded(image, image_format, **options):
    """A Pillow image saved in `image_format` (PNG, JPEG, WEBP...), as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def png_bytes(size=(64, 48), colour=(200, 30, 30), mode="RGB"):
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, "PNG")
    return buffer.getvalue()


PNG = png_bytes((24, 16))  # the hostile-input tests' image (tests/integration/test_hostile_*.py)


def image_part(data=None, mime_type="image/png", thought=False):
    part = {"inlineData": {"mimeType": mime_type,
                           "data": base64.b64encode(data if data is not None else png_bytes()).decode()}}
    if thought:
        part["thought"] = True
    return part


def gemini_answer(*parts, finish_reason="STOP", usage=None):
    """A generateContent answer; with no parts, one text part and one PNG."""
    parts = parts or ({"text": "A picture, as asked."}, image_part())
    return {
        "candidates": [{"content": {"role": "model", "parts": list(parts)}, "finishReason": finish_reason,
                        "index": 0}],
        "usageMetadata": usage or {
            "promptTokenCount": 10, "candidatesTokenCount": 1290, "totalTokenCount": 1300,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}],
        },
    }


def decode(b64):
    """The Pillow image behind a response's b64_json."""
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def assert_valid_gemini_request(body):
    """The body parses strictly as Google's published GenerateContentRequest (docs/api.md)."""
    import copy

    from google.ai.generativelanguage_v1beta.types import GenerateContentRequest
    from google.protobuf.json_format import ParseDict

    body = copy.deepcopy(body)
    image_config = body.get("generationConfig", {}).get("imageConfig", {})
    image_size = image_config.pop("imageSize", None)
    assert image_size in (None, "512", "1K", "2K", "4K"), image_size
    ParseDict(body, GenerateContentRequest.pb()(), ignore_unknown_fields=False)


def assert_error(response, status, message=None, startswith=None):
    """The Flask response is exactly {error, status, message} with the same HTTP status, and its
    message is `message`, or starts with `startswith`."""
    body = response.get_json()
    assert response.status_code == status, body
    assert body == {"error": True, "status": status, "message": body.get("message")}
    if message is not None:
        assert body["message"] == message
    if startswith is not None:
        assert body["message"].startswith(startswith), body["message"]


def metric(text, name, **labels):
    """The sum of a metric's samples whose labels include `labels`, from Prometheus text (0 when none)."""
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


def sent_bodies(mock):
    """The JSON bodies a `responses` mock was sent, in order."""
    return [json.loads(call.request.body) for call in mock.calls]


def requested(mock):
    return [call.request.url for call in mock.calls]


def redirect(mock, url, location, **headers):
    mock.add(responses.GET, url, status=302, headers={"Location": location, **headers})


class FakeDNS:
    """`gateway.fetch.resolve` stand-in: names from `table` (name -> addresses), IP literals as
    themselves; a `rebinding` name answers its public address on the first ask and 127.0.0.1 on
    every later one (DNS rebinding). Records every ask."""

    def __init__(self, table=None, rebinding=None):
        self.table, self.rebinding = table or {}, rebinding or {}
        self.asked = []

    def __call__(self, hostname, port):
        earlier = self.hosts.count(hostname)
        self.asked.append((hostname, port))
        if hostname in self.table:
            return sorted(self.table[hostname])
        if hostname in self.rebinding:
            return [self.rebinding[hostname] if earlier == 0 else "127.0.0.1"]
        try:
            ipaddress.ip_address(hostname.split("%")[0])
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return [hostname]

    @property
    def hosts(self):
        return [hostname for hostname, _ in self.asked]


GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
                 504: "DEADLINE_EXCEEDED"}


def google_error(code, message="upstream says no", reason=None):
    """A Google API error body, optionally with an ErrorInfo reason."""
    error = {"code": code, "message": message, "status": GOOGLE_STATUS.get(code, "UNKNOWN")}
    if reason:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                             "reason": reason, "domain": "googleapis.com"}]
    return {"error": error}


def openrouter_answer(png=None, cost=0.039):
    """A chat-completions answer with one image as a data URL, and OpenRouter's usage with its cost."""
    url = "data:image/png;base64," + base64.b64encode(png or png_bytes()).decode()
    return {"choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "A fox.",
                                     "images": [{"type": "image_url", "image_url": {"url": url}}]}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 1290, "total_tokens": 1302, "cost": cost}}


def tokens(input_tokens=10, output_tokens=1290):
    """A Usage of text input and image output tokens, as a provider reports it."""
    return Usage(input_text_tokens=input_tokens, input_tokens=input_tokens, output_tokens=output_tokens,
                 total_tokens=input_tokens + output_tokens)


@dataclass
class Answer:
    """What a FakeProvider does for one call: after `delay` seconds (and `before()`, if given),
    sends `partials` to the service's on_partial (when the request asked for interim images),
    then raises `error` or answers `images` (PNG bytes; one 64x48 PNG by default) with `text`
    and `usage`."""
    images: list = None
    text: str = ""
    usage: Usage = field(default_factory=tokens)
    partials: list = ()
    delay: float = 0
    before: object = None
    error: Exception = None


class FakeProvider:
    """An in-process provider (like llm's MockModel) that follows the protocol of
    gateway/providers/__init__.py with no wire format, so the service's own behaviour (fan-out,
    failover, streaming) is tested alone. Each call takes the next scripted Answer (a default one
    when none is left), or, with `by_call`, the Answer its key picks; `calls` are the ImageCalls the
    service asked for and `requests` the UpstreamRequests it sent."""
    missing_setting, takes_n = "FAKE_API_KEY", False

    def __init__(self, name="gemini", *answers, configured=True):
        self.name, self.subject, self.configured = name, f"The fake {name} API", configured
        self.breaker = Breaker()  # one that never opens; the breaker's own tests use real providers
        self.script, self.pick = deque(answers), None
        self.calls, self.requests, self.lock = [], [], threading.Lock()

    def will(self, *answers):
        """Script the next calls, in the order they reach the provider."""
        self.script.extend(answers)
        return self

    def by_call(self, key, answers):
        """Answer each call with `answers[key()]` (e.g. the job's index of the calling call)."""
        self.pick = lambda: answers[key()]
        return self

    def request_for(self, call):
        with self.lock:
            self.calls.append(call)
        return UpstreamRequest(call.model, repr(call).encode(), call.interim_images, call.label or call.model)

    def generate(self, request, scope, on_partial=None):
        with self.lock:
            self.requests.append(request)
            answer = self.pick() if self.pick else (self.script.popleft() if self.script else Answer())
        time.sleep(answer.delay)
        if answer.before:
            answer.before()
        if request.stream and on_partial:
            for png in answer.partials:
                on_partial(self.image(png))
        if answer.error:
            raise answer.error
        pngs = [png_bytes()] if answer.images is None else answer.images
        return Generation([self.image(png) for png in pngs], answer.text, answer.usage)

    def image(self, png):
        return GeneratedImage.read(base64.b64encode(png), self.subject)


def serve_with(app, *providers):
    """A test client of `app` whose providers are `providers`, in this (GATEWAY_PROVIDERS) order."""
    app.config["PROVIDERS"] = {provider.name: provider for provider in providers}
    return app.test_client()
