"""Historical simulation, plain and filtered (Barone-Adesi et al., 1999).

Both work on the portfolio's simple return ``sum_i w_i (exp(r_i) - 1)`` of a
constant-mix portfolio.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from models.base import LEVELS, RiskForecast, VaRModel, portfolio_simple_return
from models.garch import RollingGarch
from models.measures import var_es_from_samples


class HistoricalSimulation(VaRModel):
    """VaR/ES from the empirical distribution of the last ``window`` days.

    Parameters
    ----------
    weights : array-like of shape (n_assets,)
        Portfolio weights (constant mix).
    window : int
        Days of history used as scenarios, >= 10.
    min_obs : int, optional
        Days before the first forecast, in ``[10, window]``; by default
        ``min(window, 250)`` (a shorter, growing window until ``window`` days are in).

    Attributes
    ----------
    n_window_ : int
        Days currently in the window.

    Notes
    -----
    The window keeps the *asset* simple returns, shape (window, n_assets), in a
    ring buffer, and the scenarios are re-priced with today's weights:
    ``x_s = sum_i w_i R_{s,i}`` for each past day ``s``. VaR is the lower
    empirical quantile and ES the Acerbi-Tasche tail mean
    (:func:`models.measures.var_es_from_samples`). ``predict`` costs one
    (window x n_assets) product and one sort.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(42)
    >>> model = HistoricalSimulation([0.5, 0.5], window=100).fit(0.01 * rng.standard_normal((150, 2)))
    >>> f = model.predict()
    >>> bool(np.all(f.es >= f.var)), model.n_window_
    (True, 100)
    """

    name = "hs"

    def __init__(self, weights: ArrayLike, window: int = 500, min_obs: int | None = None) -> None:
        if int(window) < 10:
            raise ValueError(f"window must be >= 10, got {window}")
        window = int(window)
        min_obs = min(window, 250) if min_obs is None else int(min_obs)
        if not 10 <= min_obs <= window:
            raise ValueError(f"min_obs must lie in [10, window={window}], got {min_obs}")
        super().__init__(weights, min_obs=min_obs)
        self.window = window
        self.reset()

    def reset(self) -> None:
        super().reset()
        self._returns = np.zeros((self.window, self.n_assets))  # asset simple returns
        self._pos = 0
        self.n_window_ = 0

    def _update(self, x: NDArray[np.float64]) -> None:
        self._returns[self._pos] = np.expm1(x)
        self._pos = (self._pos + 1) % self.window
        self.n_window_ = min(self.n_window_ + 1, self.window)

    def scenarios(self) -> NDArray[np.float64]:
        """Portfolio simple returns of the window at today's weights, shape (n_window,).

        Not in chronological order once the ring buffer has wrapped.
        """
        return self._returns[: self.n_window_] @ self.weights

    def _predict(self) -> RiskForecast:
        var, es = var_es_from_samples(self.scenarios(), LEVELS)
        return RiskForecast(var, es)


class FilteredHistoricalSimulation(VaRModel):
    """Filtered historical simulation: GARCH(1,1) volatility times bootstrapped residuals.

    Parameters
    ----------
    weights : array-like of shape (n_assets,)
    window : int
        Standardised residuals used as scenarios (the most recent ones),
        ``<= garch_window``.
    garch_window : int
        Rolling window of the GARCH refits.
    refit_every : int
        Days between GARCH refits (frozen-parameter filtering in between).
    dist : {"normal", "t"}
        Likelihood of the GARCH fit: Gaussian quasi-maximum likelihood by default.
    min_obs : int
        Days before the first fit and forecast.

    Attributes
    ----------
    garch_ : RollingGarch
        The volatility model of the portfolio's percent simple return.

    Notes
    -----
    With ``y_t = 100 x_t`` the portfolio percent return, GARCH(1,1)
    ``y_t = mu + sigma_t z_t`` and standardised residuals
    ``z_s = (y_s - mu) / sigma_s`` over the last ``window`` days, the scenarios
    are ``(mu + sigma_{t+1} z_s) / 100``; VaR/ES as in
    :class:`HistoricalSimulation`. Until ``window`` residuals exist, all the
    available ones (at least ``min_obs``) are used.
    """

    name = "fhs"

    def __init__(
        self,
        weights: ArrayLike,
        window: int = 500,
        garch_window: int = 1000,
        refit_every: int = 21,
        dist: str = "normal",
        min_obs: int = 250,
    ) -> None:
        if dist not in ("normal", "t"):
            raise ValueError(f"dist must be 'normal' or 't', got {dist!r}")
        if not 10 <= int(window) <= int(garch_window):
            raise ValueError(f"window must lie in [10, garch_window={garch_window}], got {window}")
        super().__init__(weights, min_obs=min_obs)
        self.window = int(window)
        self.garch_window = int(garch_window)
        self.refit_every = int(refit_every)
        self.dist = dist
        self.garch_ = RollingGarch("garch", dist, self.garch_window, self.refit_every, min_obs)

    def reset(self) -> None:
        super().reset()
        self.garch_.reset()

    def _update(self, x: NDArray[np.float64]) -> None:
        self.garch_.update(100.0 * float(portfolio_simple_return(self.weights, x)))

    def scenarios(self) -> NDArray[np.float64]:
        """Filtered scenarios of tomorrow's portfolio simple return, shape (n_scenarios,)."""
        mu, sigma2 = self.garch_.forecast()
        z = self.garch_.recent_std_resid(self.window)
        return (mu + math.sqrt(sigma2) * z) / 100.0

    def _predict(self) -> RiskForecast:
        var, es = var_es_from_samples(self.scenarios(), LEVELS)
        return RiskForecast(var, es)
