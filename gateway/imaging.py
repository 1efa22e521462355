"""The service behind both endpoints: route a request to its model's providers, admit it, read an
edit's inputs, and plan the request's calls as an ImageJob (docs/api.md and docs/providers.md);
the job runs them. Each provider maps the client's OpenAI parameters to its own wire."""
import contextlib
import threading

from . import media
from .catalog import resolve_model, upstream_id
from .errors import GatewayError, InvalidRequest
from .fetch import fetch_for
from .jobs import ImageJob, Mask
from .limits import image_work
from .metrics import REQUEST_ID, describe_request
from .providers import ImageCall, Usage, serving

STYLE_SENTENCES = {
    "vivid": "Render it in a vivid style: hyper-real and dramatic, with rich, saturated colour.",
    "natural": "Render it in a natural style: realistic and true to life, with no exaggeration.",
}
MASK_INSTRUCTION = ("The last image is a black-and-white mask of the first image: change only the "
                    "white area and keep the black area exactly as it is.")
FIDELITY_INSTRUCTION = ("Preserve the input image faithfully: keep its composition, faces, identity, text "
                        "and fine details unchanged except where the prompt asks for a change.")
def prompt_for(params, instructions=()):
    """The exact prompt text sent upstream: the client's prompt plus any instructions."""
    sentences = [params["prompt"], *instructions]
    if params.get("style"):
        sentences.append(STYLE_SENTENCES[params["style"]])
    return "\n\n".join(sentences)


def providers_for(model, providers):
    """The configured providers that serve the model, in GATEWAY_PROVIDERS order: the first takes
    the request, the others are its failover."""
    candidates = serving(model, providers)
    configured = [provider for provider in candidates if provider.configured]
    if configured:
        return configured
    if not candidates:
        raise GatewayError(503, f"No provider in GATEWAY_PROVIDERS serves {model.id}; it is served by "
                                f"{', '.join(model.served_by)}.")
    raise GatewayError(503, f"No provider that serves {model.id} is configured: set "
                            f"{' or '.join(provider.missing_setting for provider in candidates)} on the gateway.")


def _route(params, settings, providers):
    """The model and its providers, checked before any work is done for the request."""
    model = resolve_model(params.get("model"), settings.default_model, settings.model_aliases)
    if params.get("background") == "transparent" and not model.transparent_background:
        raise InvalidRequest.field("background", f"'transparent' is not supported by {model.id}; "
                                                 "use 'auto' or 'opaque'")
    return model, providers_for(model, providers)


def _admit(params, client, model, accounts, input_images=0):
    """The request admitted under its key's policy (limits, budget), before any work is done for it."""
    tier = model.tier_for(params.get("size"), params.get("quality"))
    n = params.get("n", 1)
    return accounts.admit(client, model, n, model.estimate(tier, n, input_images, len(params["prompt"])),
                          REQUEST_ID.get())


@contextlib.contextmanager
def _ended_on_failure(admission):
    """A request that fails before its job runs still ends its admission: lease, reservation, ledger row."""
    try:
        yield
    except BaseException as error:
        admission.finish(0, Usage(), "", getattr(error, "status", 500))
        admission.settle()
        raise


def generate_images(params, settings, providers, client, accounts):
    """Serve a generation for `client` (a keys.Client): a prompt in, `n` images out."""
    model, chain = _route(params, settings, providers)
    admission = _admit(params, client, model, accounts)
    with _ended_on_failure(admission):
        return _create(params, settings, client, model, chain, admission)


def _read_reference(label, reference, settings):
    """Image bytes from an upload (a file object), a data URL or an https URL."""
    if hasattr(reference, "read"):
        return reference.read()
    if reference.startswith("data:"):
        try:
            return media.decode_data_url(reference)
        except media.MediaError as error:
            raise InvalidRequest(f"{label}.image_url: {error}") from None
    if reference.lower().startswith("https://"):
        return fetch_for(f"{label}.image_url", reference, settings)
    raise InvalidRequest(f"{label}.image_url must be an https URL or a base64 data URL")


class _Inputs:
    """Reads a request's input images, at most MAX_CONTENT_LENGTH bytes of them in all: without
    it, 16 fetched https images of IMAGE_FETCH_MAX_BYTES each would hold 16 times that."""

    def __init__(self, settings):
        self.settings, self.left = settings, settings.max_content_length

    def __call__(self, label, reference):
        data = _read_reference(label, reference, self.settings)
        self.left -= len(data)
        if self.left < 0:
            raise GatewayError(413, f"Request Entity Too Large: {label}: the input images add up to more than "
                                    f"{self.settings.max_content_length} bytes (MAX_CONTENT_LENGTH).")
        return data


def _checked(label, settings, work, *args):
    """`work(*args)` on an image thread; a MediaError becomes a 400 naming `label`."""
    try:
        return image_work(settings, work, *args)
    except media.MediaError as error:
        raise InvalidRequest(f"{label}: {error}") from None


def edit_images(params, settings, providers, client, accounts, sources, mask_source=None):
    """Serve an edit for `client`. `sources` are (label, reference) pairs in order, a reference
    being an uploaded file or an image_url string; `mask_source` is one more such pair."""
    model, chain = _route(params, settings, providers)
    if not sources:
        raise InvalidRequest.field("image", "Required (send at least one input image)")
    count = len(sources) + (mask_source is not None)
    if count > model.max_input_images:
        raise InvalidRequest.field("images", f"{model.id} takes at most {model.max_input_images} input "
                                             f"images (a mask counts as one); got {count}")
    admission = _admit(params, client, model, accounts, count)
    with _ended_on_failure(admission):
        return _edit(params, settings, client, model, chain, admission, sources, mask_source)


def _edit(params, settings, client, model, chain, admission, sources, mask_source):
    read = _Inputs(settings)
    inputs = [_checked(label, settings, media.load_input, read(label, reference), settings.image_max_pixels)
              for label, reference in sources]
    instructions, mask, files = [], None, (tuple(inputs), None)
    if mask_source is not None:
        label, reference = mask_source
        data = read(label, reference)
        region = _checked(label, settings, media.mask_region, data, inputs[0].size, settings.image_max_pixels)
        mask = Mask(source=inputs[0].data, region=region)
        files = (files[0], _checked(label, settings, media.load_input, data, settings.image_max_pixels))
        inputs.append(media.SourceImage(region, "image/png", inputs[0].size))
        instructions.append(MASK_INSTRUCTION)
    if params.get("input_fidelity") == "high":
        instructions.append(FIDELITY_INSTRUCTION)
    return _create(params, settings, client, model, chain, admission, inputs, instructions, mask, files)


class _WireRequests:
    """Each provider's wire request for one client request, built once, when first needed
    (the failover providers' only if a call fails over), and shared by its `n` calls."""

    def __init__(self, call_for):
        self.call_for, self.built, self.lock = call_for, {}, threading.Lock()

    def __call__(self, provider):
        with self.lock:
            if provider.name not in self.built:
                self.built[provider.name] = provider.request_for(self.call_for(provider))
            return self.built[provider.name]


def _create(params, settings, client, model, chain, admission, inputs=(), instructions=(), mask=None,
            files=((), None)):
    """The request's plan: its calls' wire requests (the first provider's built at once, so input
    trouble fails the request before anything is sent) and the job that runs them. `files` are an
    edit's images and mask as the client sent them, for a provider that takes files."""
    describe_request(model.id, params.get("n", 1), params.get("safety_identifier") or params.get("user"))
    prompt = prompt_for(params, instructions)
    partial_images = params.get("partial_images", 0) if params.get("stream") and model.interim_images else 0
    per_call = _images_per_call(params, chain)
    wire_request = _WireRequests(lambda provider: ImageCall(
        upstream_id(model, provider.name, settings.upstream_models), prompt, model, tuple(inputs), params,
        model.image_only, interim_images=partial_images > 0, label=model.label, n=per_call, edit_images=files[0],
        mask=files[1]))
    wire_request(chain[0])
    return ImageJob(settings, client, model, chain, wire_request, prompt, params, admission, mask, partial_images,
                    params.get("n", 1) // per_call)


def _images_per_call(params, chain):
    """All `n` images in one upstream call when every provider that may serve it takes `n`;
    else, and for a stream (whose images go out as each call finishes), one image per call."""
    if params.get("stream") or not all(provider.takes_n for provider in chain):
        return 1
    return params.get("n", 1)
