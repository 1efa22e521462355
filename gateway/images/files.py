"""GET /v1/images/files/<name>: the images answered as URLs, when the gateway stores them in a
directory (docs/long-generations.md). The URL's signature is the permission: no key is needed."""
from flask import Blueprint, current_app, request, send_file

from ..errors import GatewayError
from ..storage import CONTENT_TYPES, FILES_PATH, remaining_seconds

bp = Blueprint("files", __name__)


def public_root():
    """The root of the gateway's own URLs: GATEWAY_PUBLIC_URL, else this request's."""
    return current_app.config["SETTINGS"].public_url or request.url_root.rstrip("/")


@bp.get(FILES_PATH + "<name>")
def image_file(name):
    """One stored image, while its signed URL lasts; cacheable for as long as it has left."""
    storage = current_app.config["STORAGE"]
    left = remaining_seconds(storage.signer, name, request.args.get("expires"), request.args.get("sig"))
    try:
        file = open(storage.path_for(name), "rb")  # send_file closes it
    except FileNotFoundError:  # swept, or deleted by hand, before its URL expired
        raise GatewayError(410, "Gone: this image is no longer stored; make the image again for a new one.") from None
    response = send_file(file, mimetype=CONTENT_TYPES[name.rpartition(".")[2]], conditional=True, etag=False)
    response.headers["Cache-Control"] = f"private, max-age={left}, immutable"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
