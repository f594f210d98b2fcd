"""Command line: `check` exit codes and messages, and `--help` lists only real commands."""

from __future__ import annotations

import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import extmm.commands
from extmm.cli import build_parser
from extmm.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "config.json"


def extmm_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "extmm", *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def test_check_accepts_the_example_config_and_summarises_it():
    result = extmm_cli("check", "--config", "config/config.json")
    assert result.returncode == 0, result.stderr
    assert "markets enabled: 2" in result.stdout
    assert re.search(r"BTC-USD: model seed", result.stdout) and re.search(r"ETH-USD: model seed", result.stdout)
    assert result.stderr == ""


def test_check_reports_each_problem_with_its_key_path_and_exits_2(tmp_path):
    data = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    data["markets"][1]["base_spread"] = "abc"
    data["risk"]["max_open_orders"] = 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    result = extmm_cli("check", "--config", str(bad))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert 'markets[1].base_spread: expected a number ≥ 0, got "abc"' in lines
    assert "risk.max_open_orders: expected an integer > 0, got 0" in lines
    assert result.stdout == ""


@pytest.mark.parametrize(
    "content, message",
    [(None, "cannot read"), ('{"markets": [', "not valid JSON (line 1")],
    ids=["missing", "invalid-json"],
)
def test_check_explains_unreadable_files_and_exits_2(tmp_path, content, message):
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    result = extmm_cli("check", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines()[0].startswith(f"{path}: {message}")
    assert "Traceback" not in result.stderr


def test_check_defaults_to_config_json_in_the_working_directory():
    result = extmm_cli("check")
    assert result.returncode == 0, result.stderr


def command_modules() -> set[str]:
    """Command names from module names: `cancel_all.py` registers `cancel-all`."""
    return {
        info.name.replace("_", "-")
        for info in pkgutil.iter_modules(extmm.commands.__path__)
        if not info.name.startswith("_")
    }


def test_help_lists_exactly_the_commands_that_exist_and_each_has_help(capsys):
    result = extmm_cli("--help")  # the real `python -m extmm --help`
    assert result.returncode == 0, result.stderr
    subparsers = build_parser()._subparsers._group_actions[0]  # type: ignore[union-attr]
    listed = set(subparsers.choices)
    assert "check" in listed
    assert listed == command_modules()
    for name in sorted(listed):
        assert re.search(rf"^\s+{re.escape(name)}\b", result.stdout, re.MULTILINE), name
        # Each command's help through the same entry point, in-process (a process each is slow).
        with pytest.raises(SystemExit) as exit_info:
            cli_main([name, "--help"])
        sub = capsys.readouterr()
        assert exit_info.value.code == 0, f"{name} --help failed:\n{sub.err}"
        assert "usage:" in sub.out


def test_a_failure_the_supervisors_could_not_mend_exits_1_with_one_line(monkeypatch, capsys, tmp_path):
    # What `run` prints when the root gives up after trading started (it has already stopped
    # quoting and cancelled): one line naming the failure, exit 1, the traceback in the log.
    import extmm.runtime.app as app

    async def gives_up(*_args, **_kwargs):
        raise RuntimeError("heartbeat: restart policy gave up")

    monkeypatch.setattr(app, "run_bot", gives_up)
    code = cli_main(["run", "--config", str(ROOT / "config" / "config.json"), "--no-dashboard",
                 "--metrics-port", "0", "--duration", "1", "--journal", str(tmp_path / "j.sqlite")])
    assert code == 1
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("stopped on a failure")]
    assert line == ["stopped on a failure: RuntimeError: heartbeat: restart policy gave up; the log says what "
                    "was cancelled and whether the dead man's switch is still armed"]
