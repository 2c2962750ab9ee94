"""The streaming API every VaR/ES model of the engine shares.

A model is constructed with its hyperparameters (``weights`` of the portfolio
among them), then fed one day at a time with ``update(log_returns)``.
``predict()`` gives the forecast for the *next* day from what was seen so far.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from models.exceptions import NotEnoughObservations

#: Confidence levels every model forecasts (VaR and ES), in this order.
LEVELS: tuple[float, float, float] = (0.95, 0.975, 0.99)


@dataclass(frozen=True)
class RiskForecast:
    """A one-day-ahead forecast of portfolio Value-at-Risk and Expected Shortfall.

    Parameters
    ----------
    var : ndarray of shape (n_levels,)
        VaR at each level of ``levels`` as a positive loss, a fraction of
        portfolio value (0.02 means a 2 % loss).
    es : ndarray of shape (n_levels,)
        Expected Shortfall at the same levels, same units; ``es >= var``.
    levels : tuple of float
        Confidence levels, by default :data:`LEVELS`.
    """

    var: NDArray[np.float64]
    es: NDArray[np.float64]
    levels: tuple[float, ...] = LEVELS

    def at(self, level: float) -> tuple[float, float]:
        """Return ``(var, es)`` at one confidence level."""
        i = self.levels.index(level)
        return float(self.var[i]), float(self.es[i])


def portfolio_simple_return(weights: NDArray[np.float64], log_returns: ArrayLike) -> NDArray:
    """Simple return of a constant-mix portfolio from asset log returns.

    Parameters
    ----------
    weights : ndarray of shape (n_assets,)
    log_returns : array-like of shape (n_assets,) or (n_obs, n_assets)

    Returns
    -------
    float or ndarray of shape (n_obs,)
        ``sum_i w_i (exp(r_i) - 1)``.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.array([0.5, 0.5])
    >>> round(float(portfolio_simple_return(w, np.log([1.1, 0.9]))), 12)
    0.0
    """
    return np.expm1(np.asarray(log_returns, dtype=float)) @ weights


def check_weights(weights: ArrayLike) -> NDArray[np.float64]:
    """Validate portfolio weights: finite, 1-d, not all zero."""
    w = np.asarray(weights, dtype=float)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"weights must be a non-empty 1-d array, got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be finite, got {w}")
    if np.all(w == 0):
        raise ValueError("weights must not all be zero")
    return w


class VaRModel(ABC):
    """Base class of the engine's VaR/ES models.

    Subclasses implement :meth:`reset`, :meth:`_update` and :meth:`_predict`.
    State must be plain picklable data (numpy arrays, floats, tuples), and all
    randomness must come from the explicit ``seed``.

    Parameters
    ----------
    weights : array-like of shape (n_assets,)
        Portfolio weights (constant mix, rebalanced daily).
    min_obs : int
        Observations needed before :meth:`predict` answers.
    """

    #: Short name used in reports and in ``forecasts.csv``.
    name: str = "model"

    def __init__(self, weights: ArrayLike, *, min_obs: int) -> None:
        self.weights = check_weights(weights)
        if min_obs < 1:
            raise ValueError(f"min_obs must be >= 1, got {min_obs}")
        self.min_obs = int(min_obs)
        self.n_seen_ = 0

    @property
    def n_assets(self) -> int:
        return int(self.weights.shape[0])

    def reset(self) -> None:
        """Forget everything seen."""
        self.n_seen_ = 0

    def update(self, log_returns: ArrayLike) -> None:
        """Advance the model by one day of asset log returns, shape (n_assets,)."""
        x = np.asarray(log_returns, dtype=float)
        if x.shape != (self.n_assets,):
            raise ValueError(f"expected returns of shape ({self.n_assets},), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"returns must be finite, got {x}")
        self._update(x)
        self.n_seen_ += 1

    def predict(self) -> RiskForecast:
        """Forecast next-day VaR/ES from the days seen so far.

        Raises
        ------
        NotEnoughObservations
            During warm-up.
        """
        if self.n_seen_ < self.min_obs:
            raise NotEnoughObservations(self.min_obs, self.n_seen_, self.name)
        return self._predict()

    def predict_or_none(self) -> RiskForecast | None:
        """Like :meth:`predict` but ``None`` during warm-up."""
        try:
            return self.predict()
        except NotEnoughObservations:
            return None

    def fit(self, log_returns: ArrayLike) -> VaRModel:
        """Reset, then update with each row of ``log_returns`` (n_obs, n_assets)."""
        self.reset()
        for row in np.asarray(log_returns, dtype=float):
            self.update(row)
        return self

    @abstractmethod
    def _update(self, x: NDArray[np.float64]) -> None: ...

    @abstractmethod
    def _predict(self) -> RiskForecast: ...
