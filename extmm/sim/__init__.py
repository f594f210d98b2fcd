"""An Extended-compatible exchange simulator: matching engine, accounts, synthetic flow.

`SimEngine` (pure, time passed in) is the core; `extmm.sim.wire` renders its objects as
the venue's JSON; the server and the in-process port sit on top of it.
"""

from __future__ import annotations

from extmm.sim.engine import EngineConfig, SimEngine
from extmm.sim.flow import FlowParams
from extmm.sim.model import CROWD_ACCOUNT_ID, SimReject
from extmm.sim.signing import MAINNET_DOMAIN, TESTNET_DOMAIN, KeyPair, OrderSigner, StarknetDomain

__all__ = [
    "CROWD_ACCOUNT_ID",
    "MAINNET_DOMAIN",
    "TESTNET_DOMAIN",
    "EngineConfig",
    "FlowParams",
    "KeyPair",
    "OrderSigner",
    "SimEngine",
    "SimReject",
    "StarknetDomain",
]
