"""Benchmark the gateway against the offline emulator on this machine (run by hand, not in CI).

    .venv/bin/python bench/run.py            # after ./scripts/test (or scripts/dev) made .venv
    .venv/bin/python bench/run.py --quick    # smaller counts, for a smoke run

Needs `hey` (Debian package hey) as the load tool. Starts the emulator
(under gunicorn, many threads) and the gateway with the production gunicorn.conf.py, then:
  1. direct upstream vs gateway for n=1 with ~1.4 MB PNGs: requests/s, p50/p99, added latency,
     CPU per image; and the same for the floor, bench/floor_app.py (the least an app built with
     Flask, gunicorn and requests can do per call), so the gateway's cost reads against it;
  2. 1,000 concurrent generations with 5 s upstream latency, direct, the floor and through the
     gateway, in 3 rounds of rotating order (--rounds): errors, median wall time, peak RSS;
  3. one n=10 request with 5 s upstream latency: wall time;
  4. n=4 streamed vs not, with calls finishing 1 s apart: time to first byte and to each image;
  5. the peak Python memory one request allocates for a 1.4 MB image (tracemalloc).
Prints a Markdown table and writes it to bench/results/latest.md.
"""
import argparse
import io
import json
import logging
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
CLIENT_KEY, UPSTREAM_KEY = "bench-client-key", "bench-upstream-key"
MODEL = "gemini-2.5-flash-image"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).ok:
                return
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still loading the app
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def start(command, env, log):
    return subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)


def hey(url, body, headers, requests_count, concurrency, content_type="application/json", seconds=None):
    """Run the `hey` load generator (`requests_count` requests, or for `seconds`) with a JSON body
    (or raw bytes of `content_type`); returns its numbers (latencies in ms)."""
    with tempfile.NamedTemporaryFile("wb", suffix=".body", delete=False) as payload:
        payload.write(body if isinstance(body, bytes) else json.dumps(body).encode())
    amount = ["-z", f"{seconds}s"] if seconds else ["-n", str(requests_count)]
    command = ["hey", *amount, "-c", str(concurrency), "-t", "120", "-m", "POST",
               "-T", content_type, "-D", payload.name]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(command + [url], capture_output=True, text=True, check=True).stdout
    os.unlink(payload.name)

    def number(pattern):
        match = re.search(pattern, output)
        return float(match.group(1)) if match else float("nan")

    answered = sum(int(n) for n in re.findall(r"\[\d+\]\s+(\d+) responses", output))
    failed = sum(int(n) for n in re.findall(r"\[(\d+)\]\s+(?:Get|Post)", output)) if "Error" in output else 0
    ok = number(r"\[200\]\s+(\d+) responses")
    return {
        "rps": number(r"Requests/sec:\s+([\d.]+)"),
        "p50": number(r"50% in ([\d.]+) secs") * 1000,
        "p99": number(r"99% in ([\d.]+) secs") * 1000,
        "wall": number(r"Total:\s+([\d.]+) secs"),
        "errors": answered - (0 if ok != ok else ok) + failed,
        "ok": 0 if ok != ok else ok,
    }


def tree_pids(pid):
    """A process and all its descendants."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        found.append(current)
    return found


def tree_cpu_seconds(pid):
    """User + system CPU time spent so far by a process tree (every thread of each process)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for current in tree_pids(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks


def tree_rss_mb(pid):
    """Resident memory of a process and all its descendants, in MB."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, AttributeError):
            continue
    return total / 1024


class PeakRss:
    """Samples a process tree's RSS every 50 ms while active."""

    def __init__(self, pid):
        self.pid, self.peak, self.running = pid, 0.0, True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self):
        while self.running:
            self.peak = max(self.peak, tree_rss_mb(self.pid))
            time.sleep(0.05)

    def stop(self):
        self.running = False
        self.thread.join()
        return self.peak


def request_memory_peak():
    """Peak bytes Python allocates while serving one n=1 generation of a ~1.4 MB PNG (in-process,
    upstream mocked), with and without re-encoding."""
    import responses

    sys.path.insert(0, str(ROOT))
    from emulator.pictures import render_png
    from gateway import create_app
    from gateway.config import Settings

    png = render_png("memory", (1024, 1024), [], noise=True)
    import base64
    answer = json.dumps({"candidates": [{"content": {"parts": [
        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png).decode()}}]},
        "finishReason": "STOP"}]}).encode()
    app = create_app(Settings(api_keys=(CLIENT_KEY,), gemini_api_key=UPSTREAM_KEY,
                              gemini_base_url="https://gemini.bench", upstream_retry_base_delay=0))
    client = app.test_client()
    peaks = {}
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, re.compile("https://gemini.bench/.*"), body=answer,
                 content_type="application/json")
        for label, extra in (("pass-through png", {}), ("re-encoded to jpeg", {"output_format": "jpeg"})):
            client.post("/v1/images/generations", json={"prompt": "warm up", **extra},
                        headers={"Authorization": f"Bearer {CLIENT_KEY}"})
            tracemalloc.start()
            response = client.post("/v1/images/generations", json={"prompt": "memory", **extra},
                                   headers={"Authorization": f"Bearer {CLIENT_KEY}"})
            peaks[label] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            assert response.status_code == 200
    return len(png) / 2**20, peaks


def multipart(fields, files):
    """A multipart/form-data body and its content type."""
    boundary = "benchboundary7f3a"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
              f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n" for name, data in files.items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def heavier_paths(gateway, gateway_url, count):
    """p50 and gateway CPU per request at concurrency 1 for a re-encoded output and an edit with
    a 10 MB input image."""
    from PIL import Image  # noqa: PLC0415 - only this scenario draws an image

    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    buffer = io.BytesIO()
    Image.merge("RGB", [Image.effect_noise((1850, 1850), 40) for _ in range(3)]).save(buffer, "PNG")
    edit_body, edit_type = multipart({"prompt": "a bench edit", "model": MODEL}, {"image": buffer.getvalue()})
    scenarios = [
        ("n=1, 1.4 MB PNG re-encoded to JPEG", "/v1/images/generations",
         json.dumps({"prompt": "a noisy benchmark picture [emulator: noise=1]", "model": MODEL,
                     "output_format": "jpeg"}).encode(), "application/json"),
        (f"edit with a {len(buffer.getvalue()) / 2**20:.1f} MB PNG input (multipart)", "/v1/images/edits",
         edit_body, edit_type),
    ]
    rows = []
    for label, path, body, content_type in scenarios:
        hey(gateway_url + path, body, auth, 4, 1, content_type)  # warm up
        cpu_before = tree_cpu_seconds(gateway.pid)
        result = hey(gateway_url + path, body, auth, count, 1, content_type)
        cpu = (tree_cpu_seconds(gateway.pid) - cpu_before) / count * 1000
        rows.append(f"| {label}, concurrency 1: through the gateway | {result['rps']:.1f} req/s "
                    f"| p50 {result['p50']:.1f} ms "
                    f"| errors {result['errors']:.0f}; gateway CPU {cpu:.1f} ms per request |")
    return rows


def held_calls(upstream_url, gateway_url, seconds):
    """200 clients for `seconds`, each call held 3 s upstream: completions direct vs through the gateway."""
    prompt = "held three seconds [emulator: delay=3]"
    direct_body = {"contents": [{"role": "user", "parts": [{"text": prompt}]}],
                   "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}}
    direct = hey(upstream_url, direct_body, {"x-goog-api-key": UPSTREAM_KEY}, 0, 200, seconds=seconds)
    via = hey(gateway_url + "/v1/images/generations", {"prompt": prompt, "model": MODEL},
              {"Authorization": f"Bearer {CLIENT_KEY}"}, 0, 200, seconds=seconds)
    return [f"| concurrency 200, 3 s upstream, {seconds} s: direct upstream | {direct['ok']:.0f} completions "
            f"| p50 {direct['p50']:.0f} ms | errors {direct['errors']:.0f} |",
            f"| concurrency 200, 3 s upstream, {seconds} s: through the gateway | {via['ok']:.0f} completions "
            f"({via['ok'] / max(direct['ok'], 1):.0%} of direct) | p50 {via['p50']:.0f} ms "
            f"| errors {via['errors']:.0f} |"]


def burst_rows(variants, gateway_pid, args):
    """`args.concurrency` generations at once against each of `variants` (label: (url, body,
    headers)), in `args.rounds` rounds whose order rotates (a burst leaves sockets in TIME_WAIT and
    threads behind it, and the one after pays for them), each after a 2 s pause. The rows give the
    median wall, p50 and p99 over the rounds, each round's wall, every error, and the peak RSS of
    the gateway's processes during its bursts."""
    labels, results, peak = list(variants), {label: [] for label in variants}, 0.0
    for round_ in range(args.rounds):
        for label in labels[round_ % len(labels):] + labels[:round_ % len(labels)]:
            time.sleep(2)
            sampler = PeakRss(gateway_pid) if label == "through the gateway" else None
            results[label].append(hey(*variants[label], args.concurrency, args.concurrency))
            peak = max(peak, sampler.stop()) if sampler else peak
    direct = statistics.median(result["wall"] for result in results[labels[0]])
    rows = []
    for label in labels:
        runs = results[label]
        walls = [run["wall"] for run in runs]
        wall = statistics.median(walls)
        memory = f", peak RSS of all gateway processes {peak:.0f} MB" if label == "through the gateway" else ""
        rows.append(f"| {args.concurrency} concurrent generations, {args.latency:g} s upstream latency: {label} "
                    f"| wall {wall:.2f} s ({wall / direct:.2f}x direct's; "
                    f"median of {', '.join(f'{w:.2f}' for w in walls)}) "
                    f"| p50 {statistics.median(run['p50'] for run in runs):.0f} ms, "
                    f"p99 {statistics.median(run['p99'] for run in runs):.0f} ms "
                    f"| errors {sum(run['errors'] for run in runs):.0f} of {args.concurrency * len(runs)}{memory} |")
    return rows


def timed_post(url, body):
    """(seconds to the first byte, seconds to each completed image event, seconds to the end)."""
    started = time.monotonic()
    first, completed, seen = None, [], b""
    with requests.post(url, json=body, headers={"Authorization": f"Bearer {CLIENT_KEY}"}, stream=True,
                       timeout=180) as response:
        assert response.status_code == 200, response.text[:500]
        for chunk in response.iter_content(chunk_size=None):
            first = first if first is not None else time.monotonic() - started
            seen = seen[-64:] + chunk  # an event name may straddle two reads
            completed += [time.monotonic() - started] * seen.count(b"event: image_generation.completed")
            seen = seen.replace(b"event: image_generation.completed", b"")
    return first, completed, time.monotonic() - started


def streaming_rows(gateway_url, latency):
    """n=4 with calls finishing `latency` + 0, 1, 2, 3 s: the JSON body arrives when the last one
    has, while a stream delivers each image as its call finishes."""
    url, rows = gateway_url + "/v1/images/generations", []
    for stream in (False, True):
        prompt = f"streaming bench {time.time()} [emulator: delay={latency:g} spread=1]"
        first, completed, total = timed_post(url, {"prompt": prompt, "model": MODEL, "n": 4, "stream": stream})
        images = ", ".join(f"{seconds:.2f}" for seconds in completed) if stream else f"all four at {total:.2f}"
        rows.append(f"| n=4, calls finishing {latency:g}-{latency + 3:g} s, {'streamed' if stream else 'JSON'} "
                    f"| first byte {first:.2f} s | images at {images} s | |")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts for a smoke run")
    parser.add_argument("--latency", type=float, default=5.0, help="upstream latency for the slow scenarios (s)")
    parser.add_argument("--concurrency", type=int, default=1000, help="concurrent slow generations")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of those bursts, in rotating order")
    args = parser.parse_args()
    if not shutil.which("hey"):
        sys.exit("the load tool hey is needed: apt-get install hey")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    bin_dir = Path(sys.executable).parent

    emulator_port, gateway_port, floor_port = free_port(), free_port(), free_port()
    emulator = start([str(bin_dir / "gunicorn"), "emulator:create_emulator()", "--bind", f"127.0.0.1:{emulator_port}",
                      "--config", "/dev/null",  # not the gateway's gunicorn.conf.py, which gunicorn would find here
                      "-k", "gthread", "--threads", str(args.concurrency + 200), "--workers", "1",
                      "--worker-connections", str(args.concurrency * 2 + 200), "--no-control-socket",
                      "--timeout", "120", "--backlog", "4096"],
                     # the fake upstream as fast as we can make it, so "direct" is the wire's speed and
                     # not glibc's page faults (the gateway sets the same thresholds itself, serving.py)
                     {"MALLOC_MMAP_THRESHOLD_": str(4 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(32 * 2**20)},
                     open(results_dir / "emulator.log", "w"))
    gateway = start([str(bin_dir / "gunicorn"), "app:app", "--config", "gunicorn.conf.py",
                     "--bind", f"127.0.0.1:{gateway_port}", "--backlog", "4096"],
                    {"GATEWAY_API_KEYS": CLIENT_KEY, "GEMINI_API_KEY": UPSTREAM_KEY,
                     "GEMINI_BASE_URL": f"http://127.0.0.1:{emulator_port}", "PORT": str(gateway_port)},
                    open(results_dir / "gateway.log", "w"))
    upstream_url = f"http://127.0.0.1:{emulator_port}/v1beta/models/{MODEL}:generateContent"
    floor = start([str(bin_dir / "gunicorn"), "floor_app:app", "--pythonpath", "bench", "--config", "/dev/null",
                   "--bind", f"127.0.0.1:{floor_port}", "-k", "gevent", "--workers", "2", "--no-control-socket",
                   "--backlog", "4096"],
                  {"UPSTREAM_URL": upstream_url, "UPSTREAM_KEY": UPSTREAM_KEY,
                   "MALLOC_MMAP_THRESHOLD_": str(4 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(32 * 2**20)},
                  open(results_dir / "floor.log", "w"))
    emulator_url, gateway_url = f"http://127.0.0.1:{emulator_port}", f"http://127.0.0.1:{gateway_port}"
    rows = []
    try:
        wait_for(emulator_url + "/")
        wait_for(gateway_url + "/health")
        wait_for(f"http://127.0.0.1:{floor_port}/health")
        count = 96 if args.quick else 504  # multiples of both concurrencies: hey sends n // c * c
        fast_prompt = "a noisy benchmark picture [emulator: noise=1]"
        upstream_body = {"contents": [{"role": "user", "parts": [{"text": fast_prompt}]}],
                         "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}}
        gateway_body = {"prompt": fast_prompt, "model": MODEL}
        authorized = {"Authorization": f"Bearer {CLIENT_KEY}"}
        floor_url = f"http://127.0.0.1:{floor_port}/v1/images/generations"
        hey(upstream_url, upstream_body, {"x-goog-api-key": UPSTREAM_KEY}, 20, 2)  # warm the emulator's cache
        hey(gateway_url + "/v1/images/generations", gateway_body, authorized, 20, 2)
        hey(floor_url, gateway_body, {}, 20, 2)
        for concurrency in (1, 8):
            direct = hey(upstream_url, upstream_body, {"x-goog-api-key": UPSTREAM_KEY}, count, concurrency)
            rows.append(f"| n=1, 1.4 MB PNG, concurrency {concurrency}: direct upstream | {direct['rps']:.1f} req/s "
                        f"| p50 {direct['p50']:.1f} ms, p99 {direct['p99']:.0f} ms | errors {direct['errors']:.0f} |")
            for label, process, url, headers in (
                    ("the floor (bench/floor_app.py)", floor, floor_url, {}),
                    ("through the gateway", gateway, gateway_url + "/v1/images/generations", authorized)):
                cpu_before = tree_cpu_seconds(process.pid)
                via = hey(url, gateway_body, headers, count, concurrency)
                cpu_per_image = (tree_cpu_seconds(process.pid) - cpu_before) / count * 1000
                rows.append(f"| n=1, 1.4 MB PNG, concurrency {concurrency}: {label} | {via['rps']:.1f} req/s "
                            f"({via['rps'] / direct['rps']:.0%} of direct) "
                            f"| p50 {via['p50']:.1f} ms, p99 {via['p99']:.0f} ms "
                            f"(added p50 {via['p50'] - direct['p50']:.1f} ms) "
                            f"| errors {via['errors']:.0f}; CPU {cpu_per_image:.1f} ms per image |")

        rows += heavier_paths(gateway, gateway_url, 24 if args.quick else 60)
        rows += held_calls(upstream_url, gateway_url, 6 if args.quick else 12)

        slow_body = {"prompt": f"slow [emulator: delay={args.latency:g}]", "model": MODEL}
        started = time.monotonic()  # one n=1 call: the baseline for n=10, and warms the emulator's picture
        single = requests.post(gateway_url + "/v1/images/generations", json=slow_body, timeout=120,
                               headers=authorized)
        one = time.monotonic() - started

        rows += burst_rows({"direct upstream": (upstream_url, {**upstream_body, "contents": [{"role": "user", "parts": [
            {"text": slow_body["prompt"]}]}]}, {"x-goog-api-key": UPSTREAM_KEY}),
                            "the floor": (floor_url, slow_body, {}),
                            "through the gateway": (gateway_url + "/v1/images/generations", slow_body, authorized)},
                           gateway.pid, args)

        started = time.monotonic()
        ten = requests.post(gateway_url + "/v1/images/generations", json={**slow_body, "n": 10}, timeout=120,
                            headers=authorized)
        wall = time.monotonic() - started
        assert single.status_code == ten.status_code == 200 and len(ten.json()["data"]) == 10
        rows.append(f"| one n=10 request, {args.latency:g} s upstream latency | wall {wall:.2f} s "
                    f"({wall / one:.2f}x one n=1 call of {one:.2f} s) | | |")
        rows += streaming_rows(gateway_url, args.latency)
    finally:
        for process in (floor, gateway, emulator):
            process.terminate()
            process.wait(timeout=60)

    logging.disable(logging.WARNING)  # the in-process gateway below would print its request lines
    image_mb, peaks = request_memory_peak()
    for label, peak_mb in peaks.items():
        rows.append(f"| Python memory one request allocates at its peak ({image_mb:.2f} MB PNG, {label}) "
                    f"| {peak_mb:.1f} MB | | |")

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    table = "\n".join([f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores ({cpu}); "
                       "WEB_CONCURRENCY=2, gevent workers.", "",
                       "| scenario | throughput / wall time | latency | errors / memory |",
                       "|---|---|---|---|", *rows])
    print(table)
    (results_dir / "latest.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
