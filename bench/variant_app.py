"""The gateway's app for bench/patches.py, its upstream call made requests' public way
(BENCH_UPSTREAM_CALL=public, the product's) or through the adapter (`adapter`,
bench/speedups.py's post_through_the_adapter)."""
import os

from speedups import post_through_the_adapter

from gateway import create_app
from gateway.providers import transport

if os.environ.get("BENCH_UPSTREAM_CALL", "public") == "adapter":
    transport.Session.post_json = post_through_the_adapter
app = create_app()
