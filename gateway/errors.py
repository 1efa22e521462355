"""One exception family for everything a client may be told, and the body that tells it:
`{"error": true, "status": N, "message": "..."}`, or OpenAI's body for OpenAI's SDKs, with the
same HTTP status (docs/api.md, "Errors"). Nothing here imports the web framework, so providers
raise these without Flask; gateway/http_errors.py renders them as responses."""


class GatewayError(Exception):
    """An error the client should see, with its HTTP status; `code` is OpenAI's machine-readable
    name for it (`rate_limit_exceeded`...), which OpenAI's error body carries."""

    def __init__(self, status, message, headers=None, code=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.code = code  # OpenAI's error code, for GATEWAY_ERROR_FORMAT=openai (e.g. rate_limit_exceeded)


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
    """A failure of an upstream call, said in provider-neutral terms. The class is the mapping to
    the error table of docs/api.md: it fixes the client's status, whether the transport retries, and
    whether the next provider that serves the model is tried (docs/providers.md: after 429s, 5xx, timeouts and
    connection errors, never after the client's own errors, safety blocks or text-only answers).
    This base class is a 502 that neither retrying nor another provider can help (bad
    credentials, a model the upstream does not serve, an answer over the size limit). `cause`
    says what the upstream did (`upstream_503`, `timeout`, `blocked`...), for metrics, apart
    from the status the client gets."""
    status, retryable, fails_over = 502, False, False

    def __init__(self, message, cause=None, headers=None):
        super().__init__(self.status, message, headers)
        self.cause = cause or f"error_{self.status}"
        self.retry_after = None


class Rejected(UpstreamError):
    """The upstream refused the request itself (its 400); the message is the upstream's."""
    status = 400


class Blocked(UpstreamError):
    """The prompt or the image was stopped by the upstream's safety filters; the message names why."""
    status = 400


class NoImage(UpstreamError):
    """The model answered, but with no image."""
    status = 500

    def __init__(self):
        super().__init__(NO_IMAGE_MESSAGE, cause="no_image")


class RateLimited(UpstreamError):
    """The upstream's rate limit or quota; `retry_after` is the upstream's wait in seconds, if it said."""
    status, retryable, fails_over = 429, True, True

    def __init__(self, message, retry_after=None, cause="upstream_429"):
        wait = retry_after if retry_after is not None else DEFAULT_RETRY_AFTER
        super().__init__(message, cause, {"Retry-After": str(wait)})
        self.retry_after = retry_after


class UpstreamUnavailable(UpstreamError):
    """A 5xx, a dropped connection, or an answer that cannot be read: worth another attempt."""
    retryable = fails_over = True


class UpstreamTimeout(UpstreamError):
    """No answer within UPSTREAM_TIMEOUT."""
    status, fails_over = 504, True


class NoCredits(UpstreamError):
    """The operator's upstream account cannot pay for the call: the gateway is unavailable, not
    the client wrong, and another provider's account may well pay."""
    status, fails_over = 503, True


DEFAULT_RETRY_AFTER = 10  # seconds, when a rate-limited upstream does not say
NO_IMAGE_MESSAGE = (
    "The model did not generate any images. "
    "Try a different model with image generation capabilities."
)


OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                429: "rate_limit_error"}


def error_body(status, message, error_format="seed", code=None):
    """The error body: the gateway's own shape, or OpenAI's, whose message the official SDKs put in
    the exception text; OpenAI's `code` is `code` when given, else the status."""
    if error_format == "openai":
        kind = OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
        if code == "insufficient_quota":
            kind = "insufficient_quota"
        return {"error": {"message": message, "type": kind, "param": None, "code": code or str(status)}}
    return {"error": True, "status": status, "message": message}


def internal_error():
    """What a client is told of a bug in the gateway; the details go to the log only."""
    return GatewayError(500, "Internal server error; the details are in the gateway's log.",
                        headers={"x-should-retry": "false"})  # upstream calls may already have been paid for
