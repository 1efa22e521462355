"""The verdict of scripts/audit (docs/testing.md, "Dependencies"): pip-audit's findings, and for each
pin pip-audit could not look up, PyPI's project JSON (/pypi/NAME/json), which lists the known
vulnerabilities of the project's latest release. Where a network serves that endpoint but not the
per-version one pip-audit asks (/pypi/NAME/VERSION/json), a pin at the latest release is still
audited; an older pin is named as not audited. A known vulnerability fails (exit 1).

Usage: audit_report.py PIP_AUDIT_JSON REQUIREMENTS_FILE..."""
import json
import re
import sys

import requests
from packaging.utils import canonicalize_name

PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)")
PROJECT_JSON = "https://pypi.org/pypi/{name}/json"


def pins(paths):
    """{canonical name: pinned version} of the `name==version` lines of the requirements files."""
    found = {}
    for path in paths:
        with open(path, encoding="utf-8") as file:
            for line in file:
                match = PIN.match(line.strip())
                if match:
                    found[canonicalize_name(match[1])] = match[2]
    return found


def pip_audit_report(path):
    """{canonical name: vulnerabilities} of the dependencies pip-audit audited; {} when it wrote no
    report it could finish (nothing reachable)."""
    try:
        with open(path, encoding="utf-8") as file:
            dependencies = json.load(file)["dependencies"]
    except (OSError, ValueError, KeyError):
        return {}
    return {canonicalize_name(d["name"]): d.get("vulns", []) for d in dependencies if "skip_reason" not in d}


def latest_release_vulnerabilities(session, name, version):
    """The known vulnerabilities of `name` `version` from PyPI's project JSON when `version` is the
    project's latest release; None when it is not, or the endpoint cannot be read."""
    try:
        response = session.get(PROJECT_JSON.format(name=name), timeout=20)
        project = response.json() if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None
    if not project or project.get("info", {}).get("version") != version:
        return None
    return [{"id": v["id"], "fix_versions": v.get("fixed_in") or []}
            for v in project.get("vulnerabilities") or [] if not v.get("withdrawn")]


def audit(report_path, requirement_paths):
    """(findings {name: vulnerabilities}, audited by pip-audit, audited as latest, not audited)."""
    pinned, findings = pins(requirement_paths), pip_audit_report(report_path)
    by_pip_audit, as_latest, not_audited = len(findings), 0, []
    with requests.Session() as session:
        for name, version in sorted(pinned.items()):
            if name in findings:
                continue
            vulnerabilities = latest_release_vulnerabilities(session, name, version)
            if vulnerabilities is None:
                not_audited.append(f"{name} {version}")
            else:
                findings[name], as_latest = vulnerabilities, as_latest + 1
    return {name: v for name, v in findings.items() if v}, by_pip_audit, as_latest, not_audited


def main(report_path, *requirement_paths):
    vulnerable, by_pip_audit, as_latest, not_audited = audit(report_path, requirement_paths)
    for name, vulnerabilities in sorted(vulnerable.items()):
        for vulnerability in vulnerabilities:
            fixed_in = ", ".join(vulnerability["fix_versions"]) or "-"
            print(f"pip-audit: {name}: {vulnerability['id']} (fixed in {fixed_in})")
    if not_audited:
        print(f"pip-audit: NOT audited (older than the latest release, and PyPI's per-version JSON could not be "
              f"read): {', '.join(not_audited)}")
    print(f"pip-audit: {by_pip_audit} audited by pip-audit, {as_latest} at their latest release audited through "
          f"PyPI's project JSON, {len(not_audited)} not audited; {len(vulnerable)} with known vulnerabilities")
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
