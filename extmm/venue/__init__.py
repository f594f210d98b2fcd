"""The venue edge: the exchange port actors use, its wire types and errors.

`port.ExchangePort` is implemented twice: over the network (httpx REST + trio-websocket
streams, `extmm.venue.network`) and in-process over the simulator engine
(`extmm.sim.inproc`) for virtual-time runs. Decimal lives here; the domain is integers.
"""
