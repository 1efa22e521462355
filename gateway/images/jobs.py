"""Asynchronous requests (docs/long-generations.md): the 202 that queues a job, and
GET / DELETE /v1/images/jobs/<id> for the key that made it."""
from flask import Blueprint, current_app, jsonify, request

from ..auth import current_client, require_api_key
from ..errors import InvalidRequest, error_body
from ..http_errors import error_format_for
from ..providers import Usage
from .files import public_root

bp = Blueprint("jobs", __name__)
JOBS_PATH = "/v1/images/jobs/"


def prefers_async():
    """RFC 7240's `Prefer: respond-async`, alone or among other preferences."""
    tokens = ",".join(request.headers.getlist("Prefer")).split(",")
    return any(token.split(";")[0].split("=")[0].strip().lower() == "respond-async" for token in tokens)


def accepted(job):
    """202 with the queued job; the admission (limits, budget) was made, and is settled when the job ends."""
    try:
        if job.params.get("stream"):
            raise InvalidRequest.field("stream", "cannot be used with Prefer: respond-async; poll the job instead")
        body = current_app.config["JOBS"].submit(job, current_client())
    except BaseException as error:
        job.admission.finish(0, Usage(), "", getattr(error, "status", 500))
        raise
    response = jsonify(body)
    response.status_code = 202
    response.headers.update({"Location": JOBS_PATH + body["id"], "Preference-Applied": "respond-async",
                             **job.admission.headers})
    return response


def _shown(job):
    """The job with its error in the body every other error of this gateway has."""
    if job["error"]:
        error_format = error_format_for(current_app.config["SETTINGS"].error_format, request.headers)
        job["error"] = error_body(job["error"]["status"], job["error"]["message"], error_format)
    return job


@bp.get(JOBS_PATH + "<job_id>")
@require_api_key
def get_job(job_id):
    """An asynchronous job: its status, then its result (the synchronous body) or its error."""
    return _shown(current_app.config["JOBS"].read(job_id, current_client(), public_root()))


@bp.delete(JOBS_PATH + "<job_id>")
@require_api_key
def cancel_job(job_id):
    """Cancel a job not yet finished; a finished job is returned unchanged."""
    return _shown(current_app.config["JOBS"].cancel(job_id, current_client(), public_root()))
