"""Multipart part floods on the session gateway's edits endpoint: hundreds of unknown text fields,
more than 1,000 parts, hundreds of image files, one image more than the model takes, files under
wrong field names, an image sent as a text field, and invalid UTF-8 in a field name. The form
parser's 1,000-part limit (a 413), the model's input-image limit and the unknown-field check
bound them (the message names the first twenty unknown fields and counts the rest); nothing is
sent upstream, and the workers survive (`survives`)."""

import pytest

from tests.integration.conftest import (
    EDITS,
    field,
    multipart,
    nothing_sent_upstream,
    post,
    post_multipart,
    refused,
    upload,
)
from tests.support import PNG

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("survives")]


def test_hundreds_of_unknown_text_fields_are_a_400_naming_the_first_twenty(gateway_url, emulator_url, since):
    fields = [field(f"extra{i:03d}", "x") for i in range(300)]
    message = refused(post_multipart(gateway_url, upload("image", PNG), field("prompt", "a fox"), *fields),
                      400, "Invalid request parameters", "extra000: Unknown field", "extra019: Unknown field",
                      "; and 280 more")
    assert "prompt" not in message and "extra020" not in message
    nothing_sent_upstream(emulator_url, since)


def test_more_than_1000_parts_is_a_413(gateway_url, emulator_url, since):
    fields = [field(f"f{i}", "x") for i in range(1100)]
    refused(post_multipart(gateway_url, upload("image", PNG), field("prompt", "a fox"), *fields), 413,
            "Request Entity Too Large")
    nothing_sent_upstream(emulator_url, since)


def test_1000_parts_is_not_a_413(gateway_url):
    fields = [field(f"f{i}", "x") for i in range(998)]
    refused(post_multipart(gateway_url, upload("image", PNG), field("prompt", "a fox"), *fields), 400,
            "f0: Unknown field")


def test_hundreds_of_image_files_are_a_400_naming_the_image_limit(gateway_url, emulator_url, since):
    files = [upload("image[]", PNG, f"{i}.png") for i in range(300)]
    message = refused(post_multipart(gateway_url, field("prompt", "a fox"), *files), 400,
                      "Invalid request parameters: images:")
    assert message.endswith("takes at most 14 input images (a mask counts as one); got 300")
    nothing_sent_upstream(emulator_url, since)


def test_image_count_just_over_the_model_limit_is_a_400(gateway_url):
    files = [upload("image", PNG, f"{i}.png") for i in range(4)]
    refused(post_multipart(gateway_url, field("prompt", "a fox"), field("model", "gemini-2.5-flash-image"), *files),
            400, "gemini-2.5-flash-image takes at most 3 input images (a mask counts as one); got 4")


@pytest.mark.parametrize("name", ["photo", "images", "image[0]", "Image", "files[]", ""])
def test_file_under_a_wrong_field_name_is_a_400_naming_it(gateway_url, emulator_url, since, name):
    refused(post_multipart(gateway_url, field("prompt", "a fox"), upload("image", PNG), upload(name, PNG)),
            400, f"Invalid request parameters: {name}: Unknown field")
    nothing_sent_upstream(emulator_url, since)


def test_image_sent_as_a_text_field_is_a_400_naming_it(gateway_url):
    refused(post_multipart(gateway_url, field("prompt", "a fox"), field("image", PNG)), 400,
            "Invalid request parameters: image: must be an uploaded file")


def test_invalid_utf8_in_a_multipart_field_name_is_a_400(gateway_url):
    body, content_type = multipart(upload("image", PNG), field("prompt", "a fox"))
    body = body.replace(b'name="prompt"', b'name="pr\xffompt"')
    refused(post(gateway_url, EDITS, body, content_type), 400, "Invalid request parameters")
