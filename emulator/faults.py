"""The directives a prompt uses to ask for a failure (`[emulator: fail=503 times=2]`, see
emulator/server.py), the record of what the emulator was sent, and the ways an answer is
delivered: whole, dropped half way, dripped out, or as server-sent events."""
import json
import re
import threading
import time
from collections import deque

from flask import Response

DIRECTIVE = re.compile(r"\[emulator:([^\]]*)\]")
FAULTS = {"fail", "block", "finish", "text_only", "malformed", "truncate", "bad_base64", "not_image", "reset", "huge",
          "drip"}
MALFORMED = "<html>upstream proxy error</html>", 200, {"Content-Type": "text/html"}


class Refused(Exception):
    """A request the real API would refuse: the HTTP status and its message."""

    def __init__(self, status, message, reason=None):
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason


def directives(prompt):
    found = {}
    for match in DIRECTIVE.finditer(prompt):
        for token in match.group(1).split():
            key, _, value = token.partition("=")
            found[key] = value or "1"
    return found


def without_faults(wanted):
    return {key: value for key, value in wanted.items() if key not in FAULTS}


class Recorder:
    """What the emulator was sent (no image data, the last 200 calls), and how many times each
    prompt came, which `times` and `spread` count."""

    def __init__(self):
        self.log = deque(maxlen=200)
        self.calls = {}
        self.lock = threading.Lock()

    def faults(self, api, job, config):
        """The directives this call on `api` obeys (after `times` calls they stop), once it is logged."""
        self.log.append({"api": api, "model": job.model, "generationConfig": config, "prompt": job.prompt,
                         "images": [[*i.size] for i in job.inputs], "at": time.time()})
        wanted = directives(job.prompt)
        if wanted.get("only", api) != api:
            wanted = without_faults(wanted)
        if "times" in wanted or "spread" in wanted:
            with self.lock:
                self.calls[job.prompt] = self.calls.get(job.prompt, 0) + 1
                number = self.calls[job.prompt]
            if number > int(wanted.get("times", number)):
                wanted = without_faults(wanted)
            time.sleep((number - 1) % 4 * float(wanted.get("spread", 0)))
        time.sleep(float(wanted.get("delay", 0)))
        return wanted


def failed(error_response, wanted):
    """The HTTP error `fail=STATUS` asks for, in the API's own shape (`error_response`)."""
    response = error_response(int(wanted["fail"]), f"emulated failure {wanted['fail']}")
    if "retry_after" in wanted:
        response.headers["Retry-After"] = wanted["retry_after"]
    return response


def deliver(answer, wanted):
    """The answer as JSON, dropped half way or dripped out when the prompt asks for it."""
    if "reset" in wanted:
        return broken_answer(json.dumps(answer).encode())
    if "drip" in wanted:
        return dripping_answer(json.dumps(answer).encode(), float(wanted["drip"]))
    return answer


def streamed_answer(answer, interim, wanted):
    """The events of streamGenerateContent: the interim ones, then the answer (`reset` drops the
    stream before it)."""
    def events():
        for event in interim:
            yield b"data: " + json.dumps(event).encode() + b"\r\n\r\n"
            time.sleep(float(wanted.get("between", 0)))
        if "reset" in wanted:
            raise ConnectionResetError("emulated connection reset")
        yield b"data: " + json.dumps(answer).encode() + b"\r\n\r\n"

    return Response(events(), content_type="text/event-stream")


def broken_answer(body):
    """Announce the whole body, send half, then fail, so the connection drops mid-body."""
    def half_then_fail():
        yield body[: len(body) // 2]
        raise ConnectionResetError("emulated connection reset")

    return Response(half_then_fail(), content_type="application/json", headers={"Content-Length": str(len(body))})


def dripping_answer(body, every):
    """The whole body announced, then sent 16 bytes at a time, one piece every `every` seconds:
    each read gets data long before any per-read timeout, yet the answer takes hours."""
    def pieces():
        for start in range(0, len(body), 16):
            yield body[start:start + 16]
            time.sleep(every)

    return Response(pieces(), content_type="application/json", headers={"Content-Length": str(len(body))})
