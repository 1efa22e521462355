"""The HTTP layer: one blueprint per endpoint, sharing the request loader and the response."""
from flask import jsonify, request

from ..errors import GatewayError, InvalidRequest

FAILED_HEADER = "x-gateway-images-failed"

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
