"""Every subcommand, bad arguments and missing files: one line on stderr, exit 2, no traceback.

The subcommands and their options are discovered from the argparse parser itself, so a
command added later is covered without touching this file. Parse-level mistakes are
checked in-process (`parse_args` only: nothing runs); missing and unwritable files run the
real command (its handler, in one child process), because the check may live in the handler.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from extmm import argtypes
from extmm.cli import build_parser
from extmm.ops.secrets import SECRET_VARS
from tests import cli_driver

ROOT = Path(__file__).resolve().parents[2]

# Converters that check a range: every numeric option must use one (a plain int is
# allowed for seeds only, where any integer is meaningful).
RANGED_NUMBERS = {
    argtypes.port_number,
    argtypes.positive_float,
    argtypes.non_negative_float,
    argtypes.positive_int,
    argtypes.non_negative_int,
}
FILE_WORDS = ("file", "dir", "path", "config", "input", "replay", "out", "journal", "profile", "log_json")


def leaf_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
    tuple[tuple[str, ...], argparse.ArgumentParser]
]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    # A command that runs by itself is checked even when it also has modes (`sim`, `sim probe`).
    if path and (not subs or parser.get_default("handler") is not None):
        yield path, parser
    if not subs:
        return
    for name, sub in subs[0].choices.items():
        yield from leaf_parsers(sub, (*path, name))


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if a.option_strings and a.nargs != 0 and not isinstance(a, argparse._HelpAction)
    ]


LEAVES = list(leaf_parsers(build_parser()))
COMMANDS = [" ".join(path) for path, _ in LEAVES]


def is_file_option(action: argparse.Action) -> bool:
    names = " ".join([action.dest, str(action.metavar or "")]).lower()
    return action.type in (
        Path,
        argtypes.existing_file,
        argtypes.existing_file_str,
        argtypes.output_file,
        argtypes.output_file_str,
        argtypes.output_dir,
    ) or any(word in names for word in FILE_WORDS)


def required_filler(parser: argparse.ArgumentParser, skip: argparse.Action | None, file: str) -> list[str]:
    """Values for the other required options (`file` for files, a plain word else)."""
    out: list[str] = []
    for action in options(parser):
        if action is skip or not action.required:
            continue
        numeric = action.type in (*RANGED_NUMBERS, int, float)
        value = file if is_file_option(action) else (action.choices and list(action.choices)[0]) or (
            "1" if numeric else "BTC-USD")
        out += [action.option_strings[0], *([str(value)] * (action.nargs if isinstance(action.nargs, int) else 1))]
    for group in parser._mutually_exclusive_groups:
        if group.required and not any(a is skip for a in group._group_actions):
            # e.g. --network (a choice), else the first option: a file, or a number such as --hours
            chosen = next((a for a in group._group_actions if a.choices), group._group_actions[0])
            value = list(chosen.choices)[0] if chosen.choices else (file if is_file_option(chosen) else "1")
            out += [chosen.option_strings[0], str(value)]
    return out


def parse_fails(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, (argv, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, (argv, err)
    return lines[0]


def test_every_subcommand_is_discovered():
    assert {"run", "cancel-all", "check", "bench book", "sim", "sim probe", "status"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_options_and_bad_values_are_one_line(command, capsys, tmp_path):
    path, parser = dict((" ".join(p), (p, q)) for p, q in LEAVES)[command]
    real = tmp_path / "real.jsonl"
    real.write_text("")
    line = parse_fails(capsys, [*path, *required_filler(parser, None, str(real)), "--no-such-option"])
    assert "--no-such-option" in line
    for action in options(parser):
        flag = action.option_strings[0]
        # The other required options get valid values, so the error is about `flag`.
        head = [*path, *required_filler(parser, action, str(real))]
        if action.choices:
            line = parse_fails(capsys, [*head, flag, "no-such-choice"])
            assert flag in line and "no-such-choice" in line
        if action.type in (int, float):
            assert "seed" in action.dest, f"{command} {flag}: use a range-checking type from extmm.argtypes"
        bads = []
        if action.type in RANGED_NUMBERS:
            bads += ["not-a-number", "-5", "nan", "inf"]
        if action.type == argtypes.port_number:
            bads.append("70000")
        if action.type is argtypes.log_level:
            bads.append("LOUD")
        for bad in bads:
            line = parse_fails(capsys, [*head, flag, bad])
            assert flag in line, line


def missing_file_cases(tmp: Path) -> list[tuple[str, list[str]]]:
    cases = []
    for path, parser in LEAVES:
        for action in options(parser):
            if not is_file_option(action):
                continue
            bad = str(tmp / "not-a-dir" / "missing.jsonl")  # not-a-dir is a file: nothing can go there
            argv = [*path, *required_filler(parser, action, bad), action.option_strings[0], bad]
            if action.nargs == 2:
                continue  # URL pairs (--endpoint), not files
            cases.append((" ".join([*path, action.option_strings[0]]), argv))
    return cases


def test_missing_and_unwritable_files_are_one_line_exit_2(tmp_path):
    (tmp_path / "not-a-dir").write_text("a file, not a directory\n")
    # The default config where the commands look for it, so each case fails on its own file.
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.json").write_text((ROOT / "config" / "config.json").read_text())
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS and k != "EXTENDED_NETWORK"}
    env["PYTHONPATH"] = str(ROOT)
    cases = missing_file_cases(tmp_path)
    assert len(cases) >= 10
    # Every case's handler runs, all in one child process (tests/cli_driver.py); the
    # `python -m extmm` entry itself is run by the test below and the command tests.
    proc = subprocess.run([sys.executable, "-c", cli_driver.DRIVER], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, input=cli_driver.cases_input([(n, a, {}) for n, a in cases]))
    failures = []
    for name, code, err in cli_driver.parse_results(proc.stdout, [n for n, _ in cases], proc.stderr):
        if code != 2 or "Traceback" in err or len(cli_driver.verdict(err)) != 1:
            failures.append(f"{name}: exit {code}, stderr {err.strip()[-400:]!r}")
    assert not failures, "\n".join(failures)


def test_unknown_markets_are_one_line_naming_the_existing_ones(tmp_path):
    import json

    data = json.loads((ROOT / "config" / "config.json").read_text())
    data["markets"][1]["name"] = "SOL-USD"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    recording = tmp_path / "empty.jsonl"
    recording.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
    env["PYTHONPATH"] = str(ROOT)
    for argv in (
        ["run", "--config", str(bad), "--no-dashboard", "--metrics-port", "0"],  # paper: the simulator's markets
        ["chaos", "--scenario", "ws_drops", "--config", str(bad)],
        ["bench", "book", "--input", str(recording), "--market", "SOL-USD"],
    ):
        result = subprocess.run([sys.executable, "-m", "extmm", *argv], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=60)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (argv, result.stderr)
        assert "SOL-USD" in lines[0] and "BTC-USD, ETH-USD" in lines[0], lines
