"""Where the venue lives: REST and stream base URLs and the Starknet signing domain.

Mainnet and testnet values come from SPEC §1 (SDK 2.6.0 `x10/config.py`). A custom
endpoint (our simulator, a paper venue, a proxy) has no known domain: the adapter then
asks the venue itself (`GET /info/starknet`).
"""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen(kw_only=True)
class SigningDomain:
    """The SNIP-12 `StarknetDomain` orders are signed under (SPEC §1.2)."""

    name: str = "Perpetuals"
    version: str = "v0"
    chain_id: str
    revision: str = "1"  # a string in the SDK; `/info/starknet` sends a number

    @classmethod
    def of(cls, domain: Any) -> SigningDomain:
        """From any domain-shaped object (the SDK's `StarknetDomain`, the simulator's)."""
        return cls(name=domain.name, version=domain.version, chain_id=domain.chain_id, revision=domain.revision)


SN_MAIN = SigningDomain(chain_id="SN_MAIN")
SN_SEPOLIA = SigningDomain(chain_id="SN_SEPOLIA")


@attrs.frozen(kw_only=True)
class Endpoint:
    name: str  # mainnet | testnet | custom
    rest_url: str  # ends in /api/v1, no trailing slash
    stream_url: str  # v1 stream base, no trailing slash
    signing_domain: SigningDomain | None  # None: fetch it from GET /info/starknet

    @property
    def is_real_venue(self) -> bool:
        return self.name in ("mainnet", "testnet")


MAINNET = Endpoint(
    name="mainnet",
    rest_url="https://api.starknet.extended.exchange/api/v1",
    stream_url="wss://api.starknet.extended.exchange/stream.extended.exchange/v1",
    signing_domain=SN_MAIN,
)

# SPEC §1.1: DOC26 drops the `api.` prefix on the testnet stream host; the SDK keeps it.
TESTNET = Endpoint(
    name="testnet",
    rest_url="https://api.starknet.sepolia.extended.exchange/api/v1",
    stream_url="wss://api.starknet.sepolia.extended.exchange/stream.extended.exchange/v1",
    signing_domain=SN_SEPOLIA,
)


def custom(rest_url: str, stream_url: str, signing_domain: SigningDomain | None = None) -> Endpoint:
    """An endpoint of our own (simulator, paper venue); the domain is fetched unless given."""
    return Endpoint(
        name="custom",
        rest_url=rest_url.rstrip("/"),
        stream_url=stream_url.rstrip("/"),
        signing_domain=signing_domain,
    )


def endpoint_for(network: str, *, rest_url: str | None = None, stream_url: str | None = None) -> Endpoint:
    """The endpoint for a network name (`mainnet`, `testnet`), with optional URL overrides.

    Overriding a URL of a real network keeps its signing domain (e.g. the testnet stream
    host disagreement of SPEC §1.1); any other name needs both URLs and is `custom`.
    """
    known = {"mainnet": MAINNET, "testnet": TESTNET}
    base = known.get(network)
    if base is None:
        if not rest_url or not stream_url:
            raise ValueError(f"network {network!r} needs both rest_url and stream_url")
        return custom(rest_url, stream_url)
    return attrs.evolve(
        base,
        rest_url=(rest_url or base.rest_url).rstrip("/"),
        stream_url=(stream_url or base.stream_url).rstrip("/"),
    )
