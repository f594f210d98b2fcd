"""Per-market actors: Feed, Book, Quoter, Risk, Executor, Account.

Each actor is a plain `async def` taking its inbox, outboxes, parameters and
`task_status`; it receives, calls a pure step from `extmm.domain`, sends and logs.
They share nothing but trio memory channels (one message union per channel, see
`actors.messages`); the market supervisor owns the channels.
"""
