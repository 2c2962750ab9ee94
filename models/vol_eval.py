"""Scores of volatility forecasts: Mincer-Zarnowitz R², RMSE, QLIKE, Diebold-Mariano.

Every function takes the *realised* volatility ``y`` and the *forecast*
volatility ``f`` (same units, e.g. daily standard deviations), 1-d arrays of
the same length. QLIKE works on the variances ``y**2`` and ``f**2``.

NaN policy: inputs must be finite (``ValueError`` otherwise); callers drop
the rows where a forecast or a target is missing (see :func:`finite_rows`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from models.backtest import TestResult, diebold_mariano

__all__ = [
    "MincerZarnowitz",
    "VolScores",
    "dm_test",
    "finite_rows",
    "mincer_zarnowitz",
    "qlike",
    "qlike_losses",
    "rmse",
    "rmse_scaled",
    "score_vol",
    "squared_error_losses",
]


def _pair(y: ArrayLike, f: ArrayLike, *, positive: bool = False) -> tuple[NDArray, NDArray]:
    a = np.asarray(y, dtype=float).ravel()
    b = np.asarray(f, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(
            f"realised and forecast must have the same length, got {a.size} and {b.size}"
        )
    if a.size == 0:
        raise ValueError("need at least one observation")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("realised and forecast volatilities must be finite")
    if positive and (np.any(a <= 0) or np.any(b <= 0)):
        raise ValueError("QLIKE needs realised and forecast volatilities > 0")
    return a, b


def finite_rows(*arrays: ArrayLike) -> NDArray[np.bool_]:
    """Mask of the positions where every array is finite (and the same shape).

    Examples
    --------
    >>> finite_rows([1.0, np.nan, 3.0], [1.0, 2.0, np.inf]).tolist()
    [True, False, False]
    """
    arrs = [np.asarray(a, dtype=float) for a in arrays]
    mask = np.ones(arrs[0].shape, dtype=bool)
    for a in arrs:
        if a.shape != mask.shape:
            raise ValueError(f"shapes differ: {a.shape} vs {mask.shape}")
        mask &= np.isfinite(a)
    return mask


@dataclass(frozen=True)
class MincerZarnowitz:
    """OLS ``y = alpha + beta f + e``: intercept, slope and R²."""

    alpha: float
    beta: float
    r2: float


def mincer_zarnowitz(y: ArrayLike, f: ArrayLike) -> MincerZarnowitz:
    """Mincer-Zarnowitz regression of realised on forecast volatility.

    Parameters
    ----------
    y, f : array-like of shape (n_obs,)
        Realised and forecast volatility.

    Returns
    -------
    MincerZarnowitz
        ``r2 = 1 - SSR / SST`` of the OLS fit, which equals ``corr(y, f)²``.
        An unbiased forecast has ``alpha = 0, beta = 1``. A constant forecast
        has ``beta = 0`` and ``r2 = 0``; a constant ``y`` gives ``r2 = 0``.

    Examples
    --------
    >>> mz = mincer_zarnowitz([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    >>> round(mz.alpha, 12), round(mz.beta, 12), round(mz.r2, 12)
    (0.0, 0.5, 1.0)
    """
    a, b = _pair(y, f)
    bc = b - b.mean()
    ac = a - a.mean()
    sxx = float(bc @ bc)
    syy = float(ac @ ac)
    if sxx <= 1e-300 or syy <= 1e-300:
        return MincerZarnowitz(float(a.mean()), 0.0, 0.0)
    beta = float(bc @ ac) / sxx
    alpha = float(a.mean() - beta * b.mean())
    resid = ac - beta * bc
    r2 = 1.0 - float(resid @ resid) / syy
    return MincerZarnowitz(alpha, beta, min(max(r2, 0.0), 1.0))


def squared_error_losses(y: ArrayLike, f: ArrayLike) -> NDArray[np.float64]:
    """Per-observation ``(y - f)²``."""
    a, b = _pair(y, f)
    return (a - b) ** 2


def rmse(y: ArrayLike, f: ArrayLike) -> float:
    """Root mean squared error ``sqrt(mean((y - f)²))``.

    Examples
    --------
    >>> rmse([1.0, 2.0], [1.0, 4.0])
    1.4142135623730951
    """
    return float(np.sqrt(np.mean(squared_error_losses(y, f))))


def rmse_scaled(y: ArrayLike, f: ArrayLike, low: float, high: float) -> float:
    """RMSE after the MinMax map ``v -> (v - low) / (high - low)`` of both series.

    This is the paper's "[0, 1] scale": ``low``/``high`` are the minimum and
    maximum of the *training* targets, so the figure is ``rmse / (high - low)``
    (test values may fall outside [0, 1]; they are not clipped).

    Examples
    --------
    >>> rmse_scaled([1.0, 2.0], [1.0, 4.0], low=0.0, high=10.0)
    0.1414213562373095
    """
    if not (np.isfinite(low) and np.isfinite(high)) or high <= low:
        raise ValueError(f"need finite low < high, got low={low}, high={high}")
    return rmse(y, f) / (high - low)


def qlike_losses(y: ArrayLike, f: ArrayLike) -> NDArray[np.float64]:
    """Per-observation QLIKE loss ``y²/f² - log(y²/f²) - 1`` (>= 0, 0 iff f == y).

    Patton (2011): robust to noise in the volatility proxy; it punishes
    under-prediction more than over-prediction. Both inputs must be > 0.
    """
    a, b = _pair(y, f, positive=True)
    ratio = (a / b) ** 2
    return ratio - np.log(ratio) - 1.0


def qlike(y: ArrayLike, f: ArrayLike) -> float:
    """Mean QLIKE loss, see :func:`qlike_losses`.

    Examples
    --------
    >>> round(qlike([1.0, 2.0], [1.0, 1.0]), 6)  # (4 - log 4 - 1) / 2
    0.806853
    """
    return float(np.mean(qlike_losses(y, f)))


def dm_test(loss_a: ArrayLike, loss_b: ArrayLike, h: int = 1) -> TestResult:
    """Diebold-Mariano test of equal expected loss (``models.backtest.diebold_mariano``).

    ``statistic < 0`` means forecast A has the lower loss; ``pvalue_less`` is
    the one-sided p-value of "A is better". ``h`` sets the HAC lag to at least
    ``h - 1`` because ``h``-day targets overlap.
    """
    return diebold_mariano(loss_a, loss_b, h=h)


@dataclass(frozen=True)
class VolScores:
    """Scores of one forecast against the realised volatility."""

    n_obs: int
    mz: MincerZarnowitz
    rmse: float
    rmse01: float
    qlike: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "n_obs": self.n_obs,
            "mz_alpha": self.mz.alpha,
            "mz_beta": self.mz.beta,
            "mz_r2": self.mz.r2,
            "rmse": self.rmse,
            "rmse01": self.rmse01,
            "qlike": self.qlike,
        }


def score_vol(y: ArrayLike, f: ArrayLike, low: float, high: float) -> VolScores:
    """MZ regression, RMSE, RMSE on the [low, high] -> [0, 1] scale and QLIKE.

    Examples
    --------
    >>> s = score_vol([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 0.0, 4.0)
    >>> s.n_obs, s.mz.r2, s.rmse, s.qlike
    (3, 1.0, 0.0, 0.0)
    """
    a, b = _pair(y, f, positive=True)
    return VolScores(
        n_obs=int(a.size),
        mz=mincer_zarnowitz(a, b),
        rmse=rmse(a, b),
        rmse01=rmse_scaled(a, b, low, high),
        qlike=qlike(a, b),
    )


def daily_mean_losses(
    losses: ArrayLike, day: ArrayLike, days: ArrayLike | None = None
) -> NDArray[np.float64]:
    """Cross-sectional mean loss per day, the time series a pooled DM test needs.

    Parameters
    ----------
    losses : array-like of shape (n_obs,)
    day : array-like of shape (n_obs,)
        Day label of each observation (any sortable type).
    days : array-like, optional
        The days to report, in order; defaults to the sorted unique labels.

    Returns
    -------
    ndarray of shape (n_days,)

    Examples
    --------
    >>> daily_mean_losses([1.0, 3.0, 5.0], [0, 0, 1]).tolist()
    [2.0, 5.0]
    """
    x = np.asarray(losses, dtype=float).ravel()
    d = np.asarray(day).ravel()
    uniq, inv = np.unique(d, return_inverse=True)
    sums = np.bincount(inv, weights=x, minlength=uniq.size)
    counts = np.bincount(inv, minlength=uniq.size)
    out = sums / counts
    if days is None:
        return out
    pos = np.searchsorted(uniq, np.asarray(days))
    return out[pos]


def compare_to_reference(
    losses: Mapping[str, NDArray[np.float64]], reference: str, h: int
) -> dict[str, TestResult]:
    """DM test of every loss series against ``losses[reference]`` (A = model, B = reference)."""
    ref = losses[reference]
    return {name: dm_test(x, ref, h=h) for name, x in losses.items() if name != reference}
