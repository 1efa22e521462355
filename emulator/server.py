"""Speaks `POST /v1beta/models/{model}:generateContent` like Google does (DESIGN.md section 9).

Answers real PNGs of each model's own pixel sizes, deterministic from the prompt and the input
images. A prompt can ask for a failure with a directive such as `[emulator: fail=503 times=2]`:
  fail=STATUS      answer that HTTP error (429, 500, 503, 400, 403, 404 ...)
  times=K          misbehave only for the first K calls with this exact prompt, then succeed
  retry_after=S    Retry-After header on a failure
  block=REASON     promptFeedback.blockReason (prompt blocked)
  finish=REASON    finishReason REASON and no image (e.g. IMAGE_SAFETY)
  text_only=1      a text-only answer
  delay=S          sleep S seconds before answering
  thoughts=1       send a thought text and a thought image before the real image
  images=K         K images in one answer
  malformed=1      a 200 answer that is not JSON
  truncate=1       the image's base64 cut short (still valid base64, a truncated PNG)
  bad_base64=1     image data that is not base64
  not_image=1      image data that decodes but is not an image
  noise=1          a noisy picture (about 1.4 MB as a 1024x1024 PNG), for benchmarks
  reset=1          send half of the answer, then drop the connection
  drip=S           send the answer a few bytes at a time, one piece every S seconds
  huge=MB          an answer of about MB megabytes (an image part padded with junk)
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
from functools import lru_cache

from flask import Flask, Response, jsonify, request
from PIL import Image, ImageDraw

TEN = {"1:1": (1024, 1024), "2:3": (848, 1264), "3:2": (1264, 848), "3:4": (896, 1200), "4:3": (1200, 896),
       "4:5": (928, 1152), "5:4": (1152, 928), "9:16": (768, 1376), "16:9": (1376, 768), "21:9": (1584, 672)}
FLASH_25 = {"1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184), "4:3": (1184, 864),
            "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344), "16:9": (1344, 768), "21:9": (1536, 672)}
TALL_WIDE = {"1:4": (512, 2048), "4:1": (2048, 512), "1:8": (384, 3072), "8:1": (3072, 384)}
TIER_SCALE = {"1K": 1, "2K": 2, "4K": 4}

# model id -> (1K pixel sizes by aspect ratio, output tokens per image by tier or None without tiers)
MODELS = {
    "gemini-2.5-flash-image": (FLASH_25, None),
    "gemini-3-pro-image": (TEN, {"1K": 1120, "2K": 1120, "4K": 2000}),
    "gemini-3.1-flash-image": ({**TEN, **TALL_WIDE}, {"1K": 1120, "2K": 1680, "4K": 2520}),
}
MODELS.update({f"{name}-preview": spec for name, spec in list(MODELS.items())})
FLASH_25_TOKENS = 1290
DIRECTIVE = re.compile(r"\[emulator:([^\]]*)\]")
FAULTS = {"fail", "block", "finish", "text_only", "malformed", "truncate", "bad_base64", "not_image", "reset", "huge",
          "drip"}


def google_error(status, message, reason=None):
    names = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
             500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
    error = {"code": status, "message": message, "status": names.get(status, "UNKNOWN")}
    if reason:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}]
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
def render_text_only_png(prompt, size, noise):
    return render_png(prompt, size, [], noise)


def create_emulator(api_key=None):
    """The emulator app; with `api_key` set, any other key is refused like Google refuses it."""
    app = Flask(__name__)
    calls = {}
    lock = threading.Lock()
    log = deque(maxlen=200)

    def call_number(prompt):
        with lock:
            calls[prompt] = calls.get(prompt, 0) + 1
            return calls[prompt]

    @app.get("/")
    def index():
        return {"emulator": "gemini", "models": sorted(MODELS)}

    @app.get("/emulator/requests")
    def received():
        """What the emulator was sent (no image data), newest last, for tests to inspect."""
        return jsonify(list(log))

    @app.post("/v1beta/models/<model>:generateContent")
    def generate_content(model):
        if "key" in request.args:
            return google_error(400, "emulator: the API key must be sent in x-goog-api-key, not in the URL")
        key = request.headers.get("x-goog-api-key")
        if not key:
            return google_error(403, "Method doesn't allow unregistered callers. Please use an API key.")
        if api_key and key != api_key:
            return google_error(400, "API key not valid. Please pass a valid API key.", "API_KEY_INVALID")
        if model not in MODELS:
            return google_error(404, f"models/{model} is not found for API version v1beta")
        body = request.get_json(silent=True)
        try:
            parts = body["contents"][-1]["parts"]
            prompt = "\n".join(p["text"] for p in parts if "text" in p)
            inputs = [Image.open(io.BytesIO(base64.b64decode(p["inlineData"]["data"])))
                      for p in parts if "inlineData" in p]
            config = body.get("generationConfig") or {}
            image_config = config.get("imageConfig") or {}
        except (TypeError, KeyError, IndexError, ValueError, OSError) as error:
            return google_error(400, f"Invalid JSON payload received ({error.__class__.__name__}).")
        ratios, tokens = MODELS[model]
        if "IMAGE" not in config.get("responseModalities", []):
            return google_error(400, "responseModalities must include IMAGE for an image answer")
        ratio = image_config.get("aspectRatio")
        if ratio is not None and ratio not in ratios:
            return google_error(400, f"Unsupported aspect ratio: {ratio}")
        tier = image_config.get("imageSize")
        if tier is not None and (tokens is None or tier not in TIER_SCALE):
            return google_error(400, f"imageSize {tier} is not supported by {model}")
        log.append({"model": model, "generationConfig": config, "prompt": prompt,
                    "images": [[*i.size] for i in inputs], "at": time.time()})

        wanted = directives(prompt)
        if "times" in wanted and call_number(prompt) > int(wanted["times"]):
            wanted = {key: value for key, value in wanted.items() if key not in FAULTS}
        time.sleep(float(wanted.get("delay", 0)))
        if "fail" in wanted:
            response = google_error(int(wanted["fail"]), f"emulated failure {wanted['fail']}")
            if "retry_after" in wanted:
                response.headers["Retry-After"] = wanted["retry_after"]
            return response
        if "malformed" in wanted:
            return "<html>upstream proxy error</html>", 200, {"Content-Type": "text/html"}
        if "block" in wanted:
            return {"promptFeedback": {"blockReason": wanted["block"]}, "usageMetadata": {"promptTokenCount": 8}}

        if ratio is None:
            ratio = nearest_ratio(*inputs[0].size, ratios) if inputs else "1:1"
        scale = TIER_SCALE[tier or "1K"]
        size = (ratios[ratio][0] * scale, ratios[ratio][1] * scale)
        text = f"Here is your image: {prompt[:200]}"
        parts = [{"text": text}]
        if "thoughts" in wanted:
            thought = base64.b64encode(render_png("thought " + prompt, (64, 64), [])).decode()
            parts[:0] = [{"text": "Planning the composition.", "thought": True},
                         {"inlineData": {"mimeType": "image/png", "data": thought}, "thought": True}]
        finish = wanted.get("finish", "STOP")
        count = 0 if "text_only" in wanted or "finish" in wanted else int(wanted.get("images", 1))
        for index in range(count):
            variant = prompt + "#" * index
            noise = "noise" in wanted
            png = render_png(variant, size, inputs, noise) if inputs else render_text_only_png(variant, size, noise)
            if "truncate" in wanted:
                png = png[: (len(png) // 2) // 3 * 3]
            data = base64.b64encode(png).decode()
            if "bad_base64" in wanted:
                data = "!!not base64!!" + data
            if "not_image" in wanted:
                data = base64.b64encode(b"this is not an image").decode()
            parts.append({"inlineData": {"mimeType": "image/png", "data": data}})
        if "huge" in wanted:
            parts.append({"inlineData": {"mimeType": "image/png", "data": "A" * int(float(wanted["huge"]) * 2**20)}})
        output_tokens = count * (tokens[tier or "1K"] if tokens else FLASH_25_TOKENS)
        text_tokens, image_tokens = max(1, len(prompt) // 4), 258 * len(inputs)
        answer = {
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
            "usageMetadata": {
                "promptTokenCount": text_tokens + image_tokens,
                "candidatesTokenCount": output_tokens + len(text) // 4,
                "totalTokenCount": text_tokens + image_tokens + output_tokens + len(text) // 4,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": text_tokens}]
                + ([{"modality": "IMAGE", "tokenCount": image_tokens}] if inputs else []),
            },
            "modelVersion": model,
        }
        if "reset" in wanted:
            return broken_answer(json.dumps(answer).encode())
        if "drip" in wanted:
            return dripping_answer(json.dumps(answer).encode(), float(wanted["drip"]))
        return answer

    return app


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
