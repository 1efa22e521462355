"""The models file (GATEWAY_MODELS_FILE, docs/providers.md): entries added or overriding the
built-in catalog by id, checked at start, listed by /v1/models and routed like built-in models."""
import dataclasses
import json
import re
import textwrap
from pathlib import Path

import pytest
import responses
import yaml

from gateway import catalog, create_app
from gateway.catalog_file import load_catalog
from gateway.config import ConfigError
from gateway.providers import Usage
from gateway.providers.google import image_shape
from tests.support import gemini_answer
from tests.unit.conftest import GENERATE

PROVIDERS = ("gemini", "vertex", "openai", "openrouter")
ACME = """
models:
  - id: acme-image-1
    aliases: [acme-alias]
    providers: {gemini: gemini-3.1-flash-image, openrouter: acme/image-1}
    capabilities:
      aspect_ratios: ["1:1", "16:9"]
      tiers: ["1K", "2K"]
      max_input_images: 2
      partial_images: 0
    prices: {per_image: {"1K": 0.05, "2K": 0.08}, input_per_million: 0.30, output_per_million: 30.0}
"""
PRO_OVERRIDE = """
models:
  - id: gemini-3-pro-image
    providers: {gemini: gemini-3-pro-image-002}
    prices: {per_image: {"1K": 0.1, "2K": 0.1, "4K": 0.2}}
"""


@pytest.fixture(autouse=True)
def built_in_catalog_afterwards():
    """create_app installs its catalog for the process; the next tests get the built-in one back."""
    yield
    catalog.install(catalog.BUILT_IN)


@pytest.fixture
def write(tmp_path):
    def write(text, name="models.yaml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return str(path)
    return write


def loaded(path, aliases=None):
    return load_catalog(path, PROVIDERS, aliases or {"dall-e-3": "auto"})


def test_without_a_file_the_catalog_is_the_built_in_one():
    assert load_catalog("", PROVIDERS, {}).models == catalog.BUILT_IN.models


def test_an_entry_adds_a_model_with_its_aliases_capabilities_and_prices(write):
    model = loaded(write(ACME)).resolve("acme-alias", "gemini-3-pro-image")
    assert (model.id, model.served_by) == ("acme-image-1", {"gemini": "gemini-3.1-flash-image",
                                                            "openrouter": "acme/image-1"})
    assert (model.aspect_ratios, model.tiers, model.max_input_images, model.interim_images) == (
        ("1:1", "16:9"), ("1K", "2K"), 2, False)
    assert (model.image_price, model.input_price, model.output_price) == ({"1K": 0.05, "2K": 0.08}, 0.30, 30.0)
    assert model.owned_by == "system"


def test_a_new_model_takes_the_defaults_for_what_it_does_not_give(write):
    model = loaded(write("models: [{id: gemini-9-image, providers: {gemini: gemini-9-image}}]")).resolve(
        "gemini-9-image", "auto")
    assert (model.tiers, model.max_input_images, model.image_price, model.owned_by) == ((), 3, None, "google")
    assert model.aspect_ratios == catalog.TEN_RATIOS


def test_an_override_changes_only_the_fields_it_gives(write):
    model = loaded(write(PRO_OVERRIDE)).resolve("nano-banana-pro", "auto")
    assert model.served_by == {"gemini": "gemini-3-pro-image-002"}
    assert model.image_price == {"1K": 0.1, "2K": 0.1, "4K": 0.2}
    assert (model.input_price, model.output_price, model.tiers) == (2.00, 12.00, catalog.TIERS)
    assert model.aliases == ("gemini-3-pro-image-preview", "nano-banana-pro")


def test_an_input_image_price_prices_the_input_image_tokens_apart_from_the_text(write):
    model = loaded(write("""
        models:
          - id: acme-image-1
            providers: {openai: acme-image-1}
            prices: {input_per_million: 5.0, input_image_per_million: 10.0, output_per_million: 40.0}
    """)).resolve("acme-image-1", "auto")
    usage = Usage(input_text_tokens=100, input_image_tokens=1000, input_tokens=1100, output_tokens=4000)
    # 100 text tokens at $5/M, 1,000 image tokens at $10/M, 4,000 output tokens at $40/M
    assert model.cost(None, 1, usage) == round((100 * 5.0 + 1000 * 10.0 + 4000 * 40.0) / 1e6, 6)


def test_an_override_of_one_input_price_keeps_the_other(write):
    overridden = loaded(write("""
        models:
          - {id: gpt-image-1, providers: {openai: gpt-image-1}, prices: {input_image_per_million: 12.0}}
          - {id: gpt-image-1-mini, providers: {openai: gpt-image-1-mini}, prices: {input_per_million: 3.0}}
    """))
    one, mini = (overridden.resolve(name, "auto") for name in ("gpt-image-1", "gpt-image-1-mini"))
    assert (one.input_price, one.input_image_price, one.output_price) == (5.00, 12.0, 40.00)
    assert (mini.input_price, mini.input_image_price, mini.output_price) == (3.0, 2.50, 8.00)


def test_the_example_of_the_docs_loads(write):
    docs = (Path(__file__).parents[2] / "docs" / "providers.md").read_text()
    example = re.search(r"## The models file.*?```yaml\n(.*?)```", docs, re.S)[1]
    models = loaded(write(example), {})
    pro, gpt = models.resolve("nano-banana-pro", "auto"), models.resolve("gpt-image-1", "auto")
    assert pro.served_by["openrouter"] == "google/gemini-3-pro-image" and pro.image_price["4K"] == 0.22
    assert gpt.served_by == {"openai": "gpt-image-1.5"} and gpt.input_image_price == 8.00
    flux = models.resolve("flux-pro", "auto")
    assert flux.served_by == {"openrouter": "black-forest-labs/flux.2-pro"} and flux.image_only


def test_an_entry_may_say_its_model_answers_with_images_only(write):
    models = loaded(write("""
        models:
          - {id: acme-image-1, providers: {openrouter: acme/image-1}, capabilities: {image_only: true}}
          - {id: acme-image-2, providers: {openrouter: acme/image-2}}
          - {id: gemini-2.5-flash-image, providers: {gemini: gemini-2.5-flash-image}, capabilities: {image_only: true}}
    """))
    assert [models.resolve(name, "auto").image_only for name in ("acme-image-1", "acme-image-2", "nano-banana")] == [
        True, False, True]


def test_a_json_file_works_the_same(write):
    path = write(json.dumps({"models": [{"id": "acme-image-1", "providers": {"gemini": "acme-upstream"}}]}),
                 "models.json")
    assert loaded(path).resolve("acme-image-1", "auto").served_by == {"gemini": "acme-upstream"}


def test_sizes_give_the_models_aspect_ratios(write):
    model = loaded(write("""
        models:
          - id: acme-image-1
            providers: {openrouter: acme/image-1}
            capabilities: {sizes: ["1024x1024", "1536x1024", "1024x1536"]}
    """)).resolve("acme-image-1", "auto")
    assert (model.sizes, model.aspect_ratios) == (("1024x1024", "1536x1024", "1024x1536"), ("1:1", "3:2", "2:3"))


def test_a_size_asks_for_the_nearest_tier_the_model_takes(write):
    model = loaded(write(ACME)).resolve("acme-image-1", "auto")
    assert image_shape(model, {"size": "4096x4096"}) == ("1:1", "2K")
    assert image_shape(model, {"size": "512x512"}) == ("1:1", "1K")


ERRORS = [
    ("colour: red", "models[0] acme-image-1: colour: Unknown field"),
    ("providers: {gemni: x}", "models[0] acme-image-1: providers: unknown provider 'gemni'; known: gemini, vertex"),
    ("providers: {}", "models[0] acme-image-1: providers: must name at least one provider"),
    ("providers: {gemini: 'a b?'}", "models[0] acme-image-1: providers.gemini.value: must be an upstream model id"),
    ("aliases: acme", "models[0] acme-image-1: aliases: Not a valid list"),
    ("capabilities: {max_input_images: '3'}", "models[0] acme-image-1: capabilities.max_input_images: Not a valid "
                                              "integer"),
    ("capabilities: {image_only: 'yes'}", "models[0] acme-image-1: capabilities.image_only: Not a valid boolean"),
    ("capabilities: {tiers: [8K]}", "models[0] acme-image-1: capabilities.tiers[0]: must be one of: 512, 1K, 2K, 4K"),
    ("capabilities: {aspect_ratios: [wide]}", "models[0] acme-image-1: capabilities.aspect_ratios[0]: must look "
                                              "like 16:9"),
    ("capabilities: {sizes: [1024x1024px]}", "models[0] acme-image-1: capabilities.sizes[0]: must look like "
                                            "1024x1024"),
    ("aliases: [acme/other]", "models[0] acme-image-1: aliases[0]: must be 1-128 characters"),
    ("capabilities: {aspect_ratios: ['1:1'], sizes: [1024x1024]}",
     "models[0] acme-image-1: capabilities.sizes: give aspect_ratios or sizes, not both"),
    ("prices: {input_per_million: -1}", "models[0] acme-image-1: prices.input_per_million: must not be negative"),
    ("prices: {output_per_million: '30'}", "models[0] acme-image-1: prices.output_per_million: Not a valid number"),
    ("prices: {input_image_per_million: -1}", "models[0] acme-image-1: prices.input_image_per_million: must not be "
                                              "negative"),
    ("prices: {input_image_per_million: '10'}", "models[0] acme-image-1: prices.input_image_per_million: Not a valid "
                                                "number"),
    ("prices: {per_image: {1K: -0.05}}", "models[0] acme-image-1: prices.per_image.1K.value: must not be negative"),
    ("capabilities: {tiers: [1K, 2K]}, prices: {per_image: {1K: 0.05}}",
     "models[0] acme-image-1: prices.per_image: no price for tier 2K (the model's tiers: 1K, 2K)"),
    ("aliases: [nano-banana]", "models[0] acme-image-1: aliases: 'nano-banana' is already a name of "
                               "gemini-2.5-flash-image"),
    ("aliases: [dall-e-3]", "models[0] acme-image-1: aliases: 'dall-e-3' is an alias of GATEWAY_MODEL_ALIASES or "
                            "its defaults (`dall-e-3=` there removes it)"),
    ("aliases: [auto]", "models[0] acme-image-1: aliases: 'auto' is reserved: it means GATEWAY_DEFAULT_MODEL"),
]


@pytest.mark.parametrize(("fields", "message"), ERRORS)
def test_a_mistake_names_the_entry_and_the_field(write, fields, message):
    entry = {"id": "acme-image-1", "providers": {"gemini": "acme-upstream"}, **yaml.safe_load("{" + fields + "}")}
    with pytest.raises(ConfigError) as raised:
        loaded(write(json.dumps({"models": [entry]})))
    assert str(raised.value).startswith("GATEWAY_MODELS_FILE: ") and message in str(raised.value)


@pytest.mark.parametrize(("text", "message"), [
    ("models: [{id: acme-image-1}]", "models[0] acme-image-1: providers: Missing data for required field"),
    ("models: [{providers: {gemini: x}}]", "models[0]: id: Missing data for required field"),
    ("models: [{id: auto, providers: {gemini: x}}]", "models[0] auto: id: 'auto' is reserved"),
    ("models: [{id: nano-banana, providers: {gemini: x}}]",
     "models[0] nano-banana: id: 'nano-banana' is already a name of gemini-2.5-flash-image"),
    ("models: [{id: a-1, providers: {gemini: x}}, {id: a-1, providers: {gemini: y}}]",
     "models[1] a-1: id: 'a-1' is given twice"),
    ("models: [{id: a-1, aliases: [b], providers: {gemini: x}}, {id: a-2, aliases: [b], providers: {gemini: y}}]",
     "models[1] a-2: aliases: 'b' is already a name of a-1"),
    ("models: [{id: gemini-3-pro-image, aliases: [nano-banana], providers: {gemini: x}}]",
     "models[0] gemini-3-pro-image: aliases: 'nano-banana' is already a name of gemini-2.5-flash-image"),
    ("models: [acme]", "models[0]: must be a mapping"),
    ("models: {id: acme}", "models: Not a valid list"),
    ("model: []", "model: Unknown field"),
    ("- acme", "must hold a mapping with a `models` list"),
    ("models: [", "is neither YAML nor JSON"),
])
def test_a_mistake_in_the_files_shape_names_the_entry(write, text, message):
    with pytest.raises(ConfigError, match="GATEWAY_MODELS_FILE: ") as raised:
        loaded(write(text))
    assert message in str(raised.value)


def test_a_freed_alias_may_be_taken_by_another_entry(write):
    path = write("""
        models:
          - {id: gemini-2.5-flash-image, aliases: [], providers: {gemini: gemini-2.5-flash-image}}
          - {id: acme-image-1, aliases: [nano-banana], providers: {gemini: gemini-2.5-flash-image}}
    """)
    assert loaded(path).resolve("nano-banana", "auto").id == "acme-image-1"


def test_an_unreadable_file_stops_the_start(tmp_path):
    with pytest.raises(ConfigError, match=r"GATEWAY_MODELS_FILE: cannot read .*missing\.yaml"):
        loaded(str(tmp_path / "missing.yaml"))


def test_a_mistake_stops_create_app(settings, write):
    with pytest.raises(ConfigError, match=r"models\[0\] acme-image-1: prices.input_per_million"):
        create_app(dataclasses.replace(settings, models_file=write(
            "models: [{id: acme-image-1, providers: {gemini: x}, prices: {input_per_million: -1}}]")))


@pytest.fixture
def acme_app(settings, write):
    return create_app(dataclasses.replace(settings, models_file=write(ACME)))


def test_a_new_model_and_its_alias_are_listed(acme_app, auth):
    ids = [entry["id"] for entry in acme_app.test_client().get("/v1/models", headers=auth).get_json()["data"]]
    assert {"acme-image-1", "acme-alias"} <= set(ids)
    health = acme_app.test_client().get("/health").get_json()
    assert "acme-image-1" in health["models"] and health["aliases"]["acme-alias"] == "acme-image-1"


def test_a_new_model_is_not_listed_without_a_configured_provider(settings, write, auth):
    app = create_app(dataclasses.replace(settings, models_file=write(
        "models: [{id: acme-image-1, providers: {openrouter: acme/image-1}}]")))
    ids = [entry["id"] for entry in app.test_client().get("/v1/models", headers=auth).get_json()["data"]]
    assert "acme-image-1" not in ids and "gemini-3-pro-image" in ids


def test_a_new_model_is_routed_to_its_upstream_id_and_priced_by_its_prices(acme_app, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    response = acme_app.test_client().post("/v1/images/generations", headers=auth, json={
        "prompt": "a fox", "model": "acme-alias", "size": "1792x1024"})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["model"] == "acme-image-1"
    assert upstream.calls[0].request.url.endswith("/models/gemini-3.1-flash-image:generateContent")
    assert json.loads(upstream.calls[0].request.body)["generationConfig"]["imageConfig"] == {
        "aspectRatio": "16:9", "imageSize": "2K"}
    assert response.get_json()["usage"]["cost"] == 0.080003  # one 2K image at $0.08, 10 input tokens at $0.30/M


def test_an_override_calls_the_new_upstream_id_at_the_new_price(settings, write, auth, upstream):
    app = create_app(dataclasses.replace(settings, models_file=write(PRO_OVERRIDE)))
    upstream.add(responses.POST, GENERATE, json=gemini_answer())
    response = app.test_client().post("/v1/images/generations", headers=auth, json={
        "prompt": "a fox", "model": "gemini-3-pro-image"})
    assert upstream.calls[0].request.url.endswith("/models/gemini-3-pro-image-002:generateContent")
    assert response.get_json()["usage"]["cost"] == 0.10002  # $0.1 an image, 10 input tokens at $2/M


def test_the_default_model_and_an_operators_alias_may_name_a_new_model(settings, write):
    create_app(dataclasses.replace(settings, models_file=write(ACME), default_model="acme-image-1",
                                   model_aliases={"house": "acme-alias"}))
    assert catalog.resolve_model("house", "acme-image-1", {"house": "acme-alias"}).id == "acme-image-1"
    assert catalog.resolve_model("auto", "acme-image-1").id == "acme-image-1"


def test_a_budget_reservation_uses_the_new_models_prices(write):
    model = loaded(write(ACME)).resolve("acme-image-1", "auto")
    # two 2K images at $0.08 and 2,000 text and thinking tokens each at $30/M; 1,100 input tokens at $0.30/M
    assert model.estimate("2K", 2, 0, 100) == round(2 * 0.08 + 2 * 2000 * 30 / 1e6 + 1100 * 0.30 / 1e6, 6)
