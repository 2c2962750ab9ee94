"""RiskMetrics (J.P. Morgan, 1996): exponentially weighted covariance, normal VaR/ES."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from models.base import LEVELS, RiskForecast, VaRModel
from models.measures import var_es_normal


class RiskMetricsEWMA(VaRModel):
    """Zero-mean normal VaR/ES with the RiskMetrics EWMA covariance of asset returns.

    Parameters
    ----------
    weights : array-like of shape (n_assets,)
    lam : float
        Decay factor in (0, 1); RiskMetrics' daily value is 0.94.
    min_obs : int
        Days whose sample covariance starts the recursion, >= 2.

    Attributes
    ----------
    covariance_ : ndarray of shape (n_assets, n_assets) or None
        ``Sigma_t``, the forecast covariance of tomorrow's asset simple returns
        (``None`` during warm-up).

    Notes
    -----
    With ``R_t = exp(r_t) - 1`` the asset simple returns,
    ``Sigma_{min_obs} = cov(R_1, ..., R_{min_obs})`` (``ddof=1``), then
    ``Sigma_t = lam Sigma_{t-1} + (1 - lam) R_t R_t'``. The portfolio simple
    return is ``w' R``, so its forecast variance is exactly ``w' Sigma_t w``;
    VaR/ES are those of ``N(0, w' Sigma_t w)``: ``sigma`` times the standard
    normal's (:func:`models.measures.var_es_normal`, computed once). An all-zero
    history gives VaR = ES = 0.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.log1p(np.array([[0.01, -0.02], [-0.01, 0.0], [0.02, 0.01]]))
    >>> m = RiskMetricsEWMA([0.5, 0.5], lam=0.9, min_obs=2).fit(x)
    >>> c0 = np.cov(np.expm1(x[:2]), rowvar=False)
    >>> bool(np.allclose(m.covariance_, 0.9 * c0 + 0.1 * np.outer([0.02, 0.01], [0.02, 0.01])))
    True
    """

    name = "ewma"

    def __init__(self, weights: ArrayLike, lam: float = 0.94, min_obs: int = 30) -> None:
        if not 0.0 < float(lam) < 1.0:
            raise ValueError(f"lam must lie in (0, 1), got {lam}")
        if int(min_obs) < 2:
            raise ValueError(f"min_obs must be >= 2, got {min_obs}")
        super().__init__(weights, min_obs=int(min_obs))
        self.lam = float(lam)
        self._unit_var, self._unit_es = var_es_normal(0.0, 1.0, LEVELS)  # scaled by sigma
        self.reset()

    def reset(self) -> None:
        super().reset()
        self._first = np.zeros((self.min_obs, self.n_assets))  # warm-up rows
        self.covariance_: NDArray[np.float64] | None = None

    def _update(self, x: NDArray[np.float64]) -> None:
        r = np.expm1(x)
        if self.covariance_ is None:
            self._first[self.n_seen_] = r
            if self.n_seen_ + 1 == self.min_obs:
                cov = np.cov(self._first, rowvar=False, ddof=1)
                self.covariance_ = np.atleast_2d(cov).astype(float)
                self._first = np.zeros((0, self.n_assets))
        else:
            self.covariance_ = self.lam * self.covariance_ + (1.0 - self.lam) * np.outer(r, r)

    def portfolio_sigma(self) -> float:
        """Forecast standard deviation of tomorrow's portfolio simple return."""
        if self.covariance_ is None:
            return math.nan
        w = self.weights
        return math.sqrt(max(float(w @ self.covariance_ @ w), 0.0))

    def _predict(self) -> RiskForecast:
        sigma = self.portfolio_sigma()
        return RiskForecast(sigma * self._unit_var, sigma * self._unit_es)
