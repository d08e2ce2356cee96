"""The service unit: systemd's own offline checks (as CI runs them), and that it agrees with what
provisioning installs and the agent expects."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.provision import CA_CREDENTIAL, CERT_CREDENTIAL, GROUPS, KEY_CREDENTIAL, USER, Layout

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "edge-agent.service"
CHECK = REPO / "systemd" / "check-unit.sh"
MAX_EXPOSURE = 3.5

needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze is not installed (package systemd)")


def _unit() -> dict[str, dict[str, list[str]]]:
    """Section -> key -> values (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    section = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key, []).append(value)
    return sections


def _check(unit: Path, exposure: float = MAX_EXPOSURE) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHECK), str(unit), str(exposure)], capture_output=True, text=True, timeout=120)


@needs_systemd_analyze
def test_unit_passes_verify_and_security_threshold():
    result = _check(UNIT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"verify {UNIT}: OK" in result.stdout


@needs_systemd_analyze
def test_check_fails_on_a_bad_directive(tmp_path):
    broken = tmp_path / "edge-agent.service"
    broken.write_text(UNIT.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    result = _check(broken)
    assert result.returncode != 0
    assert "restart specifier, ignoring: sometimes" in result.stderr  # a warning is enough to fail


@needs_systemd_analyze
def test_check_fails_above_the_exposure_threshold(tmp_path):
    plain = tmp_path / "edge-agent.service"
    kept = [line for line in UNIT.read_text().splitlines()
            if not line.startswith(("Protect", "Private", "Restrict", "SystemCall", "Capability", "NoNew"))]
    plain.write_text("\n".join(kept) + "\n")
    result = _check(plain)
    assert result.returncode != 0
    assert "more exposed than 3.5" in result.stderr


@needs_systemd_analyze
def test_every_remaining_exposure_is_documented_in_the_unit():
    report = subprocess.run(["systemd-analyze", "security", "--offline=true", "--json=short", str(UNIT)],
                            capture_output=True, text=True, timeout=60, check=True)
    comments = "\n".join(line for line in UNIT.read_text().splitlines() if line.startswith("#"))
    exposed = [item["name"] for item in json.loads(report.stdout) if item.get("exposure") not in (None, "0.0")]
    assert exposed
    undocumented = [name for name in exposed if name.split("=")[0] + "=" not in comments]
    assert undocumented == []


def test_unit_lifecycle_user_and_directories():
    unit = _unit()
    service, section = unit["Service"], unit["Unit"]
    assert service["Type"] == ["notify"] and service["NotifyAccess"] == ["main"]
    assert float(service["WatchdogSec"][0]) > 0
    assert service["Restart"] == ["on-failure"]
    assert int(section["StartLimitBurst"][0]) > 0 and int(section["StartLimitIntervalSec"][0]) > 0
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    layout = Layout()
    assert service["ExecStart"] == [f"{layout.prefix}/venv/bin/edge-agent run --config {layout.config_file}"]
    assert service["User"] == [USER] and service["Group"] == [USER]
    assert service["SupplementaryGroups"] == [" ".join(GROUPS)]
    for key, target in (("StateDirectory", layout.state_dir), ("CacheDirectory", layout.cache_dir),
                        ("LogsDirectory", layout.logs_dir), ("ConfigurationDirectory", layout.config_dir)):
        assert service[key] == [Path(target).name]
    assert service["CapabilityBoundingSet"] == [""] and service["NoNewPrivileges"] == ["yes"]


def test_unit_loads_the_credentials_provisioning_installs():
    loaded = set(_unit()["Service"]["LoadCredential"])
    # Bare names: looked up in /etc/credstore, and skipped when absent (a plain-TCP broker).
    assert loaded == {KEY_CREDENTIAL, CERT_CREDENTIAL, CA_CREDENTIAL}
    assert Layout().credstore == "/etc/credstore"
