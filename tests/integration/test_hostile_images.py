"""Hostile image bytes, uploaded or as data URLs, on the session gateway: decompression bombs (a
30000x30000 PNG of ~110 KB as an upload, a data URL, a second image or the mask), an image just
over the pixel cap, truncated or damaged PNG, JPEG and GIF data, files whose name or Content-Type
lie about their format, and SVG, HTML and non-base64 data URLs. The image header, read before any
decoding (IMAGE_MAX_PIXELS, 20 megapixels, and Pillow's bomb check), bounds the memory; a full
decode finds cut-off data; the format is sniffed from the bytes, never taken from names or types.
Each refusal names the image by its position, nothing is sent upstream, and the workers survive
(`survives`). A PNG padded by Pillow is a strict xfail."""
import functools
import io
import struct
import zlib

import pytest
from PIL import Image

from tests.integration.conftest import (
    edit_json,
    emulator_requests,
    field,
    nothing_sent_upstream,
    ok,
    post_multipart,
    refused,
    upload,
)
from tests.support import PNG, data_url, encoded

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("survives")]


# --- image bytes --------------------------------------------------------------------------------

JPEG = encoded(Image.new("RGB", (24, 16), (30, 30, 200)), "JPEG")


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def one_bit_png(width, height, rows=None, cut=None):
    """A real 1-bit greyscale PNG of `width` x `height` all-black pixels, built row by row so that
    even 30000x30000 (900 megapixels) costs ~110 KB and no pixel buffer. `rows` stops the pixel
    data early (a complete zlib stream of fewer rows); `cut` truncates the compressed data to that
    many bytes and leaves out IEND."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed pixels
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height if rows is None else rows)) + compressor.flush()
    if cut is not None:
        return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data[:cut])
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


@functools.cache
def bomb_png():
    """A valid PNG whose header says 30000x30000: 900 megapixels from ~110 KB."""
    data = one_bit_png(30000, 30000)
    assert len(data) < 200_000
    with pytest.raises(Image.DecompressionBombError):  # Pillow reads it as that size, and refuses it too
        Image.open(io.BytesIO(data))
    return data


# --- decompression bombs and damaged images -----------------------------------------------------

def test_decompression_bomb_upload_is_a_400_naming_the_image(gateway_url, emulator_url, since):
    message = refused(post_multipart(gateway_url, upload("image", bomb_png(), "bomb.png"), field("prompt", "a fox")),
                      400, "image[0]: ")
    assert message == "image[0]: not a decodable image (DecompressionBombError)"
    nothing_sent_upstream(emulator_url, since)


def test_decompression_bomb_data_url_is_a_400_naming_the_image(gateway_url, emulator_url, since):
    message = refused(edit_json(gateway_url, data_url(bomb_png())), 400, "images[0]: ")
    assert message == "images[0]: not a decodable image (DecompressionBombError)"
    nothing_sent_upstream(emulator_url, since)


def test_decompression_bomb_as_the_second_image_names_it(gateway_url):
    refused(edit_json(gateway_url, data_url(PNG), data_url(bomb_png())), 400, "images[1]: not a decodable image")


def test_decompression_bomb_mask_is_a_400_naming_the_mask(gateway_url, emulator_url, since):
    refused(post_multipart(gateway_url, upload("image", PNG), upload("mask", bomb_png(), "mask.png"),
                           field("prompt", "a fox")), 400, "mask: not a decodable image")
    nothing_sent_upstream(emulator_url, since)


def test_image_just_over_the_pixel_cap_is_refused_from_its_header(gateway_url, emulator_url, since):
    """5001x4000 is over IMAGE_MAX_PIXELS (20 megapixels) but under Pillow's own bomb threshold."""
    big = one_bit_png(5001, 4000, rows=1)
    message = refused(post_multipart(gateway_url, upload("image", big), field("prompt", "a fox")), 400, "image[0]: ")
    assert message == "image[0]: 5001x4000 is 20,004,000 pixels; the limit is 20,000,000"
    nothing_sent_upstream(emulator_url, since)


def test_huge_header_with_truncated_data_is_refused_before_decoding(gateway_url):
    truncated = one_bit_png(30000, 30000, cut=2000)
    refused(post_multipart(gateway_url, upload("image", truncated), field("prompt", "a fox")), 400,
            "image[0]: not a decodable image (DecompressionBombError)")


def test_largest_allowed_header_with_truncated_data_is_a_400_naming_the_image(gateway_url, emulator_url, since):
    """5000x4000 passes the pixel cap, so it is decoded, and the cut-off pixel data is found."""
    truncated = one_bit_png(5000, 4000, cut=3000)
    refused(post_multipart(gateway_url, upload("image", truncated), field("prompt", "a fox")), 400,
            "image[0]: the PNG data is truncated")
    refused(edit_json(gateway_url, data_url(truncated)), 400, "images[0]: the PNG data is truncated")
    nothing_sent_upstream(emulator_url, since)


@pytest.mark.parametrize("data", [
    pytest.param(one_bit_png(2000, 2000, rows=1), id="with-iend", marks=pytest.mark.xfail(strict=True, reason=(
        "KNOWN GAP: pixel data that stops early inside a complete zlib stream, with an IEND chunk after it, "
        "decodes without an error (Pillow pads the missing rows) and is forwarded."))),
    pytest.param(one_bit_png(2000, 2000, rows=1)[:-12], id="without-iend"),
])
def test_png_whose_pixel_data_stops_early_is_a_400_naming_the_image(gateway_url, emulator_url, since, data):
    refused(post_multipart(gateway_url, upload("image", data), field("prompt", "a fox")), 400, "image[0]")
    nothing_sent_upstream(emulator_url, since)


@pytest.mark.parametrize("data", [
    b"",
    b"\x89PNG\r\n\x1a\n",
    b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100, 100, 1, 0, 0, 0, 0)),
    b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 0, 1, 0, 0, 0, 0)) + png_chunk(b"IEND", b""),
    b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 10, 10, 7, 0, 0, 0, 0)),
    PNG[:len(PNG) // 2],
    JPEG[:len(JPEG) // 2],
    b"GIF89a" + b"\xff" * 20,
], ids=["empty", "signature-only", "header-only", "zero-size", "bad-bit-depth", "half-png", "half-jpeg", "bad-gif"])
def test_damaged_image_upload_is_a_400_naming_it(gateway_url, emulator_url, since, data):
    refused(post_multipart(gateway_url, upload("image", data), field("prompt", "a fox")), 400, "image[0]: ")
    nothing_sent_upstream(emulator_url, since)


# --- lying file names and types -----------------------------------------------------------------

def test_png_uploaded_as_jpg_with_a_jpeg_type_is_sniffed_and_accepted(gateway_url, emulator_url, since):
    ok(post_multipart(gateway_url, upload("image", PNG, "x.jpg", "image/jpeg"), field("prompt", "a fox")))
    assert [r["images"] for r in emulator_requests(emulator_url, since)] == [[[24, 16]]]


def test_text_file_uploaded_as_png_is_a_400_naming_the_image(gateway_url, emulator_url, since):
    message = refused(post_multipart(gateway_url, upload("image", b"just some text\n", "a.png", "image/png"),
                                     field("prompt", "a fox")), 400, "image[0]: ")
    assert message == "image[0]: not a decodable image (UnidentifiedImageError)"
    nothing_sent_upstream(emulator_url, since)


def test_second_upload_lying_about_its_type_is_named_by_position(gateway_url):
    refused(post_multipart(gateway_url, upload("image[]", PNG), upload("image[]", b"<html></html>", "b.png"),
                           field("prompt", "a fox")), 400, "image[1]: not a decodable image")


def test_data_url_labelled_png_holding_jpeg_bytes_is_accepted(gateway_url, emulator_url, since):
    ok(edit_json(gateway_url, data_url(JPEG, "image/png")))
    assert [r["images"] for r in emulator_requests(emulator_url, since)] == [[[24, 16]]]


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><image href="https://127.0.0.1/x"/></svg>'
HTML = b"<html><body><img src='https://169.254.169.254/latest/meta-data/'></body></html>"


@pytest.mark.parametrize("url", [
    data_url(SVG, "image/svg+xml"),
    data_url(HTML, "text/html"),
    data_url(HTML, "image/png"),
    "data:image/svg+xml," + SVG.decode(),
    "data:text/html,<script>alert(1)</script>",
    "data:image/png;base64,",
    "data:image/png;base64,!!!not base64!!!",
    "data:,",
], ids=["svg", "html", "html-as-png", "svg-not-base64", "html-not-base64", "empty", "bad-base64", "bare"])
def test_non_image_data_url_is_a_400_naming_the_image(gateway_url, emulator_url, since, url):
    refused(edit_json(gateway_url, url), 400, "images[0]")
    nothing_sent_upstream(emulator_url, since)


def test_svg_and_html_data_urls_are_refused_as_not_images(gateway_url):
    for url in (data_url(SVG, "image/svg+xml"), data_url(HTML, "text/html")):
        assert refused(edit_json(gateway_url, url), 400) == "images[0]: not a decodable image (UnidentifiedImageError)"
