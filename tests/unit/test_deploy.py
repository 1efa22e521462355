"""The deploy files: the systemd unit passes `systemd-analyze verify` and is hardened."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = (ROOT / "deploy" / "gateway.service").read_text()


def test_the_systemd_unit_is_hardened_and_runs_behind_a_proxy():
    for line in ("User=image-gateway", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                 "PrivateTmp=yes", "CapabilityBoundingSet=", "Environment=HOST=127.0.0.1 PORT=8000 TRUSTED_PROXIES=1"):
        assert line in UNIT.splitlines(), line


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed here")
def test_the_systemd_unit_verifies(tmp_path):
    unit = tmp_path / "image-gateway.service"  # its paths pointed at this checkout, which exists
    unit.write_text(UNIT.replace("/opt/image-gateway", str(ROOT)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.strip()) == (0, "")
