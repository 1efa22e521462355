"""Graceful drain on SIGTERM: readiness turns 503 on every worker at once, requests are still
served for GATEWAY_DRAIN_SECONDS so a load balancer sees that first, then gunicorn stops as usual
(workers stop accepting and finish what they hold within its graceful_timeout).

gunicorn has no server hook between the master's SIGTERM and its stopping of the workers, so the
master's SIGTERM handler is wrapped (`drain_on_sigterm`: with `close_after_response` below, the
only places that reach into gunicorn, guarded by tests/unit/test_drain.py and
tests/integration/test_drain.py). The workers learn of it through one byte of shared memory that
the master maps before it forks them: no file to clean up, no signal of our own, and a worker
started during the drain sees it too."""
import mmap
import time


class DrainFlag:
    """Whether this instance is draining, shared by a process and the children it forks later."""

    def __init__(self):
        self._byte = mmap.mmap(-1, 1)  # anonymous and MAP_SHARED: forked workers see the same page

    def begin(self):
        self._byte[0] = 1

    @property
    def draining(self):
        return self._byte[0] == 1


DRAINING = DrainFlag()  # made when gunicorn.conf.py imports this module in the master, before any fork


def drain_on_sigterm(arbiter, seconds, flag=DRAINING):
    """gunicorn's on_starting hook: on SIGTERM, set `flag` and keep serving for `seconds` before
    gunicorn's own stop. gunicorn's main loop calls `arbiter.handle_<signal name>()` for each
    queued signal, and its handle_term raises StopIteration to stop. The loop waits meanwhile (it
    only reaps and replaces workers, which are not needed for a few seconds of serving); a
    SIGINT or SIGQUIT sent during the drain still makes the stop that follows a quick one."""
    stop = arbiter.handle_term

    def drain_then_stop():
        flag.begin()
        arbiter.log.info("Draining for %g s (GATEWAY_DRAIN_SECONDS): /health/ready answers 503, "
                         "requests are still served", seconds)
        time.sleep(seconds)
        stop()

    arbiter.handle_term = drain_then_stop


def close_after_response(req, flag=DRAINING):
    """gunicorn's pre_request hook: while draining, answer with `Connection: close`, so a client
    on a kept-alive connection reconnects, through the load balancer, to an instance that is
    not stopping (an L4 balancer such as a Kubernetes Service only balances new connections)."""
    if flag.draining:
        req.force_close()
