"""Value-at-Risk and Expected Shortfall from scenarios and from parametric laws.

Sign convention: inputs are *returns* (gains positive); VaR and ES are returned
as positive *losses*, so an exception is ``realised_return < -var``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from models.base import LEVELS


def _check_levels(levels: Sequence[float]) -> NDArray[np.float64]:
    lv = np.asarray(levels, dtype=float)
    if lv.ndim != 1 or np.any((lv <= 0.0) | (lv >= 1.0)):
        raise ValueError(f"confidence levels must lie in (0, 1), got {levels}")
    return lv


def var_es_from_samples(
    returns: ArrayLike,
    levels: Sequence[float] = LEVELS,
    weights: ArrayLike | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """VaR and ES from scenario returns (historical or simulated).

    Parameters
    ----------
    returns : array-like of shape (n_scenarios,)
        Scenario returns of the portfolio.
    levels : sequence of float
        Confidence levels in (0, 1).
    weights : array-like of shape (n_scenarios,), optional
        Probability weights of the scenarios (normalised here); equal if omitted.

    Returns
    -------
    var, es : ndarray of shape (n_levels,)
        Positive losses.

    Notes
    -----
    With the scenarios sorted ascending, ``x_(1) <= ... <= x_(n)`` and
    probabilities ``p_i``, ``VaR_a = -x_(k)`` for the first ``k`` whose cumulated
    probability reaches ``1 - a`` (the lower quantile, no interpolation), and
    ``ES_a`` is the Acerbi-Tasche tail mean: the probability-weighted mean of the
    worst ``1 - a`` of the distribution, the boundary scenario counted with the
    fraction that fills the tail exactly. Hence ``ES_a >= VaR_a`` always.
    NaN scenarios raise ``ValueError``.

    Examples
    --------
    >>> import numpy as np
    >>> r = np.arange(1, 101) / -100.0          # -0.01 ... -1.00
    >>> var, es = var_es_from_samples(r, levels=[0.95])
    >>> float(var[0]), round(float(es[0]), 6)
    (0.96, 0.98)
    """
    x = np.asarray(returns, dtype=float).ravel()
    if x.size == 0:
        raise ValueError("need at least one scenario")
    if not np.all(np.isfinite(x)):
        raise ValueError("scenario returns must be finite")
    lv = _check_levels(levels)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    if weights is None:
        p = np.full(x.size, 1.0 / x.size)
    else:
        w = np.asarray(weights, dtype=float).ravel()
        if w.shape != x.shape or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError("weights must be finite, non-negative, of the same length")
        p = w[order] / w.sum()
    cum = np.cumsum(p)
    tail = 1.0 - lv
    var = np.empty(lv.size)
    es = np.empty(lv.size)
    for i, a in enumerate(tail):
        k = int(np.searchsorted(cum, a - 1e-12, side="left"))
        k = min(k, x.size - 1)
        var[i] = -xs[k]
        before = cum[k - 1] if k > 0 else 0.0
        tail_sum = float(np.dot(p[:k], xs[:k])) + (a - before) * xs[k]
        es[i] = -tail_sum / a
    return var, np.maximum(es, var)


def var_es_normal(
    mu: float, sigma: float, levels: Sequence[float] = LEVELS
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """VaR and ES of a normal return N(mu, sigma^2).

    Notes
    -----
    ``VaR_a = -(mu + sigma z)``, ``ES_a = -mu + sigma phi(z) / (1 - a)`` with
    ``z = Phi^{-1}(1 - a)``.

    Examples
    --------
    >>> var, es = var_es_normal(0.0, 1.0, [0.975])
    >>> round(float(var[0]), 4), round(float(es[0]), 4)
    (1.96, 2.3378)
    """
    lv = _check_levels(levels)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    z = stats.norm.ppf(1.0 - lv)
    var = -(mu + sigma * z)
    es = -mu + sigma * stats.norm.pdf(z) / (1.0 - lv)
    return var, es


def var_es_student_t(
    mu: float,
    sigma: float,
    nu: float,
    levels: Sequence[float] = LEVELS,
    *,
    standardized: bool = True,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """VaR and ES of a location-scale Student-t return.

    Parameters
    ----------
    mu : float
        Location (the mean, for ``nu > 1``).
    sigma : float
        Standard deviation if ``standardized`` (needs ``nu > 2``), else the
        scale parameter of the t law.
    nu : float
        Degrees of freedom, > 1 (> 2 when ``standardized``).

    Notes
    -----
    With ``q = t_nu^{-1}(1 - a)`` and scale ``s``:
    ``VaR_a = -(mu + s q)`` and
    ``ES_a = -mu + s f_nu(q) (nu + q^2) / ((nu - 1)(1 - a))``.
    A standardised t has ``s = sigma sqrt((nu - 2) / nu)``.

    Examples
    --------
    >>> var, es = var_es_student_t(0.0, 1.0, 1e6, [0.975])
    >>> round(float(var[0]), 3), round(float(es[0]), 3)
    (1.96, 2.338)
    """
    lv = _check_levels(levels)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    lower = 2.0 if standardized else 1.0
    if not nu > lower:
        raise ValueError(f"nu must be > {lower:g}, got {nu}")
    s = sigma * np.sqrt((nu - 2.0) / nu) if standardized else sigma
    q = stats.t.ppf(1.0 - lv, nu)
    var = -(mu + s * q)
    es = -mu + s * stats.t.pdf(q, nu) * (nu + q**2) / ((nu - 1.0) * (1.0 - lv))
    return var, es


def var_es_from_ppf(
    mu: float,
    sigma: float,
    ppf,
    levels: Sequence[float] = LEVELS,
    n_grid: int = 2000,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """VaR and ES of ``mu + sigma Z`` for any standardised law given by its quantile function.

    ES is the mean of the quantile function over the tail,
    ``ES_a = -(mu + sigma / (1 - a) * int_0^{1-a} ppf(u) du)``, integrated with
    the midpoint rule on ``n_grid`` points (accurate to ~1e-4 relative for the
    fat-tailed laws used here). Used for the skewed t of GJR-GARCH.

    Examples
    --------
    >>> from scipy import stats
    >>> var, es = var_es_from_ppf(0.0, 1.0, stats.norm.ppf, [0.975], n_grid=20000)
    >>> round(float(var[0]), 3), round(float(es[0]), 2)
    (1.96, 2.34)
    """
    lv = _check_levels(levels)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    var = np.empty(lv.size)
    es = np.empty(lv.size)
    for i, a in enumerate(lv):
        tail = 1.0 - a
        u = (np.arange(n_grid) + 0.5) / n_grid * tail
        qs = np.asarray(ppf(u), dtype=float)
        var[i] = -(mu + sigma * float(np.asarray(ppf(np.array([tail])), dtype=float)[0]))
        es[i] = -(mu + sigma * float(qs.mean()))
    return var, np.maximum(es, var)
