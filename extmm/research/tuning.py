"""Parameter search for `python -m extmm tune`, on Optuna's own distributed mode.

A study lives in an Optuna storage: by default a SQLite file that W local worker processes
share; any other storage URL Optuna understands (PostgreSQL, MySQL, or `journal:PATH` for
Optuna's journal file storage) lets the same command on other machines join the same study
(`--study NAME`). Each worker asks the study for trials until the study holds `--trials`
finished ones (Optuna's `MaxTrialsCallback`), so N trials are done between all workers.

Search space (JSON, documented in docs/tune/README.md; example docs/tune/space.example.json):

    {"params": {PATH: {"type": "float"|"int"|"categorical", "low", "high", "log", "step",
                       "choices"}, ...},
     "objective": {"inventory_penalty": 0.01, "train_fraction": 0.7}}

PATH is a dotted path into the bot config: `quote_loop_ms`, `risk.max_net_position_usd`,
`markets.*.base_spread` (every market), `markets.BTC-USD.model.gamma` (one market).

Objective (walk-forward): score = net PnL (USD) − inventory_penalty × the time-average of
|inventory| (USD, all markets). Trials are scored on the first `train_fraction` of the data
(replay) or of the hours (synthetic); the best trial is then run once on the held-out rest
(replay: the later part of the same data; synthetic: the rest of the hours on another seed)
and both scores are reported, so a parameter set that only fits the tuning slice shows.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeGuard

import attrs

TYPES = ("float", "int", "categorical")


class TuneError(Exception):
    """The search space, storage or data cannot be used (one clear line)."""


@attrs.frozen(kw_only=True)
class Param:
    path: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()


@attrs.frozen(kw_only=True)
class Space:
    params: tuple[Param, ...]
    inventory_penalty: float = 0.01
    train_fraction: float = 0.7


def load_space(path: Path) -> Space:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TuneError(f"--space {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise TuneError(f"--space {path}: not JSON: {exc}") from None
    return parse_space(raw, where=str(path))


def parse_space(raw: Any, *, where: str = "space") -> Space:
    if not isinstance(raw, dict) or not isinstance(raw.get("params"), dict) or not raw["params"]:
        raise TuneError(f"{where}: expected {{\"params\": {{PATH: {{\"type\": ...}}, ...}}}}")
    unknown = set(raw) - {"params", "objective"}
    if unknown:
        raise TuneError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    params = []
    for name, spec in raw["params"].items():
        at = f"{where}: params.{name}"
        if not isinstance(spec, dict) or spec.get("type") not in TYPES:
            raise TuneError(f"{at}: \"type\" must be one of {', '.join(TYPES)}")
        extra = set(spec) - {"type", "low", "high", "log", "step", "choices"}
        if extra:
            raise TuneError(f"{at}: unknown key(s) {', '.join(sorted(extra))}")
        if spec["type"] == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise TuneError(f"{at}: categorical needs a non-empty \"choices\" list")
            params.append(Param(path=name, type="categorical", choices=tuple(choices)))
            continue
        low, high = spec.get("low"), spec.get("high")
        if not (_is_number(low) and _is_number(high)) or not low < high:
            raise TuneError(f"{at}: needs numbers \"low\" < \"high\"")
        if spec.get("log") and low <= 0:
            raise TuneError(f"{at}: \"log\" needs low > 0")
        if spec["type"] == "int" and (int(low) != low or int(high) != high):
            raise TuneError(f"{at}: int bounds must be whole numbers")
        params.append(Param(path=name, type=spec["type"], low=low, high=high, log=bool(spec.get("log")),
                            step=spec.get("step")))
    objective = raw.get("objective") or {}
    if not isinstance(objective, dict) or set(objective) - {"inventory_penalty", "train_fraction"}:
        raise TuneError(f"{where}: objective takes inventory_penalty and train_fraction")
    penalty = objective.get("inventory_penalty", 0.01)
    fraction = objective.get("train_fraction", 0.7)
    if not isinstance(penalty, int | float) or penalty < 0:
        raise TuneError(f"{where}: objective.inventory_penalty must be a number ≥ 0")
    if not isinstance(fraction, int | float) or not 0.1 <= fraction <= 0.95:
        raise TuneError(f"{where}: objective.train_fraction must be in [0.1, 0.95]")
    return Space(params=tuple(params), inventory_penalty=float(penalty), train_fraction=float(fraction))


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def apply_params(config: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the raw config dict with each dotted PATH set (see the module docstring)."""
    out: dict[str, Any] = json.loads(json.dumps(config))
    for path, value in values.items():
        parts = path.split(".")
        targets: list[Any] = [out]
        for i, part in enumerate(parts[:-1]):
            nxt: list[Any] = []
            for node in targets:
                if isinstance(node, list):  # markets: "*" or a market name
                    nxt += [m for m in node if part == "*" or m.get("name") == part]
                elif isinstance(node, dict):
                    child = node.get(part)
                    if child is None:
                        child = node[part] = {}
                    nxt.append(child)
            if not nxt:
                raise TuneError(f"parameter {path}: nothing at {'.'.join(parts[: i + 1])}")
            targets = nxt
        for node in targets:
            if not isinstance(node, dict):
                raise TuneError(f"parameter {path}: {'.'.join(parts[:-1])} is not an object")
            node[parts[-1]] = value
    return out


def suggest(trial: Any, space: Space) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for p in space.params:
        if p.type == "categorical":
            values[p.path] = trial.suggest_categorical(p.path, list(p.choices))
        elif p.type == "int":
            assert p.low is not None and p.high is not None  # parse_space gives numeric params bounds
            values[p.path] = trial.suggest_int(p.path, int(p.low), int(p.high), log=p.log,
                                               step=int(p.step or 1))
        else:
            values[p.path] = trial.suggest_float(p.path, p.low, p.high, log=p.log, step=p.step)
    return values


# -- the objective -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Data:
    """What trials run on: recordings (replay) or synthetic hours."""

    replay: tuple[Path, ...] = ()
    hours: float = 1.0
    seed: int = 0
    start_ms: int | None = None  # replay: first and last receive time
    end_ms: int | None = None

    def slices(self, fraction: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """BacktestOptions keywords for the tuning slice and the held-out slice."""
        if self.replay:
            assert self.start_ms is not None and self.end_ms is not None
            split = self.start_ms + int((self.end_ms - self.start_ms) * fraction)
            train = {"replay": self.replay, "hours": (split - self.start_ms) / 3_600_000, "seed": self.seed}
            test = {"replay": self.replay, "replay_from_ms": split,
                    "hours": (self.end_ms - split) / 3_600_000 + 1.0, "seed": self.seed}
            return train, test
        return ({"hours": self.hours * fraction, "seed": self.seed},
                {"hours": self.hours * (1 - fraction), "seed": self.seed + 1})


def replay_span(paths: Sequence[Path]) -> tuple[int, int]:
    from extmm.sim.recording import RecordingReader

    first = last = None
    for record in RecordingReader(list(paths)):
        t = record.get("t")
        if isinstance(t, int) and record.get("k") not in ("header", "open"):
            first = t if first is None else first
            last = t
    if first is None or last is None or last <= first:
        raise TuneError("the recording holds no frames to tune on")
    return first, last


def score(result: Any, penalty: float) -> tuple[float, dict[str, float]]:
    """net PnL − penalty × time-average |inventory USD| (all markets); and its parts."""
    from extmm.research.backtest.metrics import PNL_KEYS  # noqa: F401 (documents where "net" comes from)

    net = float(result.summary.pnl.get("net", Decimal(0)))
    by_t: dict[float, float] = {}
    for s in result.samples:
        by_t[s.t] = by_t.get(s.t, 0.0) + abs(s.position_usd)
    times = sorted(by_t)
    avg = 0.0
    if len(times) >= 2:
        total = times[-1] - times[0]
        avg = sum(by_t[a] * (b - a) for a, b in zip(times, times[1:], strict=False)) / total if total > 0 else 0.0
    value = net - penalty * avg
    return value, {"net_pnl": net, "avg_abs_inventory_usd": avg, "fills": float(result.summary.fills)}


def run_once(raw_config: Mapping[str, Any], values: Mapping[str, Any], options: Mapping[str, Any],
             penalty: float) -> tuple[float, dict[str, float]]:
    """One backtest with these parameter values; (score, parts). Raises TuneError on a bad config."""
    from loguru import logger

    from extmm.config import ConfigError, parse_config
    from extmm.research.backtest.options import BacktestOptions
    from extmm.research.backtest.run import backtest

    try:
        cfg = parse_config(apply_params(raw_config, values))
    except ConfigError as exc:
        raise TuneError("; ".join(exc.problems)) from None
    logger.disable("")  # workers are quiet; the parent prints progress
    result = backtest(cfg, BacktestOptions(**options))
    value, parts = score(result, penalty)
    if not math.isfinite(value):
        raise TuneError("the objective is not finite")
    return value, parts


def worker(storage: str, study_name: str, trials: int, raw_config: dict[str, Any], space: Space,
           train: dict[str, Any]) -> None:
    """A worker process: asks the shared study for trials until it holds `trials` finished ones."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))

    def objective(trial: Any) -> float:
        if trial.number >= trials:  # the study already has its N trials (other workers': surplus)
            trial.set_user_attr("surplus", True)
            study.stop()
            raise optuna.TrialPruned("the study already holds its trials")
        values = suggest(trial, space)
        options = dict(train)
        options["seed"] = int(options.get("seed", 0))
        try:
            value, parts = run_once(raw_config, values, options, space.inventory_penalty)
        except TuneError as exc:
            trial.set_user_attr("error", str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        for key, v in parts.items():
            trial.set_user_attr(key, v)
        trial.set_user_attr("worker_pid", os.getpid())
        return value

    study.optimize(
        objective,
        callbacks=[MaxTrialsCallback(trials, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))],
        n_trials=trials,
        catch=(Exception,),
    )


def open_storage(url: str) -> Any:
    """An Optuna storage from a URL: `journal:PATH` for the journal file storage, else RDB."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:"):]))
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}}
                                      if url.startswith("sqlite") else {})


def config_snippet(raw_config: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Only the tuned keys, in the config's own shape (markets by name)."""
    full = apply_params(raw_config, values)
    out: dict[str, Any] = {}
    for path in values:
        parts = path.split(".")
        if parts[0] == "markets":
            names = [m["name"] for m in full.get("markets", []) if parts[1] in ("*", m["name"])]
            markets = out.setdefault("markets", [])
            for name in names:
                entry = next((m for m in markets if m["name"] == name), None)
                if entry is None:
                    entry = {"name": name}
                    markets.append(entry)
                src = next(m for m in full["markets"] if m["name"] == name)
                _copy(src, entry, parts[2:])
        else:
            _copy(full, out, parts)
    return out


def _copy(src: Mapping[str, Any], dst: dict[str, Any], parts: Sequence[str]) -> None:
    for part in parts[:-1]:
        src = src[part]
        dst = dst.setdefault(part, {})
    dst[parts[-1]] = src[parts[-1]]
