"""The seam between the service and the upstream APIs. The service speaks only these neutral
types: a provider maps an `ImageCall` (the client's validated OpenAI parameters and the catalog
model) to its own wire request once per client request (`request_for`), sends it once per call
(`generate`, through the shared transport, within the call's explicit `transport.Scope`: its
deadline, cancellation and retry limit) and answers a `Generation`, or raises one of the neutral
errors of `gateway.errors`. A provider also
has a `name` (used in GATEWAY_PROVIDERS and the catalog), a `subject` for messages ("The
Gemini API"), says whether
it is `configured` and which `missing_setting` would configure it. None of them knows Flask."""
import base64
from dataclasses import dataclass, field, fields

from .. import media
from ..breaker import Breaker, breaker_for
from ..errors import RateLimited, Rejected, UpstreamError, UpstreamUnavailable
from . import transport


@dataclass(frozen=True)
class ImageCall:
    model: str  # the provider's own id for the model
    prompt: str  # the client's prompt with the gateway's instructions (style, mask, input fidelity)
    # The catalog.Model: the aspect ratios, tiers and sizes it takes. Required: every provider's
    # mapping of the client's parameters reads it, so a call without it could not be sent
    catalog: object
    images: tuple = ()  # media.SourceImage inputs, in order
    # The client's validated OpenAI parameters (prompt, size, aspect_ratio, quality, background...),
    # which each provider maps to its own wire (Google's providers through `google.image_shape`)
    params: dict = field(default_factory=dict)
    image_only: bool = False  # the model answers with images only, never words
    interim_images: bool = False  # ask for the images the model draws while thinking (partial images)
    label: str = ""  # the model's name in metrics (a catalog id)
    n: int = 1  # images this one call makes (more than 1 only for a provider that `takes_n`)
    # An edit's inputs as the client sent them, and its mask (OpenAI's: transparent = edit), for a
    # provider that takes them as files; `images` then also holds the mask as a picture, for the others
    edit_images: tuple = ()
    mask: object = None  # media.SourceImage


@dataclass(frozen=True)
class UpstreamRequest:
    """One client request's upstream call, built once and sent by each of its `n` calls and retries."""
    model: str
    body: bytes
    stream: bool = False  # the answer comes as events, so interim images can be passed on as they arrive
    label: str = ""  # the model's name in metrics
    content_type: str = "application/json"  # or multipart/form-data with its boundary
    prompt: str = ""  # the prompt sent, for an upstream that answers images without words


@dataclass
class GeneratedImage:
    b64: bytes  # ASCII, exactly as the upstream sent it, so it can be passed through without a copy
    format: str  # Pillow's name: PNG, JPEG, WEBP
    size: tuple  # (width, height) from the image's own header

    @property
    def data(self):
        return base64.b64decode(self.b64)

    @classmethod
    def read(cls, b64, subject):
        """An image the upstream sent (its base64, as text or ASCII bytes), checked: every base64
        character, a readable header, and a complete end; anything else is an unusable answer,
        retried like one. `subject` names the upstream."""
        try:
            b64 = media.ascii_bytes(b64)
            image_format, size = media.describe_base64(b64)
        except media.MediaError as error:
            raise UpstreamUnavailable(f"{subject} returned an image that cannot be used: {error}.",
                                      cause="bad_image") from None
        return cls(b64, image_format, size)


@dataclass
class Usage:
    input_text_tokens: int = 0
    input_image_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    output_text_tokens: int = 0  # of output_tokens, the text and thinking ones (priced per token, not per image)
    total_tokens: int = 0
    cost: float | None = None  # what the upstream charged, when it says (OpenRouter does, in credits)

    def __add__(self, other):
        counts = {name: getattr(self, name) + getattr(other, name) for name in COUNTS}
        costs = [cost for cost in (self.cost, other.cost) if cost is not None]
        return Usage(**counts, cost=sum(costs) if costs else None)


COUNTS = [f.name for f in fields(Usage) if f.name != "cost"]


def count(value):
    """A token count from an upstream's usage: an int, else 0 (a null or a string counts nothing)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass
class Generation:
    images: list
    text: str = ""
    usage: Usage = field(default_factory=Usage)
    attempts: int = 1


class Provider:
    """The protocol every provider follows, with what they share: a transport of its own, whose
    messages name `subject`, and the wire body built once per client request by `build_body`."""
    name = subject = missing_setting = ""
    takes_n = False  # makes a request's `n` images in one upstream call (OpenAI's `n`)
    breaker = Breaker()  # one that never opens; build_providers gives each provider its configured one

    def __init__(self, settings, session=None):
        self.transport = transport.Transport(settings, self.name, self.subject, session)

    @property
    def configured(self):
        raise NotImplementedError

    @staticmethod
    def build_body(call):
        """The wire body for a neutral ImageCall, as bytes."""
        raise NotImplementedError

    def request_for(self, call):
        return UpstreamRequest(call.model, self.build_body(call), call.interim_images, call.label or call.model)

    def generate(self, request, scope, on_partial=None):
        """One call with the request, retried as the transport sees fit within `scope` (a
        transport.Scope: deadline, cancellation, retry limit): a Generation, or a neutral error.
        Interim images, when the request asked for them and the upstream sends any, go to
        `on_partial` as they arrive."""
        raise NotImplementedError


RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def credentials_refused(subject, status, credentials):
    """The 502 for an upstream that refused the gateway's own credentials: the operator's problem,
    whose message names the setting (`credentials`) to check."""
    return UpstreamError(f"{subject} refused the gateway's credentials (HTTP {status}); "
                         f"the operator should check {credentials}.", f"upstream_{status}")


def status_error(subject, status, message, credentials, wait=None):
    """The neutral error for an upstream's non-2xx `status`, once its provider has handled its own
    cases (credits, moderation): a 401 or 403 refused the credentials named by `credentials`, a
    400 is the request's own, a 404 a model it does not serve, a 429 its rate limit (`wait`: its
    Retry-After), 408 and 5xx worth another attempt."""
    cause = f"upstream_{status}"
    if status in (401, 403):
        return credentials_refused(subject, status, credentials)
    if status == 400:
        return Rejected(message, cause)
    if status == 404:
        return UpstreamError(f"{subject} does not serve this model (HTTP 404): {message}", cause)
    if status == 429:
        return RateLimited(f"{subject} rate limit was reached: {message}", wait, cause)
    failed = UpstreamUnavailable if status in RETRYABLE_STATUSES else UpstreamError
    return failed(f"{subject} failed (HTTP {status}): {message}", cause)


def error_object(response):
    """The `error` object of an OpenAI-shaped error body (`{"error": {"message", "code", ...}}`), or {}."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    return error if isinstance(error, dict) else {}


def serving(model, providers):
    """The providers, in GATEWAY_PROVIDERS order, that serve a catalog model."""
    return [provider for name, provider in providers.items() if name in model.served_by]


def provider_types():
    """{name: class} of every provider there is, configured or not; imported here so that
    gunicorn's master never loads the HTTP stack."""
    from .gemini import GeminiProvider
    from .openai import OpenAIProvider
    from .openrouter import OpenRouterProvider
    from .vertex import VertexProvider

    return {provider.name: provider for provider in (GeminiProvider, VertexProvider, OpenAIProvider,
                                                     OpenRouterProvider)}


def build_providers(settings, redis=None):
    """The providers of GATEWAY_PROVIDERS by name, in its order, built once per process (by
    create_app, in the worker), each with its circuit breaker (shared through `redis`, the
    process's client of GATEWAY_REDIS_URL, if there is one)."""
    from ..config import ConfigError

    known = provider_types()
    unknown = [name for name in settings.providers if name not in known]
    if unknown:
        raise ConfigError(f"GATEWAY_PROVIDERS names unknown providers {', '.join(unknown)}; "
                          f"known: {', '.join(known)}")
    providers = {name: known[name](settings) for name in dict.fromkeys(settings.providers)}
    for name, provider in providers.items():
        provider.breaker = breaker_for(name, settings, redis)
    return providers
