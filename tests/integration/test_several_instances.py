"""Three gateway instances (gunicorn, two workers each) sharing one PostgreSQL database behind a
real nginx doing round robin, as docs/running-several-instances.md describes: limits and budgets
are exact across them, a key created or revoked on one holds on every one within a second (at
once with Redis), a killed instance's lease and reservation expire, and an instance drained on
SIGTERM fails no request."""
import collections
import errno
import os
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests
from sqlalchemy import create_engine, select, text, update

from gateway.store import engine_url, leases, reservations
from tests.conftest import REDIS_URL
from tests.integration.conftest import (
    AUTH,
    PRO_1K,
    burst,
    emulator_requests,
    free_port,
    metric,
    new_key,
    ok,
    refused,
    run_nginx,
    start_gateway,
    stop,
    until,
    wait_until_up,
    write_nginx_conf,
)
from tests.support import ADMIN, ADMIN_KEY

pytestmark = pytest.mark.integration

INSTANCES = 3
UPSTREAM_TIMEOUT = 5  # seconds, so a lease or reservation lives UPSTREAM_TIMEOUT + 60 s
HELD_SECONDS = UPSTREAM_TIMEOUT + 60
DRAIN = 1.0  # GATEWAY_DRAIN_SECONDS

# Where the instances keep their shared rate and concurrency counters: each entry is the
# environment added to every instance, and every test runs once per entry (leases are read
# where GATEWAY_REDIS_URL says); Redis under a key prefix of this run's own.
SHARED_COUNTERS = [pytest.param({}, id="database"), pytest.param(
    {"GATEWAY_REDIS_URL": REDIS_URL, "GATEWAY_REDIS_PREFIX": f"gateway-test-{uuid.uuid4().hex[:8]}"}, id="redis")]


class Instance:
    """One gateway instance on a port of its own, which it keeps when started again, so nginx's
    list of upstreams stays right."""

    def __init__(self, number, emulator_url, logs, env):
        self.number, self.emulator_url, self.logs, self.env = number, emulator_url, logs, env
        self.port, self.process, self.starts = free_port(), None, 0
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self):
        self.starts += 1
        self.log = self.logs / f"instance-{self.number}-{self.starts}.log"
        self.process, _ = start_gateway(self.emulator_url, self.log, port=self.port, **self.env)

    def served_after_sigterm(self):
        """Image requests it answered after it was sent SIGTERM (its request log lines after gunicorn's)."""
        _, _, after = self.log.read_text().partition('"Handling signal: term"')
        return after.count('"path": "/v1/images/generations"')

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def kill(self):
        """SIGKILL to the gunicorn master and to each of its workers, as when the host dies: no
        handler, no shutdown, no settlement runs."""
        pids = [self.process.pid, *children(self.process.pid)]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        assert until(lambda: not any(alive(pid) for pid in pids), 10), "a worker outlived SIGKILL"


def children(pid):
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def alive(pid):
    """The process exists and is not a zombie (one holds no socket and no connection)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def round_robin(port, instances, down=()):
    """nginx's http lines: round robin over `instances` on `port`, those in `down` marked down."""
    servers = "".join(f"        server 127.0.0.1:{instance.port}{' down' if instance in down else ''};\n"
                      for instance in instances)
    return f"""    upstream gateways {{
{servers}        keepalive 64;
        keepalive_timeout 5s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Another instance only when this one could not be reached (refused, or no connection
            # in time); a POST already sent is never sent twice (no non_idempotent).
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries {len(instances)};
            proxy_connect_timeout 2s;
            proxy_read_timeout 60s;
        }}
    }}"""


def start_round_robin(instances, work):
    """nginx on a free port, round robin over the instances with deploy/nginx.conf's upstream
    settings; returns (process, url, port)."""
    port = free_port()
    process, log_path = run_nginx(work, round_robin(port, instances))
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url + "/health/ready", process, log_path)
    return process, url, port


class HeldInDatabase:
    """A key's leases or reservations in their table, on the database's clock (which the
    gateways count them in)."""

    def __init__(self, database, table):
        self.database, self.table = database, table

    def now(self):
        with self.database.connect() as conn:
            return float(conn.scalar(text("SELECT extract(epoch from clock_timestamp())")))

    def expiries(self, name):
        with self.database.connect() as conn:
            return conn.scalars(select(self.table.c.expires_at).where(self.table.c.key_name == name)).all()

    def fast_forward(self, name, seconds):
        """What `seconds` passing does to the key's rows: their expiry comes that much closer.
        Nothing else changes."""
        with self.database.begin() as conn:
            conn.execute(update(self.table).where(self.table.c.key_name == name)
                         .values(expires_at=self.table.c.expires_at - seconds))


class LeasesInRedis:
    """A key's concurrency leases in Redis (a sorted set scored by expiry), on Redis's clock."""

    def __init__(self, url, prefix):
        self.redis, self.prefix = redis.Redis.from_url(url), prefix

    def key(self, name):
        return f"{self.prefix}:{{{name}}}:leases"

    def now(self):
        seconds, microseconds = self.redis.time()
        return seconds + microseconds / 1e6

    def expiries(self, name):
        return [score for _, score in self.redis.zrange(self.key(name), 0, -1, withscores=True)]

    def fast_forward(self, name, seconds):
        for lease, score in self.redis.zrange(self.key(name), 0, -1, withscores=True):
            self.redis.zadd(self.key(name), {lease: score - seconds})


class Cluster:
    """The instances, nginx in front of them, and where they hold leases and reservations (read
    for those a dead instance left)."""

    def __init__(self, instances, nginx, database_url, redis_url=None, redis_prefix="gateway"):
        self.instances, self.down = instances, ()
        self.nginx, self.nginx_url, self.nginx_port, self.nginx_work = nginx
        self.nginx_errors = self.nginx_work / "error.log"
        self.database = create_engine(engine_url(database_url))
        self.leases = LeasesInRedis(redis_url, redis_prefix) if redis_url else HeldInDatabase(self.database, leases)
        self.reservations = HeldInDatabase(self.database, reservations)

    def route(self, down=()):
        """nginx sends nothing to the instances in `down` from now on (a graceful reload: requests
        in flight finish), as a load balancer that probes /health/ready does once it sees 503."""
        if tuple(down) != self.down:
            write_nginx_conf(self.nginx_work, round_robin(self.nginx_port, self.instances, down))
            self.nginx.send_signal(signal.SIGHUP)
            self.down = tuple(down)
            time.sleep(0.5)  # the new nginx worker takes over

    def close(self):
        self.database.dispose()
        if isinstance(self.leases, LeasesInRedis):
            self.leases.redis.close()


@pytest.fixture(scope="module", params=SHARED_COUNTERS)
def cluster(request, emulator_url, postgres_database, tmp_path_factory):
    env = {"GATEWAY_DATABASE_URL": postgres_database, "GATEWAY_ADMIN_KEY": ADMIN_KEY, "WEB_CONCURRENCY": "2",
           "UPSTREAM_TIMEOUT": str(UPSTREAM_TIMEOUT), "GATEWAY_DRAIN_SECONDS": str(DRAIN), **request.param}
    logs = tmp_path_factory.mktemp("instances")
    instances = [Instance(number, emulator_url, logs, env) for number in range(INSTANCES)]
    nginx = None
    try:
        with ThreadPoolExecutor(INSTANCES) as pool:
            list(pool.map(Instance.start, instances))
        work = tmp_path_factory.mktemp("nginx")
        nginx, url, port = start_round_robin(instances, work)
        cluster = Cluster(instances, (nginx, url, port, work), postgres_database, env.get("GATEWAY_REDIS_URL"),
                          env.get("GATEWAY_REDIS_PREFIX", "gateway"))
        yield cluster
        cluster.close()
    finally:
        if nginx is not None:
            stop(nginx)
        running = [instance.process for instance in instances if instance.running]
        with ThreadPoolExecutor(INSTANCES) as pool:  # each drains for DRAIN seconds: at once
            list(pool.map(stop, running))


@pytest.fixture(autouse=True)
def every_instance_running(cluster):
    """An instance that an earlier test killed or stopped is started again, and nginx sends to
    every instance."""
    for instance in cluster.instances:
        if not instance.running:
            instance.start()
    cluster.route(down=())


def generate_with(url, key, prompt="several instances"):
    return requests.post(f"{url}/v1/images/generations", json={"prompt": prompt},
                         headers={"Authorization": f"Bearer {key}"}, timeout=60)


def own_usage(url, key):
    return requests.get(f"{url}/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10)


def reached_emulator(emulator_url, prompt, since):
    return len([r for r in emulator_requests(emulator_url, since) if prompt in r.get("prompt", "")])


def served_by_each(cluster, client):
    """How many requests of `client` each instance answered (its own /metrics)."""
    return [metric(requests.get(instance.url + "/metrics", timeout=5).text, "gateway_requests_total", client=client)
            for instance in cluster.instances]


def test_a_burst_spread_over_every_instance_gets_exactly_the_rpm(cluster, emulator_url):
    name, key = new_key(cluster.nginx_url, rpm=5)
    prompt, since = f"rpm burst {uuid.uuid4()}", time.time()
    statuses = sorted(response.status_code for response in burst(cluster.nginx_url, key, 20, prompt))
    assert statuses == [200] * 5 + [429] * 15
    assert reached_emulator(emulator_url, prompt, since) == 5
    served = served_by_each(cluster, name)
    assert sum(served) == 20 and all(served), served  # every instance answered part of the burst


def test_a_burst_spread_over_every_instance_never_spends_past_the_budget(cluster, emulator_url):
    name, key = new_key(cluster.nginx_url, budget_usd=0.5)  # three 1K images of gemini-3-pro-image
    prompt, since = f"budget burst {uuid.uuid4()}", time.time()
    statuses = sorted(response.status_code for response in burst(cluster.nginx_url, key, 12, prompt))
    assert statuses == [200] * 3 + [429] * 9
    assert reached_emulator(emulator_url, prompt, since) == 3
    assert all(served_by_each(cluster, name))

    def ledger():  # rows are written once each response has been sent
        return requests.get(f"{cluster.instances[2].url}/v1/admin/usage?key={name}", headers=ADMIN,
                            timeout=10).json()["data"]

    assert until(lambda: [(row["requests"], row["images"]) for row in ledger()] == [(3, 3)], 2), ledger()
    assert 3 * PRO_1K <= ledger()[0]["cost_usd"] <= 0.5


def test_a_key_created_on_one_instance_works_on_the_others_at_once(cluster):
    creator, *others = cluster.instances
    name, key = new_key(creator.url)
    for instance in others:
        assert own_usage(instance.url, key).json()["name"] == name
        ok(generate_with(instance.url, key))


def test_a_key_revoked_on_one_instance_is_refused_by_every_instance_within_a_second_or_at_once_with_redis(
        cluster):
    name, key = new_key(cluster.instances[0].url)
    for instance in cluster.instances:  # on both workers of each, most likely: the key is in their caches
        for _ in range(6):
            assert own_usage(instance.url, key).status_code == 200
    revoking = time.monotonic()
    response = requests.delete(f"{cluster.instances[1].url}/v1/admin/keys/{name}", headers=ADMIN, timeout=10)
    assert response.json()["revoked"] is True
    if isinstance(cluster.leases, LeasesInRedis):  # every worker heard of it before its next request
        for instance in cluster.instances:
            for _ in range(6):
                refused(own_usage(instance.url, key), 401, "revoked")

    def seconds_until_refused(instance):
        while own_usage(instance.url, key).status_code == 200 and time.monotonic() - revoking < 5:
            time.sleep(0.02)
        return time.monotonic() - revoking

    with ThreadPoolExecutor(INSTANCES) as pool:
        waits = list(pool.map(seconds_until_refused, cluster.instances))
    assert max(waits) < 1.0, waits
    time.sleep(max(0.0, revoking + 1.0 - time.monotonic()))
    for instance in cluster.instances:  # every worker, a second after the revocation began
        for _ in range(6):
            refused(own_usage(instance.url, key), 401, "revoked")


def test_a_killed_instance_holds_its_lease_and_reservation_only_until_they_expire(cluster):
    """Nothing shortens the UPSTREAM_TIMEOUT + 60 s a lease and a reservation live, so the test
    checks their expiry where they are held (on that store's clock) and then moves only that
    expiry, by exactly those seconds, instead of waiting them out."""
    name, key = new_key(cluster.nginx_url, max_concurrent=1, budget_usd=0.25)  # room for one 1K pro image
    doomed, survivor = cluster.instances[2], cluster.instances[0]
    held = (cluster.leases, cluster.reservations)
    before = [store.now() for store in held]
    threading.Thread(target=lambda: requests_ignoring_the_death(doomed.url, key), daemon=True).start()
    assert until(lambda: all(store.expiries(name) for store in held), 4), "the slow request was not admitted"
    taken = [store.now() for store in held]
    doomed.kill()

    for store, earliest, latest in zip(held, before, taken, strict=True):
        (expires,) = store.expiries(name)
        assert earliest + HELD_SECONDS <= expires <= latest + HELD_SECONDS, (store, earliest, expires, latest)
    refused(generate_with(survivor.url, key), 429, "1 image calls in flight (1 running)")
    cluster.leases.fast_forward(name, HELD_SECONDS)
    refused(generate_with(survivor.url, key), 429, "budget of $0.25 is spent", "held by requests in flight")
    cluster.reservations.fast_forward(name, HELD_SECONDS)
    ok(generate_with(survivor.url, key))
    assert until(lambda: not any(store.expiries(name) for store in held), 2), \
        "the expired lease and reservation were not deleted when the next request was settled"


def refusing(port):
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED


def requests_ignoring_the_death(url, key):
    """A slow request to an instance that is killed while it waits."""
    try:
        generate_with(url, key, "held by an instance about to die [emulator: delay=30]")
    except requests.ConnectionError:
        pass


def test_an_instance_drained_on_sigterm_fails_no_request_through_nginx(cluster):
    """Open-source nginx does not probe /health/ready, so the test does what a load balancer that
    probes does: it sees the 503 half a second later and stops sending to the instance (nginx
    reloaded with it marked down) while the drain still serves what arrives."""
    leaving = cluster.instances[1]
    outcomes, done = collections.Counter(), threading.Event()

    def client():
        while not done.is_set():
            try:
                response = requests.post(cluster.nginx_url + "/v1/images/generations", headers=AUTH, timeout=30,
                                         json={"prompt": "through a drain"})
                outcomes[response.status_code] += 1
            except requests.RequestException as error:
                outcomes[type(error).__name__] += 1

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    time.sleep(0.5)
    leaving.process.send_signal(signal.SIGTERM)
    assert until(lambda: requests.get(leaving.url + "/health/ready", timeout=5).status_code == 503, 1)
    time.sleep(DRAIN / 2)  # the load balancer's probe interval: requests still arrive, and are served
    cluster.route(down=[leaving])
    assert until(lambda: refusing(leaving.port), DRAIN + 5), "it did not stop accepting after the drain"
    time.sleep(0.5)
    done.set()
    for thread in clients:
        thread.join(timeout=30)

    assert leaving.process.wait(timeout=UPSTREAM_TIMEOUT + 30) == 0
    assert set(outcomes) == {200} and outcomes[200] > 20, outcomes
    assert leaving.served_after_sigterm() > 0  # it kept serving through the drain


def test_nginx_sends_a_request_refused_by_a_stopped_instance_to_another(cluster):
    """An instance that is gone without nginx being told: the connection is refused before any
    byte of the request was sent, so nginx sends even a POST to the next instance."""
    gone = cluster.instances[1]
    stop(gone.process)
    for _ in range(2 * INSTANCES):
        ok(requests.post(cluster.nginx_url + "/v1/images/generations", headers=AUTH, timeout=30,
                         json={"prompt": "past a stopped instance"}))
    errors = cluster.nginx_errors.read_text()
    assert 'connect() failed (111: Connection refused) while connecting to upstream' in errors
    assert f"127.0.0.1:{gone.port}/v1/images/generations" in errors, errors
