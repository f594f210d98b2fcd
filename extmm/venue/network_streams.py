"""The stream half of `NetworkVenue`: opening the venue's v1 WebSocket streams.

Public streams (order book, trades, funding, mark price) need only the stream base URL;
the account stream needs the API key. Each call returns an async context manager that
connects on entry (`extmm.venue.streams`).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from extmm.venue.signing import Credentials
from extmm.venue.streams import (
    AccountSubscription,
    StreamOptions,
    StreamSubscription,
    account_url,
    funding_url,
    mark_price_url,
    open_account_stream,
    open_stream,
    orderbook_url,
    public_trades_url,
)


class NetworkStreams:
    """Stream subscriptions; `NetworkVenue` inherits them and sets the attributes below."""

    stream_url: str
    _user_agent: str
    _stream_options: StreamOptions
    _credentials: Credentials | None

    def orderbook_stream(
        self, market: str, *, depth: int | None = None
    ) -> AbstractAsyncContextManager[StreamSubscription]:
        return open_stream(
            orderbook_url(self.stream_url, market, depth=depth),
            user_agent=self._user_agent,
            strict_seq=True,
            name=f"orderbooks/{market}",
            options=self._stream_options,
            topic="orderbook",
        )

    def public_trades_stream(self, market: str) -> AbstractAsyncContextManager[StreamSubscription]:
        # Trades and funding: "clients can skip … out of sequence" (SPEC §5.3).
        return self._topic_stream(
            public_trades_url(self.stream_url, market), f"publicTrades/{market}", "trades", strict_seq=False
        )

    def funding_stream(self, market: str) -> AbstractAsyncContextManager[StreamSubscription]:
        return self._topic_stream(
            funding_url(self.stream_url, market), f"funding/{market}", "funding", strict_seq=False
        )

    def mark_price_stream(self, market: str) -> AbstractAsyncContextManager[StreamSubscription]:
        # The 2025 documentation asks for a reconnect on a mark frame out of seq order (SPEC §5.7, §12).
        return self._topic_stream(
            mark_price_url(self.stream_url, market), f"prices/mark/{market}", "mark", strict_seq=True
        )

    def account_stream(self) -> AbstractAsyncContextManager[AccountSubscription]:
        if self._credentials is None:
            raise RuntimeError("the account stream needs credentials (public-only venue)")
        return open_account_stream(
            account_url(self.stream_url),
            user_agent=self._user_agent,
            api_key=self._credentials.api_key,
            options=self._stream_options,
        )

    def _topic_stream(
        self, url: str, name: str, topic: str, *, strict_seq: bool
    ) -> AbstractAsyncContextManager[StreamSubscription]:
        return open_stream(
            url,
            user_agent=self._user_agent,
            strict_seq=strict_seq,
            name=name,
            options=self._stream_options,
            topic=topic,
        )
