"""GET /: a browser playground for this gateway's own /v1 endpoints (plain HTML, CSS and
JavaScript from the package: no build step, no CDN, works offline next to the emulator).
GATEWAY_PLAYGROUND=off turns it off, and `/` is then a 404 like any unknown route."""
from flask import Blueprint

bp = Blueprint("playground", __name__, static_folder="static", static_url_path="/playground")


@bp.get("/")
def playground():
    """The playground page (no key needed to load it; the key is typed into the page)."""
    return bp.send_static_file("index.html")


@bp.get("/favicon.ico")
def favicon():
    """The page links its icon; this answers browsers that ask for it on their own (on a JSON page)."""
    return bp.send_static_file("favicon.svg")
