"""marshmallow pieces every schema shares: a strict integer, and errors as 'field: reason' lines."""
from marshmallow import fields

from .errors import shorten


class StrictInteger(fields.Integer):
    """An integer that refuses booleans, floats and numeric strings (marshmallow's strict
    Integer: its numbers refuse booleans themselves since marshmallow 4)."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)


def _field_name(prefix, key):
    if key == "_schema":  # marshmallow's name for "the value itself"
        return prefix or "body"
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{shorten(key)}" if prefix else shorten(key)


def flatten_messages(messages, prefix=""):
    """marshmallow's nested messages as 'images[0].image_url: reason' lines."""
    for key, value in messages.items():
        name = _field_name(prefix, key)
        if isinstance(value, dict):
            yield from flatten_messages(value, name)
        else:
            yield f"{name}: {' '.join(str(v).rstrip('.') for v in value)}"
