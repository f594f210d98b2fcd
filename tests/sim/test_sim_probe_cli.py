"""`python -m extmm sim probe`: the probe mode's command line beside the plain `sim` command.

Serving is covered end to end by tests/research/test_bench_latency.py (the bench starts the
probe with this command); here only the parsing and the refusals, in process.
"""

from __future__ import annotations

import pytest

from extmm.cli import build_parser, main
from extmm.commands import _sim_probe
from extmm.commands import sim as sim_command


def test_sim_without_a_mode_still_runs_the_simulator() -> None:
    args = build_parser().parse_args(["sim", "--port", "0", "--markets", "BTC-USD"])
    assert args.handler is sim_command.run
    assert args.markets == "BTC-USD"


def test_sim_probe_keeps_every_option_of_the_old_probe_command() -> None:
    args = build_parser().parse_args(
        [
            "sim", "probe", "--markets", "2", "--rate", "10", "--step-ticks", "8", "--levels", "5",
            "--settle", "0.5", "--host", "127.0.0.1", "--port", "0", "--seed", "3", "--no-verify",
            "--profile", "out.prof", "--log-level", "info",
        ]
    )
    assert args.handler is _sim_probe.run
    assert (args.markets, args.rate, args.step_ticks, args.levels, args.settle) == (2, 10.0, 8, 5, 0.5)
    assert (args.host, args.port, args.seed, args.no_verify) == ("127.0.0.1", 0, 3, True)
    assert (args.profile, args.log_level) == ("out.prof", "INFO")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--step-ticks", "2"], "sim probe: ProbeSettings: need rate_hz > 0, step_ticks ≥ 3"),
        (["--rate", "0"], "argument --rate: expected a number > 0"),
        (["--markets", "0"], "argument --markets: expected an integer >= 1"),
    ],
)
def test_bad_probe_settings_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Out-of-range numbers are refused by the option's type, the rest by the probe's settings.
    try:
        code = main(["sim", "probe", *argv])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
