"""Asynchronous requests (docs/long-generations.md): a request sent with `Prefer: respond-async` is
admitted and planned like any other, answered 202 with a job, and run at once on its own greenlet
in the process that accepted it. The job is a row in the database and its images are in the image
storage, so any instance answers for it. A job cannot outlive its deadline: one still queued or in
progress UPSTREAM_TIMEOUT + 60 s after it was accepted was lost with its instance, and is failed
by whichever instance sees it next."""
import base64
import contextvars
import logging
import secrets
import threading
import time

from sqlalchemy import delete, func, select, update

from .errors import GatewayError, internal_error
from .jobs import JobCancelled
from .providers import Usage
from .storage import stored, with_urls
from .store import image_jobs

log = logging.getLogger(__name__)

ACTIVE = ("queued", "in_progress")
LOST = ("The gateway instance that ran this job stopped before it finished; no image was delivered. "
        "Send the request again.")


RUNNING = set()  # this process's job threads, which its worker lets finish before it exits


def wait_for_running(seconds):
    """Let this process's jobs finish, up to `seconds`: gunicorn's worker_exit hook, so a deploy's
    SIGTERM (within gunicorn's graceful_timeout) loses no job that was running."""
    deadline = time.monotonic() + seconds
    for thread in list(RUNNING):
        thread.join(max(0.0, deadline - time.monotonic()))


def new_job_id():
    return "imgjob_" + secrets.token_urlsafe(24)


class Jobs:
    """The jobs of every instance, through the database; `run` is this instance's part."""

    def __init__(self, store, storage, settings):
        self.store, self.storage, self.settings = store, storage, settings
        self.lost_after = settings.upstream_timeout + 60  # the deadline of a lease or reservation too

    def submit(self, job, client):
        """Queue `job` (an ImageJob, admitted) for `client` and start it; a 429 when the key has
        GATEWAY_MAX_JOBS_PER_KEY jobs unfinished already."""
        job_id = new_job_id()

        def queue(conn, now):
            self._fail_lost(conn, now, image_jobs.c.key_name == client.name)
            conn.execute(delete(image_jobs).where(image_jobs.c.expires_at < now))
            unfinished = conn.scalar(select(func.count()).select_from(image_jobs).where(
                image_jobs.c.key_name == client.name, image_jobs.c.status.in_(ACTIVE)))
            if unfinished >= self.settings.max_jobs_per_key:
                raise GatewayError(429, f"This API key has {unfinished} asynchronous jobs queued or in progress, "
                                        f"the most it may have (GATEWAY_MAX_JOBS_PER_KEY); wait for one to finish.",
                                   {"Retry-After": "10"}, code="rate_limit_exceeded")
            conn.execute(image_jobs.insert().values(id=job_id, key_name=client.name, status="queued",
                                                    created_at=now))
            return now

        created = self.store.run(queue, f"jobs:{client.name}")
        thread = threading.Thread(target=contextvars.copy_context().run, args=(self.run, job_id, job), daemon=True,
                                  name=f"job-{job_id[-6:]}")
        RUNNING.add(thread)
        thread.start()
        return {"id": job_id, "object": "image.job", "status": "queued", "created_at": int(created)}

    def run(self, job_id, job):
        """Run the job: its images stored before the row says completed; its admission settled at the end."""
        try:
            if not self._move(job_id, "queued", status="in_progress"):  # cancelled before it started
                job.admission.finish(0, Usage(), "", 499)
                return
            body = stored(job.result(cancelled=lambda: self._status(job_id) == "cancelled").body, self.storage)
            body["response_format"] = job.params.get("response_format", "b64_json")
            self._end(job_id, "completed", result=body)
        except JobCancelled:
            pass
        except GatewayError as error:  # its calls failed, or its images could not be stored
            job.admission.answered(error.status)
            self._end(job_id, "failed", error={"status": error.status, "message": error.message})
        except Exception:  # noqa: BLE001 - the job fails with the 500 it is; the details go to the log
            log.exception("job %s failed", job_id)
            error = internal_error()
            job.admission.answered(error.status)
            self._end(job_id, "failed", error={"status": error.status, "message": error.message})
        finally:
            job.admission.settle()
            RUNNING.discard(threading.current_thread())

    def _status(self, job_id):
        with self.store.read() as conn:
            return conn.scalar(select(image_jobs.c.status).where(image_jobs.c.id == job_id))

    def _move(self, job_id, frm, **values):
        """Change the job's row if it is still `frm` (else another instance or its key changed it)."""
        def move(conn, now):
            done = conn.execute(update(image_jobs).where(image_jobs.c.id == job_id, image_jobs.c.status.in_(
                (frm,) if isinstance(frm, str) else frm)).values(**self._ended(values, now)))
            return done.rowcount == 1
        return self.store.run(move, f"job:{job_id}")

    def _ended(self, values, now):
        if values.get("status") in ("completed", "failed", "cancelled"):
            return {**values, "completed_at": now, "expires_at": now + self.settings.image_ttl_seconds}
        return values

    def _end(self, job_id, status, **values):
        try:
            if not self._move(job_id, "in_progress", status=status, **values):
                log.warning("job %s ended %s after it was cancelled or given up", job_id, status)
        except GatewayError as error:  # the database failed: the job is failed as lost later
            log.error("job %s could not be recorded as %s: %s", job_id, status, error)

    def _fail_lost(self, conn, now, *where):
        conn.execute(update(image_jobs).where(
            image_jobs.c.status.in_(ACTIVE), image_jobs.c.created_at < now - self.lost_after, *where).values(
            status="failed", error={"status": 500, "message": LOST}, completed_at=now,
            expires_at=now + self.settings.image_ttl_seconds))

    def read(self, job_id, client, base_url):
        """The job as its key sees it; a 404 for another key's, an expired or an unknown job. A poll
        is one read, never a write (with SQLite, writes queue for one lock); only a job that looks
        lost, still active past its deadline by this host's clock, takes a write transaction that
        fails it by the database's. Expiry is read by this host's clock too: its skew from the
        database's is seconds, the images' lifetime GATEWAY_IMAGE_TTL_SECONDS."""
        select_row = select(image_jobs).where(image_jobs.c.id == job_id)
        with self.store.read() as conn:
            row = conn.execute(select_row).one_or_none()
        if row is not None and row.status in ACTIVE and row.created_at < time.time() - self.lost_after:
            def fail_lost(conn, now):
                self._fail_lost(conn, now, image_jobs.c.id == job_id)
                return conn.execute(select_row).one_or_none()
            row = self.store.run(fail_lost, f"job:{job_id}")
        if row is None or row.key_name != client.name or (row.expires_at and row.expires_at < time.time()):
            raise GatewayError(404, "Not Found: no such job for this API key (or it has expired).")
        return self._body(row, base_url)

    def cancel(self, job_id, client, base_url):
        """Cancel a job not yet finished (its calls stop within seconds); a finished one is unchanged."""
        self.read(job_id, client, base_url)  # the 404s
        self._move(job_id, ACTIVE, status="cancelled")
        return self.read(job_id, client, base_url)

    def _body(self, row, base_url):
        return {"id": row.id, "object": "image.job", "status": row.status, "created_at": int(row.created_at),
                "completed_at": int(row.completed_at) if row.completed_at else None,
                "result": self._result(row, base_url) if row.result else None, "error": row.error}

    def _result(self, row, base_url):
        """The synchronous response body: URLs expiring with the job, or the images' base64."""
        body = {key: value for key, value in row.result.items() if key != "response_format"}
        if row.result["response_format"] == "url":
            return with_urls(body, self.storage, base_url, row.completed_at)
        data = []
        for item in body["data"]:
            image = self.storage.get(item["name"])
            if image is None:
                raise GatewayError(404, "Not Found: this job's images were deleted (they expire with the job).")
            data.append({"b64_json": base64.b64encode(image).decode(), "revised_prompt": item["revised_prompt"]})
        return {**body, "data": data}
