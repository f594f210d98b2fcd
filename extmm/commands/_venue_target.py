"""Where the venue is and how a one-shot command talks to it (shared by `check` and `cancel-all`).

`--network`/`--endpoint`/`--env-file` options, the `VenueTarget` they name, the API-key-only
credentials for calls that never sign, and `open_venue`, which opens a `NetworkVenue` on the
target (starting the embedded simulator for `paper`).
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

import attrs
import trio

from extmm.ops.secrets import register_secret
from extmm.venue.endpoints import Endpoint, custom, endpoint_for

if TYPE_CHECKING:  # the adapter pulls in the SDK: imported when a command talks to a venue
    from extmm.venue.network import NetworkVenue
    from extmm.venue.rest import RetryPolicy
    from extmm.venue.signing import Credentials

NETWORKS = ("paper", "testnet", "mainnet")
STREAM_TIMEOUT_S = 10.0


class UsageError(ValueError):
    """Command-line options that do not fit together; exit 2."""


@attrs.frozen(kw_only=True)
class VenueTarget:
    """A venue to talk to: `paper` (the embedded simulator, started on demand) or an endpoint."""

    network: str  # paper | testnet | mainnet | custom
    endpoint: Endpoint | None = None  # None for paper

    @property
    def label(self) -> str:
        if self.endpoint is None:
            return "paper (embedded simulator)"
        return f"{self.network} ({self.endpoint.rest_url})"


def add_venue_arguments(parser: argparse.ArgumentParser, *, networks: Sequence[str] = NETWORKS) -> None:
    parser.add_argument(
        "--network", choices=tuple(networks), default=None, help=f"which venue: {', '.join(networks)}"
    )
    parser.add_argument(
        "--endpoint",
        nargs=2,
        metavar=("REST_URL", "STREAM_URL"),
        help="any compatible venue, e.g. a separately started `python -m extmm sim`",
    )
    parser.add_argument(
        "--env-file",
        default=None,
        metavar="FILE",
        help="read credentials from this .env file (default ./.env)",
    )


def resolve_target(network: str | None, endpoint: Sequence[str] | None) -> VenueTarget | None:
    """The venue the options name; None when they name none (offline)."""
    if endpoint:
        rest_url, stream_url = endpoint
        if network == "paper":
            raise UsageError("--network paper starts its own simulator; it does not take --endpoint")
        if network in ("testnet", "mainnet"):
            # Keeps that network's signing domain (e.g. a proxy in front of testnet).
            return VenueTarget(
                network=network, endpoint=endpoint_for(network, rest_url=rest_url, stream_url=stream_url)
            )
        return VenueTarget(network="custom", endpoint=custom(rest_url, stream_url))
    if network is None:
        return None
    if network == "paper":
        return VenueTarget(network="paper")
    return VenueTarget(network=network, endpoint=endpoint_for(network))


@attrs.frozen(kw_only=True)
class ApiKeyOnly:
    """Credentials for calls that need only the API key: reads, cancels, the dead man's switch.

    NetworkVenue reads `api_key` (and `vault`, for its repr) until it has to sign; these
    callers never sign, so an operator can cancel with nothing but the API key at hand.
    """

    api_key: str = attrs.field(repr=False)
    vault: int | None = None


if TYPE_CHECKING:
    VenueCredentials = Credentials | ApiKeyOnly


@asynccontextmanager
async def open_venue(
    target: VenueTarget,
    credentials: VenueCredentials | None,
    *,
    retry: RetryPolicy | None = None,
    timeout_s: float = 10.0,
) -> AsyncIterator[tuple[NetworkVenue, VenueCredentials | None]]:
    """A NetworkVenue on the target; for paper, on a simulator started here with its own account.

    Yields the venue and the credentials it uses (the simulator's for paper). The default
    retry is short: a one-shot command should not spend a minute on a dead endpoint.
    """
    from extmm.venue.network import NetworkVenue
    from extmm.venue.rest import RetryPolicy
    from extmm.venue.signing import Credentials
    from extmm.venue.streams import StreamOptions

    streams = StreamOptions(
        stall_timeout_s=STREAM_TIMEOUT_S, connect_timeout_s=STREAM_TIMEOUT_S, disconnect_timeout_s=2.0
    )
    async with trio.open_nursery() as nursery:
        if target.endpoint is None:
            from extmm.sim.server import serve_simulator

            handle = await nursery.start(partial(serve_simulator, seed=0))
            rest_url, stream_url, domain = handle.rest_url, handle.stream_url, None
            paper = handle.account
            credentials = Credentials(
                api_key=paper.api_key,
                vault=paper.vault,
                stark_private_key=paper.stark_private_key,
                stark_public_key=paper.stark_public_key,
            )
        else:
            endpoint = target.endpoint
            rest_url, stream_url, domain = endpoint.rest_url, endpoint.stream_url, endpoint.signing_domain
        if credentials is not None:
            register_secret(credentials.api_key)
        async with NetworkVenue(
            rest_url,
            stream_url,
            credentials,  # type: ignore[arg-type]  # ApiKeyOnly: never signs (see its docstring)
            signing_domain=domain,
            retry=retry or RetryPolicy(attempts=2, base_s=0.5, cap_s=1.0),
            timeout_s=timeout_s,
            stream_options=streams,
        ) as venue:
            yield venue, credentials
        nursery.cancel_scope.cancel()
