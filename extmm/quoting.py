"""Public entry point for the quote models: the same objects as `extmm.domain.quoting`.

Kept as a thin re-export so callers outside the pure core (actors, benchmarks, notebooks)
have a short import path; see `extmm.domain.quoting` for the formulas and units.
"""

from __future__ import annotations

from extmm.domain.quoting import (
    SECONDS_PER_FUNDING_PERIOD,
    GlftCoefficients,
    ModelQuote,
    QuoteIntent,
    avellaneda_stoikov,
    compute_quote,
    default_intensity_k,
    funding_carry,
    funding_shift,
    glft,
    glft_coefficients,
    min_quote_lots,
    seed,
    skewed_sizes,
)

__all__ = [
    "SECONDS_PER_FUNDING_PERIOD",
    "GlftCoefficients",
    "ModelQuote",
    "QuoteIntent",
    "avellaneda_stoikov",
    "compute_quote",
    "default_intensity_k",
    "funding_carry",
    "funding_shift",
    "glft",
    "glft_coefficients",
    "min_quote_lots",
    "seed",
    "skewed_sizes",
]
