"""Google's `POST /v1beta/models/{model}:generateContent` (and `:streamGenerateContent?alt=sse`)
on the Gemini API, the same call on Vertex AI with an access token from the OAuth endpoint
`POST /token`, and Google's error shape."""
import base64

from flask import Blueprint, jsonify, request

from .faults import MALFORMED, Refused, deliver, failed, streamed_answer
from .models import MODELS
from .pictures import Job, open_image, render_png

VERTEX_PATH = "/v1/projects/<project>/locations/<location>/publishers/google/models/<model>:<method>"
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def google_error(status, message, reason=None):
    error = {"code": status, "message": message, "status": STATUS_NAMES.get(status, "UNKNOWN")}
    if reason:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}]
    response = jsonify({"error": error})
    response.status_code = status
    return response


def blueprint(recorder, api_key=None, issuer=None):
    """The Gemini API's and Vertex AI's routes. With `api_key` set, any other key is refused;
    `issuer` (an oauth.TokenIssuer) serves the token endpoint and lets Vertex calls in."""
    routes = Blueprint("gemini", __name__)

    @routes.post("/v1beta/models/<model>:<method>")
    def generate_content(model, method):
        if "key" in request.args:
            return google_error(400, "emulator: the API key must be sent in x-goog-api-key, not in the URL")
        key = request.headers.get("x-goog-api-key")
        if not key:
            return google_error(403, "Method doesn't allow unregistered callers. Please use an API key.")
        if api_key and key != api_key:
            return google_error(400, "API key not valid. Please pass a valid API key.", "API_KEY_INVALID")
        return google_answer(recorder, "gemini", model, method)

    @routes.post(VERTEX_PATH)
    def vertex_generate_content(project, location, model, method):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or issuer is None or not issuer.valid(token):
            return google_error(401, "Request had invalid authentication credentials. Expected OAuth 2 access "
                                     "token, login cookie or other valid authentication credential.")
        contents = (request.get_json(silent=True) or {}).get("contents")
        if isinstance(contents, list) and not all(isinstance(c, dict) and c.get("role") for c in contents):
            return google_error(400, "Please use a valid role: user, model.")
        return google_answer(recorder, "vertex", model, method)

    add_token_routes(routes, issuer)
    return routes


def add_token_routes(routes, issuer):
    @routes.post("/token")
    def token():
        if issuer is None:
            return {"error": "invalid_client", "error_description": "the emulator has no service account"}, 400
        answer, error = issuer.grant(request.form)
        return answer or ({"error": error[0], "error_description": error[1]}, 400)

    @routes.get("/emulator/tokens")
    def tokens():
        """How many access tokens the token endpoint has issued, for tests."""
        return {"issued": issuer.issued if issuer else 0}


def job_from(model, body):
    """The Job a generateContent body asks for, and its generationConfig; Refused when it cannot be read."""
    try:
        parts = body["contents"][-1]["parts"]
        config = body.get("generationConfig") or {}
        image_config = config.get("imageConfig") or {}
        job = Job(model, MODELS[model], "\n".join(p["text"] for p in parts if "text" in p),
                  [open_image(p["inlineData"]["data"]) for p in parts if "inlineData" in p],
                  image_config.get("aspectRatio"), image_config.get("imageSize"))
    except (TypeError, KeyError, IndexError, ValueError, OSError) as error:
        raise Refused(400, f"Invalid JSON payload received ({error.__class__.__name__}).") from None
    if "IMAGE" not in config.get("responseModalities", []):
        raise Refused(400, "responseModalities must include IMAGE for an image answer")
    job.check()
    return job, config


def google_answer(recorder, api, model, method):
    """generateContent or streamGenerateContent, on the Gemini API or Vertex AI, once the caller is let in."""
    if method not in ("generateContent", "streamGenerateContent"):
        return google_error(404, f"emulator: no method {method}")
    if method == "streamGenerateContent" and request.args.get("alt") != "sse":
        return google_error(400, "emulator: streamGenerateContent is served as server-sent events only (alt=sse)")
    if model not in MODELS:
        return google_error(404, f"models/{model} is not found for API version v1beta")
    try:
        job, config = job_from(model, request.get_json(silent=True))
    except Refused as refused:
        return google_error(refused.status, refused.message)
    wanted = recorder.faults(api, job, config)
    if "fail" in wanted:
        return failed(google_error, wanted)
    if "malformed" in wanted:
        return MALFORMED
    if "block" in wanted:
        return {"promptFeedback": {"blockReason": wanted["block"]}, "usageMetadata": {"promptTokenCount": 8}}
    answer = generated(job, wanted)
    if method == "streamGenerateContent":
        thinking = job.spec.thinks and (config.get("thinkingConfig") or {}).get("includeThoughts")
        return streamed_answer(answer, job.interim_events() if thinking else [], wanted)
    return deliver(answer, wanted)


def generated(job, wanted):
    """A GenerateContentResponse with the job's pictures (after a thought, with `thoughts`) and usage."""
    pictures, output_tokens = job.pictures(wanted)
    text = f"Here is your image: {job.prompt[:200]}"
    parts = [{"text": text}] + [{"inlineData": {"mimeType": "image/png", "data": data}} for data in pictures]
    if "thoughts" in wanted:
        thought = base64.b64encode(render_png("thought " + job.prompt, (64, 64), [])).decode()
        parts[:0] = [{"text": "Planning the composition.", "thought": True},
                     {"inlineData": {"mimeType": "image/png", "data": thought}, "thought": True}]
    text_tokens, image_tokens = job.tokens_in()
    return {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": wanted.get("finish", "STOP"),
                        "index": 0}],
        "usageMetadata": {
            "promptTokenCount": text_tokens + image_tokens,
            "candidatesTokenCount": output_tokens + len(text) // 4,
            "totalTokenCount": text_tokens + image_tokens + output_tokens + len(text) // 4,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": text_tokens}]
            + ([{"modality": "IMAGE", "tokenCount": image_tokens}] if job.inputs else []),
        },
        "modelVersion": job.model,
    }
