"""Asynchronous requests under gunicorn (docs/long-generations.md): two instances sharing one
database and one image directory, so a job accepted by one is read from the other; and an
instance killed mid-job, whose job another instance fails with a message that says so once its
deadline (UPSTREAM_TIMEOUT + 60 s) has passed."""
import base64
import io
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.integration.conftest import AUTH, start_gateway, stop

pytestmark = pytest.mark.integration

UPSTREAM_TIMEOUT = 20  # start_gateway's


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One database and one image directory for every instance of this module."""
    root = tmp_path_factory.mktemp("jobs")
    return {"GATEWAY_DATABASE_URL": f"sqlite:///{root / 'gateway.db'}", "GATEWAY_STORAGE_URL": f"file://{root}/images",
            "GATEWAY_URL_SIGNING_KEY": "jobs-signing-key"}, root


@pytest.fixture(scope="module")
def instances(emulator_url, tmp_path_factory, shared):
    environ, _ = shared
    logs = tmp_path_factory.mktemp("logs")
    started = [start_gateway(emulator_url, logs / f"gateway-{name}.log", **environ) for name in ("a", "b")]
    yield [url for _, url in started]
    for process, _ in started:
        stop(process)


def submit(url, prompt, **fields):
    return requests.post(url + "/v1/images/generations", json={"prompt": prompt, "model": "gemini-2.5-flash-image",
                                                               **fields},
                         headers={**AUTH, "Prefer": "respond-async"}, timeout=30)


def finished(url, job_id, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = requests.get(f"{url}/v1/images/jobs/{job_id}", headers=AUTH, timeout=10).json()
        if job["status"] not in ("queued", "in_progress"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"{job_id} still {job['status']}")


def test_a_job_accepted_by_one_instance_is_read_from_another(instances):
    first, second = instances
    accepted = submit(first, "a fox across instances [emulator: delay=1]")
    assert accepted.status_code == 202 and accepted.headers["Location"].startswith("/v1/images/jobs/imgjob_")
    assert requests.get(second + accepted.headers["Location"], headers=AUTH, timeout=10).json()["status"] in (
        "queued", "in_progress")
    job = finished(second, accepted.json()["id"])
    assert job["status"] == "completed"
    image = Image.open(io.BytesIO(base64.b64decode(job["result"]["data"][0]["b64_json"])))
    assert image.format == "PNG" and "x".join(map(str, image.size)) == job["result"]["size"]


def test_a_url_job_answers_urls_any_instance_serves(instances):
    first, second = instances
    job = finished(first, submit(second, "a url job", response_format="url").json()["id"])
    url = job["result"]["data"][0]["url"]
    fetched = requests.get(url.replace(second, first), timeout=10)
    assert fetched.status_code == 200 and fetched.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_job_cancelled_on_one_instance_stops_on_the_other(instances):
    first, second = instances
    job_id = submit(first, "a slow job [emulator: delay=4]").json()["id"]
    time.sleep(0.5)
    cancelled = requests.delete(f"{second}/v1/images/jobs/{job_id}", headers=AUTH, timeout=10).json()
    assert cancelled["status"] == "cancelled"
    time.sleep(6)
    assert requests.get(f"{first}/v1/images/jobs/{job_id}", headers=AUTH, timeout=10).json()["status"] == "cancelled"


def test_a_job_whose_instance_was_killed_is_failed_by_another(emulator_url, tmp_path_factory, shared, instances):
    environ, root = shared
    process, doomed = start_gateway(emulator_url, tmp_path_factory.mktemp("killed") / "gateway.log",
                                    WEB_CONCURRENCY="1", **environ)
    job_id = submit(doomed, "a job that dies [emulator: delay=30]").json()["id"]
    time.sleep(0.5)
    workers = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    for pid in workers:  # the worker running the job, then its master: no chance to finish anything
        os.kill(int(pid), signal.SIGKILL)
    process.kill()
    process.wait(timeout=10)
    survivor = instances[0]
    assert requests.get(f"{survivor}/v1/images/jobs/{job_id}", headers=AUTH, timeout=10).json()["status"] == \
        "in_progress"  # within its deadline, it may still be running somewhere
    with sqlite3.connect(root / "gateway.db") as db:  # the deadline passes, without waiting 80 s
        db.execute("UPDATE image_jobs SET created_at = created_at - ? WHERE id = ?", (UPSTREAM_TIMEOUT + 61, job_id))
    job = requests.get(f"{survivor}/v1/images/jobs/{job_id}", headers=AUTH, timeout=10).json()
    assert job["status"] == "failed" and "stopped before it finished" in job["error"]["message"]


def test_a_job_running_when_its_instance_is_stopped_finishes_first(emulator_url, tmp_path_factory, shared,
                                                                    instances):
    environ, _ = shared
    process, stopping = start_gateway(emulator_url, tmp_path_factory.mktemp("stopped") / "gateway.log",
                                      WEB_CONCURRENCY="1", **environ)
    job_id = submit(stopping, "a job outliving a deploy [emulator: delay=3]").json()["id"]
    time.sleep(0.5)
    process.terminate()  # a deploy's SIGTERM
    process.wait(timeout=30)
    job = requests.get(f"{instances[0]}/v1/images/jobs/{job_id}", headers=AUTH, timeout=10).json()
    assert job["status"] == "completed" and job["result"]["data"][0]["b64_json"]
