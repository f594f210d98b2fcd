"""Public market data into our recording format (`extmm.sim.recording`): `python -m extmm import`.

`tardis` reads Tardis.dev CSV exports, `binance_futures` raw Binance USD-M stream captures;
both produce normalised events (`common.Event`) that `common.write_recording` turns into a
recording the backtest replays like one made by `python -m extmm record`. Each module can
also export a recording back into its format (the round-trip tests use it).
"""
