"""Measure the gateway's resource safety at full scale (run by hand, not in CI):

    .venv/bin/python bench/resources.py           # after ./scripts/test (or scripts/dev) made .venv
    .venv/bin/python bench/resources.py --quick   # smaller floods and bursts, for a smoke run

Starts the offline emulator and the gateway exactly as the Procfile does (gunicorn.conf.py,
WEB_CONCURRENCY=2, no nginx) on 127.0.0.1, then measures:
  1. floods of 10,000 connections that send nothing, one byte, half a header, or headers and a
     stalled body: how fast /health and a generation are answered meanwhile, and how long until
     the gateway has closed every flood connection;
  2. memory: the masked 8000x8000 n=10 edit, a masked edit at the pixel limit with n=10, 30
     concurrent masked edits with ~15 MB uploads (peak RSS of the whole server), and the idle
     RSS after that burst against the fresh-start RSS;
  3. the latency of small requests during a burst of re-encoding masked edits;
  4. the fair share of upstream slots: 1,000 concurrent generations from one key with the default
     settings (how many are refused), and a second key's latency while one key floods, both with
     the default settings and past capacity (UPSTREAM_MAX_IN_FLIGHT=100).
Prints a Markdown table and writes it to bench/results/resources.md.

    .venv/bin/python bench/resources.py --fair-share-only   # only 4.
"""
import argparse
import io
import os
import resource
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from PIL import Image
from run import CLIENT_KEY, ROOT, UPSTREAM_KEY, PeakRss, free_port, start, tree_rss_mb, wait_for

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
OTHER_KEY = "bench-second-client-key"


def encoded(image, image_format, **options):
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def noisy(side):
    return Image.merge("RGB", [Image.effect_noise((side, side), 60) for _ in range(3)])


def mask_png(side):
    mask = Image.new("RGBA", (side, side), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, side // 2, side))
    return encoded(mask, "PNG", compress_level=1)


def masked_edit(url, image, mask, **fields):
    files = [("image", ("image.png", image, "image/png")), ("mask", ("mask.png", mask, "image/png"))]
    return requests.post(url + "/v1/images/edits", headers=AUTH, files=files, timeout=600,
                         data={"prompt": "bench edit", **fields})


def timed(call):
    started = time.monotonic()
    response = call()
    return time.monotonic() - started, response.status_code


def small_requests(url):
    """(seconds for /health, seconds for a pass-through generation), and their statuses."""
    health = timed(lambda: requests.get(url + "/health", timeout=120))
    generation = timed(lambda: requests.post(url + "/v1/images/generations", headers=AUTH, timeout=120,
                                             json={"prompt": "a small request"}))
    return health, generation


def flood(url, first_bytes, count, deadline_s):
    """Open `count` connections that send `first_bytes` and stall; probe small requests; then
    the seconds until the server has closed them all (or None past `deadline_s`)."""
    host, port = url.removeprefix("http://").split(":")
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)), timeout=30)
        if first_bytes:
            sock.sendall(first_bytes)
        sockets.append(sock)
    opened = time.monotonic()
    probes = [small_requests(url) for _ in range(5)]
    open_left = list(sockets)
    while open_left and time.monotonic() - opened < deadline_s:
        still = []
        for sock in open_left:
            sock.setblocking(False)
            try:
                while sock.recv(65536):
                    pass
            except BlockingIOError:
                still.append(sock)
            except OSError:
                pass
        open_left = still
        time.sleep(0.2)
    closed_after = time.monotonic() - opened if not open_left else None
    for sock in sockets:
        sock.close()
    return probes, closed_after


def one_key_floods(url, count, latency):
    """`count` generations at once from one key, each held `latency` s upstream, while a second
    key sends one generation at a time: (the burst's latencies and statuses, the second key's)."""
    def generation(key, prompt):
        started = time.monotonic()
        try:
            status = requests.post(url + "/v1/images/generations", headers={"Authorization": f"Bearer {key}"},
                                   json={"prompt": prompt}, timeout=300).status_code
        except requests.RequestException as error:
            status = type(error).__name__
        return time.monotonic() - started, status

    done, other = threading.Event(), []

    def second_key():
        time.sleep(latency / 2)  # the burst is all in by then
        while not done.is_set():
            other.append(generation(OTHER_KEY, "the second key [emulator: delay=0.5]"))

    prober = threading.Thread(target=second_key)
    with ThreadPoolExecutor(count) as pool:
        calls = [pool.submit(generation, CLIENT_KEY, f"one key's burst [emulator: delay={latency:g}]")
                 for _ in range(count)]
        prober.start()
        burst = [call.result() for call in calls]
    done.set()
    prober.join()
    return burst, other


def latencies(samples):
    seconds = sorted(elapsed for elapsed, _ in samples)
    statuses = [status for _, status in samples]
    return (f"p50 {statistics.median(seconds):.2f} s, max {seconds[-1]:.2f} s "
            f"(statuses {dict((s, statuses.count(s)) for s in sorted(set(statuses), key=str))})")


def fair_share_rows(serve, count):
    rows = []
    for label, env, latency in (("default settings (1,024 slots per process)", {}, 5),
                                ("UPSTREAM_MAX_IN_FLIGHT=100, past capacity", {"UPSTREAM_MAX_IN_FLIGHT": "100"}, 2)):
        gateway, url, _ = serve(f"gateway-fair-share-{len(rows)}.log", **env)
        burst, other = one_key_floods(url, count, latency)
        rows.append(f"| {count:,} concurrent generations from one key, {latency} s upstream, {label} "
                    f"| one key: {latencies(burst)} | second key, one at a time meanwhile (0.5 s upstream): "
                    f"{latencies(other)} | |")
        gateway.terminate()
        gateway.wait(timeout=60)
    return rows


def worker_pids(master):
    return [int(pid) for task in Path(f"/proc/{master}/task").iterdir()
            for pid in (task / "children").read_text().split()]


def peak_extra_mb(master, call):
    """Run `call`; the largest growth of any worker's peak RSS over its RSS before, in MB."""
    before = {}
    for pid in worker_pids(master):
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        before[pid] = status_kb(pid, "VmRSS")
    result = call()
    growth = max((status_kb(pid, "VmHWM") - rss) / 1024 for pid, rss in before.items())
    return result, growth


def status_kb(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def memory_rows(serve, quick):
    """The memory scenarios, on a fresh server, and small requests during re-encoding edits."""
    rows = []
    gateway, url, fresh = serve("gateway-memory.log")  # the memory scenarios start from a fresh server
    master = gateway.pid
    rows.append(f"| a fresh server for the memory scenarios, after warm-up | | "
                f"| RSS of the server {fresh:.0f} MB |")
    big_mask = mask_png(8000)
    big_image = encoded(Image.new("RGB", (8000, 8000), (40, 90, 160)), "PNG")
    response, growth = peak_extra_mb(master, lambda: masked_edit(url, big_image, big_mask, n="10",
                                                                 output_format="webp"))
    rows.append(f"| masked 8000x8000 edit, n=10, webp ({(len(big_image) + len(big_mask)) / 1e3:.0f} KB "
                f"uploaded) | HTTP {response.status_code} | | worker peak +{growth:.0f} MB |")
    side = 4472  # 19,998,784 pixels: just under IMAGE_MAX_PIXELS; a JPEG photo-sized upload
    image = encoded(noisy(side), "JPEG", quality=90)
    response, growth = peak_extra_mb(master, lambda: masked_edit(url, image, mask_png(side), n="10",
                                                                 output_format="webp"))
    rows.append(f"| masked {side}x{side} edit (the pixel limit), n=10, webp "
                f"| HTTP {response.status_code} | | worker peak +{growth:.0f} MB |")

    burst = 10 if quick else 30
    upload = encoded(noisy(2240), "PNG", compress_level=1)  # ~15 MB of noise
    mask = mask_png(2240)
    sampler = PeakRss(master)
    with ThreadPoolExecutor(burst) as pool:
        statuses = list(pool.map(lambda _: masked_edit(url, upload, mask).status_code, range(burst)))
    peak = sampler.stop()
    rows.append(f"| {burst} concurrent masked edits, {len(upload) / 2**20:.1f} MB upload each "
                f"| statuses {dict((s, statuses.count(s)) for s in set(statuses))} | "
                f"| peak RSS of the server {peak:.0f} MB |")
    time.sleep(12)
    idle = tree_rss_mb(master)
    rows.append(f"| idle, 12 s after that burst | | | RSS of the server {idle:.0f} MB "
                f"({idle / fresh:.2f}x the fresh start) |")

    quiet = [small_requests(url) for _ in range(10)]
    stop = threading.Event()
    edit_image, edit_mask = encoded(noisy(2000), "PNG"), mask_png(2000)

    def reencode_forever():
        while not stop.is_set():
            masked_edit(url, edit_image, edit_mask, n="2", output_format="webp")

    loaders = [threading.Thread(target=reencode_forever) for _ in range(8)]
    for loader in loaders:
        loader.start()
    time.sleep(3)
    busy = [small_requests(url) for _ in range(20)]
    stop.set()
    for loader in loaders:
        loader.join()
    for label, samples in (("idle", quiet), ("during 8 concurrent re-encoding masked edits", busy)):
        health = [h for (h, _), _ in samples]
        generation = [g for _, (g, _) in samples]
        rows.append(f"| small requests, {label} | /health p50 {statistics.median(health) * 1000:.0f} ms, "
                    f"max {max(health) * 1000:.0f} ms | generation p50 {statistics.median(generation) * 1000:.0f}"
                    f" ms, max {max(generation) * 1000:.0f} ms | |")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller floods and bursts")
    parser.add_argument("--memory-only", action="store_true", help="skip the connection floods")
    parser.add_argument("--fair-share-only", action="store_true", help="only the fair share of upstream slots")
    args = parser.parse_args()
    connections = 2000 if args.quick else 10000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * connections + 1024), hard))
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    emulator_port = free_port()
    emulator = start([sys.executable, "-m", "emulator", "--port", str(emulator_port)], {},
                     open(results / "emulator.log", "w"))
    wait_for(f"http://127.0.0.1:{emulator_port}/")

    def serve(log_name, **env):
        """A fresh gateway, as the Procfile starts it, warmed up; (process, url, its RSS in MB)."""
        port = free_port()
        process = start([sys.executable, "-m", "gunicorn", "app:app", "--config", "gunicorn.conf.py",
                         "--bind", f"127.0.0.1:{port}"],
                        {"GATEWAY_API_KEYS": f"{CLIENT_KEY},{OTHER_KEY}", "GEMINI_API_KEY": UPSTREAM_KEY,
                         "WEB_CONCURRENCY": "2", "GEMINI_BASE_URL": f"http://127.0.0.1:{emulator_port}",
                         "PORT": str(port), **env},
                        open(results / log_name, "w"))
        running.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_for(url + "/health")
        time.sleep(1)
        for _ in range(4):
            small_requests(url)
        return process, url, tree_rss_mb(process.pid)

    rows, running = [], [emulator]
    try:
        stalled = {} if args.memory_only or args.fair_share_only else {
            "send nothing": b"",
            "send one byte": b"P",
            "send half a header": b"POST /v1/images/generations HTTP/1.1\r\nHost: g\r\nContent-Ty",
            "send headers and stall the body": (
                b"POST /v1/images/generations HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + CLIENT_KEY.encode() + b"\r\nContent-Length: 1000\r\n\r\n{"),
        }
        if stalled:
            gateway, url, fresh = serve("gateway-floods.log")
            rows.append(f"| fresh start, after warm-up | | | RSS of the server {fresh:.0f} MB |")
        for label, first_bytes in stalled.items():
            probes, closed_after = flood(url, first_bytes, connections, 120)
            health = [h for (h, _), _ in probes]
            generation = [g for _, (g, _) in probes]
            statuses = {status for pair in probes for _, status in pair}
            rows.append(f"| {connections:,} connections that {label} | /health p50 "
                        f"{statistics.median(health) * 1000:.0f} ms, max {max(health) * 1000:.0f} ms; generation "
                        f"p50 {statistics.median(generation) * 1000:.0f} ms, max {max(generation) * 1000:.0f} ms "
                        f"(statuses {sorted(statuses)}) "
                        f"| all closed by the gateway after "
                        f"{'more than 120' if closed_after is None else f'{closed_after:.1f}'} s | |")
        if stalled:
            time.sleep(12)
            rows.append(f"| idle, 12 s after the floods | | | RSS of the server {tree_rss_mb(gateway.pid):.0f} MB |")

        if not args.fair_share_only:
            rows += memory_rows(serve, args.quick)
        rows += fair_share_rows(serve, 1000)
    finally:
        for process in running:
            process.terminate()
            process.wait(timeout=60)

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    table = "\n".join([f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores ({cpu}); the Procfile's "
                       "gunicorn.conf.py (gevent), WEB_CONCURRENCY=2, no nginx.", "",
                       "| scenario | result | | memory |", "|---|---|---|---|", *rows])
    print(table)
    (results / "resources.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
