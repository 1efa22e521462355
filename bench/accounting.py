"""What keys, limits, budgets and the ledger cost per request, on SQLite and on PostgreSQL (run by
hand, not in CI; docs/benchmarks.md has the results).

    .venv/bin/python bench/accounting.py [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

Starts the offline emulator (gunicorn, many threads) and, per store, the gateway with the production
gunicorn.conf.py (two workers), then:
  1. added p50 latency at concurrency 1 and 8: a managed key with rpm, ipm, max_concurrent and a
     budget (key lookup, both windows, a lease, a reservation, the settlement and the ledger row)
     against a static key without a policy, rounds interleaved, the median of the rounds;
  2. 200 concurrent requests against a $1.00 budget: what was settled, and that every refused
     request never reached the emulator;
  3. 1,000 concurrent requests from one key without a policy (2 s upstream): errors;
  4. the counters in Redis (GATEWAY_REDIS_URL), and with Redis down (a closed port): the added
     p50 of a key with rpm, ipm and max_concurrent, and errors.
"""
import argparse
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from run import ROOT, free_port, start, wait_for
from sqlalchemy import create_engine, text

CLIENT_KEY, UPSTREAM_KEY, ADMIN_KEY = "bench-client-key", "bench-upstream-key", "bench-admin-key"
MODEL, PROMPT = "gemini-2.5-flash-image", "a benchmark picture"


def timed(url, key, body):
    started = time.perf_counter()
    response = requests.post(url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    return time.perf_counter() - started, response.status_code


def p50_ms(url, key, count, concurrency, body):
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda _: timed(url, key, body), range(count)))
    failed = [status for _, status in results if status != 200]
    assert not failed, f"{len(failed)} of {count} failed: {failed[:5]}"
    return statistics.median(seconds for seconds, _ in results) * 1000


def new_key(gateway_url, **policy):
    response = requests.post(f"{gateway_url}/v1/admin/keys", json={"name": f"bench-{uuid.uuid4().hex[:8]}", **policy},
                             headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    response.raise_for_status()
    return response.json()["key"]


LIMITS = {"rpm": 10_000_000, "ipm": 10_000_000, "max_concurrent": 10_000}


def added_latency(gateway_url, rounds, count, policy):
    url = gateway_url + "/v1/images/generations"
    body = {"prompt": PROMPT, "model": MODEL}
    limited = new_key(gateway_url, **policy)
    for key in (CLIENT_KEY, limited):  # warm both paths (connections, caches)
        p50_ms(url, key, 20, 2, body)
    rows = []
    for concurrency in (1, 8):
        plain, accounted = [], []
        for _ in range(rounds):
            plain.append(p50_ms(url, CLIENT_KEY, count, concurrency, body))
            accounted.append(p50_ms(url, limited, count, concurrency, body))
        rows.append((concurrency, statistics.median(plain), statistics.median(accounted)))
    return rows


def budget_burst(gateway_url, emulator_url):
    key = new_key(gateway_url, budget_usd=1.0)
    prompt = f"a budget burst {uuid.uuid4()}"
    since = time.time()
    body = {"prompt": prompt, "model": "gemini-3-pro-image"}
    with ThreadPoolExecutor(200) as pool:
        statuses = list(pool.map(lambda _: timed(gateway_url + "/v1/images/generations", key, body)[1], range(200)))
    spent = requests.get(f"{gateway_url}/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=30).json()
    calls = [r for r in requests.get(emulator_url + "/emulator/requests", timeout=30).json()
             if r["at"] >= since and prompt in r.get("prompt", "")]
    return statuses.count(200), statuses.count(429), len(calls), spent["spent_usd"]


def flood(gateway_url, count):
    body = {"prompt": "a slow picture [emulator: delay=2]", "model": MODEL}
    started = time.monotonic()
    with ThreadPoolExecutor(count) as pool:
        statuses = list(pool.map(lambda _: timed(gateway_url + "/v1/images/generations", CLIENT_KEY, body)[1],
                                 range(count)))
    return len(statuses) - statuses.count(200), time.monotonic() - started


def run_store(label, database_url, emulator_url, log_dir, args, redis_url="", budget=True):
    port = free_port()
    gateway = start([str(Path(sys.executable).parent / "gunicorn"), "app:app", "--config", "gunicorn.conf.py",
                     "--bind", f"127.0.0.1:{port}", "--backlog", "4096"],
                    {"GATEWAY_API_KEYS": CLIENT_KEY, "GATEWAY_ADMIN_KEY": ADMIN_KEY, "GEMINI_API_KEY": UPSTREAM_KEY,
                     "GEMINI_BASE_URL": emulator_url, "GATEWAY_DATABASE_URL": database_url, "PORT": str(port),
                     "GATEWAY_REDIS_URL": redis_url, "GATEWAY_REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}"},
                    open(log_dir / f"accounting-{label.replace(' ', '-')}.log", "w"))
    gateway_url = f"http://127.0.0.1:{port}"
    policy, what = (({**LIMITS, "budget_usd": 1_000_000}, "rpm, ipm, max_concurrent and a budget") if budget
                    else (LIMITS, "rpm, ipm and max_concurrent"))
    try:
        wait_for(gateway_url + "/health")
        for concurrency, plain, accounted in added_latency(gateway_url, args.rounds, args.count, policy):
            print(f"| {label} | c={concurrency} | p50 {plain:.1f} ms without a policy | {accounted:.1f} ms with "
                  f"{what} | added {accounted - plain:+.2f} ms |", flush=True)
        if not budget:
            return
        made, refused, calls, spent = budget_burst(gateway_url, emulator_url)
        print(f"| {label} | 200 concurrent, $1.00 budget | {made} made, {refused} refused | emulator calls {calls} | "
              f"settled ${spent:.6f} |", flush=True)
        if args.flood and label == "SQLite":
            errors, wall = flood(gateway_url, args.flood)
            print(f"| {label} | {args.flood} concurrent, one key, no policy, 2 s upstream | errors {errors} | "
                  f"wall {wall:.1f} s |", flush=True)
    finally:
        gateway.terminate()
        gateway.wait(60)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=200, help="requests per measurement")
    parser.add_argument("--flood", type=int, default=1000, help="concurrent requests of one key (0: skip)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    log_dir = ROOT / "bench" / "results"
    log_dir.mkdir(exist_ok=True)
    emulator_port = free_port()
    emulator = start([str(Path(sys.executable).parent / "gunicorn"), "emulator:create_emulator()", "--bind",
                      f"127.0.0.1:{emulator_port}", "--config", "/dev/null", "-k", "gthread", "--threads", "1200",
                      "--workers", "1", "--no-control-socket", "--timeout", "120", "--backlog", "4096"],
                     {"EMULATOR_API_KEY": UPSTREAM_KEY}, open(log_dir / "accounting-emulator.log", "w"))
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    database = f"gateway_bench_{uuid.uuid4().hex[:8]}"
    server = create_engine(args.postgres.replace("postgresql://", "postgresql+psycopg://"),
                           isolation_level="AUTOCOMMIT")
    try:
        wait_for(emulator_url + "/")
        print(f"| store | scenario | ... | ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}) |")
        run_store("SQLite", f"sqlite:///{log_dir / f'accounting-{uuid.uuid4().hex[:8]}.db'}", emulator_url, log_dir,
                  args)
        with server.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{database}"'))
        run_store("PostgreSQL", args.postgres.rsplit("/", 1)[0] + f"/{database}", emulator_url, log_dir, args)
        sqlite = f"sqlite:///{log_dir / f'accounting-{uuid.uuid4().hex[:8]}.db'}"
        run_store("SQLite + Redis", sqlite, emulator_url, log_dir, args, args.redis, budget=False)
        run_store("SQLite + Redis down", sqlite, emulator_url, log_dir, args, "redis://127.0.0.1:9/0", budget=False)
    finally:
        emulator.terminate()
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
