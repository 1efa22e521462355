"""Asynchronous requests (docs/long-generations.md): `Prefer: respond-async` is a 202 and a job
row; the key that made it reads or cancels it, no other key sees it, a lost job is failed after
its deadline, and errors that come before the upstream call are still answered at once."""
import base64
import dataclasses
import io
import json
import time

import pytest
import responses
from sqlalchemy import update

from gateway.asyncjobs import LOST
from gateway.store import image_jobs
from tests.support import fetch, gemini_answer, image_part, png_bytes
from tests.unit.conftest import GENERATE

ASYNC = {"Prefer": "respond-async"}


@pytest.fixture
def settings(settings, tmp_path):
    return dataclasses.replace(settings, storage_url=f"file://{tmp_path}/images", url_signing_key="jobs-signing")


def submit(client, auth, **params):
    return client.post("/v1/images/generations", json={"prompt": "a fox", **params}, headers={**auth, **ASYNC})


def finished(client, auth, job_id, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = client.get(f"/v1/images/jobs/{job_id}", headers=auth).json
        if job["status"] not in ("queued", "in_progress"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['status']}")


def slow_answer(seconds):
    def answer(request):
        time.sleep(seconds)
        return 200, {}, json.dumps(gemini_answer(image_part()))
    return answer


def test_respond_async_is_a_202_with_the_queued_job_and_its_location(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer(image_part()))
    response = submit(client, auth)
    assert response.status_code == 202
    job = response.json
    assert set(job) == {"id", "object", "status", "created_at"} and job["id"].startswith("imgjob_")
    assert (job["object"], job["status"]) == ("image.job", "queued") and len(job["id"]) == len("imgjob_") + 32
    assert response.headers["Location"] == f"/v1/images/jobs/{job['id']}"
    assert response.headers["Preference-Applied"] == "respond-async"
    finished(client, auth, job["id"])


def test_a_job_completes_with_the_synchronous_body(client, auth, upstream):
    image = png_bytes((40, 30))
    upstream.add(responses.POST, GENERATE, json=gemini_answer({"text": "A fox."}, image_part(image)))
    job = finished(client, auth, submit(client, auth, n=2).json["id"])
    assert job["status"] == "completed" and job["error"] is None and job["completed_at"] >= job["created_at"]
    result = job["result"]
    assert set(result) == {"created", "data", "model", "size", "output_format", "usage"}
    assert [base64.b64decode(item["b64_json"]) for item in result["data"]] == [image, image]
    assert result["data"][0]["revised_prompt"] == "A fox." and result["size"] == "40x30"


def test_a_url_job_answers_urls_that_serve_the_image(client, auth, upstream):
    image = png_bytes((40, 30))
    upstream.add(responses.POST, GENERATE, json=gemini_answer(image_part(image)))
    job = finished(client, auth, submit(client, auth, response_format="url").json["id"])
    url = job["result"]["data"][0]["url"]
    assert fetch(client, url).data == image
    assert finished(client, auth, job["id"])["result"]["data"][0]["url"] == url  # expires with the job


def test_only_the_key_that_made_a_job_sees_it(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer(image_part()))
    job_id = submit(client, auth).json["id"]
    finished(client, auth, job_id)
    other = {"Authorization": "Bearer second-client-key"}
    for response in (client.get(f"/v1/images/jobs/{job_id}", headers=other),
                     client.delete(f"/v1/images/jobs/{job_id}", headers=other),
                     client.get("/v1/images/jobs/imgjob_" + "A" * 32, headers=auth)):
        assert response.status_code == 404 and "no such job" in response.json["message"]
    assert client.get(f"/v1/images/jobs/{job_id}").status_code == 401


def test_errors_before_the_upstream_call_are_answered_at_once(client, auth, upstream):
    assert submit(client, auth, n=11).status_code == 400
    response = submit(client, auth, stream=True)
    assert response.status_code == 400
    assert "stream: cannot be used with Prefer: respond-async" in response.json["message"]
    assert client.post("/v1/images/generations", json={"prompt": "x"}, headers=ASYNC).status_code == 401
    assert len(upstream.calls) == 0


def test_a_failed_upstream_fails_the_job_with_the_error_body(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, status=503, json={"error": {"code": 503, "message": "overloaded"}})
    job = finished(client, auth, submit(client, auth).json["id"])
    assert job["status"] == "failed" and job["result"] is None
    assert job["error"]["error"] is True and job["error"]["status"] == 502


def test_cancelling_a_running_job_stops_it(client, auth, upstream):
    upstream.add_callback(responses.POST, GENERATE, callback=slow_answer(1.5))
    job_id = submit(client, auth).json["id"]
    time.sleep(0.3)
    cancelled = client.delete(f"/v1/images/jobs/{job_id}", headers=auth)
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    time.sleep(2)
    assert client.get(f"/v1/images/jobs/{job_id}", headers=auth).json["status"] == "cancelled"


def test_deleting_a_finished_job_returns_it_unchanged(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer(image_part()))
    job = finished(client, auth, submit(client, auth).json["id"])
    again = client.delete(f"/v1/images/jobs/{job['id']}", headers=auth).json
    assert again == job


def test_a_key_at_its_job_ceiling_gets_a_429(app, auth, upstream):
    app.config["JOBS"].settings = dataclasses.replace(app.config["SETTINGS"], max_jobs_per_key=1)
    upstream.add_callback(responses.POST, GENERATE, callback=slow_answer(1))
    client = app.test_client()
    first = submit(client, auth)
    refused = submit(client, auth)
    assert refused.status_code == 429 and "GATEWAY_MAX_JOBS_PER_KEY" in refused.json["message"]
    assert refused.headers["Retry-After"] == "10"
    finished(client, auth, first.json["id"])
    assert submit(client, auth).status_code == 202


def test_a_job_lost_with_its_instance_is_failed_after_its_deadline(app, client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer(image_part()))
    job_id = submit(client, auth).json["id"]
    finished(client, auth, job_id)
    lost_after = app.config["SETTINGS"].upstream_timeout + 60
    app.config["STORE"].run(lambda conn, now: conn.execute(update(image_jobs).where(image_jobs.c.id == job_id).values(
        status="in_progress", result=None, completed_at=None, expires_at=None, created_at=now - lost_after - 1)),
        "test")
    job = client.get(f"/v1/images/jobs/{job_id}", headers=auth).json
    assert job["status"] == "failed" and job["error"]["message"] == LOST and job["completed_at"]


def test_polling_a_job_takes_no_write_transaction(app, client, auth, upstream, monkeypatch):
    upstream.add(responses.POST, GENERATE, json=gemini_answer(image_part()))
    job_id = submit(client, auth).json["id"]
    finished(client, auth, job_id)
    store, writes = app.config["STORE"], []
    monkeypatch.setattr(store, "run", lambda *args, **kwargs: writes.append(args))
    assert client.get(f"/v1/images/jobs/{job_id}", headers=auth).json["status"] == "completed"
    assert writes == []


def test_an_expired_job_is_404(app, client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer(image_part()))
    job_id = submit(client, auth).json["id"]
    finished(client, auth, job_id)
    app.config["STORE"].run(lambda conn, now: conn.execute(update(image_jobs).where(image_jobs.c.id == job_id).values(
        expires_at=now - 1)), "test")
    assert client.get(f"/v1/images/jobs/{job_id}", headers=auth).status_code == 404


def test_a_multipart_edit_can_be_a_job(client, auth, upstream):
    upstream.add(responses.POST, GENERATE, json=gemini_answer(image_part()))
    response = client.post("/v1/images/edits", headers={**auth, "Prefer": "wait=5, respond-async"},
                           content_type="multipart/form-data", data={
                               "prompt": "bluer", "image": (io.BytesIO(png_bytes()), "in.png")})
    assert response.status_code == 202
    assert finished(client, auth, response.json["id"])["status"] == "completed"


def test_the_api_description_has_the_202_and_the_job_paths(client):
    spec = client.get("/openapi.json").json
    assert spec["paths"]["/v1/images/edits"]["post"]["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ImageJob"}
    assert set(spec["paths"]["/v1/images/jobs/{id}"]) == {"get", "delete"}
    assert spec["components"]["schemas"]["ImageJob"]["properties"]["status"]["enum"] == [
        "queued", "in_progress", "completed", "failed", "cancelled"]
