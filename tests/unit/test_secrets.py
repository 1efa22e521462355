"""The leak watch that every test runs under (tests/secrets.py) really catches a leak, and the
upstream's error messages are scrubbed of anything key-like before a client sees them."""
import logging

import responses

from tests.conftest import CLIENT_KEY, UPSTREAM_KEY
from tests.secrets import WATCH
from tests.support import GENERATE


def test_the_watch_catches_a_key_in_a_log_line():
    logging.getLogger("gateway.test").warning("oops %s", UPSTREAM_KEY)
    assert WATCH.take() == [f"log line of gateway.test contains a key starting {UPSTREAM_KEY[:6]!r}"]


def test_the_watch_catches_a_key_in_a_response(app):
    @app.get("/leaky")
    def leaky():
        return {"key": CLIENT_KEY}

    app.test_client().get("/leaky")
    assert WATCH.take() == [f"response to 200 body contains a key starting {CLIENT_KEY[:6]!r}"]


def test_upstream_messages_lose_their_keys(client, auth, upstream):
    google_shaped = "AIza" + "SyA1234567890abcdefghijklmnopqrstu"  # fake; split so no key-like literal is committed
    message = f"bad request for key {UPSTREAM_KEY} and {google_shaped} and key=abc123"
    upstream.add(responses.POST, GENERATE, status=400, json={"error": {"code": 400, "message": message}})
    response = client.post("/v1/images/generations", json={"prompt": "x"}, headers=auth)
    assert response.status_code == 400
    assert response.json["message"] == "bad request for key [redacted] and [redacted] and [redacted]"
