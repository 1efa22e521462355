"""Google's published resolution table pins the emulator's pixel sizes and the catalog's aspect
ratios: "Aspect ratios and image size" of the Gemini API's image generation page,
https://ai.google.dev/gemini-api/docs/image-generation#aspect_ratios_and_image_size (docs/testing.md)."""
import pytest

from emulator.models import MODELS
from emulator.pictures import Job
from gateway.catalog import resolve_model

# The page's tables as it prints them: ratio -> size at each of the model's tiers
FLASH_31_TIERS, PRO_TIERS = ("512", "1K", "2K", "4K"), ("1K", "2K", "4K")
GOOGLE = {
    "gemini-3.1-flash-image": {
        "1:1": ("512x512", "1024x1024", "2048x2048", "4096x4096"),
        "1:4": ("256x1024", "512x2048", "1024x4096", "2048x8192"),
        "1:8": ("192x1536", "384x3072", "768x6144", "1536x12288"),
        "2:3": ("424x632", "848x1264", "1696x2528", "3392x5056"),
        "3:2": ("632x424", "1264x848", "2528x1696", "5056x3392"),
        "3:4": ("448x600", "896x1200", "1792x2400", "3584x4800"),
        "4:1": ("1024x256", "2048x512", "4096x1024", "8192x2048"),
        "4:3": ("600x448", "1200x896", "2400x1792", "4800x3584"),
        "4:5": ("464x576", "928x1152", "1856x2304", "3712x4608"),
        "5:4": ("576x464", "1152x928", "2304x1856", "4608x3712"),
        "8:1": ("1536x192", "3072x384", "6144x768", "12288x1536"),
        "9:16": ("384x688", "768x1376", "1536x2752", "3072x5504"),
        "16:9": ("688x384", "1376x768", "2752x1536", "5504x3072"),
        "21:9": ("792x168", "1584x672", "3168x1344", "6336x2688"),
    },
    "gemini-3-pro-image": {
        "1:1": ("1024x1024", "2048x2048", "4096x4096"),
        "2:3": ("848x1264", "1696x2528", "3392x5056"),
        "3:2": ("1264x848", "2528x1696", "5056x3392"),
        "3:4": ("896x1200", "1792x2400", "3584x4800"),
        "4:3": ("1200x896", "2400x1792", "4800x3584"),
        "4:5": ("928x1152", "1856x2304", "3712x4608"),
        "5:4": ("1152x928", "2304x1856", "4608x3712"),
        "9:16": ("768x1376", "1536x2752", "3072x5504"),
        "16:9": ("1376x768", "2752x1536", "5504x3072"),
        "21:9": ("1584x672", "3168x1344", "6336x2688"),
    },
    "gemini-2.5-flash-image": {  # one size per ratio, no tier
        "1:1": ("1024x1024",), "2:3": ("832x1248",), "3:2": ("1248x832",), "3:4": ("864x1184",),
        "4:3": ("1184x864",), "4:5": ("896x1152",), "5:4": ("1152x896",), "9:16": ("768x1344",),
        "16:9": ("1344x768",), "21:9": ("1536x672",),
    },
}
TIERS = {"gemini-3.1-flash-image": FLASH_31_TIERS, "gemini-3-pro-image": PRO_TIERS, "gemini-2.5-flash-image": (None,)}
# Where the emulator answers otherwise, and why: 792x168 is not 21:9 (a slip of the page's, it
# seems: half of 1K is 792x336), so the emulator keeps the ratio
EMULATOR_DIFFERS = {("gemini-3.1-flash-image", "21:9", "512"): "792x336"}


def documented_sizes():
    return [(model, ratio, tier, size) for model, table in GOOGLE.items() for ratio, sizes in table.items()
            for tier, size in zip(TIERS[model], sizes, strict=True)]


@pytest.mark.parametrize(("model", "ratio", "tier", "size"), documented_sizes())
def test_the_emulator_draws_googles_size_for_each_ratio_and_tier(model, ratio, tier, size):
    width, height = Job(model, MODELS[model], "a fox", [], ratio, tier).size()
    assert f"{width}x{height}" == EMULATOR_DIFFERS.get((model, ratio, tier), size)


@pytest.mark.parametrize("model", GOOGLE)
def test_the_emulator_and_the_catalog_take_exactly_googles_ratios_and_tiers(model):
    catalog_model = resolve_model(model, "auto")
    assert set(MODELS[model].sizes) == set(GOOGLE[model]) == set(catalog_model.aspect_ratios)
    assert MODELS[model].tiers == set(catalog_model.tiers) == set(TIERS[model]) - {None}
