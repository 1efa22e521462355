"""`stream: true`: an ImageJob's events as server-sent events, OpenAI's image streaming shape
(docs/api.md), which the official SDKs' `stream=True` reads."""
import contextvars
import itertools
import time

from flask import Response

from ..errors import error_body
from ..jobs import Completed, Failed, Partial, first_failure, usage_body
from ..jsonchunks import json_chunks

KEEP_ALIVE = b": keep-alive\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx: pass each event on at once
PROVIDER_HEADER = "x-gateway-provider"


def sse(event_type, fields):
    """One event: `event:`, one `data:` line of JSON whose `type` is the event's (a b64_json is
    spliced in as it is), and a blank line."""
    data = {"type": event_type, **fields}
    blobs = [data["b64_json"]] if "b64_json" in data else []
    if blobs:
        data["b64_json"] = ""
    return b"".join([f"event: {event_type}\ndata: ".encode(), *json_chunks(data, "b64_json", blobs), b"\n\n"])


def stream_response(job, kind):
    """The 200 event stream of `job` (`kind`: image_generation or image_edit). Nothing is sent
    before the first image, keep-alive or partial image: when every call fails first, the
    failure is raised here and answered as the usual JSON error. The head names the providers
    the calls are with when it goes; a failover after it shows in the events, each of which names
    the provider that made its image (docs/api.md). The stream runs in a copy of this request's context (its id and
    counters), which Flask resets once the view returns, long before the stream ends."""
    context = contextvars.copy_context()
    events = job.events(idle=job.settings.stream_keepalive)
    first, failures = context.run(_first, events)
    response = Response(_in_context(context, _encode(job, kind, first, events, failures)),
                        mimetype="text/event-stream", headers=HEADERS)
    if providers := job.serving_providers():
        response.headers[PROVIDER_HEADER] = providers
    return response


def _first(events):
    """The first event that is not a failure, with the failures before it; the first failure
    raised (and the job closed) when every call failed before anything else happened."""
    failures = []
    try:
        for event in events:
            if not isinstance(event, Failed):
                return event, failures
            failures.append(event)
    except BaseException:
        events.close()
        raise
    raise first_failure(failures)


def _in_context(context, chunks):
    try:
        while True:
            try:
                chunk = context.run(next, chunks)
            except StopIteration:
                return
            yield chunk
    finally:
        context.run(chunks.close)


def _encode(job, kind, first, events, failures):
    """Completed images as they finish (never more than `n`), partial images, keep-alive
    comments while waiting; a failed call is reported last, as one `error` event, so the
    images of the other calls are not lost to a client that stops reading at an error."""
    completed = 0
    try:
        for event in itertools.chain([first], events):
            if event is None:
                yield KEEP_ALIVE
            elif isinstance(event, Failed):
                failures.append(event)
            elif isinstance(event, Partial):
                yield sse(f"{kind}.partial_image", {**_image_fields(job, event),
                                                    "partial_image_index": event.partial_index})
            elif isinstance(event, Completed) and completed < job.n:
                completed += 1
                yield sse(f"{kind}.completed", {**_image_fields(job, event), "usage": usage_body(event.usage),
                                                "revised_prompt": event.revised_prompt})
    finally:
        events.close()
    if failures:  # OpenAI's shape whatever GATEWAY_ERROR_FORMAT says: the only one the SDKs surface
        failure = first_failure(failures)
        yield sse("error", {"error": error_body(failure.status, failure.message, "openai")["error"]})


def _image_fields(job, event):
    width, height = event.size
    fields = {"b64_json": event.b64, "created_at": int(time.time()), "size": f"{width}x{height}",
              "quality": job.params.get("quality", "auto"), "background": job.params.get("background", "auto"),
              "output_format": job.output_format, "provider": event.provider}
    if job.n > 1:
        fields["index"] = event.index
    return fields

