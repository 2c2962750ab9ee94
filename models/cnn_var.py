"""VaR/ES from the CNN's one-day-ahead portfolio volatility forecast.

:class:`CnnVaR` streams a book's days into a :class:`~models.cnn.VolInputState`,
asks the trained network (:class:`~models.cnn.VolForecaster`) for the
portfolio's volatility over the next day, ``sigma_{t+1}``, and turns it into
VaR/ES in one of two ways:

``method="fhs"`` (filtered historical simulation, the default)
    Keep the last ``window`` standardised portfolio returns
    ``z_s = R_s / sigma_s``, each divided by the forecast the model itself
    made the evening before; the scenarios of tomorrow are
    ``sigma_{t+1} z_s`` and VaR/ES are their empirical lower quantile and
    tail mean (:func:`~models.measures.var_es_from_samples`). The empirical
    z law corrects any bias of the network's level and carries fat tails and
    skew.
``method="t"``
    A Student-t with zero location fitted (maximum likelihood, scipy) to the
    same ``z_s``, refitted every ``refit_every`` days; VaR/ES are
    ``sigma_{t+1}`` times the fitted law's.

Which bars the network sees: with the artifact's ``bars="close"`` (the
shipped default) the features come from closes only, so ``update(log_returns)``
feeds exactly what the network was trained on. An ``bars="ohlcv"`` artifact
wants :meth:`CnnVaR.update_bar`; fed through ``update(log_returns)`` it gets
close-only bars (open = high = low = close, no volume), which turns the
overnight gap into the return, Garman-Klass into ``|r|`` and the volume
z-score into 0 - a distribution shift, so its forecasts degrade towards a
close-to-close model.

Warm-up: the network needs ``config.warmup`` returns (60) before its first
forecast, and the VaR needs ``min_standardized`` standardised returns after
that, so ``min_obs = warmup + min_standardized`` updates (160 by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from models.base import LEVELS, RiskForecast, VaRModel
from models.cnn import CnnConfig, VolForecaster, VolInputState
from models.exceptions import NotEnoughObservations
from models.features import positive_prices
from models.measures import var_es_from_samples, var_es_student_t

__all__ = ["CnnVaR"]

_METHODS = ("fhs", "t")


class CnnVaR(VaRModel):
    """Portfolio VaR/ES from the CNN volatility forecast (filtered HS or Student-t).

    Parameters
    ----------
    weights : array-like of shape (n_assets,)
        Portfolio weights (any number of assets: the network is asset-agnostic).
    artifact : mapping
        The trained artifact (``stream_app.train_cnn.load(path)``): a dict of
        tensors and plain values with keys ``format``, ``config``, ``specs``,
        ``state_dict``.
    method : {"fhs", "t"}, default="fhs"
    window : int, default=500
        Standardised returns kept (>= min_standardized).
    min_standardized : int, default=100
        Standardised returns needed before the first VaR (>= 20).
    refit_every : int, default=20
        Days between Student-t refits (``method="t"``; refits happen in
        ``update``, so ``predict`` only reads).
    horizon : int, optional
        Which output of the network is the one-day forecast; default 1 if
        the artifact forecasts ``h = 1``, else its shortest horizon (whose
        mean daily volatility is then used for tomorrow).

    Attributes
    ----------
    sigma_next_ : float
        The forecast volatility of the next day's portfolio return (NaN
        during the network's warm-up).
    n_standardized_ : int
        Standardised returns held.
    nu_, t_scale_ : float
        Fitted Student-t (``method="t"``; NaN before the first fit).

    Notes
    -----
    State is numpy arrays and floats plus the artifact (tensors and plain
    types); the torch module is rebuilt from the artifact after unpickling,
    so a pickled model continues bit-identically.
    """

    name = "cnn"

    def __init__(
        self,
        weights: ArrayLike,
        artifact: Mapping[str, Any],
        *,
        method: str = "fhs",
        window: int = 500,
        min_standardized: int = 100,
        refit_every: int = 20,
        horizon: int | None = None,
    ) -> None:
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        if int(min_standardized) != min_standardized or min_standardized < 20:
            raise ValueError(f"min_standardized must be an integer >= 20, got {min_standardized!r}")
        if int(window) != window or window < min_standardized:
            raise ValueError(
                f"window must be an integer >= min_standardized={min_standardized}, got {window!r}"
            )
        if int(refit_every) != refit_every or refit_every < 1:
            raise ValueError(f"refit_every must be an integer >= 1, got {refit_every!r}")
        if not isinstance(artifact, Mapping) or "state_dict" not in artifact:
            raise ValueError(
                "artifact must be the CNN artifact dictionary (stream_app.train_cnn.load(path))"
            )
        config = CnnConfig.from_dict(artifact["config"])
        horizons = config.horizons
        if horizon is None:
            horizon = 1 if 1 in horizons else min(horizons)
        if horizon not in horizons:
            raise ValueError(f"horizon must be one of the artifact's {horizons}, got {horizon!r}")
        super().__init__(weights, min_obs=config.warmup + int(min_standardized))
        self.artifact = artifact
        self.config = config
        self.method = method
        self.window = int(window)
        self.min_standardized = int(min_standardized)
        self.refit_every = int(refit_every)
        self.horizon = int(horizon)
        self._h_index = horizons.index(self.horizon)
        self._forecaster: VolForecaster | None = None
        self.reset()

    # -- state -----------------------------------------------------------------

    def reset(self) -> None:
        super().reset()
        self._inputs = VolInputState(self.weights, self.config)
        self._z = np.zeros(self.window)
        self._z_head = 0
        self.n_standardized_ = 0
        self.sigma_next_ = float("nan")
        self.nu_ = float("nan")
        self.t_scale_ = float("nan")
        self._since_fit = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_forecaster"] = None  # rebuilt from the artifact on demand
        return state

    @property
    def forecaster(self) -> VolForecaster:
        if self._forecaster is None:
            self._forecaster = VolForecaster.from_artifact(self.artifact)
        return self._forecaster

    def standardized_returns(self) -> NDArray[np.float64]:
        """The standardised returns held, oldest first, shape (n_standardized_,)."""
        n = self.n_standardized_
        idx = (self._z_head - n + np.arange(n)) % self.window
        return self._z[idx].copy()

    # -- streaming -------------------------------------------------------------

    def _after_return(self, x: NDArray[np.float64]) -> None:
        """Standardise today's portfolio return by yesterday's forecast."""
        if np.isfinite(self.sigma_next_):
            realised = float(self.weights @ np.expm1(x))
            self._z[self._z_head] = realised / self.sigma_next_
            self._z_head = (self._z_head + 1) % self.window
            self.n_standardized_ = min(self.n_standardized_ + 1, self.window)
            self._since_fit += 1
            if self.method == "t" and self.n_standardized_ >= self.min_standardized:
                if not np.isfinite(self.nu_) or self._since_fit >= self.refit_every:
                    self._fit_t(self.standardized_returns())

    def _after_feed(self) -> None:
        if self._inputs.is_ready:
            self.sigma_next_ = self.forecast_vol()[self._h_index]

    def _update(self, x: NDArray[np.float64]) -> None:
        self._after_return(x)
        self._inputs.update_returns(x)
        self._after_feed()

    def update_bar(
        self,
        open: ArrayLike,
        high: ArrayLike,
        low: ArrayLike,
        close: ArrayLike,
        volume: ArrayLike | None = None,
    ) -> None:
        """Advance by one day of bars, each of shape (n_assets,).

        The first bar only sets the reference closes (no return yet, so
        ``n_seen_`` does not move); each later bar counts as one
        ``update(log(close / previous close))`` for the VaR, and feeds the
        full bar to the network's features when the artifact uses
        ``bars="ohlcv"``.
        """
        c = positive_prices(close, self.n_assets)
        first = self._inputs.n_bars_ == 0
        x = None if first else np.log(c / self._inputs.last_close_)
        if x is not None:
            self._after_return(x)
        self._inputs.update_bar(open, high, low, c, volume)
        if x is not None:
            self._after_feed()
            self.n_seen_ += 1

    def forecast_vol(self) -> NDArray[np.float64]:
        """The portfolio's forecast volatility for every horizon, shape (n_horizons,).

        Daily units: the root mean squared return expected over the next
        ``h`` days. Raises ``NotEnoughObservations`` during the warm-up.
        """
        windows, har, scale = self._inputs.inputs()
        vol = self.forecaster.predict_vol(
            windows[None], har[None], scale[None], series=[self.n_assets]
        )
        return vol[0, 0]

    # -- forecasting -----------------------------------------------------------

    def _fit_t(self, z: NDArray[np.float64]) -> None:
        nu, _, scale = stats.t.fit(z, floc=0.0)
        self.nu_ = float(min(max(nu, 2.1), 200.0))
        self.t_scale_ = float(scale)
        self._since_fit = 0

    def _predict(self) -> RiskForecast:
        z = self.standardized_returns()
        if z.size < self.min_standardized or not np.isfinite(self.sigma_next_):
            raise NotEnoughObservations(self.min_standardized, z.size, self.name)
        sigma = self.sigma_next_
        if self.method == "fhs":
            var, es = var_es_from_samples(sigma * z, LEVELS)
        else:
            var, es = var_es_student_t(
                0.0, sigma * self.t_scale_, self.nu_, LEVELS, standardized=False
            )
        return RiskForecast(var=np.asarray(var, dtype=float), es=np.asarray(es, dtype=float))
