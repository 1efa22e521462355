"""POST /v1/images/generations"""
from flask import Blueprint, current_app

from ..auth import current_client, require_api_key
from ..imaging import generate_images
from . import image_response, json_body
from .schemas import GenerationSchema, load

bp = Blueprint("generations", __name__)
SCHEMA = GenerationSchema()  # built once: building one copies every field, a third of a small request's CPU


@bp.post("/v1/images/generations")
@require_api_key
def create_generation():
    """Create images from a text prompt."""
    params = load(SCHEMA, json_body())
    config = current_app.config
    job = generate_images(params, config["SETTINGS"], config["PROVIDERS"], current_client(), config["ACCOUNTS"])
    return image_response(job, "image_generation")
