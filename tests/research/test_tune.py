"""`python -m extmm tune` (issue #15): Optuna, local workers on one SQLite storage."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from extmm.cli import main as cli_main
from extmm.research.tuning import TuneError, apply_params, config_snippet, parse_space

optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[2]


def test_two_local_workers_on_one_sqlite_storage_complete_n_trials_between_them(tmp_path, capsys):
    db = tmp_path / "study.db"
    out = tmp_path / "out"
    code = cli_main([
        "tune", "--config", str(ROOT / "config/config.json"), "--hours", "0.01",
        "--space", str(ROOT / "docs/tune/space.example.json"), "--trials", "4", "--workers", "2",
        "--storage", f"sqlite:///{db}", "--study", "t", "--out", str(out), "--no-progress",
    ])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    line = json.loads(captured.out)
    assert line["trials"] == 4 and line["objective"]["train_fraction"] == 0.7
    assert set(line["params"]) == {"markets.*.base_spread", "markets.*.alpha", "markets.*.replace_threshold_bps",
                                   "quote_loop_ms", "markets.*.post_only"}
    assert [m["name"] for m in line["config_snippet"]["markets"]] == ["BTC-USD", "ETH-USD"]
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{db}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4
    # the trials ran in worker processes (each records its pid), not in this one
    pids = {t.user_attrs["worker_pid"] for t in complete}
    assert pids and os.getpid() not in pids and len(pids) <= 2
    assert json.loads((out / "best.json").read_text())["best_trial"] == line["best_trial"]
    pytest.importorskip("matplotlib")
    assert (out / "optimization_history.png").read_bytes()[:4] == b"\x89PNG"


def test_space_paths_reach_every_market_or_one_and_the_snippet_keeps_only_them():
    raw = {"quote_loop_ms": 250, "markets": [{"name": "BTC-USD", "alpha": 0.2}, {"name": "ETH-USD", "alpha": 0.2}]}
    out = apply_params(raw, {"markets.*.alpha": 0.3, "markets.ETH-USD.model.gamma": 0.01, "quote_loop_ms": 300})
    assert out["markets"][0] == {"name": "BTC-USD", "alpha": 0.3}
    assert out["markets"][1] == {"name": "ETH-USD", "alpha": 0.3, "model": {"gamma": 0.01}}
    assert raw["markets"][0]["alpha"] == 0.2  # the input is not changed
    snippet = config_snippet(raw, {"markets.ETH-USD.model.gamma": 0.01, "quote_loop_ms": 300})
    assert snippet == {"markets": [{"name": "ETH-USD", "model": {"gamma": 0.01}}], "quote_loop_ms": 300}
    with pytest.raises(TuneError, match="nothing at markets.SOL-USD"):
        apply_params(raw, {"markets.SOL-USD.alpha": 0.1})


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"params": {}}, "expected"),
        ({"params": {"a": {"type": "float", "low": 2, "high": 1}}}, "low\" < \"high"),
        ({"params": {"a": {"type": "float", "low": 0, "high": 1, "log": True}}}, "log"),
        ({"params": {"a": {"type": "categorical"}}}, "choices"),
        ({"params": {"a": {"type": "float", "low": 0, "high": 1}}, "objective": {"train_fraction": 1.0}}, "train_fraction"),
    ],
)
def test_bad_spaces_are_refused_with_one_line(space, message):
    with pytest.raises(TuneError, match=message):
        parse_space(space)


def test_tune_command_refuses_a_space_that_makes_a_bad_config(tmp_path, capsys):
    space = tmp_path / "s.json"
    space.write_text(json.dumps({"params": {"markets.*.base_spread": {"type": "float", "low": -1, "high": 1}}}))
    code = cli_main(["tune", "--config", str(ROOT / "config/config.json"), "--hours", "0.01", "--space", str(space),
                     "--trials", "1", "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--no-progress"])
    assert code == 2
    assert "base_spread" in capsys.readouterr().err
