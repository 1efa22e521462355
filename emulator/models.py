"""The models the emulator serves, under each API's own ids, with their pixel sizes and token prices."""
from dataclasses import dataclass

# Pixel sizes as Google's image generation page lists them ("Aspect ratios and image size",
# https://ai.google.dev/gemini-api/docs/image-generation#aspect_ratios_and_image_size), pinned by
# tests/unit/test_google_sizes.py: each Gemini 3 model's 1K size per ratio, 2K and 4K twice and four
# times it, 512 half of it. One exception: the page gives 21:9 at 512 as 792x168, which is not
# 21:9; the emulator answers half of 1K, 792x336.
TEN = {"1:1": (1024, 1024), "2:3": (848, 1264), "3:2": (1264, 848), "3:4": (896, 1200), "4:3": (1200, 896),
       "4:5": (928, 1152), "5:4": (1152, 928), "9:16": (768, 1376), "16:9": (1376, 768), "21:9": (1584, 672)}
FLASH_25 = {"1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184), "4:3": (1184, 864),
            "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344), "16:9": (1344, 768), "21:9": (1536, 672)}
TALL_WIDE = {"1:4": (512, 2048), "4:1": (2048, 512), "1:8": (384, 3072), "8:1": (3072, 384)}
TIER_SCALE = {"512": 0.5, "1K": 1, "2K": 2, "4K": 4}


@dataclass(frozen=True)
class Spec:
    sizes: dict  # 1K pixel sizes by aspect ratio
    tokens: dict  # output tokens per image by tier; one "1K" entry for a model without tiers
    image_only: bool = False  # answers only when asked for images alone (OpenRouter's modalities)
    thinks: bool = False  # draws two interim "thought" images before the final one (Gemini 3)

    @property
    def tiers(self):
        return set(self.tokens) if len(self.tokens) > 1 else set()


# Google's model ids (the Gemini API) -> spec. Output tokens per image: Google's pricing pages
# (ai.google.dev/gemini-api/docs/pricing): gemini-3.1-flash-image's 1680 at 2K and 2520 at 4K are
# the counts its per-image prices come from, where the image generation page's table says 1120 and 2000.
MODELS = {
    "gemini-2.5-flash-image": Spec(FLASH_25, {"1K": 1290}),
    "gemini-3-pro-image": Spec(TEN, {"1K": 1120, "2K": 1120, "4K": 2000}, thinks=True),
    "gemini-3.1-flash-image": Spec({**TEN, **TALL_WIDE}, {"512": 747, "1K": 1120, "2K": 1680, "4K": 2520},
                                   thinks=True),
}
MODELS.update({f"{name}-preview": spec for name, spec in list(MODELS.items())})
# OpenRouter's model ids -> spec: Google's models under `google/`, and two others of other vendors
OPENROUTER_MODELS = {f"google/{name}": spec for name, spec in MODELS.items()}
OPENROUTER_MODELS.update({
    "black-forest-labs/flux.2-pro": Spec(FLASH_25, {"1K": 4096, "2K": 4096, "4K": 4096}, image_only=True),
    "openai/gpt-5-image": Spec(FLASH_25, {"1K": 4160}),
})
