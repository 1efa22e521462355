"""The pictures every API answers with: deterministic PNGs of each model's own pixel sizes,
drawn from the prompt and the input images, and spoiled on request (`truncate`, `bad_base64`...)."""
import base64
import hashlib
import io
import math
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw

from .faults import Refused
from .models import TIER_SCALE, Spec


def nearest_ratio(width, height, ratios):
    def distance(ratio):
        ratio_width, ratio_height = map(int, ratio.split(":"))
        return abs(math.log(width / height) - math.log(ratio_width / ratio_height))

    return min(ratios, key=distance)


def render_png(prompt, size, inputs, noise=False):
    """A deterministic picture: colours from the prompt's hash, then one stripe per input image
    in the input's average colour, in order, so a test can see which inputs arrived."""
    digest = hashlib.sha256(prompt.encode()).digest()
    width, height = size
    if noise:
        image = Image.merge("RGB", [Image.effect_noise(size, 2) for _ in range(3)])
    else:
        image = Image.new("RGB", size, tuple(digest[:3]))
        ImageDraw.Draw(image).ellipse([width // 4, height // 4, 3 * width // 4, 3 * height // 4],
                                      fill=tuple(digest[3:6]))
    draw = ImageDraw.Draw(image)
    stripe = max(1, width // max(1, len(inputs)))
    for index, source in enumerate(inputs):
        colour = source.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
        draw.rectangle([index * stripe, 0, (index + 1) * stripe - 1, height // 8], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@lru_cache(maxsize=64)
def text_only_picture(prompt, size, noise):
    """The base64 picture for a prompt without input images (the same one every time)."""
    return base64.b64encode(render_png(prompt, size, [], noise)).decode()


def open_image(b64):
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def spoiled(data, wanted):
    """A picture's base64 as the fault directives want it: cut short, not base64, or not an image."""
    if "truncate" in wanted:
        png = base64.b64decode(data)
        data = base64.b64encode(png[: (len(png) // 2) // 3 * 3]).decode()
    if "bad_base64" in wanted:
        data = "!!not base64!!" + data
    if "not_image" in wanted:
        data = base64.b64encode(b"this is not an image").decode()
    return data


@dataclass
class Job:
    """One image request, whichever API it came in through."""
    model: str
    spec: Spec
    prompt: str
    inputs: list
    ratio: str | None
    tier: str | None

    def check(self):
        if self.ratio is not None and self.ratio not in self.spec.sizes:
            raise Refused(400, f"Unsupported aspect ratio: {self.ratio}")
        if self.tier is not None and self.tier not in self.spec.tiers:
            raise Refused(400, f"image size {self.tier} is not supported by {self.model}")

    def pictures(self, wanted):
        """The answer's images as base64, and the output tokens they cost."""
        count = 0 if "text_only" in wanted or "finish" in wanted else int(wanted.get("images", 1))
        size = self.size()
        pictures = []
        for index in range(count):
            variant, noise = self.prompt + "#" * index, "noise" in wanted
            data = (base64.b64encode(render_png(variant, size, self.inputs, noise)).decode() if self.inputs
                    else text_only_picture(variant, size, noise))
            pictures.append(spoiled(data, wanted))
        if "huge" in wanted:
            pictures.append("A" * int(float(wanted["huge"]) * 2**20))
        return pictures, count * self.spec.tokens[self.tier or "1K"]

    def size(self):
        """The model's pixel size for the asked ratio (else the first input's, else 1:1) and tier."""
        ratio = self.ratio or (nearest_ratio(*self.inputs[0].size, self.spec.sizes) if self.inputs else "1:1")
        scale = TIER_SCALE[self.tier or "1K"]
        return int(self.spec.sizes[ratio][0] * scale), int(self.spec.sizes[ratio][1] * scale)

    def interim_events(self):
        """What a thinking Gemini 3 model streams before its image: a thought, then two interim images."""
        size = self.size()
        images = [base64.b64encode(render_png(f"thought {number} {self.prompt}", size, self.inputs)).decode()
                  for number in (1, 2)]
        parts = [[{"text": "Planning the composition.", "thought": True}]]
        parts += [[{"inlineData": {"mimeType": "image/png", "data": data}, "thought": True}] for data in images]
        return [{"candidates": [{"content": {"role": "model", "parts": event}, "index": 0}]} for event in parts]

    def tokens_in(self):
        return max(1, len(self.prompt) // 4), 258 * len(self.inputs)
