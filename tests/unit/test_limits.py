"""The per-key bound on upstream calls in flight, and the image threads' queue bound."""
import dataclasses
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gateway.errors import GatewayError
from gateway.limits import KeyQuota, image_work


def test_a_key_may_hold_up_to_its_limit():
    quota = KeyQuota()
    with quota.hold("a", 2, limit=3), quota.hold("a", 1, limit=3):
        assert quota.in_flight["a"] == 3
    assert quota.in_flight == {}


def test_a_key_over_its_limit_gets_a_429_with_retry_after_and_other_keys_do_not():
    quota = KeyQuota()
    with quota.hold("a", 3, limit=3):
        with pytest.raises(GatewayError) as refused, quota.hold("a", 1, limit=3):
            pass
        with quota.hold("b", 3, limit=3):
            pass
    assert (refused.value.status, refused.value.headers) == (429, {"Retry-After": "5"})
    assert "3 are running" in refused.value.message and "UPSTREAM_MAX_IN_FLIGHT_PER_KEY" in refused.value.message


def test_a_key_with_nothing_in_flight_may_start_a_request_larger_than_its_limit():
    quota = KeyQuota()
    with quota.hold("a", 10, limit=3):
        assert quota.in_flight["a"] == 10


def test_a_failed_request_gives_its_calls_back():
    quota = KeyQuota()
    with pytest.raises(ValueError), quota.hold("a", 2, limit=3):
        raise ValueError
    assert quota.in_flight == {}


def test_image_work_runs_on_another_thread_and_passes_errors_back(settings):
    assert image_work(settings, threading.get_ident) != threading.get_ident()
    with pytest.raises(ZeroDivisionError):
        image_work(settings, lambda: 1 / 0)


def test_image_work_waits_for_a_thread_up_to_the_queue_timeout_then_503(settings):
    settings = dataclasses.replace(settings, image_workers=1, image_queue_timeout=0.2)
    release, started = threading.Event(), threading.Event()

    def hold():
        started.set()
        release.wait(5)

    holder = threading.Thread(target=image_work, args=(settings, hold))
    holder.start()
    started.wait(5)
    with pytest.raises(GatewayError) as busy:
        image_work(settings, int)
    release.set()
    holder.join()
    assert (busy.value.status, busy.value.headers) == (503, {"Retry-After": "5"})
    assert image_work(settings, int) == 0


def test_the_lock_between_image_threads_is_a_real_one_under_gevent():
    """Under gevent (production) a patched threading.Lock is for greenlets; a real image thread
    waiting on one once missed its wake-up and hung a masked edit for good (1 in 40 under load
    in bench/resources.py). Checked in a fresh interpreter patched as gunicorn's workers are."""
    program = ("from gevent import monkey; monkey.patch_all()\n"
               "import threading\n"
               "from gateway.limits import image_thread_lock\n"
               "real = monkey.get_original('_thread', 'LockType')\n"
               "assert not isinstance(threading.Lock(), real)  # patched, as in a worker\n"
               "assert isinstance(image_thread_lock(), real)\n")
    subprocess.run([sys.executable, "-c", program], check=True, cwd=Path(__file__).parents[2], timeout=60)
