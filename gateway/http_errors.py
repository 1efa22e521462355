"""The one Flask error handler: every error of a request, the gateway's own (gateway/errors.py),
werkzeug's (404, 405, 413...) and gunicorn's unreadable bodies alike, answered as JSON in the
body the client reads (docs/api.md, "Errors")."""
import logging

from flask import current_app, g, jsonify, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import HTTPException

from .errors import GatewayError, UpstreamError, error_body, internal_error

log = logging.getLogger(__name__)


SDK_HEADER = "X-Stainless-Lang"  # sent on every request by OpenAI's Python and Node SDKs


def error_format_for(setting, headers):
    """GATEWAY_ERROR_FORMAT=auto answers OpenAI's SDKs in OpenAI's body, which is the only one
    their exception text can show, and everyone else in the gateway's own."""
    if setting != "auto":
        return setting
    return "openai" if SDK_HEADER in headers else "seed"


def error_response(status, message, headers=None, code=None):
    g.error_message = message  # for the request's log line
    error_format = error_format_for(current_app.config["SETTINGS"].error_format, request.headers)
    response = jsonify(error_body(status, message, error_format, code))
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register_error_handlers(app):
    @app.errorhandler(GatewayError)
    def gateway_error(error):
        headers = error.headers
        if isinstance(error, UpstreamError):  # the gateway has retried it, or retrying cannot help
            headers = {**headers, "x-should-retry": "false"}
        return error_response(error.status, error.message, headers, error.code)

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
        return gateway_error(internal_error())
