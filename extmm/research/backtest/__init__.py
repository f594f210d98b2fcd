"""Backtests: the production actor tree against the simulator (synthetic or replayed) in virtual time.

`run.run_backtest` wires `supervisors.root.RootSupervisor` to an in-process venue under
trio's `MockClock` as `options.BacktestOptions` says and returns a `result.BacktestResult`;
`observe` counts what reaches the actors; `metrics` and `plots` turn a run into the summary
line, a fills CSV and PNG charts.
"""
