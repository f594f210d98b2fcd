"""The trading journal: every session, order transition, fill, funding payment, PnL mark and
supervision event of a live, paper or backtest run, kept in one SQLite file.

`schema` opens and migrates the file (refusing what it must), `rows` are what gets written,
`actor` is the non-blocking sink plus the actor that commits batches on a worker thread,
`read` answers the `history` and `report` commands and restores the lifetime PnL.
"""
