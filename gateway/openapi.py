"""GET /openapi.json: the OpenAPI 3 description, generated from the marshmallow schemas."""
from functools import cache

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint

from .accounting import GROUPS
from .catalog import MODELS
from .counters import RATE_LIMIT_HEADERS
from .images.edits import IMAGE_FIELDS
from .images.schemas import FORM_ONLY_FILES, EditSchema, ErrorSchema, GenerationSchema, ImagesResponseSchema
from .policies import KeyCreateSchema, PolicySchema
from .providers import provider_types

bp = Blueprint("openapi", __name__)

ERROR_STATUSES = {
    "400": "invalid request, or the model refused it (safety)",
    "401": "missing, wrong, revoked or expired API key",
    "403": "the key's policy does not allow this model",
    "413": "request body too large",
    "415": "unsupported content type",
    "429": "the key's rate or concurrency limit (code rate_limit_exceeded, see Retry-After), its budget is spent "
           "(code insufficient_quota, x-should-retry: false), or the upstream's rate limit",
    "500": "the model answered without an image, or an unexpected error",
    "502": "upstream failure",
    "503": "no configured provider serves the model, the upstream account has no credits, "
           "or the gateway is at its in-flight limit",
    "504": "upstream timeout, or the images not finished by the request's deadline (UPSTREAM_TIMEOUT)",
}


LIMIT_HEADERS = {name: {"description": "for a key with rpm / ipm: " + (
    "the limit" if "-limit-" in name else "what is left" if "-remaining-" in name else
    "when its oldest counted request leaves the minute's window (e.g. 1s, 6m0s)"),
    "schema": {"type": "string"}} for name in RATE_LIMIT_HEADERS}

SSE_EVENT = {  # one server-sent event; `data` is one line of JSON whose `type` is the event's
    "type": "object", "required": ["event", "data"],
    "properties": {"event": {"type": "string", "enum": [
        f"{kind}.{event}" for kind in ("image_generation", "image_edit") for event in ("partial_image", "completed")
    ] + ["error"]}, "data": {"type": "string"}}}


ACCEPTED = {"description": "with the header `Prefer: respond-async` (RFC 7240), the queued job to poll",
            "headers": {"Location": {"description": "/v1/images/jobs/<id>", "schema": {"type": "string"}}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ImageJob"}}}}


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
                                        "schema": {"type": "integer"}},
            "x-gateway-provider": {"description": "the providers that made the images; on a stream, those its "
                                                  "calls were with when its head was sent (each event names "
                                                  "its image's)", "schema": {"type": "string"}},
            **LIMIT_HEADERS},
            "content": {"application/json": {"schema": "ImagesResponse"},
                        "text/event-stream": {"schema": SSE_EVENT}}},
            "202": ACCEPTED, **errors},
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
                   info={"description": f"OpenAI-compatible images API served by the providers {_providers()}."})
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
    readiness = {"get": {"summary": "Readiness and configured providers", "responses": {
        "200": {"description": "ready", "content": {"application/json": {"schema": {"type": "object"}}}},
        "503": {"description": "no provider configured, or draining before shutdown",
                "content": {"application/json": {"schema": "Error"}}}}}}
    spec.path("/health/ready", operations=readiness)
    spec.path("/health", operations=readiness)
    spec.path("/health/live", operations={"get": {"summary": "Liveness: the process serves", "responses": {
        "200": {"description": "alive", "content": {"application/json": {"schema": {"type": "object"}}}}}}})
    _model_paths(spec)
    _admin_paths(spec)
    _files_path(spec)
    _job_paths(spec)
    return spec.to_dict()


def _providers():
    """Each provider, what configures it and the built-in models it serves, for the description
    (built once per process; GET /v1/models lists the models file's too)."""
    def served(name):
        ids = [model.id for model in MODELS if name in model.served_by]
        return ids + ["openrouter/<vendor>/<model>"] if name == "openrouter" else ids

    return "; ".join(f"`{name}` ({provider.subject.removeprefix('The ')}, configured by "
                     f"{provider.missing_setting}; serves {', '.join(served(name))})"
                     for name, provider in provider_types().items())


def _model_paths(spec):
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


def _read(summary, schema, errors=(("401", "missing or wrong API key"), ("404", "no such model")), status="200"):
    errors = {code: {"description": text, "content": {"application/json": {"schema": "Error"}}}
              for code, text in errors}
    return {"summary": summary, "security": [{"bearer": []}, {"apiKey": []}],
            "responses": {status: {"description": "done", "content": {"application/json": {"schema": schema}}},
                          **errors}}


def _files_path(spec):
    """The images answered as URLs with directory storage (docs/long-generations.md): no key, the
    URL's signature is the permission."""
    text = {"type": "string"}
    parameters = [{"name": "name", "in": "path", "required": True, "schema": {
        "type": "string", "pattern": r"^[A-Za-z0-9_-]{32}\.(png|jpeg|webp)$"}},
        {"name": "expires", "in": "query", "required": True, "schema": {"type": "integer"},
         "description": "Unix time after which the URL is 410"},
        {"name": "sig", "in": "query", "required": True, "schema": text,
         "description": "HMAC-SHA256 of the path and expiry, hex"}]
    image = {"schema": {"type": "string", "format": "binary"}}
    error = {"content": {"application/json": {"schema": "Error"}}}
    spec.path("/v1/images/files/{name}", operations={"get": {
        "summary": "An image answered with response_format url, until its URL expires", "security": [],
        "parameters": parameters,
        "responses": {"200": {"description": "the image; Cache-Control: max-age = the seconds its URL has left",
                              "content": {f"image/{kind}": image for kind in ("png", "jpeg", "webp")}},
                      "403": {"description": "the signature is wrong or missing, or no such image", **error},
                      "410": {"description": "the URL has expired, or the image was deleted", **error}}}})


JOB_STATUSES = ["queued", "in_progress", "completed", "failed", "cancelled"]


def _job_paths(spec):
    """Asynchronous requests (docs/long-generations.md): the job and its paths (the 202 is in `_operation`)."""
    text, number = {"type": "string"}, {"type": "integer"}
    spec.components.schema("ImageJob", {"type": "object", "required": ["id", "object", "status", "created_at"],
                                        "properties": {
        "id": text, "object": {"type": "string", "enum": ["image.job"]},
        "status": {"type": "string", "enum": JOB_STATUSES}, "created_at": number,
        "completed_at": {"type": "integer", "nullable": True},
        "result": {"allOf": [{"$ref": "#/components/schemas/ImagesResponse"}], "nullable": True},
        "error": {"type": "object", "nullable": True, "description": "the error body a synchronous request gets"}}})
    job = {"$ref": "#/components/schemas/ImageJob"}
    errors = (("401", "missing or wrong API key"), ("404", "no such job for this key, or it has expired"),
              ("503", "the database cannot be reached"))
    name = [{"name": "id", "in": "path", "required": True, "schema": text}]
    spec.path("/v1/images/jobs/{id}", operations={
        "get": {**_read("An asynchronous job: its status, then its result or error", job, errors), "parameters": name},
        "delete": {**_read("Cancel a job not yet finished (a finished one is returned unchanged)", job, errors),
                   "parameters": name}})


ADMIN_ERRORS = (("400", "a field is wrong (the message names it)"), ("401", "not the admin key"),
                ("404", "no such key, or the admin API is off (GATEWAY_ADMIN_KEY unset)"),
                ("409", "the name is taken, or the key is static"), ("503", "the database cannot be reached"))


def _admin_paths(spec):
    """The admin API and GET /v1/usage (docs/keys-and-budgets.md)."""
    spec.components.schema("Policy", schema=PolicySchema)
    spec.components.schema("KeyCreateRequest", schema=KeyCreateSchema)
    text, number, flag = {"type": "string"}, {"type": "number"}, {"type": "boolean"}
    policy = {"allOf": [{"$ref": "#/components/schemas/Policy"}]}
    key = {"allOf": [policy, {"type": "object", "properties": {
        "name": text, "created_at": {"type": "string", "nullable": True}, "revoked": flag,
        "source": {"type": "string", "enum": ["managed", "static"]}, "spent_usd": number}}]}
    created = {"allOf": [policy, {"type": "object", "required": ["name", "key", "created_at"], "properties": {
        "name": text, "key": {"type": "string", "description": "the secret: shown only here"},
        "created_at": text}}]}
    listed = {"type": "object", "properties": {"object": text, "data": {"type": "array", "items": key}}}
    rows = {"type": "object", "properties": {"object": text, "data": {"type": "array", "items": {
        "type": "object", "properties": {**{name: text for name in GROUPS}, "requests": {"type": "integer"},
                                         "images": {"type": "integer"}, "cost_usd": number}}}}}
    own = {"allOf": [policy, {"type": "object", "properties": {"name": text, "spent_usd": number,
                                                               "remaining_usd": {"type": "number", "nullable": True}}}]}
    name = [{"name": "name", "in": "path", "required": True, "schema": text}]
    body = {"required": True, "content": {"application/json": {"schema": "Policy"}}}
    spec.path("/v1/admin/keys", operations={
        "post": {**_read("Create a managed key (admin key)", created, ADMIN_ERRORS, "201"),
                 "requestBody": {"required": True, "content": {"application/json": {"schema": "KeyCreateRequest"}}}},
        "get": _read("Every key with its policy and spend (admin key)", listed, ADMIN_ERRORS)})
    spec.path("/v1/admin/keys/{name}", operations={
        "get": {**_read("One key (admin key)", key, ADMIN_ERRORS), "parameters": name},
        "patch": {**_read("Change a managed key's policy; null clears a field (admin key)", key, ADMIN_ERRORS),
                  "parameters": name, "requestBody": body},
        "delete": {**_read("Revoke a managed key (admin key)", key, ADMIN_ERRORS), "parameters": name}})
    query = [{"name": param, "in": "query", "required": False, "schema": text}
             for param in ("key", "model", "since", "until", "group_by")]
    spec.path("/v1/admin/usage", operations={"get": {
        **_read("The usage ledger summed by key, model, provider or day (admin key)", rows, ADMIN_ERRORS),
        "parameters": query}})
    spec.path("/v1/usage", operations={"get": _read("The calling key's policy, spend and remaining budget", own,
                                                    (("401", "missing or wrong API key"),
                                                     ("503", "the database cannot be reached")))})


@bp.get("/openapi.json")
def openapi():
    """The API description (no key needed)."""
    return build_spec()
