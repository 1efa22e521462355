"""Google's image vocabulary, which the Gemini API, Vertex AI and OpenRouter's Google models take:
an aspect ratio from the model's list and a resolution tier, mapped from the client's OpenAI
`size`, `aspect_ratio` and `quality` (docs/api.md#parameters)."""
import math


def _pair(text, separator):
    width, height = text.split(separator)
    return int(width), int(height)


def nearest_aspect_ratio(width, height, ratios):
    """The supported ratio closest to width:height on a log scale (ties go to the earlier one)."""
    target = math.log(width / height)

    def distance(ratio):
        ratio_width, ratio_height = _pair(ratio, ":")
        return abs(target - math.log(ratio_width / ratio_height))

    return min(ratios, key=distance)


def image_shape(model, params):
    """(aspect ratio, resolution tier) for the catalog `model` from the client's parameters:
    `aspect_ratio` wins over the shape of `size`; the tier is the one the request is priced at
    (catalog.Model.tier_for). Either is None when the request leaves it to the model (an edit
    then keeps its input's shape)."""
    size, aspect_ratio = params.get("size"), params.get("aspect_ratio")
    pixels = _pair(size, "x") if size and size != "auto" else None
    ratio = _pair(aspect_ratio, ":") if aspect_ratio else pixels
    return (nearest_aspect_ratio(*ratio, model.aspect_ratios) if ratio else None,
            model.tier_for(size, params.get("quality")))
