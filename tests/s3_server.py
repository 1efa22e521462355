"""moto's S3 server on 127.0.0.1: the real S3 protocol (SigV4, presigned URLs, XML listings) for
the S3 storage's tests, reached through the standard AWS_* variables as a deploy would set them."""
import socket
import subprocess
import sys
import time
import uuid

import boto3
import requests

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """One moto_server process; `environ` is what a gateway needs to use it."""

    def __init__(self, log_path):
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.log = open(log_path, "w")
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                         self.url.rpartition(":")[2]], stdout=self.log, stderr=subprocess.STDOUT)
        self.environ = {**CREDENTIALS, "AWS_ENDPOINT_URL": self.url}
        self._wait()

    def _wait(self, seconds=30):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.process.returncode}")
            try:
                requests.get(self.url + "/moto-api/", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("moto_server did not come up")

    def client(self):
        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")

    def new_bucket(self):
        name = f"images-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def close(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
