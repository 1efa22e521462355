"""Proof that no key leaks: every response and every log line the suite produces is checked for
the client keys and the upstream key (see the autouse fixtures in the conftests)."""
import logging
import threading

from gateway.observability import JsonFormatter


class LeakWatch:
    def __init__(self):
        self.secrets = set()
        self.leaks = []
        self.lock = threading.Lock()

    def check(self, where, text):
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        found = [f"{where} contains a key starting {secret[:6]!r}" for secret in self.secrets if secret in text]
        with self.lock:
            self.leaks += found

    def check_response(self, where, headers, body):
        self.check(f"{where} headers", "\n".join(f"{k}: {v}" for k, v in headers.items()))
        self.check(f"{where} body", body)

    def take(self):
        with self.lock:
            leaks, self.leaks = self.leaks, []
        return leaks


WATCH = LeakWatch()


class LogWatch(logging.Handler):
    """Checks every log record, formatted as the gateway prints it (traceback included)."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.setFormatter(JsonFormatter())

    def emit(self, record):
        WATCH.check(f"log line of {record.name}", self.format(record))


def watching_logs():
    handler = LogWatch()
    root = logging.getLogger()
    root.addHandler(handler)
    return lambda: root.removeHandler(handler)
