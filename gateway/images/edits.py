"""POST /v1/images/edits"""
from flask import Blueprint, current_app, request

from ..auth import current_client, require_api_key
from ..errors import InvalidRequest
from ..imaging import edit_images
from . import image_response, json_body
from .schemas import FORM_ONLY_FILES, EditSchema, load

bp = Blueprint("edits", __name__)

IMAGE_FIELDS = ("image", "image[]", "file")  # what the OpenAI SDKs and curl -F send, in any mix
JSON_SCHEMA, FORM_SCHEMA = EditSchema(), EditSchema(form=True, exclude=FORM_ONLY_FILES)  # built once


def _from_json():
    params = load(JSON_SCHEMA, json_body("application/json or multipart/form-data"))
    sources = [(f"images[{i}]", item["image_url"]) for i, item in enumerate(params.pop("images"))]
    mask = ("mask", params.pop("mask")["image_url"]) if "mask" in params else None
    return params, sources, mask


def _from_multipart():
    for name in request.form:
        if name in IMAGE_FIELDS + ("mask",):
            raise InvalidRequest.field(name, "must be an uploaded file")
    for name in request.files:
        if name not in IMAGE_FIELDS + ("mask",):
            raise InvalidRequest.field(name, "Unknown field")
    params = load(FORM_SCHEMA, request.form.to_dict())
    uploads = [upload for name, upload in request.files.in_arrival_order if name in IMAGE_FIELDS]
    sources = [(f"image[{i}]", upload.stream) for i, upload in enumerate(uploads)]
    mask = ("mask", request.files["mask"].stream) if "mask" in request.files else None
    return params, sources, mask


@bp.post("/v1/images/edits")
@require_api_key
def create_edit():
    """Edit or combine input images with a prompt (JSON image_url references or multipart files)."""
    params, sources, mask = _from_multipart() if request.mimetype == "multipart/form-data" else _from_json()
    config = current_app.config
    job = edit_images(params, config["SETTINGS"], config["PROVIDERS"], current_client(), config["ACCOUNTS"], sources,
                      mask)
    return image_response(job, "image_edit")
