"""Measure again what each speed-up that reaches into a library's internals buys: gateway CPU
per image with and without it, through gunicorn against the offline emulator (run by hand).

    .venv/bin/python bench/patches.py            # 7 interleaved rounds
    .venv/bin/python bench/patches.py --rounds 3 --count 60

Starts the emulator and one gateway per variant (the production gunicorn.conf.py, each speed-up
swapped in or out on the command line: bench/variant_app.py, bench/speedups.py), then in each
round drives every variant in turn, in a rotating order, with `hey` at concurrency 1 (n=1
generations of the 1.4 MB noise PNG and of the emulator's small PNG), and reads the CPU its
process tree spent. Prints the median and the spread (min-max) over the rounds, and each
speed-up's gain: how much less CPU per image the gateway spends with it than without it.

Then, since a gain of a few per cent is within the rounds' spread on a shared machine, it
measures what each speed-up saves by itself, in this process, with nothing else around it: the
CPU of one upstream call (the small PNG's answer, read to its end) made requests' public way and
through the adapter, and the CPU of one call of gunicorn's access log under the gateway's logging
config, each read against the gateway's median CPU per image.
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from run import CLIENT_KEY, MODEL, ROOT, UPSTREAM_KEY, free_port, hey, start, tree_cpu_seconds, wait_for

BENCH = Path(__file__).resolve().parent
VARIANTS = {  # name: (how the upstream call is made, gunicorn's logger class)
    "every speed-up": ("adapter", "speedups.QuietAccessLogger"),
    "without the adapter shortcut (Session.post)": ("public", "speedups.QuietAccessLogger"),
    "without the quiet access logger": ("adapter", "gunicorn.glogging.Logger"),
    "without either (public APIs only)": ("public", "gunicorn.glogging.Logger"),
}
IMAGES = {"1.4 MB PNG": "a noisy benchmark picture [emulator: noise=1]", "small PNG": "a small benchmark picture"}


def start_gateway(name, upstream_call, logger_class, emulator_port, logs):
    port = free_port()
    process = start([str(Path(sys.executable).parent / "gunicorn"), "variant_app:app", "--config", "gunicorn.conf.py",
                     "--bind", f"127.0.0.1:{port}", "--logger-class", logger_class],
                    {"GATEWAY_API_KEYS": CLIENT_KEY, "GEMINI_API_KEY": UPSTREAM_KEY, "PORT": str(port),
                     "GEMINI_BASE_URL": f"http://127.0.0.1:{emulator_port}", "BENCH_UPSTREAM_CALL": upstream_call,
                     "PYTHONPATH": str(BENCH), "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="bench-metrics-")},
                    open(logs / f"patches-{len(os.listdir(logs))}.log", "w"))
    return process, f"http://127.0.0.1:{port}"


def cpu_per_image(process, url, prompt, count):
    """Milliseconds of CPU the gateway's processes spend per n=1 generation at concurrency 1."""
    before = tree_cpu_seconds(process.pid)
    result = hey(url + "/v1/images/generations", {"prompt": prompt, "model": MODEL},
                 {"Authorization": f"Bearer {CLIENT_KEY}"}, count, 1)
    assert result["errors"] == 0, result
    return (tree_cpu_seconds(process.pid) - before) / count * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--count", type=int, default=120, help="requests per variant, image and round")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="bench-patches-"))
    emulator_port = free_port()
    emulator = start([str(Path(sys.executable).parent / "gunicorn"), "emulator:create_emulator()",
                      "--bind", f"127.0.0.1:{emulator_port}", "--config", "/dev/null", "-k", "gthread",
                      "--threads", "16", "--workers", "1", "--no-control-socket"],
                     {"MALLOC_MMAP_THRESHOLD_": str(4 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(32 * 2**20)},
                     open(logs / "emulator.log", "w"))
    gateways, alone = {}, {}
    try:
        wait_for(f"http://127.0.0.1:{emulator_port}/")
        for name, (upstream_call, logger_class) in VARIANTS.items():
            gateways[name] = start_gateway(name, upstream_call, logger_class, emulator_port, logs)
        for process, url in gateways.values():
            wait_for(url + "/health")
            for prompt in IMAGES.values():  # warm up: pools, caches, the emulator's pictures
                cpu_per_image(process, url, prompt, 20)
        samples = {(name, image): [] for name in VARIANTS for image in IMAGES}
        names = list(VARIANTS)
        for round_ in range(args.rounds):
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                for image, prompt in IMAGES.items():
                    samples[name, image].append(cpu_per_image(*gateways[name], prompt, args.count))
            print(f"round {round_ + 1} of {args.rounds} done", file=sys.stderr)
        alone["upstream call"] = upstream_call_cpu(emulator_port, args.rounds, args.count)
        alone["access log"] = access_log_cpu(args.rounds, 10_000)
    finally:
        for process, _ in gateways.values():
            process.terminate()
            process.wait(timeout=60)
        emulator.terminate()
        emulator.wait(timeout=60)
    report(samples, alone, args)


def upstream_call_cpu(emulator_port, rounds, calls):
    """Microseconds of CPU per upstream call (small answer, read to its end) in this process, by
    the public way and through the adapter: medians of interleaved rounds."""
    sys.path.insert(0, str(ROOT))
    from speedups import post_through_the_adapter

    from gateway.patches.urllib3 import read_available
    from gateway.providers.transport import Session

    url = f"http://127.0.0.1:{emulator_port}/v1beta/models/{MODEL}:generateContent"
    body = json.dumps({"contents": [{"role": "user", "parts": [{"text": IMAGES["small PNG"]}]}],
                       "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}}).encode()
    headers = {"x-goog-api-key": UPSTREAM_KEY, "Accept-Encoding": "identity"}
    session = Session()
    ways = {"public": lambda: session.post_json(url, headers, body, (5, 30)),
            "adapter": lambda: post_through_the_adapter(session, url, headers, body, (5, 30))}
    spent = {way: [] for way in ways}
    for round_ in range(rounds + 1):  # the first round warms up
        for way, post in ways.items():
            started = time.process_time()
            for _ in range(calls):
                with post() as response:
                    while read_available(response, 1 << 20, within=30):
                        pass
            if round_:
                spent[way].append((time.process_time() - started) / calls * 1e6)
    return {way: statistics.median(values) for way, values in spent.items()}


def access_log_cpu(rounds, calls):
    """Microseconds of CPU per call of gunicorn's access log, configured as gunicorn.conf.py does
    (a logging config, no access log handler), for a request like an image generation's."""
    from gunicorn import glogging
    from gunicorn.config import Config

    from gateway.serving import LOG_CONFIG

    config = Config()
    config.set("logconfig_dict", LOG_CONFIG)
    logger = glogging.Logger(config)
    headers = [("HOST", "127.0.0.1:8000"), ("USER-AGENT", "OpenAI/Python 2.8.1"), ("AUTHORIZATION", "Bearer x"),
               ("CONTENT-TYPE", "application/json"), ("CONTENT-LENGTH", "80"), ("ACCEPT", "application/json"),
               ("X-STAINLESS-LANG", "python"), ("CONNECTION", "keep-alive")]
    environ = {f"HTTP_{name.replace('-', '_')}": value for name, value in headers} | {
        "REQUEST_METHOD": "POST", "RAW_URI": "/v1/images/generations", "PATH_INFO": "/v1/images/generations",
        "SERVER_PROTOCOL": "HTTP/1.1", "QUERY_STRING": "", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "50000",
        **{f"wsgi.or.werkzeug.key{n}": n for n in range(20)}}
    resp = SimpleNamespace(status="200 OK", sent=1_900_000, headers=[
        ("Content-Type", "application/json"), ("Content-Length", "1900000"), ("X-Request-Id", "req_x"),
        ("Access-Control-Allow-Origin", "*"), ("Date", "now"), ("Server", "gunicorn")])
    req = SimpleNamespace(headers=headers)
    took = datetime.timedelta(milliseconds=20)
    spent = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(calls):
            logger.access(resp, req, environ, took)
        spent.append((time.process_time() - started) / calls * 1e6)
    return {"gunicorn's access": statistics.median(spent)}


def report(samples, alone, args):
    print(f"{args.rounds} interleaved rounds of {args.count} n=1 generations at concurrency 1 per variant "
          f"and image; gateway CPU per image, median (min-max)\n")
    print("| variant | " + " | ".join(IMAGES) + " |")
    print("|---|" + "---|" * len(IMAGES))
    median = {key: statistics.median(values) for key, values in samples.items()}
    for name in VARIANTS:
        cells = [f"{median[name, image]:.2f} ms ({min(samples[name, image]):.2f}-{max(samples[name, image]):.2f})"
                 for image in IMAGES]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nGain of each speed-up (CPU saved per image, against the same gateway without it):")
    baseline = "every speed-up"
    for name in VARIANTS:
        if name.startswith("without") and "either" not in name:
            gains = [f"{image}: {(median[name, image] - median[baseline, image]) / median[name, image]:+.1%}"
                     for image in IMAGES]
            print(f"- {name.removeprefix('without ')}: " + ", ".join(gains))
    both = "without either (public APIs only)"
    print("- both together: " + ", ".join(
        f"{image}: {(median[both, image] - median[baseline, image]) / median[both, image]:+.1%}" for image in IMAGES))
    public, adapter = alone["upstream call"]["public"], alone["upstream call"]["adapter"]
    access = alone["access log"]["gunicorn's access"]
    print("\nEach by itself, in this process (median of the rounds), against the gateway's median CPU per "
          "image without the speed-ups:")
    print(f"- one upstream call: {public:.0f} µs the public way, {adapter:.0f} µs through the adapter: "
          f"{public - adapter:.0f} µs saved, " + ", ".join(
              f"{(public - adapter) / 1000 / median[both, image]:.1%} of a {image}'s" for image in IMAGES))
    print(f"- gunicorn's access log, built and dropped: {access:.0f} µs per request, " + ", ".join(
        f"{access / 1000 / median[both, image]:.1%} of a {image}'s" for image in IMAGES))


if __name__ == "__main__":
    main()
