"""Parametric VaR/ES from a univariate GARCH on the portfolio return.

``GarchT``: GARCH(1,1) with standardised Student-t innovations.
``GjrSkewT``: GJR-GARCH(1,1,1) with Hansen's skewed t (Glosten-Jagannathan-Runkle leverage).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from models.base import LEVELS, RiskForecast, VaRModel, portfolio_simple_return
from models.garch import GarchParams, RollingGarch
from models.measures import var_es_student_t


class _GarchVaR(VaRModel):
    """Common part: a :class:`~models.garch.RollingGarch` on the portfolio's percent return.

    Subclasses set ``vol`` and ``dist`` and give the VaR/ES of the unit law
    (``mu = 0``, ``sigma = 1``); those depend only on the shape parameters, so
    they are cached until a refit changes them, and each forecast is
    ``VaR = (-mu + sigma VaR_unit) / 100`` (location-scale, exact). The cache is
    refreshed in ``_update`` so that ``predict`` only reads.
    """

    vol: ClassVar[str]
    dist: ClassVar[str]

    def __init__(
        self, weights: ArrayLike, window: int = 1000, refit_every: int = 21, min_obs: int = 250
    ) -> None:
        super().__init__(weights, min_obs=min_obs)
        self.window = int(window)
        self.refit_every = int(refit_every)
        self.garch_ = RollingGarch(self.vol, self.dist, self.window, self.refit_every, min_obs)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.garch_.reset()
        # (parameters the cache was computed for, unit VaR, unit ES)
        self._unit: tuple[GarchParams | None, NDArray[np.float64], NDArray[np.float64]] = (
            None,
            np.empty(0),
            np.empty(0),
        )

    def _update(self, x: NDArray[np.float64]) -> None:
        self.garch_.update(100.0 * float(portfolio_simple_return(self.weights, x)))
        params = self.garch_.params_
        if params is not None and params is not self._unit[0]:
            self._unit = (params, *self._unit_var_es(params))

    def forecast_moments(self) -> tuple[float, float]:
        """``(mean, standard deviation)`` of tomorrow's portfolio simple return (fractions)."""
        mu, sigma2 = self.garch_.forecast()
        return mu / 100.0, math.sqrt(sigma2) / 100.0

    def _unit_var_es(self, params: GarchParams) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        raise NotImplementedError

    def _predict(self) -> RiskForecast:
        _, var_u, es_u = self._unit
        mu, sigma2 = self.garch_.forecast()
        sigma = math.sqrt(sigma2)
        return RiskForecast((sigma * var_u - mu) / 100.0, (sigma * es_u - mu) / 100.0)


class GarchT(_GarchVaR):
    """GARCH(1,1)-t on the portfolio simple return, refitted on a rolling window.

    Parameters
    ----------
    weights : array-like of shape (n_assets,)
    window : int
        Rolling window of the refits (all observations while fewer).
    refit_every : int
        Days between refits; the variance is filtered forward in between.
    min_obs : int
        Days before the first fit and forecast.

    Attributes
    ----------
    garch_ : RollingGarch

    Notes
    -----
    With ``y = 100 x`` the percent portfolio return and the one-day forecast
    ``(mu, sigma^2)``, VaR/ES are those of ``mu + sigma z`` with ``z`` a
    standardised t with ``nu`` degrees of freedom
    (:func:`models.measures.var_es_student_t` with ``standardized=True``),
    divided by 100.
    """

    name = "garch_t"
    vol = "garch"
    dist = "t"

    def _unit_var_es(self, params: GarchParams) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return var_es_student_t(0.0, 1.0, float(params.nu), LEVELS, standardized=True)  # type: ignore[arg-type]


class GjrSkewT(_GarchVaR):
    """GJR-GARCH(1,1,1) with Hansen's skewed-t innovations on the portfolio simple return.

    Parameters and attributes as :class:`GarchT`.

    Notes
    -----
    VaR is ``-(mu + sigma F^{-1}(1 - a))`` with ``F`` the unit-variance skewed t
    (arch's parametrisation, ``eta = nu``, ``lambda = lam``); ES is the exact tail
    mean ``-(mu + sigma E[z | z <= F^{-1}(1 - a)])`` in closed form
    (:meth:`models.garch.GarchParams.std_tail_mean`), divided by 100.
    """

    name = "gjr_skewt"
    vol = "gjr"
    dist = "skewt"

    def _unit_var_es(self, params: GarchParams) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return params.var_es(0.0, 1.0, LEVELS)
