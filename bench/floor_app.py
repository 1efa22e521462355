"""The floor under the gateway's numbers: the least an app built to the design card can do per
image call. A Flask view that reads the client's JSON, POSTs the upstream body with requests'
`Session.post` (as gateway/providers/transport.py does) and hands the upstream's answer back unread,
under the same gunicorn worker class. No key check, validation, image check, log line or
metrics. bench/run.py measures it next to the gateway, so on any machine the gateway's CPU
and added latency can be read against what Flask, gunicorn and requests cost by themselves.

    UPSTREAM_URL=http://127.0.0.1:PORT/v1beta/models/MODEL:generateContent \\
        gunicorn --pythonpath bench floor_app:app -k gevent
"""
import json
import os

import requests
from flask import Flask, Response, request
from requests.adapters import HTTPAdapter

app = Flask(__name__)
session = requests.Session()
session.mount("http://", HTTPAdapter(pool_maxsize=64))  # the gateway's pool size (transport.shared_session)
UPSTREAM_URL = os.environ["UPSTREAM_URL"]


@app.get("/health")
def health():  # for bench/run.py's wait_for
    return "ok"


@app.post("/v1/images/generations")
def generate():
    body = json.dumps({"contents": [{"role": "user", "parts": [{"text": request.get_json()["prompt"]}]}],
                       "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}}).encode()
    answer = session.post(UPSTREAM_URL, data=body, stream=True, allow_redirects=False, timeout=(5, 60),
                          headers={"x-goog-api-key": os.environ.get("UPSTREAM_KEY", ""),
                                   "Content-Type": "application/json"})
    return Response(answer.raw.read(), status=answer.status_code, mimetype="application/json")
