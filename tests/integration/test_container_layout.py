"""The image's run-time constraints, without a container engine: the gateway under gunicorn, run
from a copy of the build context (the files .dockerignore lets in) as the Dockerfile's uid, with
the root filesystem read-only and only /tmp and the working directory's var/ writable, as the
Kubernetes Deployment runs it (readOnlyRootFilesystem and two emptyDir volumes). A private mount
namespace makes those mounts for the gateway alone (Linux, as root: util-linux's unshare and
setpriv), so nothing changes for the rest of the machine."""
import fnmatch
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from gateway.config import Settings
from tests.integration.conftest import generate, metric, start_gateway, stop

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv"))
                       or not Path("/srv").is_dir(),
                       reason="needs root, /srv, and unshare and setpriv (util-linux) for a private mount namespace"),
]

ROOT = Path(__file__).resolve().parents[2]
# $1: the copied build context, $2: a directory for its var/, $3: the image's uid; the rest is
# the command. /srv stands for the image's /app (a directory that exists here, hidden only inside
# the namespace).
CONFINE = """set -e
mount --bind -o ro "$1" /srv
mount --bind "$2" /srv/var
mount -t tmpfs -o size=64m,mode=1777 tmp /tmp
mount -o remount,bind,ro /
cd /srv
uid="$3"
shift 3
exec setpriv --reuid "$uid" --regid "$uid" --clear-groups "$@"
"""


def image_uid():
    (uid,) = re.findall(r"^USER (\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    return uid


def copy_build_context(destination):
    """What `COPY . .` puts in the image: the checkout less what .dockerignore names."""
    patterns = [line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(directory, names):
        relative = Path(directory).relative_to(ROOT)
        return {name for name in names for pattern in patterns
                if fnmatch.fnmatch(str(relative / name), pattern.removeprefix("**/"))
                or fnmatch.fnmatch(name, pattern.removeprefix("**/"))}

    shutil.copytree(ROOT, destination, ignore=ignored)
    (destination / "var").mkdir()  # the Dockerfile's RUN mkdir -p var
    return destination


def confined(context, var, *command):
    """`command` as the image's user, on a read-only root with the build context at /srv, `var`
    writable at /srv/var and a fresh /tmp, as the pod runs it."""
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c", CONFINE, "confine", str(context), str(var),
            image_uid(), *command)


def python_runs_confined(context, var):
    """Whether this test run's Python and its packages can be used there (not from a checkout or a
    virtual environment under /tmp, which the confined root replaces, or under a home directory
    that only root may enter)."""
    done = subprocess.run(confined(context, var, sys.executable, "-c", "import gunicorn"), capture_output=True,
                          timeout=60)
    return done.returncode == 0


@pytest.fixture
def confined_gateway(emulator_url, tmp_path):
    context, var = copy_build_context(tmp_path / "app"), tmp_path / "var"
    var.mkdir()
    os.chown(var, int(image_uid()), int(image_uid()))  # as the Dockerfile's chown, or the pod's fsGroup
    if not python_runs_confined(context, var):
        pytest.skip(f"uid {image_uid()} cannot run this Python and its packages on the confined root "
                    f"({sys.executable}: under /tmp, or a home only root may enter)")
    wrapper = confined(context, var)
    # The default database, as in the image: a SQLite file in the working directory's var/
    process, url = start_gateway(emulator_url, tmp_path / "gateway.log", wrapper=wrapper,
                                 GATEWAY_DATABASE_URL=Settings.database_url)
    yield process, url, tmp_path / "gateway.log", var
    if process.poll() is None:
        stop(process)


def test_the_build_context_leaves_out_history_environments_and_data(tmp_path):
    context = copy_build_context(tmp_path / "app")
    assert (context / "gunicorn.conf.py").exists() and (context / "gateway" / "drain.py").exists()
    assert not [name for name in (".git", ".venv", ".dev", "tests/node/node_modules") if (context / name).exists()]


def test_the_gateway_serves_as_the_images_user_on_a_read_only_root(confined_gateway):
    process, url, log, var = confined_gateway
    (uids,) = re.findall(r"^Uid:\s+(.*)$", Path(f"/proc/{process.pid}/status").read_text(), re.M)
    assert set(uids.split()) == {image_uid()}  # gunicorn's master itself, exec'd by the wrapper
    assert requests.get(url + "/health/ready", timeout=5).status_code == 200
    for index in range(4):  # both workers, their metric files in /tmp
        assert generate(url, f"read-only root {index}").status_code == 200
    served = metric(requests.get(url + "/metrics", timeout=5).text, "gateway_requests_total",
                    endpoint="/v1/images/generations", status="200")
    assert served == 4
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert (var / "gateway.db").stat().st_uid == int(image_uid())  # the image's default database, made at start
    text = log.read_text()
    assert "Read-only file system" not in text and "Permission denied" not in text, text[-3000:]
