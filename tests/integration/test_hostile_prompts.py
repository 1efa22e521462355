"""Hostile prompts on the session gateway: NUL, control, bidi-override and zero-width characters
(sent upstream as they are), prompts of only NUL or only white space, prompts at and over the
32,000-character limit, a megabyte prompt in JSON and as a multipart form field, and astral
characters (counted as characters, not bytes). The schema's 32,000-character limit on `prompt`
bounds them (the refusal does not echo the prompt), and werkzeug's 500 KB form-field memory
limit bounds a multipart field (a 413); nothing is sent upstream, and the workers survive
(`survives`)."""

import pytest

from tests.integration.conftest import (
    emulator_requests,
    field,
    generate,
    nothing_sent_upstream,
    ok,
    post_multipart,
    refused,
    upload,
)
from tests.support import PNG

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("survives")]


CONTROL_PROMPT = "nul\u0000 bell\u0007 backspace\b esc\u001b[31m del\u007f c1\u0085 rtl\u202e zwj\u200d ls\u2028 end"


def test_prompt_with_nul_and_control_characters_is_sent_upstream_as_it_is(gateway_url, emulator_url, since):
    body = ok(generate(gateway_url, CONTROL_PROMPT))
    (sent,) = emulator_requests(emulator_url, since)
    assert sent["prompt"] == CONTROL_PROMPT
    assert body["data"][0]["revised_prompt"] == f"Here is your image: {CONTROL_PROMPT}"


def test_prompt_with_nul_and_control_characters_in_multipart_is_sent_upstream(gateway_url, emulator_url, since):
    ok(post_multipart(gateway_url, upload("image", PNG), field("prompt", CONTROL_PROMPT)))
    (sent,) = emulator_requests(emulator_url, since)
    assert sent["prompt"] == CONTROL_PROMPT


def test_prompt_of_only_nul_characters_is_not_blank(gateway_url, emulator_url, since):
    ok(generate(gateway_url, "\u0000\u0000"))
    assert [r["prompt"] for r in emulator_requests(emulator_url, since)] == ["\u0000\u0000"]


def test_prompt_of_only_whitespace_and_line_separators_is_blank(gateway_url):
    refused(generate(gateway_url, " \t\r\n\u2028\u3000\u00a0"), 400,
            "Invalid request parameters: prompt: must not be empty")


def test_prompt_of_32000_characters_is_accepted(gateway_url, emulator_url, since):
    ok(generate(gateway_url, "p" * 32000))
    assert len(emulator_requests(emulator_url, since)[0]["prompt"]) == 32000


def test_prompt_of_32001_characters_is_a_400_naming_prompt(gateway_url, emulator_url, since):
    message = refused(generate(gateway_url, "p" * 32001), 400, "Invalid request parameters: prompt:")
    assert message == "Invalid request parameters: prompt: Longer than maximum length 32000"
    nothing_sent_upstream(emulator_url, since)


def test_prompt_of_a_megabyte_is_a_400_naming_prompt(gateway_url, emulator_url, since):
    message = refused(generate(gateway_url, "p" * 1_048_576), 400, "Invalid request parameters: prompt:")
    assert len(message) < 200  # the prompt is not echoed
    nothing_sent_upstream(emulator_url, since)


def test_prompt_of_32001_characters_in_multipart_is_a_400_naming_prompt(gateway_url):
    refused(post_multipart(gateway_url, upload("image", PNG), field("prompt", "p" * 32001)), 400,
            "Invalid request parameters: prompt: Longer than maximum length 32000")


def test_multipart_form_field_of_a_megabyte_is_a_413(gateway_url, emulator_url, since):
    """werkzeug's form-field memory limit (500 KB), as docs/api.md says."""
    refused(post_multipart(gateway_url, upload("image", PNG), field("prompt", "p" * 1_048_576)), 413,
            "Request Entity Too Large")
    nothing_sent_upstream(emulator_url, since)


def test_emoji_and_astral_prompt_counts_characters_not_bytes(gateway_url):
    ok(generate(gateway_url, "\U0001f98a" * 32000))  # 128,000 UTF-8 bytes, 32,000 characters
