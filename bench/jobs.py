"""1,000 asynchronous jobs at once (run by hand, not in CI): memory, time to drain, none lost.

    .venv/bin/python bench/jobs.py [--jobs 1000] [--latency 5]

Starts the emulator (threaded, every call answered after --latency seconds) and the gateway
(production gunicorn.conf.py, SQLite, directory storage) on 127.0.0.1, submits the jobs with
`Prefer: respond-async` from 50 client threads, and counts the jobs' statuses in the database
until none is queued or in progress. Prints one Markdown table row.
"""
import argparse
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from run import CLIENT_KEY, UPSTREAM_KEY, PeakRss, free_port, start, tree_rss_mb, wait_for


def statuses(database):
    with sqlite3.connect(database) as db:
        return dict(db.execute("SELECT status, count(*) FROM image_jobs GROUP BY status").fetchall())


def submit_all(gateway_url, count, latency):
    body = {"prompt": f"a queued job [emulator: delay={latency:g}]", "model": "gemini-2.5-flash-image"}
    headers = {"Authorization": f"Bearer {CLIENT_KEY}", "Prefer": "respond-async"}
    with requests.Session() as session, ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda _: session.post(gateway_url + "/v1/images/generations", json=body,
                                                       headers=headers, timeout=60).status_code, range(count)))
    return answers.count(202)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=5.0)
    args = parser.parse_args()
    bin_dir, work = Path(sys.executable).parent, Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    emulator_port, gateway_port = free_port(), free_port()
    emulator = start([str(bin_dir / "gunicorn"), "emulator:create_emulator()", "--bind", f"127.0.0.1:{emulator_port}",
                      "--config", "/dev/null", "-k", "gthread", "--threads", str(args.jobs + 100),
                      "--no-control-socket", "--timeout", "120", "--backlog", "4096"], {},
                     open(work / "emulator.log", "w"))
    gateway = start([str(bin_dir / "gunicorn"), "app:app", "--config", "gunicorn.conf.py",
                     "--bind", f"127.0.0.1:{gateway_port}", "--backlog", "4096"],
                    {"GATEWAY_API_KEYS": CLIENT_KEY, "GEMINI_API_KEY": UPSTREAM_KEY, "PORT": str(gateway_port),
                     "GEMINI_BASE_URL": f"http://127.0.0.1:{emulator_port}",
                     "GATEWAY_DATABASE_URL": f"sqlite:///{work / 'gateway.db'}",
                     "GATEWAY_STORAGE_URL": f"file://{work / 'images'}", "GATEWAY_MAX_JOBS_PER_KEY": str(args.jobs)},
                    open(work / "gateway.log", "w"))
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    try:
        wait_for(f"http://127.0.0.1:{emulator_port}/")
        wait_for(gateway_url + "/health")
        idle, peak = tree_rss_mb(gateway.pid), PeakRss(gateway.pid)
        started = time.monotonic()
        accepted = submit_all(gateway_url, args.jobs, args.latency)
        submitted = time.monotonic() - started
        while (seen := statuses(work / "gateway.db")).keys() & {"queued", "in_progress"}:
            time.sleep(0.2)
        drained = time.monotonic() - started
        print("| jobs | accepted (202) | all submitted | all ended | completed | lost | gateway RSS idle -> peak |")
        print("|---|---|---|---|---|---|---|")
        print(f"| {args.jobs} | {accepted} | {submitted:.1f} s | {drained:.1f} s | {seen.get('completed', 0)} | "
              f"{args.jobs - seen.get('completed', 0)} | {idle:.0f} -> {peak.stop():.0f} MB |")
    finally:
        for process in (gateway, emulator):
            process.terminate()
            process.wait(timeout=60)
    print(f"(logs in {work})", file=sys.stderr)


if __name__ == "__main__":
    main()
