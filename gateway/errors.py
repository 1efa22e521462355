"""One exception family and the one handler that renders every error as
`{"error": true, "status": N, "message": "..."}` with the same HTTP status."""
import logging

from flask import jsonify
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class GatewayError(Exception):
    """An error the client should see, with its HTTP status."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def shorten(text, limit=64):
    """What a client sent, cut to a prefix that is safe to quote back in a message."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


class InvalidRequest(GatewayError):
    def __init__(self, message):
        super().__init__(400, message)

    @classmethod
    def field(cls, name, reason):
        return cls(f"Invalid request parameters: {shorten(name)}: {reason}")


class UpstreamError(GatewayError):
    """A failure of the upstream model call; `retryable` ones are retried by the provider."""

    def __init__(self, status, message, headers=None, retryable=False, retry_after=None):
        super().__init__(status, message, headers)
        self.retryable = retryable
        self.retry_after = retry_after


NO_IMAGE_MESSAGE = (
    "The model did not generate any images. "
    "Try a different model with image generation capabilities."
)


def error_response(status, message, headers=None):
    response = jsonify({"error": True, "status": status, "message": message})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register_error_handlers(app):
    @app.errorhandler(GatewayError)
    def gateway_error(error):
        return error_response(error.status, error.message, error.headers)

    @app.errorhandler(HTTPException)
    def http_error(error):
        headers = {k: v for k, v in error.get_headers() if k != "Content-Type"}  # keeps 405's Allow
        return error_response(error.code, f"{error.name}: {error.description}", headers)

    @app.errorhandler(ParseException)
    def malformed_body(error):
        """gunicorn parses a chunked body only as the app reads it."""
        return error_response(400, f"Bad Request: the request body is malformed ({type(error).__name__}).")

    @app.errorhandler(Exception)
    def unexpected_error(error):
        log.exception("unhandled error")
        return error_response(500, "Internal server error; the details are in the gateway's log.")
