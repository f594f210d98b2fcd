"""`python -m extmm tune`: search the bot's parameters with Optuna, walk-forward.

    python -m extmm tune --config config/config.json --replay rec.ndjson.gz \\
        --space docs/tune/space.example.json --trials 50 --workers 2

Runs W local worker processes on one Optuna storage (default: SQLite file
`extmm-tune.db` in the current directory). The same command on other machines with one
shared `--storage` URL (postgresql://…, mysql://…, or `journal:/shared/path.log` for
Optuna's journal file storage) and the same `--study` joins that study: N trials are done
between all of them. Each trial backtests the config with the suggested values on the
first part of the data; the best is then scored on the held-out rest (see
docs/tune/README.md for the space format and the objective). Prints ONE JSON line
(best parameters as a config snippet, tuning and held-out scores); with `--out DIR` and
matplotlib (the `backtest` extra) also optimisation_history.png and
param_importances.png. A progress bar runs on stderr. Needs the `tune` extra (optuna).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from extmm.argtypes import existing_file, output_dir, positive_float, positive_int

if TYPE_CHECKING:  # optuna and the tuning module load only when the command runs
    from optuna.trial import FrozenTrial

    from extmm.research.tuning import Space


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "tune",
        help="search the bot's parameters with Optuna over backtests (walk-forward)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default="config/config.json", help="bot config to start from")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--replay", type=existing_file, nargs="+", metavar="FILE", help="recordings to tune on")
    data.add_argument("--hours", type=positive_float, help="synthetic flow: virtual hours per trial (tuning + held-out)")
    p.add_argument("--space", type=existing_file, required=True, help="search space JSON (docs/tune/space.example.json)")
    p.add_argument("--trials", type=positive_int, required=True, help="trials in the study, between all workers")
    p.add_argument("--workers", type=positive_int, default=1, help="local worker processes (default 1)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL shared by every worker and machine "
                   "(default sqlite:///extmm-tune.db; journal:PATH for the journal file storage)")
    p.add_argument("--study", default="extmm", help="study name (default extmm)")
    p.add_argument("--seed", type=int, default=0, help="backtest seed (synthetic flow, bot jitter)")
    p.add_argument("--out", type=output_dir, default=None, metavar="DIR", help="write best.json and PNG plots here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    try:
        import optuna
    except ImportError:
        print("tune: needs Optuna — install the tune extra: pip install 'extmm[tune]'", file=sys.stderr)
        return 2
    from extmm.commands import load_config_or_report
    from extmm.research.tuning import Data, TuneError, apply_params, load_space, open_storage, replay_span
    from extmm.sim.recording import RecordingError, expand_parts

    if load_config_or_report(args.config) is None:
        return 2
    raw_config = json.loads(Path(args.config).read_text(encoding="utf-8"))
    if args.trials < 1 or args.workers < 1:
        print("tune: --trials and --workers must be ≥ 1", file=sys.stderr)
        return 2
    if args.hours is not None and not args.hours > 0:
        print("tune: --hours must be > 0", file=sys.stderr)
        return 2
    try:
        space = load_space(args.space)
        from extmm.config import ConfigError, parse_config

        for probe in (
            {p.path: (p.choices[0] if p.type == "categorical" else p.low) for p in space.params},
            {p.path: (p.choices[-1] if p.type == "categorical" else p.high) for p in space.params},
        ):
            try:  # every path resolves and both ends of every range make a valid config
                parse_config(apply_params(raw_config, probe))
            except ConfigError as exc:
                raise TuneError(f"--space: {'; '.join(exc.problems)}") from None
        if args.replay:
            files = tuple(expand_parts(args.replay))
            start, end = replay_span(files)
            data = Data(replay=files, seed=args.seed, start_ms=start, end_ms=end)
        else:
            data = Data(hours=args.hours, seed=args.seed)
        storage_url = args.storage or f"sqlite:///{Path('extmm-tune.db').resolve()}"
        storage = open_storage(storage_url)
    except (TuneError, RecordingError) as exc:
        print(f"tune: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a storage URL Optuna/SQLAlchemy cannot open
        print(f"tune: --storage {args.storage!r}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=args.study, storage=storage, direction="maximize",
                                load_if_exists=True)
    train, test = data.slices(space.train_fraction)
    _run_workers(args, storage_url, raw_config, space, train)

    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.number < args.trials]
    if not done:
        errors = {t.user_attrs["error"] for t in study.get_trials(deepcopy=False) if t.user_attrs.get("error")}
        print(f"tune: no trial completed{': ' + '; '.join(sorted(errors)) if errors else ''}", file=sys.stderr)
        return 1
    best = max(done, key=_value)
    from extmm.research.tuning import config_snippet, run_once

    try:
        held_out, parts = run_once(raw_config, best.params, test, space.inventory_penalty)
    except TuneError as exc:
        print(f"tune: held-out run failed: {exc}", file=sys.stderr)
        return 1
    line = {
        "study": args.study,
        "storage": _safe_url(storage_url),
        "trials": len(done),
        "best_trial": best.number,
        "tuning_score": round(_value(best), 6),
        "held_out_score": round(held_out, 6),
        "held_out": {k: round(v, 6) for k, v in parts.items()},
        "objective": {"inventory_penalty": space.inventory_penalty, "train_fraction": space.train_fraction,
                      "data": "replay" if data.replay else "synthetic"},
        "params": best.params,
        "config_snippet": config_snippet(raw_config, best.params),
    }
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "best.json").write_text(json.dumps(line, indent=2) + "\n", encoding="utf-8")
        line["out"] = {"dir": str(args.out), "files": ["best.json", *_plots(study, args.out)]}
    sys.stdout.write(json.dumps(line) + "\n")
    return 0


def _value(trial: FrozenTrial) -> float:
    assert trial.value is not None  # only complete trials are ranked
    return trial.value


def _run_workers(
    args: argparse.Namespace, storage_url: str, raw_config: dict[str, Any], space: Space, train: dict[str, Any]
) -> None:
    import multiprocessing

    import optuna
    from optuna.trial import TrialState

    from extmm.research.tuning import open_storage, worker

    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=worker, args=(storage_url, args.study, args.trials, raw_config, space, train),
                    name=f"extmm-tune-{i}")
        for i in range(args.workers)
    ]
    for proc in procs:
        proc.start()
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=args.trials, desc=f"tune {args.study}", unit="trial", file=sys.stderr)
    study = optuna.load_study(study_name=args.study, storage=open_storage(storage_url))
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    try:
        while any(p.is_alive() for p in procs):
            if bar is not None:
                n = sum(1 for t in study.get_trials(deepcopy=False, states=finished) if t.number < args.trials)
                bar.update(min(n, args.trials) - bar.n)
            time.sleep(0.5)
    finally:
        for proc in procs:
            proc.join()
        if bar is not None:
            n = sum(1 for t in study.get_trials(deepcopy=False, states=finished) if t.number < args.trials)
            bar.update(min(n, args.trials) - bar.n)
            bar.close()


def _plots(study: Any, out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.figure import Figure
        from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances
    except ImportError:
        print("tune: matplotlib not installed (the backtest extra); plots skipped", file=sys.stderr)
        return []
    import warnings

    written: list[str] = []
    for name, plot in (("optimization_history.png", plot_optimization_history),
                       ("param_importances.png", plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot(study)
            fig = ax.figure
            assert isinstance(fig, Figure)  # optuna's plots draw on a top-level figure
            fig.savefig(out / name, dpi=100, bbox_inches="tight")
            plt.close(fig)
            written.append(name)
        except Exception as exc:  # e.g. importances need ≥ 2 completed trials with varying values
            print(f"tune: {name} skipped: {exc}", file=sys.stderr)
    return written


def _safe_url(url: str) -> str:
    """The storage URL without a password (never printed)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<storage>"
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
