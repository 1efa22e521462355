"""The two speed-ups that reached into library internals until 2026-12-02, kept here (not in the
product) so bench/patches.py can measure again what they would buy. gunicorn's master imports
this module for the logger class: nothing here imports requests at import time."""
from urllib.parse import urlsplit

from gunicorn import glogging


class QuietAccessLogger(glogging.Logger):
    """gunicorn's logger without its access log: gunicorn builds the access-log fields of every
    request whenever a logging config is given (gunicorn.conf.py gives one for its JSON error
    log), only for the "gunicorn.access" logger, which has no handler, to drop them."""

    def access(self, resp, req, environ, request_time):
        pass


def post_through_the_adapter(session, url, headers, body, timeout):
    """POST `body` with a request prepared here and handed to the session's mounted adapter,
    skipping requests' `Session.request` (its proxy, netrc, cookie, hook and redirect work per
    call); the proxy and CA-bundle variables are read once per origin."""
    import requests

    request = requests.PreparedRequest()
    request.prepare(method="POST", url=url, data=body,
                    headers={**session.headers, **headers, "Content-Type": "application/json"})
    origin = urlsplit(url)[:2]
    environment = session.__dict__.setdefault("bench_environment", {})
    if origin not in environment:
        environment[origin] = session.merge_environment_settings(url, {}, True, None, None)
    return session.get_adapter(url).send(request, timeout=timeout, **environment[origin])
