"""Image checks: base64 images are validated whole but decoded only at the header and the end."""
import base64
import io

import pytest
from PIL import Image

from gateway import media
from tests.support import encoded, png_bytes

NOISE = Image.merge("RGB", [Image.effect_noise((400, 300), 40) for _ in range(3)])


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP"])
def test_describe_base64_reads_format_and_size(image_format):
    b64 = base64.b64encode(encoded(NOISE, image_format)).decode()
    assert media.describe_base64(b64) == (image_format, (400, 300))


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP"])
def test_describe_base64_refuses_a_truncated_image(image_format):
    data = encoded(NOISE, image_format)
    b64 = base64.b64encode(data[: len(data) // 2 // 3 * 3]).decode()  # valid base64, half an image
    with pytest.raises(media.MediaError, match="truncated|not a decodable image"):  # WebP fails at open
        media.describe_base64(b64)


@pytest.mark.parametrize("damage", [
    lambda s: s[:5000] + "!" + s[5001:],  # a character outside the alphabet, in the middle
    lambda s: s[:5000] + "=" + s[5001:],  # padding in the middle
    lambda s: s[:-1],  # length not a multiple of 4
    lambda s: s + "====",  # too much padding
    lambda s: "",
])
def test_describe_base64_refuses_invalid_base64_anywhere(damage):
    b64 = base64.b64encode(encoded(NOISE, "PNG")).decode()
    with pytest.raises(media.MediaError, match="base64"):
        media.describe_base64(damage(b64))


def test_describe_base64_reads_a_header_longer_than_48_kb():
    exif = Image.Exif()
    exif[0x010E] = "x" * 60000  # ImageDescription: pushes the JPEG frame header past the first 48 KB
    data = encoded(NOISE, "JPEG", exif=exif.tobytes())
    assert len(data) > 60000
    assert media.describe_base64(base64.b64encode(data).decode()) == ("JPEG", (400, 300))


def test_describe_base64_refuses_text_that_is_not_an_image():
    with pytest.raises(media.MediaError, match="not a decodable image"):
        media.describe_base64(base64.b64encode(b"hello, this is text" * 10).decode())


def test_describe_base64_refuses_non_ascii():
    with pytest.raises(media.MediaError, match="base64"):
        media.describe_base64("iVBORw0KGgo" + "é")


def test_describe_and_describe_base64_agree():
    data = png_bytes((33, 17))
    assert media.describe(data) == media.describe_base64(base64.b64encode(data).decode()) == ("PNG", (33, 17))


def test_an_input_over_the_pixel_limit_is_refused_from_its_header():
    with pytest.raises(media.MediaError, match=r"400x300 is 120,000 pixels; the limit is 100,000"):
        media.load_input(encoded(NOISE, "PNG"), max_pixels=100_000)


def test_a_whole_jpeg_input_is_accepted_as_it_is():
    data = encoded(NOISE, "JPEG")
    assert media.load_input(data, max_pixels=10**6) == media.SourceImage(data, "image/jpeg", (400, 300))


def test_a_jpeg_cut_short_with_an_end_marker_appended_is_damaged():
    data = encoded(NOISE, "JPEG")
    with pytest.raises(media.MediaError, match="the JPEG data is damaged"):
        media.load_input(data[: len(data) // 10] + b"\xff\xd9", max_pixels=10**6)


def test_a_jpeg_whose_header_claims_more_pixels_than_its_data_is_damaged():
    data = bytearray(encoded(Image.new("RGB", (8, 8)), "JPEG"))
    frame = data.index(b"\xff\xc0")
    data[frame + 5:frame + 9] = (900).to_bytes(2, "big") + (900).to_bytes(2, "big")
    with pytest.raises(media.MediaError, match="the JPEG data is damaged"):
        media.load_input(bytes(data), max_pixels=10**6)


def test_stray_bytes_between_jpeg_segments_are_tolerated():
    data = encoded(NOISE, "JPEG")
    end = data.rindex(b"\xff\xd9")
    assert media.load_input(data[:end] + b"\x00\x00" + data[end:], max_pixels=10**6).size == (400, 300)


def test_a_mask_region_is_white_where_the_mask_is_transparent():
    mask = Image.new("RGBA", (4, 2), (0, 0, 0, 255))
    mask.putpixel((0, 0), (0, 0, 0, 0))
    region = Image.open(io.BytesIO(media.mask_region(encoded(mask, "PNG"), (4, 2), max_pixels=100)))
    assert list(region.get_flattened_data()) == [255, 0, 0, 0, 0, 0, 0, 0]
