"""The work behind both endpoints: map OpenAI parameters to the model, fan out `n` upstream
calls, collect the images and re-encode them (DESIGN.md sections 4 and 8)."""
import base64
import contextvars
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import media
from .catalog import resolve_model, upstream_id
from .errors import GatewayError, InvalidRequest, UpstreamError
from .fetch import fetch_for
from .limits import KEY_QUOTA, image_work
from .metrics import describe_request, record_failover, record_images
from .providers import ImageCall, Usage, serving

log = logging.getLogger(__name__)

STYLE_SENTENCES = {
    "vivid": "Render it in a vivid style: hyper-real and dramatic, with rich, saturated colour.",
    "natural": "Render it in a natural style: realistic and true to life, with no exaggeration.",
}
MASK_INSTRUCTION = ("The last image is a black-and-white mask of the first image: change only the "
                    "white area and keep the black area exactly as it is.")
FIDELITY_INSTRUCTION = ("Preserve the input image faithfully: keep its composition, faces, identity, text "
                        "and fine details unchanged except where the prompt asks for a change.")
HIGH_QUALITY = {"hd", "high"}


@dataclass
class ImageResult:
    body: dict
    failed: int
    provider: str  # the provider that made the images ("gemini, vertex" when calls failed over)


def _pair(text, separator):
    width, height = text.split(separator)
    return int(width), int(height)


def nearest_aspect_ratio(width, height, ratios):
    """The supported ratio closest to width:height on a log scale (ties go to the earlier one)."""
    target = math.log(width / height)

    def distance(ratio):
        ratio_width, ratio_height = _pair(ratio, ":")
        return abs(target - math.log(ratio_width / ratio_height))

    return min(ratios, key=distance)


def tier_for_long_edge(model, long_edge):
    if "512" in model.tiers and long_edge <= 640:
        return "512"
    return "1K" if long_edge <= 1536 else "2K" if long_edge <= 3072 else "4K"


def shape_for(model, size=None, aspect_ratio=None, quality=None):
    """(aspect ratio, resolution tier) for this model from OpenAI's size / aspect_ratio /
    quality; either is None when the request leaves it to the model."""
    pixels = _pair(size, "x") if size and size != "auto" else None
    ratio = _pair(aspect_ratio, ":") if aspect_ratio else pixels
    tier = None
    if model.tiers:
        tier = tier_for_long_edge(model, max(pixels)) if pixels else None
        if quality in HIGH_QUALITY and tier in (None, "512", "1K"):
            tier = "2K"
    return (nearest_aspect_ratio(*ratio, model.aspect_ratios) if ratio else None), tier


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


def _fan_out(call, n):
    """Run `call(i)` for i in range(n) in parallel; each outcome is a value or a GatewayError."""
    def guarded(index):
        try:
            return call(index)
        except GatewayError as error:
            return error

    if n == 1:
        return [guarded(0)]
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="upstream") as pool:
        # each call runs in a copy of this request's context: its request id and counters
        futures = [pool.submit(contextvars.copy_context().run, guarded, index) for index in range(n)]
        return [future.result() for future in futures]


@dataclass
class Mask:
    source: bytes  # the first input image, as sent upstream
    region: bytes  # PNG, white where the model may edit


def _passes_through(image, output_format, compression, mask):
    return mask is None and image.format == media.FORMATS[output_format] and compression is None


def _finish_all(images, output_format, compression, mask):
    """(base64, (width, height)) of each image in the asked format, or the MediaError that made
    it unusable; masked edits are composited onto the source, which is decoded once."""
    masked = media.MaskedSource(mask.source, mask.region) if mask else None
    finished = []
    for image in images:
        if _passes_through(image, output_format, compression, mask):
            finished.append((image.b64, image.size))
            continue
        try:
            picture = masked.composite(image.data) if masked else media.open_image(image.data)
            data = media.encode_image(picture, output_format, compression)
        except (media.MediaError, OSError) as error:
            finished.append(media.MediaError(str(error)))
            continue
        finished.append((base64.b64encode(data).decode("ascii"), picture.size))
    return finished


def _route(params, settings, providers):
    """The model and its providers, checked before any work is done for the request."""
    model = resolve_model(params.get("model"), settings.default_model, settings.model_aliases)
    if params.get("background") == "transparent" and not model.transparent_background:
        raise InvalidRequest.field("background", f"'transparent' is not supported by {model.id}; "
                                                 "use 'auto' or 'opaque'")
    return model, providers_for(model, providers)


def generate_images(params, settings, providers, client):
    """Serve a generation for `client` (a key id): a prompt in, `n` images out."""
    return _create(params, settings, client, *_route(params, settings, providers))


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


def edit_images(params, settings, providers, client, sources, mask_source=None):
    """Serve an edit for `client`. `sources` are (label, reference) pairs in order, a reference
    being an uploaded file or an image_url string; `mask_source` is one more such pair."""
    model, chain = _route(params, settings, providers)
    if not sources:
        raise InvalidRequest.field("image", "Required (send at least one input image)")
    count = len(sources) + (mask_source is not None)
    if count > model.max_input_images:
        raise InvalidRequest.field("images", f"{model.id} takes at most {model.max_input_images} input "
                                             f"images (a mask counts as one); got {count}")
    read = _Inputs(settings)
    inputs = [_checked(label, settings, media.load_input, read(label, reference), settings.image_max_pixels)
              for label, reference in sources]
    instructions, mask = [], None
    if mask_source is not None:
        label, reference = mask_source
        region = _checked(label, settings, media.mask_region, read(label, reference),
                          inputs[0].size, settings.image_max_pixels)
        mask = Mask(source=inputs[0].data, region=region)
        inputs.append(media.SourceImage(region, "image/png", inputs[0].size))
        instructions.append(MASK_INSTRUCTION)
    if params.get("input_fidelity") == "high":
        instructions.append(FIDELITY_INSTRUCTION)
    return _create(params, settings, client, model, chain, inputs, instructions, mask)


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


def _with_failover(model, chain, wire_request, deadline):
    """One image call: (Generation, provider) from the first provider of the chain, or from the
    next one when a provider's failure may be its own (DESIGN.md section 10), until the deadline."""
    for index, provider in enumerate(chain):
        try:
            return provider.generate(wire_request(provider), deadline), provider
        except UpstreamError as error:
            following = chain[index + 1:]
            if not (error.fails_over and following and time.monotonic() < deadline):
                raise
            log.warning("%s failed for %s (%s); failing over to %s", provider.name, model.id, error.cause,
                        following[0].name)
            record_failover(model.id, provider.name, following[0].name)


def _create(params, settings, client, model, chain, inputs=(), instructions=(), mask=None):
    n = params.get("n", 1)
    output_format = params.get("output_format", "png")
    describe_request(model.id, n, params.get("safety_identifier") or params.get("user"))
    prompt = prompt_for(params, instructions)
    aspect_ratio, tier = shape_for(model, params.get("size"), params.get("aspect_ratio"), params.get("quality"))
    wire_request = _WireRequests(lambda provider: ImageCall(
        upstream_id(model, provider.name, settings.upstream_models), prompt, tuple(inputs), aspect_ratio, tier,
        model.image_only))
    wire_request(chain[0])  # built before any call starts, so input trouble fails the request at once
    deadline = time.monotonic() + settings.upstream_timeout  # for all of the request's calls, failover included
    with KEY_QUOTA.hold(client, n, settings.upstream_max_in_flight_per_key):
        outcomes = _fan_out(lambda _: _with_failover(model, chain, wire_request, deadline), n)
    failures = [o for o in outcomes if isinstance(o, GatewayError)]
    generations = [o for o in outcomes if not isinstance(o, GatewayError)]
    if not generations:
        raise failures[0]
    makers = list(dict.fromkeys(provider for _, provider in generations))
    made = [(image, generation.text or prompt) for generation, _ in generations for image in generation.images][:n]
    usable = _usable(settings, makers[0], made, output_format, params.get("output_compression"), mask)
    failed = len(failures) + len(made) - len(usable)
    usage = sum((generation.usage for generation, _ in generations), Usage())
    record_images(model.id, len(usable), usage)
    if failed:
        log.warning("%d of %d images failed; returning %d", failed, n, len(usable))
    return ImageResult(body=_images_body(model, usable, output_format, usage), failed=failed,
                       provider=", ".join(provider.name for provider in makers))


def _usable(settings, provider, made, output_format, compression, mask):
    """(base64, (width, height), revised prompt) of each (image, revised prompt) that could be
    finished in the asked format; a 502 when none could."""
    images = [image for image, _ in made]
    needs_work = not all(_passes_through(image, output_format, compression, mask) for image in images)
    finished = (image_work(settings, _finish_all, images, output_format, compression, mask) if needs_work
                else [(image.b64, image.size) for image in images])
    usable = [(*result, revised) for result, (_, revised) in zip(finished, made, strict=True)
              if not isinstance(result, media.MediaError)]
    if not usable:
        raise UpstreamError(f"{provider.subject} returned an image that cannot be used: {finished[0]}.",
                            cause="bad_image")
    return usable


def _images_body(model, usable, output_format, usage):
    """The response of DESIGN.md section 8 (with the upstream's `cost` in `usage` when it says)."""
    width, height = usable[0][1]
    body = {
        "created": int(time.time()),
        "data": [{"b64_json": b64, "revised_prompt": revised} for b64, _, revised in usable],
        "model": model.id,
        "size": f"{width}x{height}",
        "output_format": output_format,
        "usage": {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
            "input_tokens_details": {"text_tokens": usage.input_text_tokens,
                                     "image_tokens": usage.input_image_tokens},
        },
    }
    if usage.cost is not None:
        body["usage"]["cost"] = usage.cost
    return body
