"""Pure trading core: units, book, volatility, quote models, risk, PnL, order states.

Nothing in this package performs I/O or imports trio, httpx, trio-websocket, the x10 SDK
or loguru (tests/unit/test_purity.py enforces it). Time is always passed in.
"""
