"""What sharing the circuit breakers and the managed keys' changes through Redis costs (run by hand,
not in CI; docs/benchmarks.md has the results).

    .venv/bin/python bench/shared_state.py [--redis redis://127.0.0.1:6379/0] [--rounds 5]

In this process, patched by gevent as a gunicorn worker is, with the production Redis client
(gateway/shared.py), under a key prefix of its own that it deletes at the end:
  1. a circuit breaker's steps for one upstream call that succeeds, on a chain of two providers
     (would_admit for the chain, admit, would_admit for the next, succeeded), with a LocalBreaker
     and with a RedisBreaker;
  2. what a managed-key lookup adds to hear of changes: nothing without Redis (KeyChanges), a
     look at the subscription's socket with it (RedisKeyChanges).
Prints the median over the rounds, in microseconds.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402 - after gevent's patching, as in a gunicorn worker
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.breaker import LocalBreaker, RedisBreaker  # noqa: E402
from gateway.config import Settings  # noqa: E402
from gateway.keys import KeyChanges, RedisKeyChanges  # noqa: E402
from gateway.shared import shared_redis  # noqa: E402


def one_call(breaker):
    breaker.would_admit()
    breaker.admit()
    breaker.would_admit()
    breaker.succeeded()


def microseconds(step, rounds, count):
    """The median over `rounds` of the time of one `step()`, each round `count` of them."""
    step()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(count):
            step()
        times.append((time.perf_counter() - started) / count * 1e6)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    client, prefix = shared_redis(Settings(redis_url=args.redis)), f"bench-{uuid.uuid4().hex[:8]}"
    try:
        for name, breaker in (("LocalBreaker", LocalBreaker("gemini", 3, 30)),
                              ("RedisBreaker", RedisBreaker("gemini", 3, 30, client, prefix, 180))):
            took = microseconds(lambda b=breaker: one_call(b), args.rounds, 2000)
            print(f"breaker steps of one call, {name}: {took:.1f} us")
        for name, changes in (("without Redis", KeyChanges()), ("with Redis", RedisKeyChanges(client, prefix))):
            took = microseconds(changes.heard, args.rounds, 20000)
            print(f"hearing of key changes per lookup, {name}: {took:.2f} us")
    finally:
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)


if __name__ == "__main__":
    main()
