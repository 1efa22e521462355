"""The work behind both endpoints: map OpenAI parameters to the model, fan out `n` upstream
calls, collect the images and re-encode them (DESIGN.md sections 4 and 8)."""
import base64
import contextvars
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import media
from .catalog import resolve_model, upstream_id
from .errors import GatewayError, InvalidRequest, UpstreamError
from .fetch import fetch_for
from .metrics import describe_request, record_images
from .providers.gemini import GeminiProvider, InputImage, Usage

log = logging.getLogger(__name__)

PROVIDERS = {"gemini": GeminiProvider}
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


def tier_for_long_edge(long_edge):
    return "1K" if long_edge <= 1536 else "2K" if long_edge <= 3072 else "4K"


def image_config_for(model, size=None, aspect_ratio=None, quality=None):
    """`imageConfig` for this model from OpenAI's size / aspect_ratio / quality."""
    pixels = _pair(size, "x") if size and size != "auto" else None
    ratio = _pair(aspect_ratio, ":") if aspect_ratio else pixels
    config = {}
    if ratio:
        config["aspectRatio"] = nearest_aspect_ratio(*ratio, model.aspect_ratios)
    if model.image_sizes:
        tier = tier_for_long_edge(max(pixels)) if pixels else None
        if quality in HIGH_QUALITY and tier in (None, "1K"):
            tier = "2K"
        if tier:
            config["imageSize"] = tier
    return config


def prompt_for(params, instructions=()):
    """The exact prompt text sent upstream: the client's prompt plus any instructions."""
    sentences = [params["prompt"], *instructions]
    if params.get("style"):
        sentences.append(STYLE_SENTENCES[params["style"]])
    return "\n\n".join(sentences)


def provider_for(model, settings):
    if model.provider == "gemini" and not settings.gemini_api_key:
        raise GatewayError(503, "The Gemini provider is not configured: set GEMINI_API_KEY on the gateway.")
    return PROVIDERS[model.provider](settings)


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
    source: object  # the first input image, decoded
    region: object  # L image: 255 where the model may edit


def _finish(image, output_format, compression, mask=None):
    """(base64, (width, height)) of the image in the asked format, masked edits composited onto
    the source first; the upstream's base64 passes through when nothing needs re-encoding."""
    try:
        if mask is not None:
            picture = media.composite(image.data, mask.source, mask.region)
        elif image.format == media.FORMATS[output_format] and compression is None:
            return image.b64, image.size
        else:
            picture = media.open_image(image.data)
        data = media.encode_image(picture, output_format, compression)
        return base64.b64encode(data).decode("ascii"), picture.size
    except media.MediaError as error:
        raise UpstreamError(502, f"The Gemini API returned an image that cannot be used: {error}.") from None


def _route(params, settings):
    """The model and its provider, checked before any work is done for the request."""
    model = resolve_model(params.get("model"), settings.default_model)
    if params.get("background") == "transparent" and not model.transparent_background:
        raise InvalidRequest(f"Invalid request parameters: background: 'transparent' is not supported "
                             f"by {model.id}; use 'auto' or 'opaque'")
    return model, provider_for(model, settings)


def generate_images(params, settings):
    """Serve a generation: a prompt in, `n` images out."""
    return _create(params, settings, *_route(params, settings))


def _read_reference(label, reference, settings):
    """Image bytes from an upload, a data URL or an https URL."""
    if isinstance(reference, bytes):
        return reference
    if reference.startswith("data:"):
        try:
            return media.decode_data_url(reference)
        except media.MediaError as error:
            raise InvalidRequest(f"{label}.image_url: {error}") from None
    if reference.lower().startswith("https://"):
        return fetch_for(f"{label}.image_url", reference, settings)
    raise InvalidRequest(f"{label}.image_url must be an https URL or a base64 data URL")


def _load(label, reference, settings):
    try:
        return media.load_input(_read_reference(label, reference, settings))
    except media.MediaError as error:
        raise InvalidRequest(f"{label}: {error}") from None


def edit_images(params, settings, sources, mask_source=None):
    """Serve an edit. `sources` are (label, reference) pairs in order, a reference being
    uploaded bytes or an image_url string; `mask_source` is one more such pair."""
    model, provider = _route(params, settings)
    if not sources:
        raise InvalidRequest("Invalid request parameters: image: Required (send at least one input image)")
    count = len(sources) + (mask_source is not None)
    if count > model.max_input_images:
        raise InvalidRequest(f"Invalid request parameters: images: {model.id} takes at most "
                             f"{model.max_input_images} input images (a mask counts as one); got {count}")
    inputs, first = [], None
    for label, reference in sources:  # one decoded image at a time; only the first is kept, for a mask
        source = _load(label, reference, settings)
        inputs.append(InputImage(source.data, source.mime_type))
        if first is None:
            first = source.image
    instructions, mask = [], None
    if mask_source is not None:
        try:
            region = media.edit_region(_load(*mask_source, settings).image, first.size)
        except media.MediaError as error:
            raise InvalidRequest(f"{mask_source[0]}: {error}") from None
        mask = Mask(source=first, region=region)
        inputs.append(InputImage(media.region_png(region), "image/png"))
        instructions.append(MASK_INSTRUCTION)
    if params.get("input_fidelity") == "high":
        instructions.append(FIDELITY_INSTRUCTION)
    return _create(params, settings, model, provider, inputs, instructions, mask)


def _create(params, settings, model, provider, inputs=(), instructions=(), mask=None):
    prompt = prompt_for(params, instructions)
    image_config = image_config_for(model, params.get("size"), params.get("aspect_ratio"), params.get("quality"))
    n = params.get("n", 1)
    output_format = params.get("output_format", "png")
    compression = params.get("output_compression")
    end_user = params.get("safety_identifier") or params.get("user")
    describe_request(model.id, n, end_user)

    def one_call(_):
        generation = provider.generate(upstream_id(model, settings.upstream_models), prompt, inputs, image_config)
        return generation, [_finish(image, output_format, compression, mask) for image in generation.images]

    outcomes = _fan_out(one_call, n)
    failures = [o for o in outcomes if isinstance(o, GatewayError)]
    successes = [o for o in outcomes if not isinstance(o, GatewayError)]
    if not successes:
        raise failures[0]
    images = [(b64, dims, generation.text or prompt)
              for generation, finished in successes for b64, dims in finished][:n]
    usage = sum((generation.usage for generation, _ in successes), Usage())
    record_images(model.id, len(images), usage)
    if failures:
        log.warning("%d of %d upstream calls failed; returning %d images", len(failures), n, len(images))
    width, height = images[0][1]
    return ImageResult(body={
        "created": int(time.time()),
        "data": [{"b64_json": b64, "revised_prompt": revised} for b64, _, revised in images],
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
    }, failed=len(failures))
