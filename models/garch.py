"""Univariate GARCH(1,1) / GJR-GARCH(1,1,1): fitted with arch, filtered forward in plain numpy.

Returns are in *percent* inside this module (arch's optimiser prefers that
scale): a 1.3 % daily loss is ``-1.3``.

The split follows arch's spec / result separation: :func:`fit_garch` estimates
(arch does the work), :class:`GarchParams` is the frozen result, and
:class:`RollingGarch` is the streaming state that refits on a rolling window
every ``refit_every`` observations and filters forward with frozen parameters
in between. No arch object is ever kept, so the state is plain and picklable.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from models.exceptions import ConvergenceWarning, NotEnoughObservations

#: Volatility processes understood here.
VOLS: tuple[str, ...] = ("garch", "gjr")
#: Innovation laws (unit variance): normal, Student-t, Hansen's skewed t.
DISTS: tuple[str, ...] = ("normal", "t", "skewt")

_ARCH_DIST = {"normal": "normal", "t": "t", "skewt": "skewt"}


# ----------------------------------------------------------------------------------------------
# Standardised innovation laws (closed forms; checked against arch's distributions in the tests)
# ----------------------------------------------------------------------------------------------


def _t_pdf(x: NDArray[np.float64], nu: float) -> NDArray[np.float64]:
    """Density of the ordinary Student-t with ``nu`` degrees of freedom."""
    logc = (
        special.gammaln((nu + 1.0) / 2.0) - special.gammaln(nu / 2.0) - 0.5 * math.log(nu * math.pi)
    )
    return np.exp(logc - (nu + 1.0) / 2.0 * np.log1p(x * x / nu))


def _t_lower_integral(q: NDArray[np.float64], nu: float) -> NDArray[np.float64]:
    """``G(q) = int_0^q F_nu^{-1}(v) dv`` for the ordinary t: ``-f(t_q) (nu + t_q^2) / (nu - 1)``."""
    t = special.stdtrit(nu, q)
    return -_t_pdf(t, nu) * (nu + t * t) / (nu - 1.0)


def _skewt_constants(eta: float, lam: float) -> tuple[float, float, float]:
    """Hansen's (1994) constants ``a``, ``b`` and the t scale ``s = sqrt(1 - 2 / eta)``."""
    logc = special.gammaln((eta + 1.0) / 2.0) - special.gammaln(eta / 2.0)
    c = math.exp(logc - 0.5 * math.log(math.pi * (eta - 2.0)))
    a = 4.0 * lam * c * (eta - 2.0) / (eta - 1.0)
    b = math.sqrt(1.0 + 3.0 * lam * lam - a * a)
    return a, b, math.sqrt(1.0 - 2.0 / eta)


@dataclass(frozen=True)
class GarchParams:
    """Fitted parameters of a GARCH(1,1) or GJR-GARCH(1,1,1) with constant mean.

    The model of the percent return ``y_t`` is ``y_t = mu + e_t``,
    ``e_t = sigma_t z_t`` with ``z_t`` i.i.d. of zero mean and unit variance, and

    ``sigma2_{t+1} = omega + (alpha + gamma 1[e_t < 0]) e_t^2 + beta sigma2_t``.

    Parameters
    ----------
    vol : {"garch", "gjr"}
        Volatility process; ``gamma`` must be 0 for ``"garch"``.
    dist : {"normal", "t", "skewt"}
        Law of ``z_t``: standard normal, standardised Student-t (``nu``), or
        Hansen's skewed t (``nu``, ``lam``) as parametrised by arch.
    mu, omega, alpha, gamma, beta : float
        Constant mean and variance-recursion coefficients (percent units).
    nu : float, optional
        Degrees of freedom (> 2) for ``"t"`` and ``"skewt"``.
    lam : float, optional
        Skewness in (-1, 1) for ``"skewt"`` (negative: heavier left tail).

    Examples
    --------
    >>> p = GarchParams("garch", "normal", mu=0.0, omega=0.1, alpha=0.1, gamma=0.0, beta=0.8)
    >>> round(float(p.next_variance(1.0, -2.0)), 6)
    1.3
    >>> round(p.unconditional_variance, 6)
    1.0
    """

    vol: str
    dist: str
    mu: float
    omega: float
    alpha: float
    gamma: float
    beta: float
    nu: float | None = None
    lam: float | None = None

    def __post_init__(self) -> None:
        if self.vol not in VOLS:
            raise ValueError(f"vol must be one of {VOLS}, got {self.vol!r}")
        if self.dist not in DISTS:
            raise ValueError(f"dist must be one of {DISTS}, got {self.dist!r}")
        if self.vol == "garch" and self.gamma != 0.0:
            raise ValueError(f"gamma must be 0.0 for vol='garch', got {self.gamma}")
        if self.dist in ("t", "skewt") and (self.nu is None or not self.nu > 2.0):
            raise ValueError(f"nu must be > 2 for dist={self.dist!r}, got {self.nu}")
        if self.dist == "skewt" and (self.lam is None or not -1.0 < self.lam < 1.0):
            raise ValueError(f"lam must lie in (-1, 1) for dist='skewt', got {self.lam}")
        for name in ("mu", "omega", "alpha", "gamma", "beta"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.dist == "normal":
            object.__setattr__(self, "nu", None)
        else:
            object.__setattr__(self, "nu", float(self.nu))  # type: ignore[arg-type]
        if self.dist == "skewt":
            object.__setattr__(self, "lam", float(self.lam))  # type: ignore[arg-type]
        else:
            object.__setattr__(self, "lam", None)

    # --- arch's parameter vector ---------------------------------------------------------------

    def to_array(self) -> NDArray[np.float64]:
        """Parameters in arch's order: ``mu, omega, alpha[, gamma], beta[, nu[, lam]]``."""
        out = [self.mu, self.omega, self.alpha]
        if self.vol == "gjr":
            out.append(self.gamma)
        out.append(self.beta)
        if self.dist in ("t", "skewt"):
            out.append(float(self.nu))  # type: ignore[arg-type]
        if self.dist == "skewt":
            out.append(float(self.lam))  # type: ignore[arg-type]
        return np.asarray(out, dtype=float)

    @classmethod
    def from_array(cls, vol: str, dist: str, x: ArrayLike) -> GarchParams:
        """Inverse of :meth:`to_array`."""
        v = [float(a) for a in np.asarray(x, dtype=float).ravel()]
        n_expected = 4 + (vol == "gjr") + (dist in ("t", "skewt")) + (dist == "skewt")
        if len(v) != n_expected:
            raise ValueError(f"expected {n_expected} parameters for {vol}/{dist}, got {len(v)}")
        mu, omega, alpha = v[:3]
        k = 3
        gamma = 0.0
        if vol == "gjr":
            gamma = v[k]
            k += 1
        beta = v[k]
        k += 1
        nu = v[k] if dist in ("t", "skewt") else None
        lam = v[k + 1] if dist == "skewt" else None
        return cls(vol, dist, mu, omega, alpha, gamma, beta, nu, lam)

    # --- variance recursion --------------------------------------------------------------------

    def next_variance(self, sigma2: ArrayLike, resid: ArrayLike) -> NDArray[np.float64]:
        """``omega + (alpha + gamma 1[resid < 0]) resid^2 + beta sigma2`` (vectorised).

        Parameters
        ----------
        sigma2 : float or ndarray
            Conditional variance of the period whose residual is ``resid``.
        resid : float or ndarray
            Residual ``y - mu`` of that period (percent).
        """
        e = np.asarray(resid, dtype=float)
        s2 = np.asarray(sigma2, dtype=float)
        return self.omega + (self.alpha + self.gamma * (e < 0.0)) * e * e + self.beta * s2

    def filter(self, y_pct: ArrayLike, sigma2_0: float) -> NDArray[np.float64]:
        """Conditional variances ``sigma2_t`` of ``y_pct`` starting from ``sigma2_0``.

        Returns
        -------
        ndarray of shape (n_obs + 1,)
            ``sigma2_0, sigma2_1, ..., sigma2_n``: the last entry is the forecast
            for the period after the data.
        """
        e = np.asarray(y_pct, dtype=float) - self.mu
        out = np.empty(e.size + 1)
        out[0] = s2 = float(sigma2_0)
        om, al, ga, be = self.omega, self.alpha, self.gamma, self.beta
        for i, ei in enumerate(e.tolist()):
            s2 = om + (al + ga * (ei < 0.0)) * ei * ei + be * s2
            out[i + 1] = s2
        return out

    @property
    def persistence(self) -> float:
        """``alpha + gamma / 2 + beta``, arch's stationarity measure (exact for symmetric laws)."""
        return self.alpha + 0.5 * self.gamma + self.beta

    @property
    def unconditional_variance(self) -> float:
        """``omega / (1 - persistence)`` (``inf`` when not stationary)."""
        pers = self.persistence
        return self.omega / (1.0 - pers) if pers < 1.0 else math.inf

    # --- the innovation law --------------------------------------------------------------------

    def std_ppf(self, u: ArrayLike) -> NDArray[np.float64]:
        """Quantile function of the unit-variance innovation law (arch's ``ppf``).

        Parameters
        ----------
        u : float or ndarray of probabilities in (0, 1)

        Examples
        --------
        >>> p = GarchParams("garch", "normal", 0.0, 0.1, 0.1, 0.0, 0.8)
        >>> round(float(p.std_ppf(0.025)), 4)
        -1.96
        """
        u = np.asarray(u, dtype=float)
        if self.dist == "normal":
            return special.ndtri(u)
        nu = float(self.nu)  # type: ignore[arg-type]
        if self.dist == "t":
            return math.sqrt((nu - 2.0) / nu) * special.stdtrit(nu, u)
        lam = float(self.lam)  # type: ignore[arg-type]
        a, b, s = _skewt_constants(nu, lam)
        p0 = (1.0 - lam) / 2.0
        left = u < p0
        q = np.where(
            left,
            np.clip(u / (1.0 - lam), 0.0, 1.0),
            np.clip(0.5 + (u - p0) / (1.0 + lam), 0.0, 1.0),
        )
        t = special.stdtrit(nu, q)
        return (np.where(left, 1.0 - lam, 1.0 + lam) * s * t - a) / b

    def std_cdf(self, z: ArrayLike) -> NDArray[np.float64]:
        """Distribution function of the unit-variance innovation law (for PITs)."""
        z = np.asarray(z, dtype=float)
        if self.dist == "normal":
            return special.ndtr(z)
        nu = float(self.nu)  # type: ignore[arg-type]
        if self.dist == "t":
            return special.stdtr(nu, z * math.sqrt(nu / (nu - 2.0)))
        lam = float(self.lam)  # type: ignore[arg-type]
        a, b, s = _skewt_constants(nu, lam)
        x = b * z + a
        left = x < 0.0
        scale = np.where(left, 1.0 - lam, 1.0 + lam) * s
        f = special.stdtr(nu, x / scale)
        return np.where(left, (1.0 - lam) * f, (1.0 - lam) / 2.0 + (1.0 + lam) * (f - 0.5))

    def std_pdf(self, z: ArrayLike) -> NDArray[np.float64]:
        """Density of the unit-variance innovation law."""
        z = np.asarray(z, dtype=float)
        if self.dist == "normal":
            return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        nu = float(self.nu)  # type: ignore[arg-type]
        if self.dist == "t":
            k = math.sqrt(nu / (nu - 2.0))
            return k * _t_pdf(z * k, nu)
        lam = float(self.lam)  # type: ignore[arg-type]
        a, b, s = _skewt_constants(nu, lam)
        x = b * z + a
        scale = np.where(x < 0.0, 1.0 - lam, 1.0 + lam) * s
        return b / s * _t_pdf(x / scale, nu)

    def std_tail_mean(self, p: ArrayLike) -> NDArray[np.float64]:
        """``E[z | z <= q_p] = (1/p) int_0^p ppf(u) du``, exact (closed form) for each law.

        Parameters
        ----------
        p : float or ndarray of tail probabilities in (0, 1)

        Notes
        -----
        With ``G(q) = int_0^q F_nu^{-1}(v) dv = -f_nu(t_q)(nu + t_q^2)/(nu - 1)`` for
        the ordinary t: the standardised t gives ``s G(p) / p``; Hansen's skewed t,
        whose left branch is ``((1 - lam) s T - a) / b`` for ``u < (1 - lam)/2``,
        gives ``[(1 - lam)^2 s G(p / (1 - lam)) - a p] / (b p)`` there, and adds the
        right branch's piece beyond it. The normal gives ``-phi(Phi^{-1}(p)) / p``.

        Examples
        --------
        >>> p = GarchParams("garch", "normal", 0.0, 0.1, 0.1, 0.0, 0.8)
        >>> round(float(-p.std_tail_mean(0.025)), 4)
        2.3378
        """
        p = np.asarray(p, dtype=float)
        if self.dist == "normal":
            x = special.ndtri(p)
            return -np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi) / p
        nu = float(self.nu)  # type: ignore[arg-type]
        if self.dist == "t":
            return math.sqrt((nu - 2.0) / nu) * _t_lower_integral(p, nu) / p
        lam = float(self.lam)  # type: ignore[arg-type]
        a, b, s = _skewt_constants(nu, lam)
        p0 = (1.0 - lam) / 2.0
        left_part = (1.0 - lam) ** 2 * s * _t_lower_integral(np.minimum(p, p0) / (1.0 - lam), nu)
        q2 = np.clip(0.5 + (np.maximum(p, p0) - p0) / (1.0 + lam), 0.5, 1.0)
        g_half = _t_lower_integral(np.asarray(0.5), nu)
        right_part = (1.0 + lam) ** 2 * s * (_t_lower_integral(q2, nu) - g_half)
        return (left_part + right_part - a * p) / (b * p)

    def var_es(
        self, mu: float, sigma: float, levels: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """VaR and ES (positive losses) of ``mu + sigma z`` at confidence ``levels``.

        Exact: ``VaR_a = -(mu + sigma ppf(1 - a))``,
        ``ES_a = -(mu + sigma E[z | z <= ppf(1 - a)])``.
        """
        lv = np.asarray(levels, dtype=float)
        if lv.ndim != 1 or np.any((lv <= 0.0) | (lv >= 1.0)):
            raise ValueError(f"confidence levels must lie in (0, 1), got {lv.tolist()}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        tail = 1.0 - lv
        var = -(mu + sigma * self.std_ppf(tail))
        es = -(mu + sigma * self.std_tail_mean(tail))
        return var, np.maximum(es, var)

    def is_admissible(self) -> bool:
        """Finite, ``omega > 0``, ``alpha, beta, alpha + gamma >= 0``, ``persistence <= 1``.

        As arch's constraints, with a 1e-8 tolerance for the optimiser's rounding.
        """
        vals = [self.mu, self.omega, self.alpha, self.gamma, self.beta]
        if self.nu is not None:
            vals.append(self.nu)
        if not all(math.isfinite(v) for v in vals):
            return False
        tol = 1e-8  # the optimiser (SLSQP) lands a rounding error outside the constraints
        if self.omega <= 0.0 or min(self.alpha, self.beta, self.alpha + self.gamma) < -tol:
            return False
        return self.persistence <= 1.0 + 1e-6


@dataclass(frozen=True, eq=False)
class GarchFit:
    """Result of :func:`fit_garch`.

    Parameters
    ----------
    params : GarchParams
    sigma2 : ndarray of shape (n_obs,)
        In-sample conditional variances (percent squared).
    std_resid : ndarray of shape (n_obs,)
        ``(y - mu) / sqrt(sigma2)``.
    converged : bool
        False when arch's optimiser reported a problem.
    loglik : float
        Maximised log-likelihood.
    message : str
        The optimiser's message.
    """

    params: GarchParams
    sigma2: NDArray[np.float64]
    std_resid: NDArray[np.float64]
    converged: bool
    loglik: float = math.nan
    message: str = ""

    @property
    def next_sigma2(self) -> float:
        """Variance forecast for the period after the fitted data."""
        resid = float(self.std_resid[-1]) * math.sqrt(float(self.sigma2[-1]))
        return float(self.params.next_variance(self.sigma2[-1], resid))


def _check_spec(vol: str, dist: str) -> None:
    if vol not in VOLS:
        raise ValueError(f"vol must be one of {VOLS}, got {vol!r}")
    if dist not in DISTS:
        raise ValueError(f"dist must be one of {DISTS}, got {dist!r}")


def _fit_quiet(
    y: NDArray[np.float64], vol: str, dist: str, starting: GarchParams | None
) -> GarchFit:
    """Fit with arch; never warns (problems are in ``converged`` / ``message``)."""
    from arch import arch_model  # local: arch is only needed when a fit happens
    from arch.utility.exceptions import ConvergenceWarning as ArchConvergenceWarning
    from arch.utility.exceptions import StartingValueWarning

    model = arch_model(
        y,
        mean="Constant",
        vol="GARCH",
        p=1,
        o=1 if vol == "gjr" else 0,
        q=1,
        dist=_ARCH_DIST[dist],  # type: ignore[arg-type]
        rescale=False,
    )
    sv = None
    if starting is not None and starting.vol == vol and starting.dist == dist:
        sv = starting.to_array()
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        # arch's optimiser probes outside the admissible region and arch divides 0 / 0 on
        # degenerate data: numpy warnings here are arch's business, not the caller's
        warnings.simplefilter("always")
        res = model.fit(disp="off", starting_values=sv, show_warning=True)
        x = np.asarray(res.params, dtype=float)
        sigma2 = np.asarray(res.conditional_volatility, dtype=float) ** 2
        std_resid = np.asarray(res.std_resid, dtype=float)
        loglik = float(res.loglikelihood)
        flag = int(res.convergence_flag)
        opt_msg = str(res.optimization_result.message)
    for w in caught:
        if issubclass(w.category, (ArchConvergenceWarning, StartingValueWarning)):
            messages.append(" ".join(str(w.message).split())[:160])
    converged = flag == 0 and not any("converge" in m.lower() for m in messages)
    params = GarchParams.from_array(vol, dist, x)
    msg = "; ".join([opt_msg, *messages])
    return GarchFit(params, sigma2, std_resid, converged, loglik, msg)


def _check_series(y_pct: ArrayLike, min_length: int = 20) -> NDArray[np.float64]:
    y = np.array(y_pct, dtype=float)  # a copy: arch never sees the caller's array
    if y.ndim != 1:
        raise ValueError(f"y_pct must be 1-d, got shape {y.shape}")
    if y.size < min_length:
        raise NotEnoughObservations(min_length, int(y.size), "fit_garch")
    if not np.all(np.isfinite(y)):
        raise ValueError("y_pct must be finite")
    return y


def fit_garch(
    y_pct: ArrayLike,
    vol: str = "garch",
    dist: str = "t",
    starting: GarchParams | None = None,
) -> GarchFit:
    """Maximum-likelihood GARCH(1,1) / GJR-GARCH(1,1,1) with constant mean, via arch.

    Parameters
    ----------
    y_pct : array-like of shape (n_obs,)
        Returns in percent, at least 20 of them (a few hundred for sensible estimates).
    vol : {"garch", "gjr"}
    dist : {"normal", "t", "skewt"}
        ``"normal"`` is Gaussian (quasi-)maximum likelihood.
    starting : GarchParams, optional
        Warm start (used when its ``vol`` and ``dist`` match).

    Returns
    -------
    GarchFit

    Warns
    -----
    ConvergenceWarning
        When arch's optimiser reports a problem (the result is returned anyway,
        with ``converged=False``).

    Notes
    -----
    ``arch.arch_model(y, mean="Constant", vol="GARCH", p=1, o=0|1, q=1, dist=...,
    rescale=False).fit(disp="off")``. arch initialises the recursion with its
    backcast (an exponentially weighted mean of early squared residuals).
    """
    _check_spec(vol, dist)
    y = _check_series(y_pct)
    fit = _fit_quiet(y, vol, dist, starting)
    if not fit.converged:
        warnings.warn(
            f"GARCH fit ({vol}/{dist}, {y.size} obs) did not converge: {fit.message}",
            ConvergenceWarning,
            stacklevel=2,
        )
    return fit


def _usable(fit: GarchFit) -> bool:
    """Admissible parameters, finite likelihood, finite positive in-sample variances."""
    return (
        fit.params.is_admissible()
        and math.isfinite(fit.loglik)
        and bool(np.all(np.isfinite(fit.sigma2)) and np.all(fit.sigma2 > 0.0))
    )


def _fallback_params(y: NDArray[np.float64], vol: str, dist: str) -> GarchParams:
    """RiskMetrics-like parameters at the sample variance, when no fit can be trusted.

    A window without variation (a stale feed) gets a variance of 1 (percent squared).
    """
    var = float(np.var(y)) if y.size > 1 else 1.0
    var = var if var > 0 else 1.0
    return GarchParams(
        vol,
        dist,
        mu=float(np.mean(y)),
        omega=0.05 * var,
        alpha=0.05,
        gamma=0.0,
        beta=0.90,
        nu=8.0 if dist != "normal" else None,
        lam=0.0 if dist == "skewt" else None,
    )


@dataclass(eq=False)
class RollingGarch:
    """GARCH state for a stream: rolling-window refits, frozen-parameter filtering in between.

    Parameters
    ----------
    vol : {"garch", "gjr"}
    dist : {"normal", "t", "skewt"}
    window : int
        Refits use the last ``window`` observations (all, if fewer).
    refit_every : int
        Observations between refits (warm-started from the previous parameters).
    min_obs : int
        Observations before the first fit, in ``[20, window]``.

    Attributes
    ----------
    params_ : GarchParams or None
        Parameters in force (``None`` before the first fit).
    n_seen_ : int
        Observations seen since :meth:`reset`.
    n_refits_ : int
        Fits done (the first one included).
    n_failed_refits_ : int
        Refits whose result was rejected (previous parameters kept).

    Notes
    -----
    On each refit the conditional variances of the window are recomputed by arch
    from its backcast; between refits ``sigma2_{t+1}`` is filtered forward from the
    frozen parameters, which is exactly what ``arch_model(...).fix(params)`` on the
    data since the last refit window's start would give. A refit whose parameters
    are not finite, stationary and positive keeps the previous parameters (and
    warns :class:`~models.exceptions.ConvergenceWarning`); a fit that only failed
    to converge is retried cold once, then accepted with a warning.

    Examples
    --------
    >>> import numpy as np
    >>> g = RollingGarch("garch", "normal", window=300, refit_every=50, min_obs=250)
    >>> for y in np.random.default_rng(42).standard_normal(260):
    ...     g.update(float(y))
    >>> g.n_refits_, g.std_resid_.shape
    (1, (260,))
    >>> mu, sigma2 = g.forecast()
    >>> 0.5 < sigma2 < 2.0
    True
    """

    vol: str = "garch"
    dist: str = "t"
    window: int = 1000
    refit_every: int = 21
    min_obs: int = 250
    params_: GarchParams | None = field(default=None, init=False)
    n_seen_: int = field(default=0, init=False)
    n_refits_: int = field(default=0, init=False)
    n_failed_refits_: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        _check_spec(self.vol, self.dist)
        if not 20 <= int(self.min_obs) <= int(self.window):
            raise ValueError(f"min_obs must lie in [20, window={self.window}], got {self.min_obs}")
        if int(self.refit_every) < 1:
            raise ValueError(f"refit_every must be >= 1, got {self.refit_every}")
        self.window = int(self.window)
        self.min_obs = int(self.min_obs)
        self.refit_every = int(self.refit_every)
        self.reset()

    def reset(self) -> None:
        """Forget all observations and parameters."""
        self._y = np.zeros(self.window)  # ring buffer of observations
        self._z = np.zeros(self.window)  # standardised residuals, aligned with _y
        self._pos = 0  # next write index
        self._count = 0
        self._sigma2_next = math.nan
        self._since_refit = 0
        self.params_ = None
        self.n_seen_ = 0
        self.n_refits_ = 0
        self.n_failed_refits_ = 0

    # --- streaming ---------------------------------------------------------------------------

    def update(self, y_pct: float) -> None:
        """Append one observation (percent), filter it, refit when due."""
        y = float(y_pct)
        if not math.isfinite(y):
            raise ValueError(f"y_pct must be finite, got {y_pct}")
        pos = self._pos
        self._y[pos] = y
        p = self.params_
        if p is not None:
            e = y - p.mu
            s2 = self._sigma2_next
            self._z[pos] = e / math.sqrt(s2)
            self._sigma2_next = (
                p.omega + (p.alpha + (p.gamma if e < 0.0 else 0.0)) * e * e + (p.beta * s2)
            )
        self._pos = pos + 1 if pos + 1 < self.window else 0
        if self._count < self.window:
            self._count += 1
        self.n_seen_ += 1
        if p is None:
            if self.n_seen_ >= self.min_obs:
                self._refit()
        else:
            self._since_refit += 1
            if self._since_refit >= self.refit_every:
                self._refit()

    def forecast(self) -> tuple[float, float]:
        """``(mu, sigma2)`` of the next observation, in percent units.

        Raises
        ------
        NotEnoughObservations
            Before the first fit.
        """
        if self.params_ is None:
            raise NotEnoughObservations(self.min_obs, self.n_seen_, "RollingGarch")
        return self.params_.mu, self._sigma2_next

    @property
    def y_(self) -> NDArray[np.float64]:
        """Observations of the current window, oldest first, shape (n_window,)."""
        return self._chronological(self._y)

    @property
    def std_resid_(self) -> NDArray[np.float64]:
        """Standardised residuals of the current window, oldest first, shape (n_window,).

        Empty before the first fit. Residuals of the refit window come from the fit
        itself; later ones from the frozen-parameter filter.
        """
        if self.params_ is None:
            return np.empty(0)
        return self._chronological(self._z)

    def recent_std_resid(self, n: int) -> NDArray[np.float64]:
        """The last ``min(n, n_window)`` standardised residuals, oldest first."""
        z = self.std_resid_
        return z[max(z.size - int(n), 0) :]

    def _chronological(self, buf: NDArray[np.float64]) -> NDArray[np.float64]:
        if self._count < self.window:
            return buf[: self._count].copy()
        return np.concatenate((buf[self._pos :], buf[: self._pos]))

    # --- refits --------------------------------------------------------------------------------

    def _try_fit(self, y: NDArray[np.float64], starting: GarchParams | None) -> GarchFit:
        try:
            return _fit_quiet(y, self.vol, self.dist, starting)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            dummy = _fallback_params(y, self.vol, self.dist)
            nan = np.full(y.size, math.nan)
            return GarchFit(dummy, nan, nan, False, math.nan, f"{type(exc).__name__}: {exc}")

    def _refit(self) -> None:
        y = self.y_
        prev = self.params_
        self._since_refit = 0
        fit = self._try_fit(y, prev)
        ok = _usable(fit)
        if not (ok and fit.converged) and prev is not None:
            cold = self._try_fit(y, None)
            cold_ok = _usable(cold)
            if cold_ok and (cold.converged or not ok):
                fit, ok = cold, True
        if ok and not fit.converged:
            warnings.warn(
                f"RollingGarch ({self.vol}/{self.dist}) refit at observation {self.n_seen_} "
                f"did not converge; using its parameters anyway: {fit.message}",
                ConvergenceWarning,
                stacklevel=3,
            )
        if ok:
            self._install(fit.params, y, fit.sigma2)
        elif prev is not None:
            self.n_failed_refits_ += 1
            warnings.warn(
                f"RollingGarch ({self.vol}/{self.dist}) refit at observation {self.n_seen_} "
                f"failed ({fit.message}); keeping the previous parameters",
                ConvergenceWarning,
                stacklevel=3,
            )
        else:
            self.n_failed_refits_ += 1
            params = _fallback_params(y, self.vol, self.dist)
            warnings.warn(
                f"RollingGarch ({self.vol}/{self.dist}) first fit failed ({fit.message}); "
                "using fallback parameters (alpha=0.05, beta=0.90)",
                ConvergenceWarning,
                stacklevel=3,
            )
            s2 = params.filter(y, float(np.var(y)) or 1.0)
            self._install(params, y, s2[:-1])
        self.n_refits_ += 1

    def _install(
        self, params: GarchParams, y: NDArray[np.float64], sigma2: NDArray[np.float64]
    ) -> None:
        n = y.size
        self.params_ = params
        self._y[:n] = y
        self._z[:n] = (y - params.mu) / np.sqrt(sigma2)
        self._pos = n % self.window
        self._sigma2_next = float(params.next_variance(sigma2[-1], y[-1] - params.mu))
