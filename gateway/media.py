"""Image bytes: read their header, re-encode them to the format the client asked for."""
import io

from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 64_000_000  # larger than any model's 4K output; guards decompression bombs
FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


class MediaError(ValueError):
    """Bytes that are not a usable image."""


def open_image(data):
    """A lazily-decoded Pillow image, refused when it is not an image or too large to decode."""
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise MediaError(f"not a decodable image ({error.__class__.__name__})") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise MediaError(f"{width}x{height} is more than {MAX_PIXELS} pixels")
    return image


def _is_complete(data, image_format):
    """A cheap end-of-file check, so a truncated image is caught without decoding it."""
    if image_format == "PNG":
        return data.endswith(b"IEND\xaeB`\x82")
    if image_format == "JPEG":
        return data.rstrip(b"\x00").endswith(b"\xff\xd9")
    if image_format == "WEBP":
        return int.from_bytes(data[4:8], "little") + 8 <= len(data)
    return True


def describe(data):
    """(format name, (width, height)) of a complete image, read from its header."""
    image = open_image(data)
    if not _is_complete(data, image.format):
        raise MediaError(f"the {image.format} data is truncated")
    return image.format, image.size


def encode(data, output_format, compression=None):
    """The image in `output_format` (png|jpeg|webp); bytes already in that format pass through
    untouched unless a compression level was asked for."""
    target = FORMATS[output_format]
    image = open_image(data)
    if image.format == target and compression is None:
        return data
    options = {"quality": compression} if compression is not None and target != "PNG" else {}
    buffer = io.BytesIO()
    try:
        if target == "JPEG" and image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image.save(buffer, target, **options)
    except (OSError, ValueError) as error:
        raise MediaError(f"cannot be re-encoded as {output_format} ({error})") from None
    return buffer.getvalue()
