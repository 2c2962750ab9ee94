"""LSTM-Copula VaR/ES: LSTM Student-t marginals joined by a dynamic Student-t copula.

Each day (:meth:`LstmCopula.update`):

1. the realised return ``r_t`` of each asset is turned into its PIT
   ``u_t = F_t(r_t)`` under the marginal law predicted the evening before;
2. the copula dependence moves with ``u_t``: an EWMA of the normal scores'
   cross products (:class:`~models.copula.EwmaCopulaCorrelation`, DCC-like with
   the persistence set by ``corr_half_life``), started from the first fit
   (Kendall's tau correlation and ``nu`` by likelihood,
   :class:`~models.copula.StudentTCopula`); every ``refit_every`` days the
   degrees of freedom are refitted by likelihood on the last
   ``copula_window`` PIT vectors at the current correlation
   (:class:`CopulaNuRefit`). A refit is spread over the following updates,
   a couple of likelihood evaluations and a few rows of the new quantile
   table each, and the new ``nu`` takes over once both are done (about 12
   days later with the defaults): no single day pays for a whole refit, and
   forecasting never stops;
3. the LSTM reads the last ``window`` returns (a ring buffer) and predicts
   tomorrow's marginal laws, split Student-t:
   ``r_{t+1,i} = loc_i + s_i T_{nu_i}`` with ``s_i`` = ``s_left_i`` for
   ``T < 0`` and ``s_right_i`` for ``T >= 0``;
4. optionally (``scale_half_life``), both scales are multiplied by a causal
   online correction :class:`PitScaleCorrection`: the square root of an EWMA
   of the squared normal scores ``Phi^{-1}(u)`` of the network's own recent
   PITs (1 when the network is calibrated; above 1 when recent returns were
   larger than it predicted, e.g. after a volatility jump the 11-day EWMA
   input scale has not caught up with yet). It is computed from the
   *uncorrected* PITs, so it is an estimate of the current ratio of realised
   to predicted scale, not a feedback loop on itself; by default it only
   widens (multiplier >= 1).

Optionally (``recal_window``), the portfolio's tail probabilities are
recalibrated online (Kuleshov et al. 2018, applied causally): each day the
realised portfolio return's PIT under the previous evening's scenario
distribution is kept (the last ``recal_window`` of them), and VaR/ES at tail
probability ``a = 1 - level`` are read from the scenarios at
``a' = a (n a + c) / (k + c)``, ``k`` the number of kept PITs ``<= a``,
``n`` their number, ``c = recal_prior`` pseudo-exceptions at the nominal rate
(see :func:`recalibrated_tail_probability`). Only past forecasts and past
returns enter, so it is out-of-sample.

Measured (``python -m stream_app.train_lstm_copula --walk-forward 2007-2023
--data ../shared/data/daily --extra-shipped --warm-start --warm-epochs 5
--stride 2``, 10 assets, equal weights, 4278 days): exceptions 95/97.5/99 %
230/136/58 with both corrections off (``--scale-half-life 0 --recal-window
0``), 222/122/54 with the recalibration alone, 207/115/42 with both (214/107/43
expected); Z2 at 97.5 % -0.34 -> -0.10. (Measured with each nu refit done
within its day; with the refit spread over the following days, as now:
210/115/42, Z2 -0.106, FZ0 at 97.5 % -4.1075 against -4.1077; 2008 and 2020
unchanged at 3 and 5 exceptions at 99 %.) The settings (half-life 10, bounds
(1, 3), pooling 0.5, window 500, prior 5) were chosen a priori except the
lower bound 1, picked after a look at 2009-2013 (see
:class:`PitScaleCorrection`), so these figures are not free of selection.

:meth:`LstmCopula.predict` draws ``n_scenarios`` seeded joint scenarios: copula
t-scores ``x = Z L' / sqrt(W / nu_c)`` (antithetic pairs ``+-x``), mapped to
each marginal through a tabulated ``q = t_{nu_i}^{-1}(t_{nu_c}(x))``, then
``loc + s_side * q`` are log returns, the portfolio simple return is
``sum_i w_i (exp(R_i) - 1)``, and VaR/ES come from
:func:`~models.measures.var_es_from_samples`.

Why a ring buffer rather than a carried LSTM state: the network is trained on
windows of ``window`` days, all standardised by the *current* volatility; the
ring buffer feeds it exactly such a window every day, so the stream computes
the same features as training did (no drift of a state run far beyond the
training length), memory is O(window) per asset, and the cost per day is
O(window * hidden^2) per asset, independent of the history's length.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from models.base import LEVELS, RiskForecast, VaRModel
from models.contributions import euler_contributions_multi
from models.copula import (
    EwmaCopulaCorrelation,
    ScoreQuantileMap,
    StudentTCopula,
    clip_uniform,
    nearest_correlation,
    t_copula_loglik,
)
from models.exceptions import ConvergenceWarning, NotEnoughObservations
from models.lstm_marginals import LstmArtifact, MarginalState, NumpyMarginals, split_t_cdf
from models.measures import var_es_from_samples
from models.scalar_search import BoundedSearch

#: The copula score grid covers PIT values in ``[U_TABLE, 1 - U_TABLE]``.
U_TABLE = 1e-8
#: More rows than any quantile table has (finishing a refit at once).
QUANTILE_ROWS_MAX = 1 << 20


@dataclass(frozen=True)
class RiskContributions:
    """Euler contributions of each asset to portfolio VaR and ES.

    Attributes
    ----------
    levels : tuple of float
    var, es : ndarray of shape (n_levels, n_assets)
        Positive losses; ``var.sum(axis=1)`` and ``es.sum(axis=1)`` equal the
        forecast's VaR and ES (same scenarios).
    """

    levels: tuple[float, ...]
    var: NDArray[np.float64]
    es: NDArray[np.float64]


class QuantileTable:
    """``q(x; nu) = t_nu^{-1}(t_{nu_c}(x))`` on a grid, for any marginal ``nu``.

    Parameters
    ----------
    nu_copula : float
        Degrees of freedom of the copula (> 2).
    nu_min, nu_max : float
        Range of the marginal degrees of freedom.
    n_grid : int
        Points of the score grid on ``x >= 0`` (uniform in ``asinh(x)``).
    n_nu : int
        Points of the ``1 / nu`` grid.
    build : bool
        Tabulate every row now (default). With False the table starts empty
        and :meth:`build_rows` fills it a few rows at a time (a refit spread
        over several days); it may not be used before :attr:`complete`.

    Notes
    -----
    Only ``x >= 0`` is tabulated (``q`` is odd), as ``log q``: in the tails
    ``t_nu^{-1}(u) ~ C(nu) u^{-1/nu}``, so ``log q`` is nearly linear in
    ``1 / nu`` and linear interpolation in ``1 / nu`` is accurate (relative
    error ~1e-4 in the 1e-6 tail with 48 points). Lower-tail arithmetic
    (``-t^{-1}(t(-x))``) keeps the extreme quantiles exact.

    A pickled table keeps how many rows were built, not the rows: they are a
    pure function of the settings and are tabulated again on unpickling.
    """

    def __init__(
        self,
        nu_copula: float,
        nu_min: float,
        nu_max: float,
        n_grid: int = 513,
        n_nu: int = 48,
        build: bool = True,
    ) -> None:
        if not nu_copula > 2:
            raise ValueError(f"nu_copula must be > 2, got {nu_copula}")
        if n_grid < 3 or n_nu < 2:
            raise ValueError(f"need n_grid >= 3 and n_nu >= 2, got {n_grid}, {n_nu}")
        self.nu_copula = float(nu_copula)
        self.nu_min, self.nu_max = float(nu_min), float(nu_max)
        self.n_grid = n_grid
        self.n_nu = n_nu
        s_hi = float(np.arcsinh(-special.stdtrit(self.nu_copula, U_TABLE)))
        self.s_step = s_hi / (n_grid - 1)
        self.theta_lo = 1.0 / self.nu_max
        self.theta_step = (1.0 / self.nu_min - self.theta_lo) / (n_nu - 1)
        self._start()
        if build:
            self.build_rows(n_nu)

    def _start(self) -> None:
        x = np.sinh(np.arange(1, self.n_grid) * self.s_step)
        self._u_low = special.stdtr(self.nu_copula, -x)  # lower-tail PIT of -x
        self.log_q = np.empty((self.n_nu, self.n_grid - 1))
        self.rows_done = 0

    @property
    def complete(self) -> bool:
        """True when every row of the ``1 / nu`` grid is tabulated."""
        return self.rows_done == self.n_nu

    def build_rows(self, n_rows: int) -> bool:
        """Tabulate up to ``n_rows`` more rows of the ``1 / nu`` grid; True once complete."""
        j0 = self.rows_done
        j1 = min(self.n_nu, j0 + max(int(n_rows), 0))
        if j1 > j0:
            theta = self.theta_lo + np.arange(j0, j1) * self.theta_step
            q = -special.stdtrit(1.0 / theta[:, None], self._u_low[None, :])  # > 0
            self.log_q[j0:j1] = np.log(q)
            self.rows_done = j1
        return self.complete

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["log_q"], state["_u_low"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        rows = state["rows_done"]
        self.__dict__.update(state)
        self._start()
        self.build_rows(rows)

    def score_map(self, nu: NDArray[np.float64]) -> ScoreQuantileMap:
        """The map for marginals with degrees of freedom ``nu`` (n_assets,), odd in ``x``."""
        if not self.complete:
            raise RuntimeError(f"the table has {self.rows_done} of {self.n_nu} rows")
        theta = (1.0 / np.asarray(nu, dtype=float) - self.theta_lo) / self.theta_step
        theta = np.clip(theta, 0.0, self.log_q.shape[0] - 1.000001)
        j = theta.astype(np.intp)
        w = (theta - j)[:, None]
        half = np.exp((1.0 - w) * self.log_q[j] + w * self.log_q[j + 1])  # (d, n_grid - 1)
        z = np.concatenate([-half[:, ::-1], np.zeros((half.shape[0], 1)), half], axis=1)
        return ScoreQuantileMap(-(self.n_grid - 1) * self.s_step, self.s_step, z)


def tail_var_es(
    returns: NDArray[np.float64], levels: tuple[float, ...] = LEVELS
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """:func:`~models.measures.var_es_from_samples` of equally likely scenarios, via a partial sort.

    Only the worst ``ceil((1 - min(levels)) n) + 1`` scenarios matter; they
    are passed with probability ``1 / n`` each, and one more point (no smaller
    than all of them) carries the rest of the mass. The result is the same as
    the full call, at the cost of a partition instead of a sort.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal(20000)
    >>> a = tail_var_es(x)
    >>> b = var_es_from_samples(x)
    >>> bool(np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1], rtol=1e-12))
    True
    """
    n = returns.shape[0]
    k = min(n, math.ceil((1.0 - min(levels)) * n) + 2)
    if k >= n:
        return var_es_from_samples(returns, levels)
    part = np.partition(returns, k)
    worst = part[:k]
    rest = part[k]  # >= every value in ``worst``
    x = np.append(worst, rest)
    p = np.full(k + 1, 1.0 / n)
    p[-1] = (n - k) / n
    return var_es_from_samples(x, levels, weights=p)


@dataclass
class PitScaleCorrection:
    """Causal scale correction of ``n`` marginals from their recent PITs: O(1) per day.

    With ``z_t = Phi^{-1}(u_t)`` the normal score of day ``t``'s PIT under the
    network's (uncorrected) law, ``v_t = lam v_{t-1} + (1 - lam) z_t^2``
    (``lam = 2 ** (-1 / half_life)``, ``v_0 = 1``) per asset, shrunk towards
    the cross-asset mean ``vbar = (1 - pooling) v + pooling mean(v)``; the
    multiplier of both scales is ``clip(sqrt(vbar), *bounds)``. Under a
    calibrated model ``E[z^2] = 1``, so the multiplier hovers around 1.

    Parameters
    ----------
    n_assets : int
    half_life : float
        Half-life in days of the EWMA, > 0.
    bounds : tuple of float
        ``(lower, upper)`` bounds of the multiplier, ``0 < lower <= 1 <= upper``.
        The default lower bound 1 makes the correction one-sided: it widens
        the network's laws after surprises but never narrows them. In calm
        years the network's laws tend to be a little wide in the body
        (``E[z^2] < 1``) while their far tails are not, so a two-sided
        correction thins the tails that matter (walk-forward 2009-2013 on the
        10-asset panel: 97.5 % exceptions 36 without correction, 43 with
        bounds (0.5, 3), 33 with (1, 3); 31.5 expected).
    pooling : float
        Weight of the cross-asset mean in ``[0, 1]``.
    u_clip : float
        PITs are clipped to ``[u_clip, 1 - u_clip]`` (caps ``z^2``), in ``(0, 0.5)``.

    Examples
    --------
    >>> c = PitScaleCorrection(2, half_life=1.0, bounds=(0.5, 3.0), pooling=0.0)
    >>> c.update(np.array([0.5, special.ndtr(-3.0)]))
    >>> np.round(c.multiplier, 6).tolist()  # v = (0.5, 0.5 + 0.5 * 9)
    [0.707107, 2.236068]
    """

    n_assets: int
    half_life: float = 10.0
    bounds: tuple[float, float] = (1.0, 3.0)
    pooling: float = 0.5
    u_clip: float = 1e-6
    v: NDArray[np.float64] = field(init=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.half_life) and self.half_life > 0):
            raise ValueError(f"half_life must be a finite number > 0, got {self.half_life}")
        lo, hi = (float(b) for b in self.bounds)
        if not 0.0 < lo <= 1.0 <= hi < math.inf:
            raise ValueError(f"bounds must satisfy 0 < lower <= 1 <= upper, got {self.bounds}")
        self.bounds = (lo, hi)
        if not 0.0 <= self.pooling <= 1.0:
            raise ValueError(f"pooling must lie in [0, 1], got {self.pooling}")
        if not 0.0 < self.u_clip < 0.5:
            raise ValueError(f"u_clip must lie in (0, 0.5), got {self.u_clip}")
        self.v = np.ones(int(self.n_assets))

    def update(self, u: NDArray[np.float64]) -> None:
        """Absorb one day of uncorrected PITs, shape (n_assets,)."""
        z = special.ndtri(np.clip(u, self.u_clip, 1.0 - self.u_clip))
        lam = 0.5 ** (1.0 / self.half_life)
        self.v = lam * self.v + (1.0 - lam) * z * z

    @property
    def multiplier(self) -> NDArray[np.float64]:
        """Scale multipliers of tomorrow's marginals, shape (n_assets,)."""
        v = (1.0 - self.pooling) * self.v + self.pooling * float(self.v.mean())
        return np.clip(np.sqrt(v), *self.bounds)


def recalibrated_tail_probability(
    pits: NDArray[np.float64],
    tail: float,
    prior: float = 5.0,
    bounds: tuple[float, float] = (0.25, 2.0),
) -> float:
    """Tail probability to read from a forecast distribution so that its past PITs are calibrated.

    Parameters
    ----------
    pits : ndarray of shape (n,)
        PITs of past realised values under their forecasts, in [0, 1].
    tail : float
        Nominal tail probability ``a`` in (0, 0.5).
    prior : float
        Pseudo-exceptions ``c`` at the nominal rate, > 0 (shrinks towards ``a``).
    bounds : tuple of float
        The result is clipped to ``[bounds[0] a, bounds[1] a]``.

    Returns
    -------
    float
        ``a (n a + c) / (k + c)`` with ``k = #{pits <= a}``: with many PITs it
        is the ratio estimate that turns the observed exception rate ``k / n``
        into ``a`` (a locally linear PIT map in the tail); with none it is ``a``.

    Examples
    --------
    >>> recalibrated_tail_probability(np.full(500, 0.5), 0.01)  # no exceptions: (5 + 5) / 5
    0.02
    >>> round(recalibrated_tail_probability(np.r_[np.zeros(10), np.full(490, 0.5)], 0.01), 6)
    0.006667
    """
    if not 0.0 < tail < 0.5:
        raise ValueError(f"tail must lie in (0, 0.5), got {tail}")
    if not prior > 0:
        raise ValueError(f"prior must be > 0, got {prior}")
    n = pits.shape[0]
    k = float(np.count_nonzero(pits <= tail))
    a = tail * (n * tail + prior) / (k + prior)
    return float(np.clip(a, bounds[0] * tail, bounds[1] * tail))


class CopulaNuRefit:
    """A likelihood refit of the copula's degrees of freedom, spread over several updates.

    Holds a copy of the PIT vectors and of the correlation's Cholesky factor of
    the day it starts. Each :meth:`advance` makes up to ``n_evals`` evaluations
    of the copula log-likelihood for :class:`~models.scalar_search.BoundedSearch`
    (over ``log nu``: the same points as scipy's bounded Brent search), then,
    once the search has converged, tabulates up to ``n_rows`` rows of the new
    :class:`QuantileTable`. All of it is plain picklable state, so a refit
    survives a restart and ends on the same update as without one.

    Parameters
    ----------
    u : ndarray of shape (n_obs, n_assets)
        PIT vectors in [0, 1].
    chol : ndarray of shape (n_assets, n_assets)
        Lower Cholesky factor of the copula correlation.
    nu_bounds : tuple of float
        Search interval of ``nu``.
    nu_min, nu_max : float
        Range of the marginal degrees of freedom (for the quantile table).
    xatol : float
        Tolerance of the search on ``log nu``.
    """

    def __init__(
        self,
        u: NDArray[np.float64],
        chol: NDArray[np.float64],
        nu_bounds: tuple[float, float],
        nu_min: float,
        nu_max: float,
        xatol: float = 1e-3,
    ) -> None:
        self.u = clip_uniform(u)  # a copy: the model's ring moves on
        self.chol = np.array(chol, dtype=np.float64)
        self.search = BoundedSearch(math.log(nu_bounds[0]), math.log(nu_bounds[1]), xatol)
        self.nu_min, self.nu_max = float(nu_min), float(nu_max)
        self.table: QuantileTable | None = None

    @property
    def nu(self) -> float:
        """The refitted degrees of freedom (the best point so far before the search ends)."""
        return math.exp(self.search.x_)

    @property
    def done(self) -> bool:
        """True when ``nu`` and its quantile table are ready."""
        return self.table is not None and self.table.complete

    def neg_loglik(self, log_nu: float) -> float:
        """Minus the copula log-likelihood of the kept PITs at ``nu = exp(log_nu)``."""
        nu = math.exp(log_nu)
        return -float(np.sum(t_copula_loglik(special.stdtrit(nu, self.u), self.chol, nu)))

    def advance(self, n_evals: int, n_rows: int) -> bool:
        """Up to ``n_evals`` likelihood evaluations, then up to ``n_rows`` table rows; :attr:`done`."""
        search = self.search
        for _ in range(n_evals):
            if search.done:
                break
            search.tell(self.neg_loglik(search.x_next))
        if not search.done:
            return False
        if self.table is None:
            self.table = QuantileTable(self.nu, self.nu_min, self.nu_max, build=False)
            self.u = self.u[:0]  # the PITs are no longer needed: keep the state small
        return self.table.build_rows(n_rows)


class LstmCopula(VaRModel):
    """LSTM Student-t marginals + dynamic Student-t copula, Monte Carlo VaR/ES.

    Parameters
    ----------
    weights : array-like of shape (n_assets,)
        Portfolio weights.
    artifact : LstmArtifact
        Trained marginals (see ``stream_app.train_lstm_copula.load``); its
        weights apply to any number of assets.
    n_scenarios : int
        Monte Carlo scenarios per forecast, >= 100 (even with ``antithetic``).
    seed : int
        Seed of the scenarios; day ``t``'s draws are seeded by ``(seed, t)``,
        so a forecast depends only on the state, never on earlier calls.
    copula_window : int
        PIT vectors kept for the refits of the copula, >= ``copula_min_obs``.
    copula_min_obs : int
        PIT vectors needed before the first copula fit, >= 10.
    refit_every : int
        Days between likelihood refits of the copula's degrees of freedom, >= 1.
        A refit still running when the next is due is finished first.
    refit_evals : int
        Likelihood evaluations a running refit makes per update, >= 1.
    refit_rows : int
        Rows of the new quantile table a refit tabulates per update, >= 1
        (48 rows; each costs about as much as a likelihood evaluation of 10
        assets).
    corr_half_life : float
        Half-life in days of the EWMA copula correlation, > 0.
    antithetic : bool
        Antithetic pairs ``+-x`` of copula scores (halves the table look-ups).
    nu_bounds : tuple of float
        Search interval of the copula degrees of freedom.
    scale_half_life : float or None
        Half-life in days of the online PIT scale correction
        (:class:`PitScaleCorrection`); None switches it off.
    scale_bounds : tuple of float
        Bounds of the correction's multiplier (default one-sided: >= 1).
    scale_pooling : float
        Weight in ``[0, 1]`` of the cross-asset mean in the correction.
    recal_window : int or None
        Past portfolio PITs kept for the online tail recalibration, >= 50;
        None switches it off.
    recal_prior : float
        Pseudo-exceptions of :func:`recalibrated_tail_probability`, > 0.

    Attributes
    ----------
    law_ : tuple of ndarray or None
        ``(loc, s_left, s_right, nu)`` of tomorrow's marginals (log-return units),
        scales corrected.
    net_law_ : tuple of ndarray or None
        The same, as the network predicted it (uncorrected).
    scale_ : PitScaleCorrection or None
        The online scale correction (None when off).
    port_pit_ring_ : ndarray of shape (recal_window,) or None
        Portfolio PITs of past forecasts (a ring buffer; None when off).
    n_port_pit_ : int
        Portfolio PITs seen.
    nu_copula_ : float
        Copula degrees of freedom (nan before the first fit).
    corr_ : ndarray of shape (n_assets, n_assets) or None
        Current copula correlation.
    n_pit_ : int
        PIT vectors seen.
    n_refits_ : int
        Likelihood fits of the copula done.
    refit_ : CopulaNuRefit or None
        The refit in progress, if any.
    n_repairs_ : int
        1 if the first fit's Kendall's tau correlation had to be repaired (not
        positive definite: few PIT vectors for many assets), else 0.

    Notes
    -----
    Warm-up: ``window + burn_in`` returns before the first marginal forecast,
    then ``copula_min_obs`` PIT vectors before the first copula fit; so
    ``min_obs = window + burn_in + copula_min_obs``.
    """

    name = "lstm_copula"

    def __init__(
        self,
        weights: ArrayLike,
        artifact: LstmArtifact,
        n_scenarios: int = 20_000,
        seed: int = 0,
        copula_window: int = 250,
        copula_min_obs: int = 60,
        refit_every: int = 21,
        refit_evals: int = 2,
        refit_rows: int = 8,
        corr_half_life: float = 60.0,
        antithetic: bool = True,
        nu_bounds: tuple[float, float] = (2.05, 100.0),
        scale_half_life: float | None = 10.0,
        scale_bounds: tuple[float, float] = (1.0, 3.0),
        scale_pooling: float = 0.5,
        recal_window: int | None = 500,
        recal_prior: float = 5.0,
    ) -> None:
        if not isinstance(artifact, LstmArtifact):
            raise TypeError(f"artifact must be an LstmArtifact, got {type(artifact).__name__}")
        if int(copula_min_obs) < 10:
            raise ValueError(f"copula_min_obs must be >= 10, got {copula_min_obs}")
        if int(copula_window) < int(copula_min_obs):
            raise ValueError(
                f"copula_window must be >= copula_min_obs={copula_min_obs}, got {copula_window}"
            )
        if int(n_scenarios) < 100:
            raise ValueError(f"n_scenarios must be >= 100, got {n_scenarios}")
        if int(refit_every) < 1:
            raise ValueError(f"refit_every must be >= 1, got {refit_every}")
        if int(refit_evals) < 1 or int(refit_rows) < 1:
            raise ValueError(
                f"refit_evals and refit_rows must be >= 1, got {refit_evals}, {refit_rows}"
            )
        if not (math.isfinite(corr_half_life) and corr_half_life > 0):
            raise ValueError(f"corr_half_life must be a finite number > 0, got {corr_half_life}")
        config = artifact.config
        super().__init__(weights, min_obs=config.min_obs + int(copula_min_obs))
        self.artifact = artifact
        self.model_version = artifact.model_version
        self.n_scenarios = int(n_scenarios)
        self.seed = int(seed)
        self.copula_window = int(copula_window)
        self.copula_min_obs = int(copula_min_obs)
        self.refit_every = int(refit_every)
        self.refit_evals = int(refit_evals)
        self.refit_rows = int(refit_rows)
        self.corr_half_life = float(corr_half_life)
        self.antithetic = bool(antithetic)
        self.nu_bounds = (float(nu_bounds[0]), float(nu_bounds[1]))
        StudentTCopula(self.nu_bounds)  # validates the bounds
        self.scale_half_life = None if scale_half_life is None else float(scale_half_life)
        self.scale_bounds = (float(scale_bounds[0]), float(scale_bounds[1]))
        self.scale_pooling = float(scale_pooling)
        self._new_scale_correction(1)  # validates the settings
        if recal_window is not None and int(recal_window) < 50:
            raise ValueError(f"recal_window must be >= 50 or None, got {recal_window}")
        if not (math.isfinite(recal_prior) and recal_prior > 0):
            raise ValueError(f"recal_prior must be a finite number > 0, got {recal_prior}")
        self.recal_window = None if recal_window is None else int(recal_window)
        self.recal_prior = float(recal_prior)
        self._net: NumpyMarginals = artifact.marginals()
        self._table: QuantileTable | None = None
        self.reset()

    # -- state ------------------------------------------------------------------------------

    def reset(self) -> None:
        super().reset()
        d = self.n_assets
        self.marginal_state_ = MarginalState(self.artifact.config, d)
        self.law_: tuple[NDArray[np.float64], ...] | None = None
        self.net_law_: tuple[NDArray[np.float64], ...] | None = None
        self.scale_ = self._new_scale_correction(d)
        self.port_pit_ring_ = None if self.recal_window is None else np.zeros(self.recal_window)
        self.n_port_pit_ = 0
        self.u_ring_ = np.zeros((self.copula_window, d))
        self.n_pit_ = 0
        self.ewma_: EwmaCopulaCorrelation | None = None
        self.corr_: NDArray[np.float64] | None = None
        self.chol_: NDArray[np.float64] | None = None
        self.nu_copula_ = float("nan")
        self.n_refits_ = 0
        self.n_repairs_ = 0
        self.refit_: CopulaNuRefit | None = None
        self._table = None
        self._scenario_cache: tuple[tuple[int, int, int], NDArray[np.float64]] | None = None

    def _new_scale_correction(self, n_assets: int) -> PitScaleCorrection | None:
        if self.scale_half_life is None:
            return None
        return PitScaleCorrection(
            n_assets, self.scale_half_life, self.scale_bounds, self.scale_pooling
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_table"] = None  # a cache, rebuilt from nu_copula_ on demand
        state["_scenario_cache"] = None  # rebuilt from the state on demand
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # states pickled before the scale correction existed resume without it
        state.setdefault("scale_half_life", None)
        state.setdefault("scale_bounds", (1.0, 3.0))
        state.setdefault("scale_pooling", 0.5)
        state.setdefault("scale_", None)
        state.setdefault("net_law_", state.get("law_"))
        state.setdefault("recal_window", None)
        state.setdefault("recal_prior", 5.0)
        state.setdefault("port_pit_ring_", None)
        state.setdefault("n_port_pit_", 0)
        state.setdefault("_scenario_cache", None)
        state.setdefault("refit_evals", 2)
        state.setdefault("refit_rows", 8)
        state.setdefault("refit_", None)
        self.__dict__.update(state)

    # -- update -----------------------------------------------------------------------------

    def _update(self, x: NDArray[np.float64]) -> None:
        if self.port_pit_ring_ is not None and self._can_forecast():
            # PIT of today's portfolio return under yesterday evening's forecast
            port = self._portfolio_scenarios()
            y = float(np.expm1(x) @ self.weights)
            self.port_pit_ring_[self.n_port_pit_ % self.port_pit_ring_.shape[0]] = np.mean(
                port <= y
            )
            self.n_port_pit_ += 1
        if self.law_ is not None:
            loc, s_left, s_right, nu = self.law_
            u = split_t_cdf(x, loc, s_left, s_right, nu)
            self._absorb_pit(u)
            if self.scale_ is not None and self.net_law_ is not None:
                self.scale_.update(split_t_cdf(x, *self.net_law_))
        self.marginal_state_.update(x)
        if self.marginal_state_.ready:
            seq, static_raw, sigma = self.marginal_state_.features()
            mu, s_left, s_right, nu = self._net.predict(seq, static_raw)
            self.net_law_ = (sigma * mu, sigma * s_left, sigma * s_right, nu)
            m = 1.0 if self.scale_ is None else self.scale_.multiplier
            self.law_ = (sigma * mu, m * sigma * s_left, m * sigma * s_right, nu)

    def _absorb_pit(self, u: NDArray[np.float64]) -> None:
        self.u_ring_[self.n_pit_ % self.copula_window] = u
        self.n_pit_ += 1
        n = self.n_pit_
        if n < self.copula_min_obs:
            return
        if n == self.copula_min_obs:
            self._fit_copula()
            assert self.corr_ is not None
            self.ewma_ = EwmaCopulaCorrelation(self.corr_, half_life=self.corr_half_life)
            return
        assert self.ewma_ is not None
        self.ewma_.update(u)
        self._set_corr(self.ewma_.corr)
        if (n - self.copula_min_obs) % self.refit_every == 0:
            if self.refit_ is not None:
                self._advance_refit(finish=True)
            assert self.chol_ is not None
            used = self.u_ring_[: min(self.n_pit_, self.copula_window)]
            c = self.artifact.config
            self.refit_ = CopulaNuRefit(used, self.chol_, self.nu_bounds, c.nu_min, c.nu_max)
        if self.refit_ is not None:
            self._advance_refit()

    def _fit_copula(self) -> None:
        """First fit: correlation from Kendall's tau, ``nu`` by likelihood."""
        used = self.u_ring_[: min(self.n_pit_, self.copula_window)]
        with warnings.catch_warnings():
            # a tau matrix that is not positive definite (few PITs, many assets) is
            # repaired by the copula; counted in ``n_repairs_`` rather than warned
            warnings.simplefilter("ignore", ConvergenceWarning)
            cop = StudentTCopula(self.nu_bounds).fit(used)
        self.n_repairs_ += int(cop.corr_repaired_)
        assert cop.corr_ is not None
        self._set_corr(cop.corr_)
        self._set_nu(float(cop.nu_))

    def _advance_refit(self, finish: bool = False) -> None:
        """One update's share of the running refit; swaps its ``nu`` and table in when done."""
        refit = self.refit_
        assert refit is not None
        if finish:
            refit.advance(refit.search.max_evals, QUANTILE_ROWS_MAX)
        elif not refit.advance(self.refit_evals, self.refit_rows):
            return
        self._set_nu(refit.nu)
        self._table = refit.table
        self.refit_ = None

    def _set_nu(self, nu: float) -> None:
        if nu != self.nu_copula_:
            self._table = None
        self.nu_copula_ = nu
        self.n_refits_ += 1

    def _set_corr(self, corr: NDArray[np.float64]) -> None:
        try:
            chol = np.linalg.cholesky(corr)
        except np.linalg.LinAlgError:
            corr = nearest_correlation(corr)
            chol = np.linalg.cholesky(corr)
        self.corr_ = np.asarray(corr, dtype=np.float64)
        self.chol_ = np.asarray(chol, dtype=np.float64)

    # -- forecast ---------------------------------------------------------------------------

    def _quantile_table(self) -> QuantileTable:
        if self._table is None or self._table.nu_copula != self.nu_copula_:
            c = self.artifact.config
            self._table = QuantileTable(self.nu_copula_, c.nu_min, c.nu_max)
        return self._table

    def scenarios(self) -> NDArray[np.float64]:
        """Tomorrow's joint scenarios of asset log returns, shape (n_scenarios, n_assets).

        Raises
        ------
        NotEnoughObservations
            During warm-up.
        """
        return np.log1p(self.simple_scenarios())

    def simple_scenarios(self) -> NDArray[np.float64]:
        """Tomorrow's joint scenarios of asset simple returns, shape (n_scenarios, n_assets).

        Computed once per state (``predict``, ``contributions`` and the next
        ``update``'s portfolio PIT share them) and returned read-only.

        Raises
        ------
        NotEnoughObservations
            During warm-up.
        """
        if not self._can_forecast():
            raise NotEnoughObservations(self.min_obs, self.n_seen_, self.name)
        key = (self.n_seen_, self.n_scenarios, self.seed)
        if self._scenario_cache is not None and self._scenario_cache[0] == key:
            return self._scenario_cache[1]
        assert self.chol_ is not None and self.law_ is not None
        rng = np.random.default_rng([self.seed, self.n_seen_])
        n = self.n_scenarios
        m = (n + 1) // 2 if self.antithetic else n
        d = self.n_assets
        nu_c = self.nu_copula_
        x = rng.standard_normal((m, d)) @ self.chol_.T
        w = 2.0 * rng.standard_gamma(0.5 * nu_c, size=m)
        x *= np.sqrt(nu_c / w)[:, None]
        loc, s_left, s_right, nu = self.law_
        grid = self._quantile_table().score_map(nu)
        # each asset's simple return on the score grid: expm1(loc + s_side q)
        z = grid.z
        table = np.expm1(loc[:, None] + np.where(z < 0.0, s_left[:, None], s_right[:, None]) * z)
        out = np.empty((n, d))
        idx, frac = grid.positions(x)
        grid.interpolate(table, idx, frac, out[:m])
        if self.antithetic:
            # the grid is symmetric, so -x reads the reversed table at the same positions
            mirror = np.empty((m, d))
            grid.interpolate(np.ascontiguousarray(table[:, ::-1]), idx, frac, mirror)
            out[m:] = mirror[: n - m]
        out.flags.writeable = False
        self._scenario_cache = (key, out)
        return out

    def _can_forecast(self) -> bool:
        return self.n_seen_ >= self.min_obs and self.law_ is not None and self.chol_ is not None

    def _portfolio_scenarios(self) -> NDArray[np.float64]:
        return self.simple_scenarios() @ self.weights

    def effective_levels(self, levels: tuple[float, ...] = LEVELS) -> tuple[float, ...]:
        """Levels at which the scenarios are read for the nominal ``levels`` (recalibration).

        Without recalibration (``recal_window=None``) they are ``levels``.
        """
        if self.port_pit_ring_ is None:
            return tuple(levels)
        used = self.port_pit_ring_[: min(self.n_port_pit_, self.port_pit_ring_.shape[0])]
        return tuple(
            1.0 - recalibrated_tail_probability(used, 1.0 - lv, self.recal_prior) for lv in levels
        )

    def _predict(self) -> RiskForecast:
        port = self._portfolio_scenarios()
        var, es = tail_var_es(port, self.effective_levels(LEVELS))
        return RiskForecast(var=var, es=es, levels=LEVELS)

    def contributions(self, levels: tuple[float, ...] = LEVELS) -> RiskContributions:
        """Euler contributions of each asset to the VaR/ES of :meth:`predict` (same scenarios).

        Returns
        -------
        RiskContributions
            ``var`` and ``es`` of shape (n_levels, n_assets); each row sums to
            the forecast's VaR / ES at that level.
        """
        var, es = euler_contributions_multi(
            self.simple_scenarios(), self.weights, self.effective_levels(tuple(levels))
        )
        return RiskContributions(levels=tuple(levels), var=var, es=es)

    def marginal_law(self) -> tuple[NDArray[np.float64], ...]:
        """Tomorrow's ``(loc, s_left, s_right, nu)`` per asset (log-return units), copies.

        Raises
        ------
        NotEnoughObservations
            Before the first marginal forecast.
        """
        if self.law_ is None:
            raise NotEnoughObservations(self.artifact.config.min_obs, self.n_seen_, self.name)
        return tuple(a.copy() for a in self.law_)  # type: ignore[return-value]
