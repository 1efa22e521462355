"""Response size and time of n=4 images at 2K as `url` vs `b64_json` (run by hand, not in CI).

    .venv/bin/python bench/image_urls.py [--runs 5]

Starts the emulator and the gateway (production gunicorn.conf.py, directory storage in a temporary
directory) on 127.0.0.1, then asks for the same 4 noisy 2048x2048 PNGs (cached by the emulator, so
its rendering is out of the timings) alternately in both formats. For `url` it also times fetching
the 4 images from their URLs, one after the other, as a client that wants the bytes would.
Prints a Markdown table.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
from run import CLIENT_KEY, ROOT, UPSTREAM_KEY, free_port, start, wait_for

BODY = {"prompt": "a noisy benchmark picture [emulator: noise=1]", "model": "gemini-3.1-flash-image", "n": 4,
        "size": "2048x2048"}


def timed(gateway_url, response_format):
    """(answer bytes, seconds to the whole answer, seconds to the whole answer and every image's bytes)."""
    started = time.monotonic()
    response = requests.post(gateway_url + "/v1/images/generations", json={**BODY, "response_format": response_format},
                             headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=300)
    answered = time.monotonic() - started
    assert response.status_code == 200, response.text[:500]
    for item in response.json()["data"]:
        if "url" in item:
            assert requests.get(item["url"], timeout=60).status_code == 200
    return len(response.content), answered, time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    bin_dir, logs = Path(sys.executable).parent, Path(tempfile.mkdtemp(prefix="bench-urls-"))
    emulator_port, gateway_port = free_port(), free_port()
    emulator = start([str(bin_dir / "gunicorn"), "emulator:create_emulator()", "--bind", f"127.0.0.1:{emulator_port}",
                      "--config", "/dev/null", "-k", "gthread", "--threads", "16", "--no-control-socket"],
                     {}, open(logs / "emulator.log", "w"))
    gateway = start([str(bin_dir / "gunicorn"), "app:app", "--config", "gunicorn.conf.py",
                     "--bind", f"127.0.0.1:{gateway_port}"],
                    {"GATEWAY_API_KEYS": CLIENT_KEY, "GEMINI_API_KEY": UPSTREAM_KEY, "PORT": str(gateway_port),
                     "GEMINI_BASE_URL": f"http://127.0.0.1:{emulator_port}",
                     "GATEWAY_DATABASE_URL": f"sqlite:///{logs / 'gateway.db'}",
                     "GATEWAY_STORAGE_URL": f"file://{logs / 'images'}"}, open(logs / "gateway.log", "w"))
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    try:
        wait_for(f"http://127.0.0.1:{emulator_port}/")
        wait_for(gateway_url + "/health")
        timed(gateway_url, "b64_json")  # warm: the emulator renders and caches the pictures
        runs = {"b64_json": [], "url": []}
        for _ in range(args.runs):
            for response_format, seen in runs.items():
                seen.append(timed(gateway_url, response_format))
        print(f"| response_format | answer size | answer time (median of {args.runs}) | answer + the 4 images |")
        print("|---|---|---|---|")
        for response_format, seen in runs.items():
            size, answered, total = (statistics.median(column) for column in zip(*seen, strict=True))
            shown = f"{size / 1e6:.2f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"
            print(f"| `{response_format}` | {shown} | {answered * 1000:.0f} ms | {total * 1000:.0f} ms |")
    finally:
        for process in (gateway, emulator):
            process.terminate()
            process.wait(timeout=30)
    print(f"(logs in {logs}; repository {ROOT})", file=sys.stderr)


if __name__ == "__main__":
    main()
