"""extmm: a market maker for the Extended perpetuals exchange, on Trio."""

__version__ = "0.1.0"
