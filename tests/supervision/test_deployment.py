"""Deployment files (issue 13): what the install script copies, the unit's network, and
Docker's ignore list, health check, stop timeout and lock file. Docker itself is not run
here (no engine on the build machine); these check the files' content."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from supervisors.root import SHUTDOWN_BUDGET_S

ROOT = Path(__file__).resolve().parents[2]


def test_install_script_installs_a_built_wheel_and_copies_nothing_else():
    script = (ROOT / "scripts" / "install-systemd.sh").read_text()
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "install-systemd.sh")], check=True)
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"\bcp\s+-r", code) and "rsync" not in code
    assert "pip\" install --quiet --require-hashes --no-deps -r \"$src/requirements.lock\"" in code
    assert re.search(r"pip wheel .*--no-deps", code) and "extmm-*.whl" in code
    assert "git -C \"$src\" archive" in code  # tracked files only: no .env, .venv
    # Only these come from the checkout: the example config and env file, and the unit.
    copied = set(re.findall(r'"\$src/([^"]+)"', code))
    assert copied == {"requirements.lock", "config/config.json", ".env.example", "scripts/extmm.service"}
    assert "enable --now" not in code.split("cat <<MSG")[0]  # it never enables the service itself
    assert "check --config /etc/extmm/config.json" in script and "--env-file /etc/extmm/extmm.env" in script


def test_unit_network_is_configurable_and_mainnet_needs_confirmation():
    unit = (ROOT / "scripts" / "extmm.service").read_text()
    (exec_start,) = [x for x in unit.splitlines() if x.startswith("ExecStart=")]
    assert "--network ${EXTENDED_NETWORK}" in exec_start and "$EXTMM_CONFIRM_MAINNET" in exec_start
    assert "/opt/extmm/venv/bin/python" in exec_start
    assert "Environment=EXTENDED_NETWORK=testnet" in unit
    (stop,) = re.findall(r"^TimeoutStopSec=(\d+)", unit, re.M)
    assert int(stop) > SHUTDOWN_BUDGET_S


def test_docker_files():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "HEALTHCHECK" in dockerfile and "status" in dockerfile.split("HEALTHCHECK", 1)[1]
    assert "STOPSIGNAL SIGTERM" in dockerfile
    assert "--require-hashes" in dockerfile and "COPY requirements.lock" in dockerfile
    assert re.search(r"^FROM python:3\.11\.\d+-slim", dockerfile, re.M)  # a patch release, not a moving tag
    ignore = (ROOT / ".dockerignore").read_text().split()
    for entry in (".env", ".git", ".venv", "tests"):
        assert entry in ignore
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    service = compose["services"]["extmm"]
    grace = int(service["stop_grace_period"].rstrip("s"))
    assert grace > SHUTDOWN_BUDGET_S + 10
    assert "status" in service["healthcheck"]["test"]


def test_lock_file_pins_every_dependency_with_hashes():
    lock = (ROOT / "requirements.lock").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", lock, re.M))
    for name in ("trio", "httpx", "x10-python-trading-starknet", "hypercorn", "rich", "cattrs"):
        assert name in pins, name
    assert pins["x10-python-trading-starknet"] == "2.6.0"
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", lock.split("\n\n", 1)[1])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)
    assert "file:///" not in lock  # no machine-local index
