"""Copula-GARCH baseline: GARCH(1,1)-t marginals joined by a Student-t copula, Monte Carlo VaR/ES.

Each asset's percent log return follows its own rolling GARCH(1,1) with
standardised-t innovations (:class:`models.garch.RollingGarch`); the dependence
of the innovations is a Student-t copula (:class:`models.copula.StudentTCopula`)
fitted on their probability integral transforms. Each day ``n_scenarios`` joint
innovations are drawn, turned into next-day asset returns and weighted into the
portfolio return, whose empirical VaR/ES is the forecast.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from models.base import LEVELS, RiskForecast, VaRModel
from models.contributions import euler_contributions
from models.copula import ScoreQuantileMap, StudentTCopula
from models.exceptions import NotEnoughObservations
from models.garch import RollingGarch
from models.measures import var_es_from_samples


class CopulaGarchT(VaRModel):
    """Per-asset GARCH(1,1)-t marginals, Student-t copula, Monte Carlo VaR/ES.

    Parameters
    ----------
    weights : array-like of shape (n_assets,)
        Portfolio weights (constant mix).
    window : int
        Rolling window of the GARCH refits, in days.
    refit_every : int
        Days between GARCH refits; the copula is refitted at each of them.
    n_scenarios : int
        Monte Carlo scenarios per forecast (>= 100).
    seed : int
        Non-negative seed; the scenarios of the forecast after ``n`` days come
        from ``numpy.random.default_rng([seed, n])``, so a forecast depends only
        on the data and the seed (not on how often ``predict`` was called).
    copula_window : int
        Days of standardised residuals the copula is fitted on (the most recent
        ones of the GARCH window), >= 20.
    min_obs : int
        Days before the first forecast (first GARCH fit), in ``[20, window]``.
    antithetic : bool
        Draw the copula scores in antithetic pairs ``(x, -x)``.
    nu_bounds : tuple of float
        Search interval of the copula's degrees of freedom.

    Attributes
    ----------
    marginals_ : list of RollingGarch
        One GARCH state per asset (percent log returns).
    copula_ : StudentTCopula or None
        The copula in force (``None`` before the first fit).
    n_copula_fits_ : int
        Copula fits since :meth:`reset`.

    Notes
    -----
    On the days the GARCH models refit, the copula is refitted on
    ``u_it = F_i(z_it)``, the PITs of the last ``copula_window`` standardised
    residuals under each asset's fitted standardised-t law, and the map from
    copula t-scores to each marginal quantile, ``F_i^{-1}(t_nu(x))``, is
    tabulated (:class:`~models.copula.ScoreQuantileMap`). A forecast then draws
    ``x`` from the copula, maps it to the asset log returns
    ``r_i = (mu_i + sigma_i F_i^{-1}(t_nu(x_i))) / 100``, and takes the
    portfolio simple return ``sum_i w_i (exp(r_i) - 1)`` of every scenario.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(42)
    >>> x = 0.01 * rng.standard_normal((120, 2))
    >>> m = CopulaGarchT([0.5, 0.5], window=120, min_obs=100, n_scenarios=2000)
    >>> f = m.fit(x).predict()
    >>> bool(0.005 < f.at(0.99)[0] < 0.05 and np.all(f.es >= f.var))
    True
    """

    name = "copula_garch_t"

    def __init__(
        self,
        weights: ArrayLike,
        window: int = 1000,
        refit_every: int = 21,
        n_scenarios: int = 10_000,
        seed: int = 0,
        copula_window: int = 500,
        *,
        min_obs: int = 250,
        antithetic: bool = True,
        nu_bounds: tuple[float, float] = (2.05, 100.0),
    ) -> None:
        super().__init__(weights, min_obs=min_obs)
        if not 20 <= self.min_obs <= int(window):
            raise ValueError(f"min_obs must lie in [20, window={window}], got {min_obs}")
        if int(refit_every) < 1:
            raise ValueError(f"refit_every must be >= 1, got {refit_every}")
        if int(n_scenarios) < 100:
            raise ValueError(f"n_scenarios must be >= 100, got {n_scenarios}")
        if int(copula_window) < 20:
            raise ValueError(f"copula_window must be >= 20, got {copula_window}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.window = int(window)
        self.refit_every = int(refit_every)
        self.n_scenarios = int(n_scenarios)
        self.seed = int(seed)
        self.copula_window = int(copula_window)
        self.antithetic = bool(antithetic)
        self.nu_bounds = (float(nu_bounds[0]), float(nu_bounds[1]))
        StudentTCopula(self.nu_bounds)  # validates the bounds
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.marginals_ = [
            RollingGarch(
                vol="garch",
                dist="t",
                window=self.window,
                refit_every=self.refit_every,
                min_obs=self.min_obs,
            )
            for _ in range(self.n_assets)
        ]
        self.copula_: StudentTCopula | None = None
        self.n_copula_fits_ = 0
        self._qmap: ScoreQuantileMap | None = None
        self._refits_seen = 0

    # -- streaming ----------------------------------------------------------------------------

    def _update(self, x: NDArray[np.float64]) -> None:
        for g, r in zip(self.marginals_, x.tolist(), strict=True):
            g.update(100.0 * r)
        refits = self.marginals_[0].n_refits_
        if refits != self._refits_seen:
            self._fit_copula()
            self._refits_seen = refits

    def _fit_copula(self) -> None:
        params = [g.params_ for g in self.marginals_]
        z = np.column_stack([g.recent_std_resid(self.copula_window) for g in self.marginals_])
        u = np.column_stack([p.std_cdf(z[:, i]) for i, p in enumerate(params)])  # type: ignore[union-attr]
        self.copula_ = StudentTCopula(self.nu_bounds).fit(u)
        self._qmap = ScoreQuantileMap.build(self.copula_.nu_, [p.std_ppf for p in params])  # type: ignore[union-attr]
        self.n_copula_fits_ += 1

    # -- forecasts ----------------------------------------------------------------------------

    def simulate_returns(self) -> NDArray[np.float64]:
        """Next-day scenario simple returns of each asset, shape (n_scenarios, n_assets).

        The same scenarios :meth:`predict` uses (same seed and day).
        """
        if self.copula_ is None or self._qmap is None:
            raise NotEnoughObservations(self.min_obs, self.n_seen_, self.name)
        rng = np.random.default_rng([self.seed, self.n_seen_])
        scores = self.copula_.sample_scores(self.n_scenarios, rng, antithetic=self.antithetic)
        z = self._qmap(scores)
        mu = np.empty(self.n_assets)
        sigma = np.empty(self.n_assets)
        for i, g in enumerate(self.marginals_):
            m, s2 = g.forecast()
            mu[i] = m
            sigma[i] = math.sqrt(s2)
        z *= sigma * 0.01
        z += mu * 0.01
        return np.expm1(z, out=z)

    def _predict(self) -> RiskForecast:
        port = self.simulate_returns() @ self.weights
        var, es = var_es_from_samples(port, LEVELS)
        return RiskForecast(var, es, LEVELS)

    def predict_contributions(
        self, bandwidth: float = 0.0025
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Euler contributions of each asset to the forecast VaR and ES.

        Returns
        -------
        var_contrib, es_contrib : ndarray of shape (n_levels, n_assets)
            Row ``j`` sums to ``predict().var[j]`` (resp. ``es[j]``); see
            :func:`~models.contributions.euler_contributions`.
        """
        r = self.simulate_returns()
        out = [euler_contributions(r, self.weights, a, bandwidth=bandwidth) for a in LEVELS]
        return np.vstack([v for v, _ in out]), np.vstack([e for _, e in out])
