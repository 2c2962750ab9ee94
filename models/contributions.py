"""Euler (marginal) risk contributions of each asset, estimated from scenarios.

For a portfolio return ``P = sum_i c_i`` with ``c_i = w_i R_i``, the Euler
allocation of a positively homogeneous risk measure splits it into
``VaR = sum_i -E[c_i | P = -VaR]`` and ``ES = sum_i -E[c_i | P <= -VaR]``
(Tasche 1999). Both are estimated here from the same Monte Carlo or historical
scenarios the portfolio VaR/ES come from.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from models.base import check_weights
from models.measures import var_es_from_samples


def euler_contributions(
    asset_returns: ArrayLike,
    weights: ArrayLike,
    level: float,
    *,
    bandwidth: float = 0.0025,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Contributions of each asset to portfolio VaR and ES from scenarios.

    Parameters
    ----------
    asset_returns : array-like of shape (n_scenarios, n_assets)
        Scenario simple returns of each asset (gains positive).
    weights : array-like of shape (n_assets,)
        Portfolio weights; the portfolio scenario return is ``asset_returns @ weights``.
    level : float
        Confidence level in (0, 1).
    bandwidth : float
        Half-width of the window of order statistics averaged around the VaR
        scenario, as a fraction of ``n_scenarios`` (at least one scenario each
        side), in (0, 0.5).

    Returns
    -------
    var_contrib, es_contrib : ndarray of shape (n_assets,)
        Positive numbers are losses. ``var_contrib.sum()`` and
        ``es_contrib.sum()`` equal ``var_es_from_samples(asset_returns @ weights,
        [level])`` (to rounding).

    Notes
    -----
    ES: with the scenarios sorted by portfolio return and the Acerbi-Tasche
    tail weights of :func:`~models.measures.var_es_from_samples` (``1/n`` for
    each scenario beyond the VaR one, the remainder ``(1 - a) - k/n`` on it),
    ``ES_i = -sum_j p_j c_ij / (1 - a)``: linear in ``c``, so it adds up exactly.

    VaR: ``-E[c_i | P = -VaR]`` is a conditional expectation on a null set, so
    it is estimated by the mean of ``c_i`` over the ``2 m + 1`` scenarios
    nearest in rank to the VaR scenario (``m = bandwidth * n``), then rescaled
    so that the contributions add up to the VaR (the usual correction of this
    small-window estimator); if the window's mean portfolio loss has the
    opposite sign, the gap is shared equally instead.

    Examples
    --------
    >>> import numpy as np
    >>> r = np.random.default_rng(0).standard_normal((20000, 2)) * [0.01, 0.02]
    >>> vc, ec = euler_contributions(r, [0.5, 0.5], 0.99)
    >>> var, es = var_es_from_samples(r @ [0.5, 0.5], [0.99])
    >>> bool(np.isclose(vc.sum(), var[0]) and np.isclose(ec.sum(), es[0]))
    True
    >>> bool(vc[1] > 3 * vc[0])   # the volatile asset carries most of the risk
    True
    """
    var_c, es_c = euler_contributions_multi(asset_returns, weights, [level], bandwidth=bandwidth)
    return var_c[0], es_c[0]


def euler_contributions_multi(
    asset_returns: ArrayLike,
    weights: ArrayLike,
    levels: Sequence[float],
    *,
    bandwidth: float = 0.0025,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """:func:`euler_contributions` at several levels, sharing one partial sort.

    Only the worst ``k + m + 1`` scenarios (``k`` scenarios beyond the VaR
    one at the lowest level, ``m`` the VaR window's half-width) are ordered;
    the portfolio VaR/ES the contributions add up to are those of
    ``var_es_from_samples(asset_returns @ weights, levels)``.

    Returns
    -------
    var_contrib, es_contrib : ndarray of shape (n_levels, n_assets)

    Examples
    --------
    >>> import numpy as np
    >>> r = np.random.default_rng(0).standard_normal((20000, 3)) * [0.01, 0.02, 0.03]
    >>> vc, ec = euler_contributions_multi(r, [0.5, 0.3, 0.2], [0.95, 0.99])
    >>> one = euler_contributions(r, [0.5, 0.3, 0.2], 0.99)
    >>> bool(np.allclose(vc[1], one[0]) and np.allclose(ec[1], one[1]))
    True
    """
    r = np.asarray(asset_returns, dtype=float)
    w = check_weights(weights)
    if r.ndim != 2 or r.shape[1] != w.size or r.shape[0] == 0:
        raise ValueError(f"asset_returns must have shape (n_scenarios, {w.size}), got {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("asset_returns must be finite")
    levels = [float(lv) for lv in levels]
    for level in levels:
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must lie in (0, 1), got {level}")
    if not 0.0 < bandwidth < 0.5:
        raise ValueError(f"bandwidth must lie in (0, 0.5), got {bandwidth}")
    n = r.shape[0]
    port = r @ w
    cum = np.cumsum(np.full(n, 1.0 / n))  # as var_es_from_samples does
    tails = [1.0 - level for level in levels]
    ks = [min(int(np.searchsorted(cum, t - 1e-12, side="left")), n - 1) for t in tails]
    m = max(1, round(bandwidth * n))
    n_worst = min(n, max(ks) + m + 1)
    if n_worst < n:
        part = np.argpartition(port, n_worst)
        worst = part[:n_worst]
        order = worst[np.lexsort((worst, port[worst]))]  # ties by index, as a stable sort
        # the worst scenarios at 1/n each plus one point, no smaller, carrying the rest
        x = np.append(port[order], port[part[n_worst]])
        p = np.full(n_worst + 1, 1.0 / n)
        p[-1] = (n - n_worst) / n
        var_tot, es_tot = var_es_from_samples(x, levels, weights=p)
    else:
        order = np.argsort(port, kind="stable")
        var_tot, es_tot = var_es_from_samples(port, levels)
    contrib = r[order] * w  # the worst scenarios' contributions, in order
    var_c = np.empty((len(levels), w.size))
    es_c = np.empty_like(var_c)
    for i, (tail, k) in enumerate(zip(tails, ks, strict=True)):
        before = float(cum[k - 1]) if k > 0 else 0.0
        # ES: Acerbi-Tasche weights, the same as var_es_from_samples
        es_i = -(contrib[:k].sum(axis=0) / n + (tail - before) * contrib[k]) / tail
        es_c[i] = _match_total(es_i, float(es_tot[i]))
        # VaR: local average around the k-th order statistic
        var_i = -contrib[max(0, k - m) : min(n, k + m + 1)].mean(axis=0)
        var_c[i] = _match_total(var_i, float(var_tot[i]))
    return var_c, es_c


def _match_total(c: NDArray[np.float64], total: float) -> NDArray[np.float64]:
    """Rescale ``c`` to sum to ``total`` (share the gap equally if the signs disagree)."""
    s = float(c.sum())
    if s != 0.0 and np.sign(s) == np.sign(total):
        return c * (total / s)
    return c + (total - s) / c.size
