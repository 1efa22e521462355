"""Speaks Google's `POST /v1beta/models/{model}:generateContent` (docs/testing.md), the same
call on Vertex AI (`POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent`
with an access token from its OAuth endpoint `POST /token`), and OpenRouter's
`POST /api/v1/chat/completions` (also at `/v1/chat/completions`, docs/providers.md).

Answers real PNGs of each model's own pixel sizes, deterministic from the prompt and the input
images. A prompt can ask for a failure with a directive such as `[emulator: fail=503 times=2]`:
  fail=STATUS      answer that HTTP error (429, 500, 503, 400, 402, 403, 404 ...) in the API's own shape
  times=K          misbehave only for the first K calls with this exact prompt, then succeed
  retry_after=S    Retry-After header on a failure
  block=REASON     the prompt blocked (Gemini: promptFeedback.blockReason; OpenRouter: a 403 moderation error)
  finish=REASON    no image, for safety (Gemini: finishReason REASON; OpenRouter: finish_reason content_filter)
  text_only=1      a text-only answer
  delay=S          sleep S seconds before answering
  thoughts=1       send a thought text and a thought image before the real image (Gemini)
With `:streamGenerateContent?alt=sse` the answer comes as events; a Gemini 3 model asked for
`thinkingConfig.includeThoughts` first sends a thought text and two interim (thought) images,
each as its own event, then the final image. `reset=1` then drops the stream before the final
image, and `between=S` waits S seconds after each interim event.
  images=K         K images in one answer
  malformed=1      a 200 answer that is not JSON
  truncate=1       the image's base64 cut short (still valid base64, a truncated PNG)
  bad_base64=1     image data that is not base64
  not_image=1      image data that decodes but is not an image
  noise=1          a noisy picture (about 1.4 MB as a 1024x1024 PNG), for benchmarks
  reset=1          send half of the answer, then drop the connection
  drip=S           send the answer a few bytes at a time, one piece every S seconds
  huge=MB          an answer of about MB megabytes (an image padded with junk)
  only=API         misbehave only on one API: gemini, vertex or openrouter (the others answer normally)
  spread=S         each further call with this prompt waits S seconds more (cycling every 4 calls), so
                   the calls of one n=4 request finish one after another (benchmarks)
Pictures for prompts without input images are cached, so the emulator itself stays fast under load.
"""
import base64
import hashlib
import io
import json
import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from functools import lru_cache

from flask import Flask, Response, jsonify, request
from PIL import Image, ImageDraw

TEN = {"1:1": (1024, 1024), "2:3": (848, 1264), "3:2": (1264, 848), "3:4": (896, 1200), "4:3": (1200, 896),
       "4:5": (928, 1152), "5:4": (1152, 928), "9:16": (768, 1376), "16:9": (1376, 768), "21:9": (1584, 672)}
FLASH_25 = {"1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184), "4:3": (1184, 864),
            "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344), "16:9": (1344, 768), "21:9": (1536, 672)}
TALL_WIDE = {"1:4": (512, 2048), "4:1": (2048, 512), "1:8": (384, 3072), "8:1": (3072, 384), "9:21": (672, 1584)}
TIER_SCALE = {"512": 0.5, "1K": 1, "2K": 2, "4K": 4}
OPENROUTER_TIERS = {"0.5K": "512", "1K": "1K", "2K": "2K", "4K": "4K"}


@dataclass(frozen=True)
class Spec:
    sizes: dict  # 1K pixel sizes by aspect ratio
    tokens: dict  # output tokens per image by tier; one "1K" entry for a model without tiers
    image_only: bool = False  # answers only when asked for images alone (OpenRouter's modalities)
    thinks: bool = False  # draws two interim "thought" images before the final one (Gemini 3)

    @property
    def tiers(self):
        return set(self.tokens) if len(self.tokens) > 1 else set()


# Google's model ids (the Gemini API) -> spec
MODELS = {
    "gemini-2.5-flash-image": Spec(FLASH_25, {"1K": 1290}),
    "gemini-3-pro-image": Spec(TEN, {"1K": 1120, "2K": 1120, "4K": 2000}, thinks=True),
    "gemini-3.1-flash-image": Spec({**TEN, **TALL_WIDE}, {"512": 747, "1K": 1120, "2K": 1680, "4K": 2520},
                                   thinks=True),
}
MODELS.update({f"{name}-preview": spec for name, spec in list(MODELS.items())})
# OpenRouter's model ids -> spec: Google's models under `google/`, and two others of other vendors
OPENROUTER_MODELS = {f"google/{name}": spec for name, spec in MODELS.items()}
OPENROUTER_MODELS.update({
    "black-forest-labs/flux.2-pro": Spec(FLASH_25, {"1K": 4096, "2K": 4096, "4K": 4096}, image_only=True),
    "openai/gpt-5-image": Spec(FLASH_25, {"1K": 4160}),
})
DIRECTIVE = re.compile(r"\[emulator:([^\]]*)\]")
FAULTS = {"fail", "block", "finish", "text_only", "malformed", "truncate", "bad_base64", "not_image", "reset", "huge",
          "drip"}
DOLLARS_PER_TOKEN = 0.00003  # the emulator's price of an output token, for OpenRouter's usage.cost


class Refused(Exception):
    """A request the real API would refuse: the HTTP status and its message."""

    def __init__(self, status, message, reason=None):
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason


def google_error(status, message, reason=None):
    names = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
             429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
    error = {"code": status, "message": message, "status": names.get(status, "UNKNOWN")}
    if reason:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}]
    response = jsonify({"error": error})
    response.status_code = status
    return response


def openrouter_error(status, message, metadata=None):
    error = {"code": status, "message": message}
    if metadata:
        error["metadata"] = metadata
    response = jsonify({"error": error})
    response.status_code = status
    return response


def directives(prompt):
    found = {}
    for match in DIRECTIVE.finditer(prompt):
        for token in match.group(1).split():
            key, _, value = token.partition("=")
            found[key] = value or "1"
    return found


def nearest_ratio(width, height, ratios):
    def distance(ratio):
        ratio_width, ratio_height = map(int, ratio.split(":"))
        return abs(math.log(width / height) - math.log(ratio_width / ratio_height))

    return min(ratios, key=distance)


def render_png(prompt, size, inputs, noise=False):
    """A deterministic picture: colours from the prompt's hash, then one stripe per input image
    in the input's average colour, in order, so a test can see which inputs arrived."""
    digest = hashlib.sha256(prompt.encode()).digest()
    width, height = size
    if noise:
        image = Image.merge("RGB", [Image.effect_noise(size, 2) for _ in range(3)])
    else:
        image = Image.new("RGB", size, tuple(digest[:3]))
        ImageDraw.Draw(image).ellipse([width // 4, height // 4, 3 * width // 4, 3 * height // 4],
                                      fill=tuple(digest[3:6]))
    draw = ImageDraw.Draw(image)
    stripe = max(1, width // max(1, len(inputs)))
    for index, source in enumerate(inputs):
        colour = source.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
        draw.rectangle([index * stripe, 0, (index + 1) * stripe - 1, height // 8], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@lru_cache(maxsize=64)
def text_only_picture(prompt, size, noise):
    """The base64 picture for a prompt without input images (the same one every time)."""
    return base64.b64encode(render_png(prompt, size, [], noise)).decode()


def open_image(b64):
    return Image.open(io.BytesIO(base64.b64decode(b64)))


@dataclass
class Job:
    """One image request, whichever API it came in through."""
    model: str
    spec: Spec
    prompt: str
    inputs: list
    ratio: str | None
    tier: str | None

    def check(self):
        if self.ratio is not None and self.ratio not in self.spec.sizes:
            raise Refused(400, f"Unsupported aspect ratio: {self.ratio}")
        if self.tier is not None and self.tier not in self.spec.tiers:
            raise Refused(400, f"image size {self.tier} is not supported by {self.model}")

    def pictures(self, wanted):
        """The answer's images as base64, and the output tokens they cost."""
        count = 0 if "text_only" in wanted or "finish" in wanted else int(wanted.get("images", 1))
        size = self.size()
        pictures = []
        for index in range(count):
            variant, noise = self.prompt + "#" * index, "noise" in wanted
            data = (base64.b64encode(render_png(variant, size, self.inputs, noise)).decode() if self.inputs
                    else text_only_picture(variant, size, noise))
            if "truncate" in wanted:
                png = base64.b64decode(data)
                data = base64.b64encode(png[: (len(png) // 2) // 3 * 3]).decode()
            if "bad_base64" in wanted:
                data = "!!not base64!!" + data
            if "not_image" in wanted:
                data = base64.b64encode(b"this is not an image").decode()
            pictures.append(data)
        if "huge" in wanted:
            pictures.append("A" * int(float(wanted["huge"]) * 2**20))
        return pictures, count * self.spec.tokens[self.tier or "1K"]

    def size(self):
        """The model's pixel size for the asked ratio (else the first input's, else 1:1) and tier."""
        ratio = self.ratio or (nearest_ratio(*self.inputs[0].size, self.spec.sizes) if self.inputs else "1:1")
        scale = TIER_SCALE[self.tier or "1K"]
        return int(self.spec.sizes[ratio][0] * scale), int(self.spec.sizes[ratio][1] * scale)

    def interim_events(self):
        """What a thinking Gemini 3 model streams before its image: a thought, then two interim images."""
        size = self.size()
        images = [base64.b64encode(render_png(f"thought {number} {self.prompt}", size, self.inputs)).decode()
                  for number in (1, 2)]
        parts = [[{"text": "Planning the composition.", "thought": True}]]
        parts += [[{"inlineData": {"mimeType": "image/png", "data": data}, "thought": True}] for data in images]
        return [{"candidates": [{"content": {"role": "model", "parts": event}, "index": 0}]} for event in parts]

    def tokens_in(self):
        return max(1, len(self.prompt) // 4), 258 * len(self.inputs)


def create_emulator(api_key=None, issuer=None):
    """The emulator app; with `api_key` set, any other key is refused like the real APIs refuse it.
    `issuer` (an oauth.TokenIssuer) serves the token endpoint and the Vertex route: without one,
    Vertex calls are refused as unauthenticated."""
    app = Flask(__name__)
    calls = {}
    lock = threading.Lock()
    log = deque(maxlen=200)

    def faults(api, job, config):
        """The directives this call on `api` obeys (after `times` calls they stop), once it is logged."""
        log.append({"api": api, "model": job.model, "generationConfig": config, "prompt": job.prompt,
                    "images": [[*i.size] for i in job.inputs], "at": time.time()})
        wanted = directives(job.prompt)
        if wanted.get("only", api) != api:
            wanted = {key: value for key, value in wanted.items() if key not in FAULTS}
        if "times" in wanted or "spread" in wanted:
            with lock:
                calls[job.prompt] = calls.get(job.prompt, 0) + 1
                number = calls[job.prompt]
            if number > int(wanted.get("times", number)):
                wanted = {key: value for key, value in wanted.items() if key not in FAULTS}
            time.sleep((number - 1) % 4 * float(wanted.get("spread", 0)))
        time.sleep(float(wanted.get("delay", 0)))
        return wanted

    def failed(error_response, wanted):
        response = error_response(int(wanted["fail"]), f"emulated failure {wanted['fail']}")
        if "retry_after" in wanted:
            response.headers["Retry-After"] = wanted["retry_after"]
        return response

    from .openai_images import register  # OpenAI's Images API; imported here, as it builds on this module
    register(app, api_key, faults)

    @app.get("/")
    def index():
        return {"emulator": "gemini and openrouter", "models": sorted(MODELS), "openrouter": sorted(OPENROUTER_MODELS)}

    @app.get("/emulator/requests")
    def received():
        """What the emulator was sent (no image data), newest last, for tests to inspect."""
        return jsonify(list(log))

    @app.post("/v1beta/models/<model>:<method>")
    def generate_content(model, method):
        if "key" in request.args:
            return google_error(400, "emulator: the API key must be sent in x-goog-api-key, not in the URL")
        key = request.headers.get("x-goog-api-key")
        if not key:
            return google_error(403, "Method doesn't allow unregistered callers. Please use an API key.")
        if api_key and key != api_key:
            return google_error(400, "API key not valid. Please pass a valid API key.", "API_KEY_INVALID")
        return google_answer("gemini", model, method)

    @app.post("/v1/projects/<project>/locations/<location>/publishers/google/models/<model>:<method>")
    def vertex_generate_content(project, location, model, method):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or issuer is None or not issuer.valid(token):
            return google_error(401, "Request had invalid authentication credentials. Expected OAuth 2 access "
                                     "token, login cookie or other valid authentication credential.")
        contents = (request.get_json(silent=True) or {}).get("contents")
        if isinstance(contents, list) and not all(isinstance(c, dict) and c.get("role") for c in contents):
            return google_error(400, "Please use a valid role: user, model.")
        return google_answer("vertex", model, method)

    @app.post("/token")
    def token():
        if issuer is None:
            return {"error": "invalid_client", "error_description": "the emulator has no service account"}, 400
        answer, error = issuer.grant(request.form)
        return answer or ({"error": error[0], "error_description": error[1]}, 400)

    @app.get("/emulator/tokens")
    def tokens():
        """How many access tokens the token endpoint has issued, for tests."""
        return {"issued": issuer.issued if issuer else 0}

    def google_answer(api, model, method):
        """generateContent or streamGenerateContent, on the Gemini API or Vertex AI, once the caller is let in."""
        if method not in ("generateContent", "streamGenerateContent"):
            return google_error(404, f"emulator: no method {method}")
        if method == "streamGenerateContent" and request.args.get("alt") != "sse":
            return google_error(400, "emulator: streamGenerateContent is served as server-sent events only (alt=sse)")
        if model not in MODELS:
            return google_error(404, f"models/{model} is not found for API version v1beta")
        body = request.get_json(silent=True)
        try:
            parts = body["contents"][-1]["parts"]
            config = body.get("generationConfig") or {}
            image_config = config.get("imageConfig") or {}
            job = Job(model, MODELS[model], "\n".join(p["text"] for p in parts if "text" in p),
                      [open_image(p["inlineData"]["data"]) for p in parts if "inlineData" in p],
                      image_config.get("aspectRatio"), image_config.get("imageSize"))
        except (TypeError, KeyError, IndexError, ValueError, OSError) as error:
            return google_error(400, f"Invalid JSON payload received ({error.__class__.__name__}).")
        try:
            if "IMAGE" not in config.get("responseModalities", []):
                raise Refused(400, "responseModalities must include IMAGE for an image answer")
            job.check()
        except Refused as refused:
            return google_error(refused.status, refused.message)
        wanted = faults(api, job, config)
        if "fail" in wanted:
            return failed(google_error, wanted)
        if "malformed" in wanted:
            return "<html>upstream proxy error</html>", 200, {"Content-Type": "text/html"}
        if "block" in wanted:
            return {"promptFeedback": {"blockReason": wanted["block"]}, "usageMetadata": {"promptTokenCount": 8}}
        pictures, output_tokens = job.pictures(wanted)
        text = f"Here is your image: {job.prompt[:200]}"
        parts = [{"text": text}] + [{"inlineData": {"mimeType": "image/png", "data": data}} for data in pictures]
        if "thoughts" in wanted:
            thought = base64.b64encode(render_png("thought " + job.prompt, (64, 64), [])).decode()
            parts[:0] = [{"text": "Planning the composition.", "thought": True},
                         {"inlineData": {"mimeType": "image/png", "data": thought}, "thought": True}]
        text_tokens, image_tokens = job.tokens_in()
        answer = {
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": wanted.get("finish", "STOP"),
                            "index": 0}],
            "usageMetadata": {
                "promptTokenCount": text_tokens + image_tokens,
                "candidatesTokenCount": output_tokens + len(text) // 4,
                "totalTokenCount": text_tokens + image_tokens + output_tokens + len(text) // 4,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": text_tokens}]
                + ([{"modality": "IMAGE", "tokenCount": image_tokens}] if job.inputs else []),
            },
            "modelVersion": model,
        }
        if method == "streamGenerateContent":
            thinking = job.spec.thinks and (config.get("thinkingConfig") or {}).get("includeThoughts")
            return streamed_answer(answer, job.interim_events() if thinking else [], wanted)
        return deliver(answer, wanted)

    @app.post("/api/v1/chat/completions")
    @app.post("/v1/chat/completions")
    def chat_completions():
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not key:
            return openrouter_error(401, "No auth credentials found")
        if api_key and key != api_key:
            return openrouter_error(401, "User not found.")
        body = request.get_json(silent=True)
        try:
            model, content = body["model"], body["messages"][-1]["content"]
            content = [{"type": "text", "text": content}] if isinstance(content, str) else content
            image_config = body.get("image_config") or {}
            urls = [part["image_url"]["url"] for part in content if part["type"] == "image_url"]
            if not all(url.startswith("data:image/") for url in urls):
                raise ValueError("the emulator takes data URLs only")
            tier = image_config.get("image_size")
            job = Job(model, OPENROUTER_MODELS.get(model), "\n".join(p["text"] for p in content if p["type"] == "text"),
                      [open_image(url.partition(",")[2]) for url in urls], image_config.get("aspect_ratio"),
                      OPENROUTER_TIERS.get(tier, tier))
        except (TypeError, KeyError, IndexError, ValueError, AttributeError, OSError) as error:
            return openrouter_error(400, f"Input validation error ({error.__class__.__name__})")
        try:
            if job.spec is None:
                raise Refused(400, f"{model} is not a valid model ID")
            modalities = body.get("modalities") or ["text"]
            if "image" not in modalities or (job.spec.image_only and "text" in modalities):
                raise Refused(404, "No endpoints found that support the requested output modalities: "
                                   + ", ".join(map(str, modalities)))
            job.check()
        except Refused as refused:
            return openrouter_error(refused.status, refused.message)
        wanted = faults("openrouter", job, {"modalities": body.get("modalities"), "image_config": image_config})
        if "fail" in wanted:
            return failed(openrouter_error, wanted)
        if "malformed" in wanted:
            return "<html>upstream proxy error</html>", 200, {"Content-Type": "text/html"}
        if "block" in wanted:
            flagged = {"reasons": [wanted["block"]], "flagged_input": "..."}
            return openrouter_error(403, f"{model} requires moderation on OpenRouter. Your input was flagged for "
                                         f"\"{wanted['block']}\"", flagged)
        pictures, output_tokens = job.pictures(wanted)
        text_tokens, image_tokens = job.tokens_in()
        finish = "content_filter" if "finish" in wanted else "stop"
        words = "" if job.spec.image_only else f"Here is your image: {job.prompt[:200]}"
        message = {"role": "assistant", "content": words,
                   "images": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}
                              for data in pictures]}
        answer = {
            "id": f"gen-emulated-{len(log)}", "object": "chat.completion", "created": int(time.time()), "model": model,
            "provider": "Emulator",
            "choices": [{"index": 0, "finish_reason": finish, "native_finish_reason": wanted.get("finish", "STOP"),
                         "message": message}],
            "usage": {"prompt_tokens": text_tokens + image_tokens, "completion_tokens": output_tokens,
                      "total_tokens": text_tokens + image_tokens + output_tokens,
                      "prompt_tokens_details": {"cached_tokens": 0, "image_tokens": image_tokens},
                      "cost": round(output_tokens * DOLLARS_PER_TOKEN, 6)},
        }
        return deliver(answer, wanted)

    return app


def deliver(answer, wanted):
    """The answer as JSON, dropped half way or dripped out when the prompt asks for it."""
    if "reset" in wanted:
        return broken_answer(json.dumps(answer).encode())
    if "drip" in wanted:
        return dripping_answer(json.dumps(answer).encode(), float(wanted["drip"]))
    return answer


def streamed_answer(answer, interim, wanted):
    """The events of streamGenerateContent: the interim ones, then the answer (`reset` drops the
    stream before it)."""
    def events():
        for event in interim:
            yield b"data: " + json.dumps(event).encode() + b"\r\n\r\n"
            time.sleep(float(wanted.get("between", 0)))
        if "reset" in wanted:
            raise ConnectionResetError("emulated connection reset")
        yield b"data: " + json.dumps(answer).encode() + b"\r\n\r\n"

    return Response(events(), content_type="text/event-stream")


def broken_answer(body):
    """Announce the whole body, send half, then fail, so the connection drops mid-body."""
    def half_then_fail():
        yield body[: len(body) // 2]
        raise ConnectionResetError("emulated connection reset")

    return Response(half_then_fail(), content_type="application/json", headers={"Content-Length": str(len(body))})


def dripping_answer(body, every):
    """The whole body announced, then sent 16 bytes at a time, one piece every `every` seconds:
    each read gets data long before any per-read timeout, yet the answer takes hours."""
    def pieces():
        for start in range(0, len(body), 16):
            yield body[start:start + 16]
            time.sleep(every)

    return Response(pieces(), content_type="application/json", headers={"Content-Length": str(len(body))})
