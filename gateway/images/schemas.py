"""Request schemas: every field an OpenAI images client may send, validated by name."""
import re

from marshmallow import RAISE, Schema, ValidationError, fields, pre_load, validate, validates_schema

from ..errors import InvalidRequest
from ..fields import StrictInteger, flatten_messages

NAME_LENGTH = 256  # model, user and safety_identifier: logged or echoed, so bounded
MAX_PROBLEMS = 20  # fields named in one error message
# A character that is not whitespace, meaning the same as the spec's pattern (ECMA-262) and here
# (Python): Python's \s adds U+001C-U+001F and U+0085, ECMA's adds U+FEFF; both are listed.
VISIBLE = r"[^\s\x1c-\x1f\x85\ufeff]"


class WholeMatch(validate.Regexp):
    """A pattern the whole value must match: `re.match` with `$` lets a final newline through."""

    def __call__(self, value):
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


SIZE = WholeMatch(r"^(auto|[1-9][0-9]{0,4}x[1-9][0-9]{0,4})$",
                  error="must be 'auto' or WIDTHxHEIGHT in pixels, like '1024x1024'")
ASPECT_RATIO = WholeMatch(r"^[1-9][0-9]{0,4}:[1-9][0-9]{0,4}$", error="must be W:H, like '16:9'")


class StrictBoolean(fields.Boolean):
    """true or false only (in a form, the strings "true" and "false")."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            return value
        raise self.make_error("invalid")


def one_of(*choices):
    return validate.OneOf(choices, error="must be one of: " + ", ".join(choices))


def not_blank(value):
    if not re.search(VISIBLE, value):
        raise ValidationError("must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("must be valid Unicode text (it holds a lone surrogate)") from None


class ImageRequestSchema(Schema):
    """The fields both endpoints share. With `form=True` the values are multipart form strings,
    and integers are read from their digits (so n="2" works and n="two" names n)."""

    class Meta:
        unknown = RAISE

    def __init__(self, *, form=False, **kwargs):
        super().__init__(**kwargs)
        self.form = form

    prompt = fields.String(required=True, validate=[validate.Length(max=32000), not_blank],
                           error_messages={"required": "Required"}, metadata={"minLength": 1, "pattern": VISIBLE})
    model = fields.String(load_default="auto", validate=validate.Length(max=NAME_LENGTH))
    n = StrictInteger(load_default=1, validate=validate.Range(min=1, max=10, error="must be between 1 and 10"))
    size = fields.String(validate=SIZE)
    aspect_ratio = fields.String(validate=ASPECT_RATIO)
    response_format = fields.String(validate=one_of("b64_json", "url"))  # url: docs/long-generations.md
    output_format = fields.String(load_default="png", validate=one_of("png", "jpeg", "webp"))
    output_compression = StrictInteger(validate=validate.Range(min=0, max=100, error="must be between 0 and 100"))
    background = fields.String(validate=one_of("auto", "opaque", "transparent"))
    user = fields.String(validate=validate.Length(max=NAME_LENGTH))
    safety_identifier = fields.String(validate=validate.Length(max=NAME_LENGTH))  # OpenAI's newer name for `user`
    moderation = fields.String(validate=one_of("auto", "low"))
    stream = StrictBoolean(load_default=False)  # docs/api.md: server-sent events
    partial_images = StrictInteger(validate=validate.Range(min=0, max=3, error="must be between 0 and 3"))

    @pre_load
    def normalize(self, data, **kwargs):
        """A JSON null means 'not given', as it does for the OpenAI API; form integers are parsed."""
        data = {key: value for key, value in data.items() if value is not None}
        if self.form:
            data = {key: _form_value(value, self.fields.get(key)) for key, value in data.items()}
        return data

    @validates_schema
    def urls_are_not_streamed(self, data, **kwargs):
        """An event stream carries each image as it comes; a URL names an image stored whole."""
        if data.get("stream") and data.get("response_format") == "url":
            raise ValidationError("'url' cannot be streamed: use 'b64_json' with stream: true, or url without it",
                                  "response_format")


def _form_value(text, field):
    if isinstance(field, StrictBoolean) and text in ("true", "false"):
        return text == "true"
    if isinstance(field, StrictInteger) and re.fullmatch(r"-?[0-9]{1,9}", text.strip()):
        return int(text)
    return text


class GenerationSchema(ImageRequestSchema):
    quality = fields.String(validate=one_of("standard", "hd", "low", "medium", "high", "auto"))
    style = fields.String(validate=one_of("vivid", "natural"))


class ImageURLSchema(Schema):
    class Meta:
        unknown = RAISE

    image_url = fields.String(required=True, error_messages={"required": "Required"})


FORM_ONLY_FILES = ("images", "mask")  # in multipart these come as file parts, not fields


class EditSchema(ImageRequestSchema):
    images = fields.List(fields.Nested(ImageURLSchema), required=True, error_messages={"required": "Required"},
                         validate=validate.Length(min=1, max=16, error="must hold between 1 and 16 images"))
    mask = fields.Nested(ImageURLSchema)
    quality = fields.String(validate=one_of("standard", "low", "medium", "high", "auto"))
    input_fidelity = fields.String(validate=one_of("high", "low"))


def load(schema, data):
    """Validated parameters, or a 400 naming every field that is wrong."""
    if not isinstance(data, dict):
        raise InvalidRequest("Invalid JSON in request body: expected a JSON object")
    try:
        return schema.load(data)
    except ValidationError as error:
        problems = sorted(flatten_messages(error.messages))
        more = f"; and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
        raise InvalidRequest("Invalid request parameters: " + "; ".join(problems[:MAX_PROBLEMS]) + more) from None


class ImageDataSchema(Schema):
    b64_json = fields.String(metadata={"description": "the image, base64 (response_format b64_json, the default)"})
    url = fields.String(metadata={"description": "response_format url: where to fetch the image until it expires "
                                                "(GATEWAY_IMAGE_TTL_SECONDS)"})
    revised_prompt = fields.String(required=True, metadata={
        "description": "the model's own text for the image, else the prompt sent upstream"})


class InputTokensDetailsSchema(Schema):
    text_tokens = fields.Integer(required=True)
    image_tokens = fields.Integer(required=True)


class UsageSchema(Schema):
    input_tokens = fields.Integer(required=True)
    output_tokens = fields.Integer(required=True)
    total_tokens = fields.Integer(required=True)
    input_tokens_details = fields.Nested(InputTokensDetailsSchema, required=True)
    cost = fields.Float(metadata={"description": "USD: the upstream's own figure, else the catalog's price table"})


class ImagesResponseSchema(Schema):
    """The answer of both endpoints (documentation; the service builds it)."""
    created = fields.Integer(required=True, metadata={"description": "Unix time"})
    data = fields.List(fields.Nested(ImageDataSchema), required=True)
    model = fields.String(required=True)
    size = fields.String(required=True, metadata={"description": "WxH of the first image"})
    output_format = fields.String(required=True, validate=one_of("png", "jpeg", "webp"))
    usage = fields.Nested(UsageSchema, required=True)


class ErrorSchema(Schema):
    """Every error, with the HTTP status repeated in the body."""
    error = fields.Boolean(required=True, validate=validate.Equal(True))
    status = fields.Integer(required=True)
    message = fields.String(required=True)
