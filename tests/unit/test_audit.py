"""scripts/audit's verdict (docs/testing.md, "Dependencies"): pip-audit's findings, and PyPI's
project JSON for the pins pip-audit could not look up, against a mocked PyPI."""
import importlib.util
import json
from pathlib import Path

import pytest
import responses

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "audit_report.py"
_spec = importlib.util.spec_from_file_location("audit_report", SCRIPT)
audit_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(audit_report)

REQUIREMENTS = """# pinned
-r other.txt
Flask==3.1.3
moto[server]==5.2.5
zope.event==6.2
"""
SKIPPED = {"skip_reason": "Dependency not found on PyPI and could not be audited"}


@pytest.fixture
def files(tmp_path):
    def files(dependencies):
        (tmp_path / "requirements.txt").write_text(REQUIREMENTS)
        (tmp_path / "report.json").write_text(json.dumps({"dependencies": dependencies}))
        return str(tmp_path / "report.json"), str(tmp_path / "requirements.txt")
    return files


def pypi(web, name, latest, *vulnerabilities):
    web.add(responses.GET, f"https://pypi.org/pypi/{name}/json",
            json={"info": {"version": latest}, "vulnerabilities": list(vulnerabilities)})


def advisory(identifier, withdrawn=None):
    return {"id": identifier, "fixed_in": ["9.9"], "withdrawn": withdrawn}


def test_the_pins_are_read_by_canonical_name_with_extras_and_references_left_out(files):
    assert audit_report.pins([files([])[1]]) == {"flask": "3.1.3", "moto": "5.2.5", "zope-event": "6.2"}


def test_pins_pip_audit_could_not_look_up_are_audited_at_their_latest_release(web, files, capsys):
    pypi(web, "flask", "3.1.3", advisory("GHSA-1"), advisory("GHSA-old", withdrawn="2026-01-01"))
    pypi(web, "moto", "5.2.5")
    pypi(web, "zope-event", "6.3")  # a newer release: its advisories say nothing of 6.2
    assert audit_report.main(*files([{"name": name, **SKIPPED} for name in ("flask", "moto", "zope.event")])) == 1
    out = capsys.readouterr().out
    assert "pip-audit: flask: GHSA-1 (fixed in 9.9)" in out and "GHSA-old" not in out
    assert "NOT audited (older than the latest release, and PyPI's per-version JSON could not be read): " \
           "zope-event 6.2" in out
    assert "0 audited by pip-audit, 2 at their latest release audited through PyPI's project JSON, 1 not " \
           "audited; 1 with known vulnerabilities" in out


def test_pip_audits_own_findings_stand_and_are_not_looked_up_again(web, files, capsys):
    audited = [{"name": "flask", "version": "3.1.3", "vulns": []}, {"name": "moto", "version": "5.2.5", "vulns": []},
               {"name": "zope-event", "version": "6.2", "vulns": [{"id": "PYSEC-1", "fix_versions": ["6.3"]}]}]
    assert audit_report.main(*files(audited)) == 1
    assert len(web.calls) == 0
    assert "pip-audit: zope-event: PYSEC-1 (fixed in 6.3)" in capsys.readouterr().out


def test_an_unreadable_pypi_leaves_the_pins_not_audited_and_the_run_going(web, files, capsys):
    web.add(responses.GET, "https://pypi.org/pypi/flask/json", status=404)
    pypi(web, "moto", "5.2.5")
    pypi(web, "zope-event", "6.2")
    report, requirements = files([])
    Path(report).write_text("pip-audit stopped before writing JSON")
    assert audit_report.main(report, requirements) == 0
    assert "NOT audited (older than the latest release, and PyPI's per-version JSON could not be read): flask 3.1.3" \
        in capsys.readouterr().out
