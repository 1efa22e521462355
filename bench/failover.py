"""Failover latency with one provider down (run by hand, not in CI; docs/benchmarks.md has the results).

    .venv/bin/python bench/failover.py [--requests 8] [--source DIR]

Starts the offline emulator and, per scenario, a fresh gateway (one worker, so one process's
circuit breakers; production retry settings: UPSTREAM_MAX_RETRIES=2, UPSTREAM_RETRY_BASE_DELAY=1)
with GATEWAY_PROVIDERS=gemini,openrouter, both pointed at the emulator. Then it times requests one
after another:
  1. healthy: Gemini answers (the reference for a request that does not fail over);
  2. OpenRouter alone (GATEWAY_PROVIDERS=openrouter): what the failover target costs by itself;
  3. Gemini down (`[emulator: fail=503 only=gemini]`): each request in turn, the first ones
     before the breaker opens and the ones after.
`--source DIR` runs the gateway from another checkout (e.g. `git archive <commit> | tar -x -C DIR`)
to measure the code before a change with the same script.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests
from run import ROOT, free_port, start, wait_for

CLIENT_KEY, UPSTREAM_KEY = "bench-client-key", "bench-upstream-key"
MODEL = "gemini-2.5-flash-image"


def start_in(source, command, env, log):
    """`start` from the checkout `source`: gunicorn.conf.py imports the gateway before --chdir applies."""
    return subprocess.Popen(command, cwd=source, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)


def gateway(source, emulator_url, log_dir, providers):
    port = free_port()
    log = log_dir / f"failover-gateway-{port}.log"
    process = start_in(source, [str(Path(sys.executable).parent / "gunicorn"), "app:app",
                                "--config", str(source / "gunicorn.conf.py"), "--chdir", str(source),
                                "--bind", f"127.0.0.1:{port}"],
                       {"GATEWAY_API_KEYS": CLIENT_KEY, "GEMINI_API_KEY": UPSTREAM_KEY, "GEMINI_BASE_URL": emulator_url,
                        "OPENROUTER_API_KEY": UPSTREAM_KEY, "OPENROUTER_BASE_URL": emulator_url + "/api/v1",
                        "GATEWAY_PROVIDERS": providers, "WEB_CONCURRENCY": "1", "PORT": str(port),
                        "GATEWAY_DATABASE_URL": f"sqlite:///{log_dir / f'failover-{uuid.uuid4().hex[:8]}.db'}"},
                       open(log, "w"))
    url = f"http://127.0.0.1:{port}"
    wait_for(url + "/health")
    return process, url, log


def upstream_calls(log, count):
    """The upstream calls each of the last `count` generations made, from the gateway's request log lines."""
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line["upstream_calls"] for line in lines
            if line.get("message") == "request" and line.get("path") == "/v1/images/generations"][-count:]


def timed(url, prompt):
    started = time.perf_counter()
    response = requests.post(url + "/v1/images/generations", json={"prompt": prompt, "model": MODEL},
                             headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=120)
    assert response.status_code == 200, response.text
    return (time.perf_counter() - started) * 1000, response.headers.get("x-gateway-provider")


def warm(emulator_url, prompt):
    """The emulator's picture for `prompt` drawn once (it caches it), straight from its OpenRouter API."""
    response = requests.post(emulator_url + "/api/v1/chat/completions", timeout=60,
                             headers={"Authorization": f"Bearer {UPSTREAM_KEY}"},
                             json={"model": f"google/{MODEL}", "modalities": ["image", "text"],
                                   "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}]})
    response.raise_for_status()


def scenario(source, emulator_url, log_dir, providers, prompt, count):
    """Each of `count` requests' (ms, provider, upstream calls), one after another, on a fresh gateway."""
    warm(emulator_url, prompt)
    process, url, log = gateway(source, emulator_url, log_dir, providers)
    try:
        for _ in range(3):  # imports, connection pools: not what is measured
            timed(url, "warm the gateway up")
        results = [timed(url, prompt) for _ in range(count)]
    finally:
        process.terminate()
        process.wait()
    return [(*result, calls) for result, calls in zip(results, upstream_calls(log, count), strict=True)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8, help="requests per scenario, one after another")
    parser.add_argument("--source", type=Path, default=ROOT, help="the checkout whose gateway is measured")
    args = parser.parse_args()
    log_dir = ROOT / "bench" / "results"
    log_dir.mkdir(exist_ok=True)
    emulator_port = free_port()
    emulator = start([str(Path(sys.executable).parent / "gunicorn"), "emulator:create_emulator()", "--bind",
                      f"127.0.0.1:{emulator_port}", "--config", "/dev/null", "-k", "gthread", "--threads", "32",
                      "--workers", "1", "--no-control-socket"], {}, open(log_dir / "failover-emulator.log", "w"))
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    try:
        wait_for(emulator_url + "/")
        healthy = scenario(args.source, emulator_url, log_dir, "gemini,openrouter", "a healthy fox", args.requests)
        alone = scenario(args.source, emulator_url, log_dir, "openrouter", "an openrouter fox", args.requests)
        down = scenario(args.source, emulator_url, log_dir, "gemini,openrouter",
                        "[emulator: fail=503 only=gemini] a fox in an outage", args.requests)
    finally:
        emulator.terminate()
        emulator.wait()
    print(f"| scenario ({args.requests} requests one after another, on a fresh gateway) | ms | served by "
          "| upstream calls |")
    print("|---|---|---|---|")
    print(f"| Gemini healthy, p50 | {p50(healthy):.0f} | {healthy[0][1]} | {healthy[0][2]} |")
    print(f"| OpenRouter alone, p50 | {p50(alone):.0f} | {alone[0][1]} | {alone[0][2]} |")
    for index, (ms, provider, calls) in enumerate(down[:4], 1):
        print(f"| Gemini down, request {index} | {ms:.0f} | {provider} | {calls} |")
    print(f"| Gemini down, requests 5-{len(down)}, p50 | {p50(down[4:]):.0f} | {down[-1][1]} "
          f"| {statistics.median(calls for *_, calls in down[4:]):g} |")


def p50(results):
    return statistics.median(ms for ms, *_ in results)


if __name__ == "__main__":
    main()
