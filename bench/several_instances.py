"""Three gateway instances against one, behind nginx (run by hand, not in CI; docs/benchmarks.md
has the results).

    .venv/bin/python bench/several_instances.py [--rounds 5]

Needs `hey` (Debian package hey), nginx and PostgreSQL's server binaries (Debian postgresql).
Starts a throwaway PostgreSQL server of its own on a free port (so the run cannot use up the
connections of a server others share), the emulator (gunicorn, many threads), and the gateway
with the production gunicorn.conf.py and its defaults (two gevent workers), everything on
127.0.0.1 and on the same cores. Then, for one instance and for three behind nginx round robin,
at concurrency 8 and 200 with a 3 s upstream (`[emulator: delay=3]`), each for `rounds` rounds of
3 s: throughput, p50, errors, the gateway's CPU per request, the most connections the
gateways held open to PostgreSQL, and ledger rows that had to wait (gateway_ledger_errors_total).
Prints a Markdown table, and checks that the ledger has a row for every request sent.
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families
from run import free_port, hey, start, tree_cpu_seconds, wait_for
from sqlalchemy import create_engine, text

CLIENT_KEY, UPSTREAM_KEY = "bench-client-key", "bench-upstream-key"
MODEL = "gemini-2.5-flash-image"
BODY = {"prompt": "several instances [emulator: delay=3]", "model": MODEL}
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WARM_UP = 60  # requests before measuring: pools, caches, every worker


class Postgres:
    """A throwaway PostgreSQL cluster in a temporary directory (as scripts/services.sh makes one),
    with room for every connection the gateways may open (6 workers x 50)."""

    def __init__(self, work):
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not binaries:
            sys.exit("PostgreSQL's server is not installed (Debian package postgresql)")
        self.bin, self.data, self.port = Path(binaries[-1]), work / "postgres", free_port()
        work.chmod(0o755)
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        self.data.mkdir()
        if self.as_owner:
            shutil.chown(self.data, "postgres")
        self.pg("initdb", "-D", self.data, "-A", "trust", "-U", "postgres")
        self.pg("pg_ctl", "-D", self.data, "-l", self.data / "log", "-w", "-o",
                f"-h 127.0.0.1 -p {self.port} -k {self.data} -c max_connections=400", "start")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def pg(self, program, *args):
        subprocess.run([*self.as_owner, self.bin / program, *map(str, args)], check=True, stdout=subprocess.DEVNULL)

    def stop(self):
        self.pg("pg_ctl", "-D", self.data, "-m", "fast", "stop")


class PeakConnections:
    """The most client connections PostgreSQL had open, sampled every 100 ms."""

    def __init__(self, url):
        self.engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"), pool_size=1)
        self.peak, self.running = 0, True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self):
        others = text("SELECT count(*) - 1 FROM pg_stat_activity WHERE backend_type = 'client backend'")
        with self.engine.connect() as conn:
            while self.running:
                count = conn.scalar(others)
                self.peak = max(self.peak, count)
                conn.rollback()
                time.sleep(0.1)

    def stop(self):
        self.running = False
        self.thread.join()
        self.engine.dispose()
        return self.peak


def start_gateway(number, emulator_url, database_url, logs):
    port = free_port()
    process = start([str(Path(sys.executable).parent / "gunicorn"), "app:app", "--config", "gunicorn.conf.py",
                     "--bind", f"127.0.0.1:{port}", "--backlog", "4096"],
                    {"GATEWAY_API_KEYS": CLIENT_KEY, "GEMINI_API_KEY": UPSTREAM_KEY, "GEMINI_BASE_URL": emulator_url,
                     "GATEWAY_DATABASE_URL": database_url, "PORT": str(port),
                     "GATEWAY_DRAIN_SECONDS": "0"},  # only so the run stops at once; serving is the same
                    open(logs / f"several-instances-{number}.log", "w"))
    wait_for(f"http://127.0.0.1:{port}/health/ready")
    return process, port


def start_nginx(ports, work):
    """nginx round robin over `ports`, with deploy/nginx.conf's upstream settings, plain HTTP."""
    work.mkdir(exist_ok=True)
    port = free_port()
    servers = "".join(f"        server 127.0.0.1:{p};\n" for p in ports)
    (work / "nginx.conf").write_text(f"""
user root;
daemon off;
worker_processes auto;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    upstream gateways {{
{servers}        keepalive 64;
        keepalive_timeout 5s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        client_max_body_size 50m;
        location / {{
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout;
            proxy_read_timeout 240s;
            proxy_buffers 64 64k;
        }}
    }}
}}
""")
    process = subprocess.Popen([NGINX, "-p", str(work), "-e", str(work / "error.log"), "-c", str(work / "nginx.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_for(f"http://127.0.0.1:{port}/health/ready")
    return process, f"http://127.0.0.1:{port}"


def ledger_errors(ports):
    """Ledger writes that failed and waited in memory, summed over the instances' /metrics."""
    return sum(sample.value for port in ports
               for family in text_string_to_metric_families(requests.get(f"http://127.0.0.1:{port}/metrics",
                                                                         timeout=10).text)
               for sample in family.samples if sample.name == "gateway_ledger_errors_total")


def measure(count, emulator_url, database_url, work, rounds):
    """Rows (concurrency, hey's numbers, CPU ms per request, peak connections, ledger errors) for
    `count` instances."""
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    with ThreadPoolExecutor(count) as pool:
        gateways = list(pool.map(lambda n: start_gateway(n, emulator_url, database_url, logs), range(count)))
    nginx, url = start_nginx([port for _, port in gateways], work / f"nginx-{count}")
    rows = []
    try:
        headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
        target = url + "/v1/images/generations"
        hey(target, {"prompt": "warm up", "model": MODEL}, headers, WARM_UP, 6)  # pools, caches, every worker
        ports = [port for _, port in gateways]
        for concurrency in (8, 200):
            cpu, waited = sum(tree_cpu_seconds(process.pid) for process, _ in gateways), ledger_errors(ports)
            connections = PeakConnections(database_url)
            numbers = hey(target, BODY, headers, concurrency * rounds, concurrency)
            peak = connections.stop()
            cpu = sum(tree_cpu_seconds(process.pid) for process, _ in gateways) - cpu
            rows.append((concurrency, numbers, cpu * 1000 / (concurrency * rounds), peak,
                         ledger_errors(ports) - waited))
    finally:
        nginx.terminate()
        for process, _ in gateways:
            process.terminate()
        for process, _ in [(nginx, None), *gateways]:
            process.wait(60)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="3 s rounds of requests per measurement")
    args = parser.parse_args()
    for tool in ("hey", NGINX):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed")
    work = Path(tempfile.mkdtemp(prefix="several-instances-"))
    postgres = Postgres(work)
    emulator_port = free_port()
    emulator = start([str(Path(sys.executable).parent / "gunicorn"), "emulator:create_emulator()", "--bind",
                      f"127.0.0.1:{emulator_port}", "--config", "/dev/null", "-k", "gthread", "--threads", "1200",
                      "--workers", "1", "--no-control-socket", "--timeout", "120", "--backlog", "4096"],
                     {"EMULATOR_API_KEY": UPSTREAM_KEY}, open(work / "emulator.log", "w"))
    try:
        emulator_url = f"http://127.0.0.1:{emulator_port}"
        wait_for(emulator_url + "/")
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        results = {count: measure(count, emulator_url, postgres.url, work, args.rounds) for count in (1, 3)}
        print(f"\n{os.cpu_count()} cores, {when}\n")
        print("| instances | concurrency | throughput | p50 | errors | gateway CPU per request | "
              "most PostgreSQL connections | ledger writes that waited |")
        print("|---|---|---|---|---|---|---|---|")
        for count, rows in results.items():
            for concurrency, numbers, cpu_ms, peak, waited in rows:
                print(f"| {count} | {concurrency} | {numbers['rps']:.1f} req/s | {numbers['p50']:.0f} ms | "
                      f"{numbers['errors']:.0f} of {concurrency * args.rounds} | {cpu_ms:.1f} ms | {peak} | "
                      f"{waited:.0f} |")
        for (concurrency, one, *_), (_, three, *_) in zip(results[1], results[3], strict=True):
            print(f"\nc={concurrency}: three instances / one = {three['rps'] / one['rps']:.2f}x")
        sent = 2 * (WARM_UP + (8 + 200) * args.rounds)
        with create_engine(postgres.url.replace("postgresql://", "postgresql+psycopg://")).connect() as conn:
            rows = conn.scalar(text("SELECT count(*) FROM ledger"))
        print(f"\nledger rows: {rows} for {sent} requests sent")
    finally:
        emulator.terminate()
        emulator.wait(30)
        postgres.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
