"""The models file end to end (docs/providers.md, "The models file"): a Gemini model id the
built-in catalog does not know, added by GATEWAY_MODELS_FILE, and an override of a built-in one,
served by gunicorn through the emulator and the real openai SDK, without a code change. The
emulator answers only Google's ids it knows, so the new model calls one of those upstream."""
import time

import pytest

from tests.integration.conftest import emulator_requests, generate, ok, sdk_for, start_gateway, stop

pytestmark = pytest.mark.integration
MODELS_FILE = """
models:
  - id: gemini-3.5-flash-image
    aliases: [nano-banana-3]
    providers: {gemini: gemini-3.1-flash-image}
    capabilities: {tiers: ["1K", "2K"], max_input_images: 4}
    prices: {per_image: {"1K": 0.05, "2K": 0.08}, input_per_million: 0.25, output_per_million: 2.0}
  - id: gemini-3-pro-image
    providers: {gemini: gemini-3-pro-image-preview}
    prices: {per_image: {"1K": 0.2, "2K": 0.2, "4K": 0.3}}
"""


@pytest.fixture(scope="module")
def gateway(emulator_url, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models-file")
    (folder / "models.yaml").write_text(MODELS_FILE)
    process, url = start_gateway(emulator_url, folder / "gateway.log", GATEWAY_MODELS_FILE=str(folder / "models.yaml"),
                                 GATEWAY_MODEL_ALIASES="dall-e-3=nano-banana-3")
    yield url
    stop(process)


def test_the_new_model_and_its_aliases_are_listed(gateway):
    with sdk_for(gateway) as sdk:
        ids = {model.id for model in sdk.models.list()}
        assert {"gemini-3.5-flash-image", "nano-banana-3", "gemini-3-pro-image"} <= ids
        assert sdk.models.retrieve("nano-banana-3").owned_by == "google"


def test_the_new_model_generates_through_its_upstream_id_at_its_price(gateway, emulator_url):
    since = time.time()
    with sdk_for(gateway) as sdk:
        result = sdk.images.generate(model="nano-banana-3", prompt="a new model's fox", size="1792x1024")
    assert result.data[0].b64_json and result.model_extra["model"] == "gemini-3.5-flash-image"
    seen = [r for r in emulator_requests(emulator_url, since) if r["prompt"].startswith("a new model's fox")]
    assert [(r["model"], r["generationConfig"]["imageConfig"]) for r in seen] == [
        ("gemini-3.1-flash-image", {"aspectRatio": "16:9", "imageSize": "2K"})]
    input_tokens = result.usage.input_tokens
    assert result.usage.model_extra["cost"] == round(0.08 + input_tokens * 0.25 / 1e6, 6)


def test_an_operators_alias_reaches_the_new_model(gateway):
    body = ok(generate(gateway, "a fox by an old name", model="dall-e-3"))
    assert body["model"] == "gemini-3.5-flash-image"


def test_the_override_calls_its_new_upstream_id_at_its_new_price(gateway, emulator_url):
    since = time.time()
    body = ok(generate(gateway, "an overridden fox", model="gemini-3-pro-image"))
    seen = [r["model"] for r in emulator_requests(emulator_url, since) if r["prompt"].startswith("an overridden fox")]
    assert seen == ["gemini-3-pro-image-preview"]
    assert body["usage"]["cost"] == round(0.2 + body["usage"]["input_tokens"] * 2.00 / 1e6, 6)


def test_a_mistake_in_the_file_stops_the_start_naming_the_entry_and_field(emulator_url, tmp_path):
    (tmp_path / "models.yaml").write_text("models: [{id: acme-image-1, providers: {gemni: acme-upstream}}]")
    with pytest.raises(RuntimeError, match=r"exited early") as raised:
        start_gateway(emulator_url, tmp_path / "gateway.log", GATEWAY_MODELS_FILE=str(tmp_path / "models.yaml"))
    assert "GATEWAY_MODELS_FILE: models[0] acme-image-1: providers: unknown provider 'gemni'" in str(raised.value)

