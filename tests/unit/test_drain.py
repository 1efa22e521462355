"""The drain on SIGTERM (gateway/drain.py): the flag shared with forked workers, the setting, and
the one place that reaches into gunicorn's arbiter, with the assumptions it rests on checked
here so a gunicorn upgrade that breaks them fails loudly instead of silently not draining."""
import inspect
import logging
import os
import signal
import time

import pytest
from gunicorn.arbiter import Arbiter

from gateway.config import ConfigError, Settings
from gateway.drain import DrainFlag, drain_on_sigterm


def bare_arbiter():
    """gunicorn's Arbiter without its __init__, which would configure logging and the environment
    of this whole test process; the handlers under test use only `log`."""
    arbiter = Arbiter.__new__(Arbiter)
    arbiter.log = logging.getLogger("tests.drain")
    return arbiter


def test_the_drain_setting_defaults_to_5_seconds_and_is_read():
    assert Settings.from_env({}).drain_seconds == 5
    assert Settings.from_env({"GATEWAY_DRAIN_SECONDS": "0.5"}).drain_seconds == 0.5


def test_a_negative_drain_names_the_variable():
    with pytest.raises(ConfigError, match="GATEWAY_DRAIN_SECONDS must be at least 0"):
        Settings.from_env({"GATEWAY_DRAIN_SECONDS": "-1"})


def test_a_flag_set_in_a_forked_child_is_seen_by_its_parent():
    flag = DrainFlag()
    child = os.fork()
    if child == 0:  # the child sets it and leaves at once, without pytest's exit handlers
        flag.begin()
        os._exit(0)
    os.waitpid(child, 0)
    assert flag.draining


def test_gunicorns_main_loop_calls_the_handler_named_after_the_signal():
    """drain_on_sigterm replaces `handle_term` on the arbiter instance: that only works while
    the main loop looks the handler up by name on each signal."""
    assert signal.SIGTERM in Arbiter.SIGNALS
    assert 'getattr(self, "handle_%s" % signame' in inspect.getsource(Arbiter.run)


def test_gunicorns_term_handler_stops_by_raising_stop_iteration():
    with pytest.raises(StopIteration):
        bare_arbiter().handle_term()


def test_sigterm_sets_the_flag_then_waits_then_stops():
    arbiter, flag = bare_arbiter(), DrainFlag()
    drain_on_sigterm(arbiter, 0.2, flag)
    started = time.monotonic()
    with pytest.raises(StopIteration):
        getattr(arbiter, "handle_" + Arbiter.SIG_NAMES[signal.SIGTERM])()
    assert flag.draining
    assert time.monotonic() - started >= 0.2
