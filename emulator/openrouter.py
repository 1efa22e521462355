"""OpenRouter's `POST /api/v1/chat/completions` (also at `/v1/chat/completions`) for image
models, with OpenRouter's error shape, usage and cost."""
import time

from flask import Blueprint, jsonify, request

from .faults import MALFORMED, Refused, deliver, failed
from .models import OPENROUTER_MODELS
from .pictures import Job, open_image

OPENROUTER_TIERS = {"0.5K": "512", "1K": "1K", "2K": "2K", "4K": "4K"}
DOLLARS_PER_TOKEN = 0.00003  # the emulator's price of an output token, for OpenRouter's usage.cost


def openrouter_error(status, message, metadata=None):
    error = {"code": status, "message": message}
    if metadata:
        error["metadata"] = metadata
    response = jsonify({"error": error})
    response.status_code = status
    return response


def blueprint(recorder, api_key=None):
    """OpenRouter's chat completions; with `api_key` set, any other key is refused."""
    routes = Blueprint("openrouter", __name__)

    @routes.post("/api/v1/chat/completions")
    @routes.post("/v1/chat/completions")
    def chat_completions():
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not key:
            return openrouter_error(401, "No auth credentials found")
        if api_key and key != api_key:
            return openrouter_error(401, "User not found.")
        body = request.get_json(silent=True)
        try:
            job = job_from(body)
        except Refused as refused:
            return openrouter_error(refused.status, refused.message)
        config = {"modalities": body.get("modalities"), "image_config": body.get("image_config") or {}}
        return chat_answer(job, recorder.faults("openrouter", job, config), len(recorder.log))

    return routes


def job_from(body):
    """The Job a chat-completions body asks for; Refused as OpenRouter would refuse it."""
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
        raise Refused(400, f"Input validation error ({error.__class__.__name__})") from None
    if job.spec is None:
        raise Refused(400, f"{model} is not a valid model ID")
    modalities = body.get("modalities") or ["text"]
    if "image" not in modalities or (job.spec.image_only and "text" in modalities):
        raise Refused(404, "No endpoints found that support the requested output modalities: "
                           + ", ".join(map(str, modalities)))
    job.check()
    return job


def chat_answer(job, wanted, number):
    """The answer the fault directives ask for: an error, or a completion numbered `number`."""
    if "fail" in wanted:
        return failed(openrouter_error, wanted)
    if "malformed" in wanted:
        return MALFORMED
    if "block" in wanted:
        flagged = {"reasons": [wanted["block"]], "flagged_input": "..."}
        return openrouter_error(403, f"{job.model} requires moderation on OpenRouter. Your input was flagged for "
                                     f"\"{wanted['block']}\"", flagged)
    return deliver(completion(job, wanted, number), wanted)


def completion(job, wanted, number):
    """A chat completion whose message carries the job's pictures as data URLs, with usage and cost."""
    pictures, output_tokens = job.pictures(wanted)
    text_tokens, image_tokens = job.tokens_in()
    words = "" if job.spec.image_only else f"Here is your image: {job.prompt[:200]}"
    message = {"role": "assistant", "content": words,
               "images": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}
                          for data in pictures]}
    return {
        "id": f"gen-emulated-{number}", "object": "chat.completion", "created": int(time.time()), "model": job.model,
        "provider": "Emulator",
        "choices": [{"index": 0, "finish_reason": "content_filter" if "finish" in wanted else "stop",
                     "native_finish_reason": wanted.get("finish", "STOP"), "message": message}],
        "usage": {"prompt_tokens": text_tokens + image_tokens, "completion_tokens": output_tokens,
                  "total_tokens": text_tokens + image_tokens + output_tokens,
                  "prompt_tokens_details": {"cached_tokens": 0, "image_tokens": image_tokens},
                  "cost": round(output_tokens * DOLLARS_PER_TOKEN, 6)},
    }
