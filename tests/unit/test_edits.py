"""POST /v1/images/edits: JSON data URLs and multipart uploads, what reaches Gemini, input
checks, masks and the response (docs/api.md). https image URLs are
covered elsewhere; here every image is a data URL or an upload."""
import base64
import dataclasses
import io
import struct
import time
import zlib

import pytest
import responses
from PIL import Image, ImageChops

from gateway import create_app, media
from gateway.imaging import FIDELITY_INSTRUCTION, MASK_INSTRUCTION
from tests.support import (
    GENERATE,
    assert_error,
    data_url,
    decode,
    encoded,
    gemini_answer,
    image_part,
    png_bytes,
    sent_bodies,
)

URL = "/v1/images/edits"
PROMPT = "put a hat on it"
PREFIX = "Invalid request parameters: "
RED, GREEN, BLUE = (220, 20, 20), (20, 200, 40), (30, 40, 210)
MODEL_COLOUR = (10, 200, 30)


# -- helpers -----------------------------------------------------------------------------------

def patterned(size=(120, 80), mode="RGB"):
    """An image whose every pixel differs from its neighbours, so 'equal to the source' means something."""
    width, height = size
    image = Image.new("RGBA", size)
    image.putdata([((x * 2) % 256, (y * 3) % 256, (x * y) % 256, (x + 2 * y) % 256)
                   for y in range(height) for x in range(width)])
    return image.convert(mode) if mode != "RGBA" else image


def half_transparent_mask(size=(120, 80)):
    """OpenAI-style mask: left half fully transparent (edit here), right half opaque (keep)."""
    width, height = size
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, width // 2, height))
    return mask


def post_json(client, auth, **body):
    return client.post(URL, json={"prompt": PROMPT, **body}, headers=auth)


def post_form(client, auth, fields):
    return client.post(URL, data={"prompt": PROMPT, **fields}, content_type="multipart/form-data", headers=auth)


def upload(data, filename="a.png"):
    return (io.BytesIO(data), filename)


def answer(upstream, size=(64, 48), colour=MODEL_COLOUR, text="Here is your edit.", usage=None):
    parts = ([{"text": text}] if text else []) + [image_part(png_bytes(size, colour))]
    upstream.add(responses.POST, GENERATE, json=gemini_answer(*parts, usage=usage))


def sent_parts(upstream, call=0):
    return sent_bodies(upstream)[call]["contents"][0]["parts"]


def inline_parts(upstream, call=0):
    return [part["inlineData"] for part in sent_parts(upstream, call) if "inlineData" in part]


def inline_image(inline):
    image = Image.open(io.BytesIO(base64.b64decode(inline["data"])))
    image.load()
    return image


def colour_of(inline):
    return inline_image(inline).convert("RGB").getpixel((0, 0))




def multipart_body(fields, boundary="gateway-test-boundary"):
    """A multipart body with its parts in exactly the given order (the test client groups
    repeated names together, so interleaving needs a hand-built body)."""
    chunks = []
    for name, value in fields:
        if isinstance(value, tuple):
            data, filename = value
            head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                    f"Content-Type: application/octet-stream\r\n\r\n")
            chunks.append(head.encode() + data + b"\r\n")
        else:
            chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def png_claiming(width, height):
    """A real, complete 1-bit PNG of width x height pixels (all black); it compresses to a few
    tens of KB, but decoding it would take width*height bytes."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# -- JSON: what reaches Gemini -----------------------------------------------------------------

def test_json_edit_with_one_data_url_sends_the_image_then_the_prompt(client, auth, upstream):
    source = png_bytes((64, 48), RED)
    answer(upstream)
    response = post_json(client, auth, images=[{"image_url": data_url(source)}])
    assert response.status_code == 200
    assert sent_bodies(upstream) == [{
        "contents": [{"role": "user", "parts": [
            {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(source).decode("ascii")}},
            {"text": PROMPT},
        ]}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]},
    }]


def test_json_edit_size_maps_to_the_nearest_aspect_ratio(client, auth, upstream):
    answer(upstream)
    response = post_json(client, auth, images=[{"image_url": data_url(png_bytes())}], size="1536x1024")
    assert response.status_code == 200
    assert sent_bodies(upstream)[0]["generationConfig"] == {
        "responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"aspectRatio": "3:2", "imageSize": "1K"}}


def test_json_edit_aspect_ratio_is_sent(client, auth, upstream):
    answer(upstream)
    response = post_json(client, auth, images=[{"image_url": data_url(png_bytes())}], aspect_ratio="16:9")
    assert response.status_code == 200
    assert sent_bodies(upstream)[0]["generationConfig"] == {
        "responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"aspectRatio": "16:9"}}


def test_json_edit_with_several_data_urls_sends_every_image_in_order_then_the_prompt(client, auth, upstream):
    answer(upstream)
    images = [{"image_url": data_url(png_bytes(colour=colour))} for colour in (RED, GREEN, BLUE)]
    response = post_json(client, auth, images=images)
    assert response.status_code == 200
    parts = sent_parts(upstream)
    assert [colour_of(part["inlineData"]) for part in parts[:3]] == [RED, GREEN, BLUE]
    assert parts[3:] == [{"text": PROMPT}]


# -- multipart ---------------------------------------------------------------------------------

def test_multipart_single_image_is_sent_upstream(client, auth, upstream):
    source = png_bytes((50, 40), GREEN)
    answer(upstream)
    response = post_form(client, auth, {"image": upload(source)})
    assert response.status_code == 200
    assert sent_parts(upstream) == [
        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(source).decode("ascii")}},
        {"text": PROMPT},
    ]


def test_multipart_repeated_image_brackets_sends_both_files_in_order(client, auth, upstream):
    answer(upstream)
    response = post_form(client, auth, {"image[]": [upload(png_bytes(colour=RED), "a.png"),
                                                    upload(png_bytes(colour=BLUE), "b.png")]})
    assert response.status_code == 200
    assert [colour_of(part) for part in inline_parts(upstream)] == [RED, BLUE]
    assert sent_parts(upstream)[-1] == {"text": PROMPT}


def test_multipart_mix_of_image_image_brackets_and_file_keeps_request_order(client, auth, upstream):
    answer(upstream)
    response = post_form(client, auth, {
        "image": upload(png_bytes(colour=RED), "a.png"),
        "image[]": upload(png_bytes(colour=GREEN), "b.png"),
        "file": upload(png_bytes(colour=BLUE), "c.png"),
    })
    assert response.status_code == 200
    assert [colour_of(part) for part in inline_parts(upstream)] == [RED, GREEN, BLUE]


def test_multipart_interleaved_image_fields_keep_request_order(client, auth, upstream):
    answer(upstream)
    body, content_type = multipart_body([
        ("prompt", PROMPT),
        ("image[]", (png_bytes(colour=RED), "a.png")),
        ("image", (png_bytes(colour=GREEN), "b.png")),
        ("image[]", (png_bytes(colour=BLUE), "c.png")),
    ])
    response = client.post(URL, data=body, content_type=content_type, headers=auth)
    assert response.status_code == 200
    assert [colour_of(part) for part in inline_parts(upstream)] == [RED, GREEN, BLUE]


def test_multipart_n_as_a_string_makes_that_many_calls(client, auth, upstream):
    answer(upstream, colour=RED)
    answer(upstream, colour=BLUE)
    response = post_form(client, auth, {"image": upload(png_bytes()), "n": "2"})
    assert response.status_code == 200
    assert len(upstream.calls) == 2
    assert {decode(item["b64_json"]).getpixel((0, 0)) for item in response.json["data"]} == {RED, BLUE}


def test_multipart_n_that_is_not_a_number_is_refused(client, auth, upstream):
    response = post_form(client, auth, {"image": upload(png_bytes()), "n": "two"})
    assert_error(response, 400, "Invalid request parameters: n: Not a valid integer")
    assert len(upstream.calls) == 0


def test_multipart_output_compression_is_applied_to_jpeg(client, auth, upstream):
    model_png = encoded(patterned((64, 48)), "PNG")
    upstream.add(responses.POST, GENERATE, json=gemini_answer(image_part(model_png)))
    response = post_form(client, auth, {"image": upload(png_bytes()), "output_format": "jpeg",
                                        "output_compression": "50"})
    assert response.status_code == 200
    assert response.json["output_format"] == "jpeg"
    expected = encoded(Image.open(io.BytesIO(model_png)), "JPEG", quality=50)
    assert base64.b64decode(response.json["data"][0]["b64_json"]) == expected


def test_multipart_unknown_form_field_is_refused_naming_it(client, auth, upstream):
    response = post_form(client, auth, {"image": upload(png_bytes()), "colour": "red"})
    assert_error(response, 400, "Invalid request parameters: colour: Unknown field")
    assert len(upstream.calls) == 0


def test_multipart_file_under_an_unknown_field_is_refused_naming_it(client, auth, upstream):
    response = post_form(client, auth, {"image": upload(png_bytes()), "picture": upload(png_bytes(), "p.png")})
    assert_error(response, 400, "Invalid request parameters: picture: Unknown field")
    assert len(upstream.calls) == 0


def test_multipart_text_under_image_is_refused_naming_image(client, auth, upstream):
    response = post_form(client, auth, {"image": "https://example.com/cat.png"})
    assert_error(response, 400, "Invalid request parameters: image: must be an uploaded file")
    assert len(upstream.calls) == 0


def test_multipart_without_any_image_is_refused_naming_image(client, auth, upstream):
    response = post_form(client, auth, {})
    assert_error(response, 400, startswith="Invalid request parameters: image: Required")
    assert len(upstream.calls) == 0


# -- JSON image reference errors ---------------------------------------------------------------

def test_data_url_with_bad_base64_is_refused_naming_the_image_url(client, auth, upstream):
    response = post_json(client, auth, images=[{"image_url": "data:image/png;base64,!!not*base64!!"}])
    assert_error(response, 400, startswith="images[0].image_url: ")
    assert "base64" in response.json["message"]
    assert len(upstream.calls) == 0


def test_data_url_of_bytes_that_are_not_an_image_is_refused_naming_the_image(client, auth, upstream):
    response = post_json(client, auth, images=[{"image_url": data_url(b"just some text, not pixels")}])
    assert_error(response, 400, startswith="images[0]: ")
    assert "not a decodable image" in response.json["message"]
    assert len(upstream.calls) == 0


@pytest.mark.parametrize("reference", ["http://example.com/cat.png", "file:///etc/passwd", "cat.png",
                                       "ftp://example.com/cat.png"])
def test_reference_that_is_neither_https_nor_data_is_refused(client, auth, upstream, reference):
    response = post_json(client, auth, images=[{"image_url": reference}])
    assert_error(response, 400, "images[0].image_url must be an https URL or a base64 data URL")
    assert len(upstream.calls) == 0


def test_bad_reference_in_the_second_image_names_images_1(client, auth, upstream):
    response = post_json(client, auth, images=[{"image_url": data_url(png_bytes())},
                                               {"image_url": "http://example.com/cat.png"}])
    assert_error(response, 400, "images[1].image_url must be an https URL or a base64 data URL")
    assert len(upstream.calls) == 0


def test_empty_images_list_is_refused(client, auth, upstream):
    response = post_json(client, auth, images=[])
    assert_error(response, 400, "Invalid request parameters: images: must hold between 1 and 16 images")
    assert len(upstream.calls) == 0


def test_seventeen_images_are_refused(client, auth, upstream):
    response = post_json(client, auth, images=[{"image_url": data_url(png_bytes((4, 4)))}] * 17)
    assert_error(response, 400, "Invalid request parameters: images: must hold between 1 and 16 images")
    assert len(upstream.calls) == 0


def test_image_item_without_image_url_is_refused_naming_it(client, auth, upstream):
    response = post_json(client, auth, images=[{}])
    assert_error(response, 400, "Invalid request parameters: images[0].image_url: Required")
    assert len(upstream.calls) == 0


def test_file_id_image_item_is_refused_naming_it(client, auth, upstream):
    response = post_json(client, auth, images=[{"file_id": "file-abc123"}])
    assert_error(response, 400, startswith=PREFIX)
    assert "images[0].file_id: Unknown field" in response.json["message"]
    assert len(upstream.calls) == 0


# -- the model's max input images --------------------------------------------------------------

def test_four_images_to_gemini_2_5_flash_image_are_refused_naming_its_limit(client, auth, upstream):
    images = [{"image_url": data_url(png_bytes((8, 8)))}] * 4
    response = post_json(client, auth, model="gemini-2.5-flash-image", images=images)
    assert_error(response, 400, startswith="Invalid request parameters: images: ")
    assert "at most 3" in response.json["message"]
    assert len(upstream.calls) == 0


def test_a_mask_counts_toward_the_max_input_images(client, auth, upstream):
    size = (64, 48)
    images = [{"image_url": data_url(png_bytes(size))}] * 3
    mask = {"image_url": data_url(encoded(half_transparent_mask(size), "PNG"))}
    response = post_json(client, auth, model="gemini-2.5-flash-image", images=images, mask=mask)
    assert_error(response, 400, startswith="Invalid request parameters: images: ")
    assert "at most 3" in response.json["message"]
    assert len(upstream.calls) == 0


def test_three_images_to_gemini_2_5_flash_image_are_accepted(client, auth, upstream):
    answer(upstream)
    images = [{"image_url": data_url(png_bytes(colour=colour))} for colour in (RED, GREEN, BLUE)]
    response = post_json(client, auth, model="gemini-2.5-flash-image", images=images)
    assert response.status_code == 200
    assert upstream.calls[0].request.url.endswith("/models/gemini-2.5-flash-image:generateContent")
    assert len(inline_parts(upstream)) == 3


# -- input formats -----------------------------------------------------------------------------

@pytest.mark.parametrize("image_format", ["GIF", "BMP"])
def test_formats_gemini_does_not_take_are_sent_as_png_with_the_same_pixels(client, auth, upstream, image_format):
    original = Image.new("RGB", (40, 30), RED)
    original.paste(BLUE, (0, 0, 20, 15))
    source = original.convert("P", palette=Image.Palette.ADAPTIVE) if image_format == "GIF" else original
    data = encoded(source, image_format)
    answer(upstream)
    response = post_json(client, auth, images=[{"image_url": data_url(data, f"image/{image_format.lower()}")}])
    assert response.status_code == 200
    [inline] = inline_parts(upstream)
    assert inline["mimeType"] == "image/png"
    sent = inline_image(inline)
    assert sent.format == "PNG"
    expected = Image.open(io.BytesIO(data)).convert("RGB")
    assert ImageChops.difference(sent.convert("RGB"), expected).getbbox() is None
    assert expected.getpixel((0, 0)) == BLUE and expected.getpixel((39, 29)) == RED


def test_jpeg_input_is_sent_as_is(client, auth, upstream):
    data = encoded(patterned((40, 30)), "JPEG", quality=80)
    answer(upstream)
    response = post_json(client, auth, images=[{"image_url": data_url(data, "image/jpeg")}])
    assert response.status_code == 200
    assert inline_parts(upstream) == [{"mimeType": "image/jpeg", "data": base64.b64encode(data).decode("ascii")}]


def test_webp_input_is_sent_as_is(client, auth, upstream):
    data = encoded(patterned((40, 30)), "WEBP", quality=80)
    answer(upstream)
    response = post_form(client, auth, {"image": upload(data, "a.webp")})
    assert response.status_code == 200
    assert inline_parts(upstream) == [{"mimeType": "image/webp", "data": base64.b64encode(data).decode("ascii")}]


def test_decompression_bomb_is_refused_without_calling_upstream(client, auth, upstream):
    bomb = png_claiming(20000, 20000)
    assert len(bomb) < 200_000
    assert struct.unpack(">II", bomb[16:24]) == (20000, 20000)  # what its IHDR claims
    response = post_json(client, auth, images=[{"image_url": data_url(bomb)}])
    assert_error(response, 400, startswith="images[0]: ")
    assert len(upstream.calls) == 0


def test_image_over_the_gateways_pixel_limit_is_refused(settings, auth, upstream):
    client = create_app(dataclasses.replace(settings, image_max_pixels=1000)).test_client()
    response = post_form(client, auth, {"image": upload(png_bytes((40, 30)))})
    assert_error(response, 400, "image[0]: 40x30 is 1,200 pixels; the limit is 1,000")
    assert len(upstream.calls) == 0


# -- masks -------------------------------------------------------------------------------------

def masked_edit(client, auth, source, mask, **fields):
    return post_form(client, auth, {"image": upload(source, "image.png"), "mask": upload(mask, "mask.png"), **fields})


def test_mask_is_sent_as_a_black_and_white_png_after_the_image_with_an_instruction(client, auth, upstream):
    source = encoded(patterned((120, 80)), "PNG")
    answer(upstream, size=(120, 80))
    response = masked_edit(client, auth, source, encoded(half_transparent_mask((120, 80)), "PNG"))
    assert response.status_code == 200
    parts = sent_parts(upstream)
    assert len(parts) == 3
    assert parts[0] == {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(source).decode("ascii")}}
    assert parts[1]["inlineData"]["mimeType"] == "image/png"
    region = inline_image(parts[1]["inlineData"])
    assert region.format == "PNG" and region.size == (120, 80)
    region = region.convert("L")
    assert region.crop((0, 0, 60, 80)).getcolors() == [(60 * 80, 255)]  # transparent in the mask: edit (white)
    assert region.crop((60, 0, 120, 80)).getcolors() == [(60 * 80, 0)]  # opaque in the mask: keep (black)
    assert parts[2] == {"text": f"{PROMPT}\n\n{MASK_INSTRUCTION}"}
    assert "mask" in MASK_INSTRUCTION and "white" in MASK_INSTRUCTION


def test_masked_edit_returns_the_source_size_when_the_model_answers_another_size(client, auth, upstream):
    answer(upstream, size=(240, 160))
    response = masked_edit(client, auth, encoded(patterned((120, 80)), "PNG"),
                           encoded(half_transparent_mask((120, 80)), "PNG"))
    assert response.status_code == 200
    assert response.json["size"] == "120x80"
    assert decode(response.json["data"][0]["b64_json"]).size == (120, 80)


def test_a_masked_edits_images_are_composited_one_at_a_time(client, auth, upstream, monkeypatch):
    """Each composite holds several copies of the source's size, so one request's run one by one
    whatever IMAGE_WORKERS allows (docs/operations.md "Resource safety, measured": two at once took a masked
    n=10 edit at the pixel limit from +497 to +720 MB)."""
    running, most = [], []
    composite = media.MaskedSource.composite

    def watched(self, output):
        running.append(output)
        most.append(len(running))
        time.sleep(0.05)
        try:
            return composite(self, output)
        finally:
            running.pop()

    monkeypatch.setattr(media.MaskedSource, "composite", watched)
    answer(upstream, size=(240, 160))
    response = masked_edit(client, auth, encoded(patterned((120, 80)), "PNG"),
                           encoded(half_transparent_mask((120, 80)), "PNG"), n="4")
    assert response.status_code == 200 and len(response.json["data"]) == 4
    assert max(most) == 1


def test_masked_edit_keeps_every_pixel_outside_the_mask_identical_to_the_source(client, auth, upstream):
    source = patterned((120, 80))
    answer(upstream, size=(240, 160))
    response = masked_edit(client, auth, encoded(source, "PNG"), encoded(half_transparent_mask((120, 80)), "PNG"))
    result = decode(response.json["data"][0]["b64_json"])
    assert result.mode == "RGB"
    keep = (60, 0, 120, 80)
    assert ImageChops.difference(result.crop(keep), source.crop(keep)).getbbox() is None


def test_masked_edit_shows_the_models_output_inside_the_mask(client, auth, upstream):
    answer(upstream, size=(240, 160), colour=MODEL_COLOUR)
    response = masked_edit(client, auth, encoded(patterned((120, 80)), "PNG"),
                           encoded(half_transparent_mask((120, 80)), "PNG"))
    result = decode(response.json["data"][0]["b64_json"]).convert("RGB")
    assert result.crop((0, 0, 60, 80)).getcolors() == [(60 * 80, MODEL_COLOUR)]


def test_masked_edit_with_output_format_png_keeps_the_source_pixels(client, auth, upstream):
    source = patterned((120, 80))
    answer(upstream, size=(240, 160))
    response = masked_edit(client, auth, encoded(source, "PNG"), encoded(half_transparent_mask((120, 80)), "PNG"),
                           output_format="png")
    assert response.status_code == 200
    result = decode(response.json["data"][0]["b64_json"])
    assert result.format == "PNG"
    keep = (60, 0, 120, 80)
    assert ImageChops.difference(result.convert("RGB").crop(keep), source.crop(keep)).getbbox() is None


def test_masked_edit_of_a_source_with_alpha_keeps_its_rgba_values(client, auth, upstream):
    source = patterned((120, 80), mode="RGBA")
    assert len(set(source.getchannel("A").tobytes())) > 100  # alpha really varies
    answer(upstream, size=(240, 160))
    response = masked_edit(client, auth, encoded(source, "PNG"), encoded(half_transparent_mask((120, 80)), "PNG"))
    assert response.status_code == 200
    result = decode(response.json["data"][0]["b64_json"])
    assert result.mode == "RGBA"
    keep = (60, 0, 120, 80)
    assert result.crop(keep).tobytes() == source.crop(keep).tobytes()


def test_mask_without_alpha_is_refused_naming_mask(client, auth, upstream):
    rgb_mask = encoded(half_transparent_mask((120, 80)).convert("RGB"), "PNG")
    response = masked_edit(client, auth, encoded(patterned((120, 80)), "PNG"), rgb_mask)
    assert_error(response, 400, startswith="mask: ")
    assert "alpha" in response.json["message"]
    assert len(upstream.calls) == 0


def test_mask_of_another_size_is_refused_naming_both_sizes(client, auth, upstream):
    response = masked_edit(client, auth, encoded(patterned((120, 80)), "PNG"),
                           encoded(half_transparent_mask((60, 40)), "PNG"))
    assert_error(response, 400, startswith="mask: ")
    assert "120x80" in response.json["message"] and "60x40" in response.json["message"]
    assert len(upstream.calls) == 0


def test_json_mask_as_a_data_url_works(client, auth, upstream):
    source = patterned((120, 80))
    answer(upstream, size=(240, 160), colour=MODEL_COLOUR)
    response = post_json(client, auth, images=[{"image_url": data_url(encoded(source, "PNG"))}],
                         mask={"image_url": data_url(encoded(half_transparent_mask((120, 80)), "PNG"))})
    assert response.status_code == 200
    assert len(inline_parts(upstream)) == 2
    assert sent_parts(upstream)[-1] == {"text": f"{PROMPT}\n\n{MASK_INSTRUCTION}"}
    result = decode(response.json["data"][0]["b64_json"])
    assert result.size == (120, 80)
    assert ImageChops.difference(result.crop((60, 0, 120, 80)), source.crop((60, 0, 120, 80))).getbbox() is None
    assert result.crop((0, 0, 60, 80)).getcolors() == [(60 * 80, MODEL_COLOUR)]


# -- input_fidelity, background, quality -------------------------------------------------------

def test_input_fidelity_high_adds_the_preservation_instruction(client, auth, upstream):
    answer(upstream)
    response = post_json(client, auth, images=[{"image_url": data_url(png_bytes())}], input_fidelity="high")
    assert response.status_code == 200
    assert sent_parts(upstream)[-1] == {"text": f"{PROMPT}\n\n{FIDELITY_INSTRUCTION}"}
    assert "Preserve" in FIDELITY_INSTRUCTION


def test_input_fidelity_low_adds_nothing(client, auth, upstream):
    answer(upstream)
    response = post_json(client, auth, images=[{"image_url": data_url(png_bytes())}], input_fidelity="low")
    assert response.status_code == 200
    assert sent_parts(upstream)[-1] == {"text": PROMPT}


def test_input_fidelity_max_is_refused(client, auth, upstream):
    response = post_json(client, auth, images=[{"image_url": data_url(png_bytes())}], input_fidelity="max")
    assert_error(response, 400, "Invalid request parameters: input_fidelity: must be one of: high, low")
    assert len(upstream.calls) == 0


def test_transparent_background_is_refused(client, auth, upstream):
    response = post_json(client, auth, images=[{"image_url": data_url(png_bytes())}], background="transparent")
    assert_error(response, 400, startswith="Invalid request parameters: background: ")
    assert len(upstream.calls) == 0


def test_quality_high_on_gemini_3_pro_image_asks_for_2k(client, auth, upstream):
    answer(upstream)
    response = post_json(client, auth, model="gemini-3-pro-image", images=[{"image_url": data_url(png_bytes())}],
                         quality="high")
    assert response.status_code == 200
    assert sent_bodies(upstream)[0]["generationConfig"] == {
        "responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"imageSize": "2K"}}


# -- response and content type -----------------------------------------------------------------

def test_response_has_the_openai_shape_with_image_tokens(client, auth, upstream):
    usage = {"promptTokenCount": 268, "candidatesTokenCount": 1290, "totalTokenCount": 1558,
             "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}, {"modality": "IMAGE", "tokenCount": 258}]}
    answer(upstream, size=(80, 60), colour=GREEN, text="A hat, as asked.", usage=usage)
    response = post_json(client, auth, model="nano-banana", images=[{"image_url": data_url(png_bytes())}])
    assert response.status_code == 200
    body = response.json
    assert set(body) == {"created", "data", "model", "size", "output_format", "usage"}
    assert isinstance(body["created"], int) and body["created"] > 1_700_000_000
    assert body["model"] == "gemini-2.5-flash-image"
    assert body["size"] == "80x60"
    assert body["output_format"] == "png"
    assert len(body["data"]) == 1
    assert set(body["data"][0]) == {"b64_json", "revised_prompt"}
    assert body["data"][0]["revised_prompt"] == "A hat, as asked."
    image = decode(body["data"][0]["b64_json"])
    assert (image.format, image.size, image.getpixel((0, 0))) == ("PNG", (80, 60), GREEN)
    assert body["usage"] == {
        "input_tokens": 268, "output_tokens": 1290, "total_tokens": 1558,
        "input_tokens_details": {"text_tokens": 10, "image_tokens": 258},
        "cost": 0.03908,  # one 2.5 Flash Image ($0.039) and 268 input tokens at $0.30 per million
    }


def test_wrong_content_type_is_415_naming_both_accepted_types(client, auth, upstream):
    response = client.post(URL, data="prompt=hat", content_type="text/plain", headers=auth)
    assert_error(response, 415, startswith="")
    assert "application/json" in response.json["message"]
    assert "multipart/form-data" in response.json["message"]
    assert len(upstream.calls) == 0


def test_multipart_over_max_content_length_is_a_413_json_error(settings, auth, upstream):
    small = create_app(dataclasses.replace(settings, max_content_length=4096)).test_client()
    big = png_bytes((400, 400)) + b"\0" * 8192
    response = small.post("/v1/images/edits", data={"prompt": "x", "image": (io.BytesIO(big), "a.png")},
                          content_type="multipart/form-data", headers=auth)
    assert response.status_code == 413
    assert response.json["error"] is True and response.json["status"] == 413
    assert len(upstream.calls) == 0


def test_multipart_with_too_many_parts_is_a_413_json_error(client, auth, upstream):
    fields = {f"x{i}": "1" for i in range(1100)}
    response = client.post("/v1/images/edits", data={"prompt": "x", **fields},
                           content_type="multipart/form-data", headers=auth)
    assert response.status_code == 413
    assert response.json["status"] == 413
    assert len(upstream.calls) == 0
