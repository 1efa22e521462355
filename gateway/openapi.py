"""GET /openapi.json: the OpenAPI 3 description, generated from the marshmallow schemas."""
from functools import cache

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint

from .images.edits import IMAGE_FIELDS
from .images.schemas import FORM_ONLY_FILES, EditSchema, ErrorSchema, GenerationSchema, ImagesResponseSchema

bp = Blueprint("openapi", __name__)

ERROR_STATUSES = {
    "400": "invalid request, or the model refused it (safety)",
    "401": "missing or wrong API key",
    "413": "request body too large",
    "415": "unsupported content type",
    "429": "upstream rate limit (see Retry-After)",
    "500": "the model answered without an image, or an unexpected error",
    "502": "upstream failure",
    "503": "no configured provider serves the model, the upstream account has no credits, "
           "or the gateway is at its in-flight limit",
    "504": "upstream timeout",
}


SSE_EVENT = {  # one server-sent event; `data` is one line of JSON whose `type` is the event's
    "type": "object", "required": ["event", "data"],
    "properties": {"event": {"type": "string", "enum": [
        f"{kind}.{event}" for kind in ("image_generation", "image_edit") for event in ("partial_image", "completed")
    ] + ["error"]}, "data": {"type": "string"}}}


def _operation(summary, request_body):
    errors = {code: {"description": text, "content": {"application/json": {"schema": "Error"}}}
              for code, text in ERROR_STATUSES.items()}
    return {
        "summary": summary,
        "security": [{"bearer": []}, {"apiKey": []}],
        "requestBody": {"required": True, "content": request_body},
        "responses": {"200": {"description": "the images; with `stream: true`, server-sent events "
                                             "(partial_image, completed, error) as OpenAI streams images", "headers": {
            "x-gateway-images-failed": {"description": "upstream calls that failed, when some did",
                                        "schema": {"type": "integer"}}},
            "content": {"application/json": {"schema": "ImagesResponse"},
                        "text/event-stream": {"schema": SSE_EVENT}}}, **errors},
    }


def _edit_form(plugin):
    """The multipart form of an edit: the JSON fields as form fields, plus the files."""
    form = plugin.converter.schema2jsonschema(EditSchema(exclude=FORM_ONLY_FILES))
    files = {"type": "array", "items": {"type": "string", "format": "binary"}}
    form["properties"].update({name: files for name in IMAGE_FIELDS})
    form["properties"]["mask"] = {"type": "string", "format": "binary"}
    return form


@cache
def build_spec():
    plugin = MarshmallowPlugin()
    spec = APISpec(title="Image gateway", version="1.0.0", openapi_version="3.0.3", plugins=[plugin],
                   info={"description": "OpenAI-compatible images API served by image models reached as chat "
                                        "models: Gemini, and OpenRouter-style chat completions."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.security_scheme("apiKey", {"type": "apiKey", "in": "header", "name": "x-api-key"})
    for name, schema in (("GenerationRequest", GenerationSchema), ("EditRequest", EditSchema),
                         ("ImagesResponse", ImagesResponseSchema), ("Error", ErrorSchema)):
        spec.components.schema(name, schema=schema)
    spec.path("/v1/images/generations", operations={"post": _operation(
        "Create images from a prompt", {"application/json": {"schema": "GenerationRequest"}})})
    spec.path("/v1/images/edits", operations={"post": _operation(
        "Edit or combine images with a prompt", {
            "application/json": {"schema": "EditRequest"},
            "multipart/form-data": {"schema": _edit_form(plugin)}})})
    spec.path("/health", operations={"get": {"summary": "Readiness and configured providers", "responses": {
        "200": {"description": "ready", "content": {"application/json": {"schema": {"type": "object"}}}},
        "503": {"description": "no provider configured", "content": {"application/json": {
            "schema": {"type": "object"}}}}}}})
    text, number = {"type": "string"}, {"type": "integer"}
    spec.components.schema("Model", {"type": "object", "required": ["id", "object", "created", "owned_by"],
                                     "properties": {"id": text, "object": text, "created": number, "owned_by": text}})
    model = {"$ref": "#/components/schemas/Model"}
    listed = {"type": "object", "required": ["object", "data"],
              "properties": {"object": text, "data": {"type": "array", "items": model}}}
    spec.path("/v1/models", operations={"get": _read("The models and aliases this gateway serves", listed)})
    spec.path("/v1/models/{model}", operations={"get": {
        **_read("One model or alias", model),
        "parameters": [{"name": "model", "in": "path", "required": True, "schema": text}]}})
    return spec.to_dict()


def _read(summary, schema):
    errors = {code: {"description": text, "content": {"application/json": {"schema": "Error"}}}
              for code, text in (("401", "missing or wrong API key"), ("404", "no such model"))}
    return {"summary": summary, "security": [{"bearer": []}, {"apiKey": []}],
            "responses": {"200": {"description": "found", "content": {"application/json": {"schema": schema}}},
                          **errors}}


@bp.get("/openapi.json")
def openapi():
    """The API description (no key needed)."""
    return build_spec()
