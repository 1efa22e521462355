"""CPU per request and latency of two gateway checkouts, interleaved (run by hand, not in CI;
docs/benchmarks.md has the results).

    .venv/bin/python bench/before_after.py --before DIR [--rounds 7] [--requests 200]

`--before DIR` is another checkout (e.g. `git archive <commit> | tar -x -C DIR`); "after" is this
one. Starts the emulator (as bench/run.py does), the floor (bench/floor_app.py) and both gateways
with the production gunicorn.conf.py (two workers, SQLite), each on its own database and without
worker recycling (GUNICORN_MAX_REQUESTS=0: a retired worker's CPU would leave the count). Then, per
round and in turn for direct, the floor, before and after: `--requests` n=1 generations of the
1.4 MB noise image at concurrency 1 (p50, and the CPU of the server's process tree per request)
and at concurrency 8 (requests/s). Prints the medians over the rounds with their ranges. The
machine's other load moves every number; only the same round's figures compare well, so the
order of the variants rotates from round to round.
"""
import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from failover import start_in
from run import CLIENT_KEY, MODEL, ROOT, UPSTREAM_KEY, free_port, hey, start, tree_cpu_seconds, wait_for

MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(4 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(32 * 2**20)}


def gateway(source, emulator_url, work):
    port = free_port()
    process = start_in(source, [str(Path(sys.executable).parent / "gunicorn"), "app:app",
                                "--config", str(source / "gunicorn.conf.py"), "--chdir", str(source),
                                "--bind", f"127.0.0.1:{port}"],
                       {"GATEWAY_API_KEYS": CLIENT_KEY, "GEMINI_API_KEY": UPSTREAM_KEY, "GEMINI_BASE_URL": emulator_url,
                        "PORT": str(port), "GUNICORN_MAX_REQUESTS": "0",
                        "GATEWAY_DATABASE_URL": f"sqlite:///{work / f'gateway-{port}.db'}"},
                       open(work / f"gateway-{port}.log", "w"))
    return process, f"http://127.0.0.1:{port}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the checkout to compare this one with")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=200, help="per variant, round and concurrency (x8)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="before-after-"))
    bin_dir = Path(sys.executable).parent
    emulator_port, floor_port = free_port(), free_port()
    emulator = start([str(bin_dir / "gunicorn"), "emulator:create_emulator()", "--bind", f"127.0.0.1:{emulator_port}",
                      "--config", "/dev/null", "-k", "gthread", "--threads", "64", "--workers", "1",
                      "--no-control-socket"], MALLOC, open(work / "emulator.log", "w"))
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    upstream_url = f"{emulator_url}/v1beta/models/{MODEL}:generateContent"
    floor = start([str(bin_dir / "gunicorn"), "floor_app:app", "--pythonpath", "bench", "--config", "/dev/null",
                   "--bind", f"127.0.0.1:{floor_port}", "-k", "gevent", "--workers", "2", "--no-control-socket"],
                  {"UPSTREAM_URL": upstream_url, "UPSTREAM_KEY": UPSTREAM_KEY, **MALLOC}, open(work / "floor.log", "w"))
    before, before_url = gateway(args.before.resolve(), emulator_url, work)
    after, after_url = gateway(ROOT, emulator_url, work)
    prompt = "a noisy benchmark picture [emulator: noise=1]"
    gateway_call = ({"prompt": prompt, "model": MODEL}, {"Authorization": f"Bearer {CLIENT_KEY}"})
    variants = {  # name: (process, url, body, headers)
        "direct": (emulator, upstream_url, {"contents": [{"role": "user", "parts": [{"text": prompt}]}],
                                            "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}},
                   {"x-goog-api-key": UPSTREAM_KEY}),
        "floor": (floor, f"http://127.0.0.1:{floor_port}/v1/images/generations", gateway_call[0], {}),
        "before": (before, before_url + "/v1/images/generations", *gateway_call),
        "after": (after, after_url + "/v1/images/generations", *gateway_call),
    }
    results = {name: {"cpu": [], "p50": [], "rps8": [], "cpu8": []} for name in variants}
    try:
        wait_for(emulator_url + "/")
        for url in (f"http://127.0.0.1:{floor_port}", before_url, after_url):
            wait_for(url + "/health")
        for _, url, body, headers in variants.values():
            hey(url, body, headers, 40, 2)  # warm up: the emulator's cache, connections
        names = list(variants)
        for round_ in range(args.rounds):
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                process, url, body, headers = variants[name]
                for concurrency in (1, 8):
                    count = args.requests * (1 if concurrency == 1 else 2)
                    cpu_before = tree_cpu_seconds(process.pid)
                    result = hey(url, body, headers, count, concurrency)
                    cpu = (tree_cpu_seconds(process.pid) - cpu_before) / count * 1000
                    assert result["errors"] == 0, (name, result)
                    if concurrency == 1:
                        results[name]["cpu"].append(cpu)
                        results[name]["p50"].append(result["p50"])
                    else:
                        results[name]["rps8"].append(result["rps"])
                        results[name]["cpu8"].append(cpu)
            print(f"round {round_ + 1}: " + "; ".join(
                f"{name} {r['cpu'][-1]:.2f} ms CPU, p50 {r['p50'][-1]:.1f} ms, c=8 {r['rps8'][-1]:.0f}/s"
                for name, r in results.items()), flush=True)
    finally:
        for process in (after, before, floor, emulator):
            process.terminate()
            process.wait(timeout=60)

    def spread(values, digits):
        return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f} to {max(values):.{digits}f})"

    print(f"\n{args.rounds} rounds, medians (range); after - before, the same round's, as the last row\n")
    print("| variant | CPU per request, c=1 | p50, c=1 | CPU per request, c=8 | throughput, c=8 |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {spread(r['cpu'], 2)} ms | {spread(r['p50'], 1)} ms | {spread(r['cpu8'], 2)} ms "
              f"| {spread(r['rps8'], 0)} req/s |")
    change = {measure: [a - b for a, b in zip(results["after"][measure], results["before"][measure], strict=True)]
              for measure in ("cpu", "p50", "cpu8", "rps8")}
    print(f"| after - before | {spread(change['cpu'], 2)} ms | {spread(change['p50'], 1)} ms "
          f"| {spread(change['cpu8'], 2)} ms | {spread(change['rps8'], 0)} req/s |")


if __name__ == "__main__":
    main()
