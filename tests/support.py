"""Test helpers: real image bytes, Gemini answers, and Google's published request schema."""
import base64
import hashlib
import io

from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.secrets import WATCH

GENERATE_URL = "https://gemini.test/v1beta/models/{model}:generateContent"
ADMIN_KEY = "admin-key-0123456789abcdef"
WATCH.secrets.add(ADMIN_KEY)
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def create_key(client, name="team-a", **policy):
    """POST /v1/admin/keys with a Flask test client; the new secret is watched for from then on."""
    response = client.post("/v1/admin/keys", json={"name": name, **policy}, headers=ADMIN)
    if response.status_code == 201:  # from here on no answer or log line may hold the secret or its hash
        WATCH.secrets |= {response.json["key"], hashlib.sha256(response.json["key"].encode()).hexdigest()}
    return response


def generate_as(client, key, **params):
    """POST /v1/images/generations with a Flask test client and `key`, its body read as a client
    would (the request's ledger row is written once its body has been sent)."""
    response = client.post("/v1/images/generations", json={"prompt": "a lighthouse", **params},
                           headers={"Authorization": f"Bearer {key}"})
    response.get_data()
    return response


def png_bytes(size=(64, 48), colour=(200, 30, 30), mode="RGB"):
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, "PNG")
    return buffer.getvalue()


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


def metric(text, name, **labels):
    """The sum of a metric's samples whose labels include `labels`, from Prometheus text (0 when none)."""
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())
