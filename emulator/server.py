"""Speaks Google's `POST /v1beta/models/{model}:generateContent` (docs/testing.md), the same
call on Vertex AI (`POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent`
with an access token from its OAuth endpoint `POST /token`), and OpenRouter's
`POST /api/v1/chat/completions` (also at `/v1/chat/completions`, docs/providers.md), and
OpenAI's `POST /v1/images/generations` and `/v1/images/edits` for its gpt-image models.

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
  only=API         misbehave only on one API: gemini, vertex, openrouter or openai (the others answer normally)
  spread=S         each further call with this prompt waits S seconds more (cycling every 4 calls), so
                   the calls of one n=4 request finish one after another (benchmarks)
Pictures for prompts without input images are cached, so the emulator itself stays fast under load.

The app factory; each upstream's routes live in their own module (emulator/gemini.py,
emulator/openrouter.py, emulator/openai_images.py), the pictures in emulator/pictures.py, the
directives in emulator/faults.py.
"""
from flask import Flask, jsonify

from . import gemini, openai_images, openrouter
from .faults import Recorder
from .models import MODELS, OPENROUTER_MODELS


def create_emulator(api_key=None, issuer=None):
    """The emulator app; with `api_key` set, any other key is refused like the real APIs refuse it.
    `issuer` (an oauth.TokenIssuer) serves the token endpoint and the Vertex route: without one,
    Vertex calls are refused as unauthenticated."""
    app = Flask(__name__)
    recorder = Recorder()
    openai_images.register(app, api_key, recorder.faults)

    @app.get("/")
    def index():
        return {"emulator": "gemini and openrouter", "models": sorted(MODELS), "openrouter": sorted(OPENROUTER_MODELS)}

    @app.get("/emulator/requests")
    def received():
        """What the emulator was sent (no image data), newest last, for tests to inspect."""
        return jsonify(list(recorder.log))

    app.register_blueprint(gemini.blueprint(recorder, api_key, issuer))
    app.register_blueprint(openrouter.blueprint(recorder, api_key))
    return app
