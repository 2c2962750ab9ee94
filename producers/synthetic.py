"""A seeded synthetic daily panel: regime-switching volatility with an injectable crash.

Daily log returns follow a two-state Markov chain (calm / turbulent) that scales the
volatility of a one-factor Gaussian model (every asset loads on a common market
factor, so correlations rise with the volatility of the factor). A crash adds, on one
day, a market-wide log return shock weighted by each asset's beta and forces the
turbulent regime for a number of days after it. Open, high, low and volume are drawn
around the close path so that every bar is consistent
(``low <= min(open, close) <= max(open, close) <= high``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.panel import Panel

__all__ = ["Crash", "synthetic_panel"]

_TRADING_DAYS = 252


@dataclass(frozen=True)
class Crash:
    """A market crash injected into a synthetic panel.

    Parameters
    ----------
    day : int
        Index of the crash day (0 <= day < n_days).
    size : float
        Market log return on that day (e.g. ``-0.12``), scaled per asset by its beta.
    turbulent_days : int
        Days (the crash day included) forced into the turbulent regime.
    """

    day: int
    size: float = -0.12
    turbulent_days: int = 20


def synthetic_panel(
    n_days: int = 500,
    assets: Sequence[str] = ("EQ1", "EQ2", "BOND", "GOLD"),
    *,
    seed: int = 42,
    start: str = "2020-01-02",
    vol_calm: float = 0.12,
    vol_turbulent: float = 0.45,
    p_calm_to_turbulent: float = 0.01,
    p_turbulent_to_calm: float = 0.05,
    market_weight: float = 0.7,
    betas: Sequence[float] | None = None,
    drift: float = 0.05,
    crash: Crash | None = None,
    start_price: float = 100.0,
) -> Panel:
    """Generate a panel of ``n_days`` business days.

    Parameters
    ----------
    n_days : int
        Trading days (>= 2).
    assets : sequence of str
    seed : int
        Everything random comes from ``np.random.default_rng(seed)``.
    start : str
        First date; business days (Mon-Fri) from there on.
    vol_calm, vol_turbulent : float
        Annualised volatility of each asset in each regime (> 0).
    p_calm_to_turbulent, p_turbulent_to_calm : float
        Daily transition probabilities of the regime chain, in [0, 1].
    market_weight : float
        Share of variance from the common factor, in [0, 1].
    betas : sequence of float or None
        Loading of each asset on the factor and on the crash (default all 1).
    drift : float
        Annualised drift of log prices.
    crash : Crash or None
        A crash to inject.
    start_price : float
        Price of every asset on the day before ``start``.

    Returns
    -------
    Panel
        With ``filled`` all False. The regime path is not returned; regenerate with
        the same seed to compare.

    Examples
    --------
    >>> p = synthetic_panel(30, ("A", "B"), crash=Crash(day=10, size=-0.2))
    >>> p.close.shape, bool(p.log_returns()[9].mean() < -0.1)
    ((30, 2), True)
    """
    if n_days < 2:
        raise ValueError(f"n_days={n_days} must be >= 2")
    if vol_calm <= 0 or vol_turbulent <= 0:
        raise ValueError(f"volatilities ({vol_calm}, {vol_turbulent}) must be > 0")
    for name, p in (("p_calm_to_turbulent", p_calm_to_turbulent),
                    ("p_turbulent_to_calm", p_turbulent_to_calm),
                    ("market_weight", market_weight)):  # fmt: skip
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name}={p} must be in [0, 1]")
    n_assets = len(assets)
    beta = np.ones(n_assets) if betas is None else np.asarray(betas, dtype=float)
    if beta.shape != (n_assets,):
        raise ValueError(f"betas has shape {beta.shape}, expected ({n_assets},)")
    if crash is not None and not 0 <= crash.day < n_days:
        raise ValueError(f"crash.day={crash.day} must be in [0, {n_days})")

    rng = np.random.default_rng(seed)
    regime = np.zeros(n_days, dtype=int)
    for t in range(1, n_days):
        p = p_calm_to_turbulent if regime[t - 1] == 0 else 1.0 - p_turbulent_to_calm
        regime[t] = int(rng.random() < p)
    if crash is not None:
        regime[crash.day : crash.day + crash.turbulent_days] = 1

    vol = np.where(regime == 1, vol_turbulent, vol_calm) / np.sqrt(_TRADING_DAYS)
    factor = rng.standard_normal(n_days)
    idio = rng.standard_normal((n_days, n_assets))
    shocks = np.sqrt(market_weight) * factor[:, None] * beta + np.sqrt(1 - market_weight) * idio
    log_ret = drift / _TRADING_DAYS - 0.5 * vol[:, None] ** 2 + vol[:, None] * shocks
    if crash is not None:
        log_ret[crash.day] += crash.size * beta

    close = start_price * np.exp(np.cumsum(log_ret, axis=0))
    prev_close = np.vstack([np.full(n_assets, start_price), close[:-1]])
    gap = 0.25 * vol[:, None] * rng.standard_normal((n_days, n_assets))
    open_ = prev_close * np.exp(gap)
    span = vol[:, None, None] * np.abs(rng.standard_normal((n_days, n_assets, 2)))
    high = np.maximum(open_, close) * np.exp(0.5 * span[..., 0])
    low = np.minimum(open_, close) * np.exp(-0.5 * span[..., 1])
    base_volume = rng.lognormal(mean=13.0, sigma=0.3, size=(n_days, n_assets))
    volume = np.round(base_volume * np.where(regime == 1, 2.0, 1.0)[:, None])

    first = np.busday_offset(np.datetime64(start, "D"), 0, roll="forward")
    dates = np.busday_offset(first, np.arange(n_days), roll="forward")
    return Panel(dates, tuple(assets), open_, high, low, close, volume)
