"""The HTTP layer: one blueprint per endpoint, sharing the request loader and the response."""
import json

from flask import Request, Response, current_app, request
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.exceptions import RequestEntityTooLarge

from ..errors import GatewayError, InvalidRequest
from ..jsonchunks import json_chunks
from ..storage import stored, with_urls
from .files import public_root
from .jobs import accepted, prefers_async
from .streaming import PROVIDER_HEADER, stream_response

FAILED_HEADER = "x-gateway-images-failed"


class ArrivalOrderMultiDict(ImmutableMultiDict):
    """Form data that also remembers the order its parts arrived in: a MultiDict groups values
    by name, which would reorder interleaved `image` / `image[]` uploads."""

    def __init__(self, mapping=None):
        super().__init__(mapping)
        self.in_arrival_order = list(mapping) if isinstance(mapping, list) else list(self.items(multi=True))


class GatewayRequest(Request):
    parameter_storage_class = ArrivalOrderMultiDict


def json_body(accepted="application/json"):
    """The request's JSON object, or the 415 / 400 that says what was wrong with it."""
    if not request.is_json:
        raise GatewayError(415, f"Unsupported Media Type: send the body as {accepted}.")
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and len(request.get_data(cache=True)) >= limit:
        raise RequestEntityTooLarge(f"The chunked body reached the {limit}-byte limit.")
    try:
        data = request.get_json(silent=True)
    except RecursionError:
        raise InvalidRequest("Invalid JSON in request body: nested too deeply") from None
    if data is None:
        raise InvalidRequest("Invalid JSON in request body")
    return data


def image_json_chunks(body):
    """The images body as JSON, in chunks, each image's base64 spliced in as it is."""
    skeleton = {**body, "data": [{**item, "b64_json": ""} for item in body["data"]]}
    return json_chunks(skeleton, "b64_json", [item["b64_json"] for item in body["data"]])


def image_response(job, kind):
    """The job's images: one JSON body (docs/api.md), or with `stream: true` an event
    stream of `kind` events (image_generation or image_edit), or with `Prefer: respond-async` a
    202 and a job to poll (docs/long-generations.md). The request's ledger row and budget
    settlement are written once the response has been sent (or at once, if it fails first)."""
    try:
        if prefers_async():
            return accepted(job)
        response = stream_response(job, kind) if job.params.get("stream") else _json_response(job)
    except BaseException as error:  # e.g. the image store failed after the images were made
        job.admission.answered(getattr(error, "status", 500))
        job.admission.settle()
        raise
    response.headers.update(job.admission.headers)
    response.response = then(response.response, job.admission.settle)
    return response


def then(body, done):
    """`body`'s chunks, then `done()`: once the last one was sent, or the client went away."""
    try:
        yield from body
    finally:
        done()


def _json_response(job):
    result = job.result()
    if job.params.get("response_format") == "url":
        chunks = [json.dumps(_with_urls(result.body)).encode()]
    else:
        chunks = image_json_chunks(result.body)
    response = Response(chunks, mimetype="application/json")
    response.headers["Content-Length"] = str(sum(map(len, chunks)))
    response.headers[PROVIDER_HEADER] = result.provider
    if result.failed:
        response.headers[FAILED_HEADER] = str(result.failed)
    return response


def _with_urls(body):
    """The body naming each image by URL: the gateway's own (under GATEWAY_PUBLIC_URL, else this
    request's root) or the bucket's."""
    config = current_app.config
    return with_urls(stored(body, config["STORAGE"]), config["STORAGE"], public_root())
