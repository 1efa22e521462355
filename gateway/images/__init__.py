"""The HTTP layer: one blueprint per endpoint, sharing the request loader and the response."""
from flask import Request, jsonify, request
from werkzeug.datastructures import ImmutableMultiDict

from ..errors import GatewayError, InvalidRequest

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
    data = request.get_json(silent=True)
    if data is None:
        raise InvalidRequest("Invalid JSON in request body")
    return data


def image_response(result):
    response = jsonify(result.body)
    if result.failed:
        response.headers[FAILED_HEADER] = str(result.failed)
    return response
