"""Statistical backtests of VaR and ES forecasts.

Sign convention (as in :mod:`models.measures`): ``realized`` are portfolio
simple returns (gains positive); ``var`` and ``es`` are positive losses at the
confidence ``level`` (e.g. 0.99), so the tail probability is
``alpha = 1 - level`` and an exception (hit) is ``realized < -var``.

Everything here is a pure function of numpy arrays. Bad input (shape mismatch,
NaN, a level outside (0, 1)) raises ``ValueError`` naming the value and the
valid range. :mod:`models.backtest` re-exports the public names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats

Zone = Literal["green", "yellow", "red"]

#: Cumulative binomial probabilities that end the green and the yellow zone
#: (Basel Committee, 1996, "Supervisory framework for the use of backtesting").
GREEN_BOUND = 0.95
YELLOW_BOUND = 0.9999

#: Critical values of Acerbi & Szekely's Z2 for ES at 97.5 %, by significance
#: (Acerbi & Szekely 2014, "Backtesting Expected Shortfall", Risk): reject when
#: ``Z2 < critical value``. They hold approximately across the laws studied.
Z2_CRITICAL_VALUES: dict[float, float] = {0.05: -0.70, 0.0001: -1.8}


# ----------------------------------------------------------------- validation


def check_level(level: float) -> float:
    """Return ``level`` as a float after checking it lies in (0, 1)."""
    lv = float(level)
    if not 0.0 < lv < 1.0:
        raise ValueError(f"level must lie in the open interval (0, 1), got {level!r}")
    return lv


def as_series(x: ArrayLike, name: str, *, positive: bool = False) -> NDArray[np.float64]:
    """Validate a finite 1-d float series (``positive``: every value > 0)."""
    a = np.asarray(x, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-d of shape (n_obs,), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        bad = int(np.flatnonzero(~np.isfinite(a))[0])
        raise ValueError(f"{name} must be finite, got {a[bad]} at index {bad}")
    if positive and np.any(a <= 0):
        bad = int(np.flatnonzero(a <= 0)[0])
        raise ValueError(f"{name} must be > 0 (a positive loss), got {a[bad]} at index {bad}")
    return a


def same_shape(**arrays: NDArray[Any]) -> None:
    """Raise ``ValueError`` unless all the named arrays share one shape."""
    shapes = {k: v.shape for k, v in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shapes must match, got {shapes}")


def as_hits(x: ArrayLike, name: str = "hits") -> NDArray[np.bool_]:
    """Validate a 1-d sequence of exception indicators (bool or 0/1)."""
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-d of shape (n_obs,), got shape {a.shape}")
    if a.dtype != bool:
        af = a.astype(float)
        if not np.all((af == 0) | (af == 1)):
            raise ValueError(f"{name} must hold booleans or 0/1, got values {np.unique(af)[:5]}")
        a = af.astype(bool)
    return a


# ----------------------------------------------------------------- results


@dataclass(frozen=True)
class TestResult:
    """Outcome of a backtest.

    Parameters
    ----------
    statistic : float
        Test statistic.
    pvalue : float
        p-value in [0, 1] (two-sided for Diebold-Mariano).
    n_obs : int
        Observations used.
    n_exceptions : int or None
        VaR exceptions, where the test counts them.
    df : int or None
        Degrees of freedom of the chi-square reference law.
    pvalue_less : float or None
        Diebold-Mariano only: one-sided p-value of H1 "A has lower expected loss".
    transitions : tuple of int or None
        Christoffersen only: ``(n00, n01, n10, n11)``, ``nij`` = days in state
        ``j`` after a day in state ``i`` (1 = exception).
    """

    __test__ = False  # not a pytest test class

    statistic: float
    pvalue: float
    n_obs: int
    n_exceptions: int | None = None
    df: int | None = None
    pvalue_less: float | None = None
    transitions: tuple[int, int, int, int] | None = None


def _chi2_sf(stat: float, df: int) -> float:
    return float(np.clip(stats.chi2.sf(stat, df), 0.0, 1.0))


# ----------------------------------------------------------------- hits


def hits(realized: ArrayLike, var: ArrayLike) -> NDArray[np.bool_]:
    """Exception indicators ``realized < -var``.

    Parameters
    ----------
    realized : ndarray of shape (n_obs,)
        Realised simple returns.
    var : ndarray of shape (n_obs,)
        VaR forecasts for the same days, positive losses.

    Returns
    -------
    ndarray of bool of shape (n_obs,)

    Examples
    --------
    >>> hits([-0.03, 0.01, -0.02], [0.02, 0.02, 0.02]).tolist()
    [True, False, False]
    """
    y = as_series(realized, "realized")
    v = as_series(var, "var")
    same_shape(realized=y, var=v)
    return y < -v


# ----------------------------------------------------------------- coverage


def _binomial_loglik(n_exc: float, n_obs: float, p: float) -> float:
    """``x log p + (n - x) log(1 - p)`` with ``0 log 0 = 0``."""
    return float(special.xlogy(n_exc, p) + special.xlog1py(n_obs - n_exc, -p))


def kupiec_pof(n_exceptions: int, n_obs: int, level: float) -> TestResult:
    """Kupiec's proportion-of-failures likelihood-ratio test.

    Parameters
    ----------
    n_exceptions : int
        Number of exceptions ``x``, ``0 <= x <= n_obs``.
    n_obs : int
        Number of forecasts ``n >= 1``.
    level : float
        VaR confidence level in (0, 1); ``p = 1 - level``.

    Returns
    -------
    TestResult
        ``statistic = LR_POF``, ``pvalue`` from chi2(1).

    Notes
    -----
    ``LR_POF = -2 [x log p + (n-x) log(1-p) - x log(x/n) - (n-x) log(1-x/n)]``
    with ``0 log 0 = 0``, so ``x = 0`` gives ``-2 n log(1-p)`` and ``x = n``
    gives ``-2 n log p``.

    Examples
    --------
    >>> r = kupiec_pof(5, 250, 0.99)
    >>> round(r.statistic, 4), round(r.pvalue, 4)
    (1.9568, 0.1619)
    """
    lv = check_level(level)
    n, x = int(n_obs), int(n_exceptions)
    if n != n_obs or x != n_exceptions:
        raise ValueError(f"n_exceptions and n_obs must be integers, got {n_exceptions}, {n_obs}")
    if n < 1:
        raise ValueError(f"n_obs must be >= 1, got {n_obs}")
    if not 0 <= x <= n:
        raise ValueError(f"n_exceptions must lie in [0, n_obs={n}], got {n_exceptions}")
    p = 1.0 - lv
    lr = -2.0 * (_binomial_loglik(x, n, p) - _binomial_loglik(x, n, x / n))
    lr = max(lr, 0.0)
    return TestResult(lr, _chi2_sf(lr, 1), n_obs=n, n_exceptions=x, df=1)


def transition_counts(hit_seq: ArrayLike) -> tuple[int, int, int, int]:
    """Counts ``(n00, n01, n10, n11)`` of consecutive pairs of hit states.

    Examples
    --------
    >>> transition_counts([0, 1, 1, 0, 0])
    (1, 1, 1, 1)
    """
    h = as_hits(hit_seq).astype(np.int64)
    if h.size < 2:
        raise ValueError(f"need at least 2 observations for transitions, got {h.size}")
    pair = 2 * h[:-1] + h[1:]
    c = np.bincount(pair, minlength=4)
    return int(c[0]), int(c[1]), int(c[2]), int(c[3])


def christoffersen_independence(hit_seq: ArrayLike) -> TestResult:
    """Christoffersen's (1998) Markov test that exceptions do not cluster.

    Parameters
    ----------
    hit_seq : ndarray of bool of shape (n_obs,)
        Exception indicators, ``n_obs >= 2``.

    Returns
    -------
    TestResult
        ``statistic = LR_ind``, ``pvalue`` from chi2(1), ``transitions``.

    Notes
    -----
    With ``pi01 = n01 / (n00 + n01)``, ``pi11 = n11 / (n10 + n11)`` and
    ``pi = (n01 + n11) / (n00 + n01 + n10 + n11)``:
    ``LR_ind = -2 [log L(pi) - log L(pi01, pi11)]``, ``L(pi) = (1-pi)^(n00+n10) pi^(n01+n11)``,
    ``L(pi01, pi11) = (1-pi01)^n00 pi01^n01 (1-pi11)^n10 pi11^n11``.
    Zero cells use ``0 log 0 = 0``; a row with no transitions contributes nothing
    (e.g. no exception before the last day gives ``LR_ind = 0``). This is the
    G statistic of the 2x2 transition table.
    """
    h = as_hits(hit_seq)
    n00, n01, n10, n11 = transition_counts(h)

    def row(a: int, b: int) -> float:  # log-lik of one row at its own MLE
        tot = a + b
        return 0.0 if tot == 0 else float(special.xlogy(a, a / tot) + special.xlogy(b, b / tot))

    pooled = row(n00 + n10, n01 + n11)
    lr = max(-2.0 * (pooled - row(n00, n01) - row(n10, n11)), 0.0)
    return TestResult(
        lr,
        _chi2_sf(lr, 1),
        n_obs=int(h.size),
        n_exceptions=int(h.sum()),
        df=1,
        transitions=(n00, n01, n10, n11),
    )


def christoffersen_conditional_coverage(hit_seq: ArrayLike, level: float) -> TestResult:
    """Christoffersen's conditional-coverage test ``LR_cc = LR_POF + LR_ind``.

    ``LR_POF`` is Kupiec's statistic on all ``n_obs`` days and ``LR_ind`` the
    independence statistic on the ``n_obs - 1`` transitions; the p-value is
    from chi2(2).

    Examples
    --------
    >>> r = christoffersen_conditional_coverage([0] * 98 + [1, 1], 0.99)
    >>> r.df, r.n_exceptions, r.statistic > kupiec_pof(2, 100, 0.99).statistic
    (2, 2, True)
    """
    h = as_hits(hit_seq)
    pof = kupiec_pof(int(h.sum()), int(h.size), level)
    ind = christoffersen_independence(h)
    lr = pof.statistic + ind.statistic
    return TestResult(
        lr,
        _chi2_sf(lr, 2),
        n_obs=int(h.size),
        n_exceptions=int(h.sum()),
        df=2,
        transitions=ind.transitions,
    )


# ----------------------------------------------------------------- traffic light


def traffic_light_thresholds(n_obs: int = 250, level: float = 0.99) -> tuple[int, int]:
    """Largest exception counts that are still green and still yellow.

    Binomial rule of the Basel framework: with ``X ~ Binomial(n_obs, 1 - level)``
    a count ``k`` is green while ``P(X <= k) < 95 %``, yellow while
    ``P(X <= k) < 99.99 %`` and red beyond.

    Returns
    -------
    green_max, yellow_max : int
        ``k <= green_max`` is green, ``green_max < k <= yellow_max`` yellow.

    Notes
    -----
    Zero exceptions are always green: taken literally the rule would call 0
    exceptions yellow in samples so short that ``P(X = 0) >= 95 %`` (fewer
    than 6 days at 99 %, e.g. a partial first year), which says nothing
    against the model.

    Examples
    --------
    >>> traffic_light_thresholds(250, 0.99)
    (4, 9)
    """
    lv = check_level(level)
    n = int(n_obs)
    if n != n_obs or n < 1:
        raise ValueError(f"n_obs must be an integer >= 1, got {n_obs}")
    cdf = stats.binom.cdf(np.arange(n + 1), n, 1.0 - lv)
    green_max = int(np.searchsorted(cdf, GREEN_BOUND, side="left")) - 1
    yellow_max = int(np.searchsorted(cdf, YELLOW_BOUND, side="left")) - 1
    green_max = max(green_max, 0)
    return green_max, max(yellow_max, green_max)


def traffic_light(n_exceptions: int, n_obs: int = 250, level: float = 0.99) -> Zone:
    """Basel traffic-light zone of ``n_exceptions`` in ``n_obs`` days.

    At 99 % over 250 days: 0-4 green, 5-9 yellow, 10 or more red.

    Examples
    --------
    >>> [traffic_light(k) for k in (4, 5, 9, 10)]
    ['green', 'yellow', 'yellow', 'red']
    """
    if not 0 <= n_exceptions <= n_obs:
        raise ValueError(f"n_exceptions must lie in [0, n_obs={n_obs}], got {n_exceptions}")
    green_max, yellow_max = traffic_light_thresholds(n_obs, level)
    if n_exceptions <= green_max:
        return "green"
    return "yellow" if n_exceptions <= yellow_max else "red"


class YearZone(NamedTuple):
    """Traffic-light outcome of one calendar year."""

    year: int
    n_obs: int
    n_exceptions: int
    zone: Zone


def _years(dates: ArrayLike) -> NDArray[np.int64]:
    try:
        d = np.asarray(dates, dtype="datetime64[D]")
    except (TypeError, ValueError) as err:
        raise ValueError(f"dates must convert to datetime64[D]: {err}") from err
    if d.ndim != 1:
        raise ValueError(f"dates must be 1-d of shape (n_obs,), got shape {d.shape}")
    if np.any(np.isnat(d)):
        raise ValueError("dates must not contain NaT")
    return d.astype("datetime64[Y]").astype(np.int64) + 1970


def traffic_light_zones(
    dates: ArrayLike, hit_seq: ArrayLike, level: float = 0.99
) -> list[YearZone]:
    """Traffic-light zone of each calendar year.

    Parameters
    ----------
    dates : array-like of shape (n_obs,)
        Dates of the forecasts (anything ``numpy.datetime64`` accepts).
    hit_seq : ndarray of bool of shape (n_obs,)
        Exception indicators.
    level : float
        VaR confidence level.

    Returns
    -------
    list of YearZone
        Ascending by year. The zone thresholds are the binomial rule of
        :func:`traffic_light_thresholds` at that year's ``n_obs`` (about 250
        for a full year, fewer for a partial first or last year).

    Examples
    --------
    >>> zones = traffic_light_zones(["2020-01-02", "2020-06-01", "2021-01-04"], [1, 0, 0])
    >>> [(z.year, z.n_obs, z.n_exceptions) for z in zones]
    [(2020, 2, 1), (2021, 1, 0)]
    """
    h = as_hits(hit_seq)
    years = _years(dates)
    same_shape(dates=years, hits=h)
    check_level(level)
    out = []
    for year in np.unique(years):
        sel = years == year
        n, x = int(sel.sum()), int(h[sel].sum())
        out.append(YearZone(int(year), n, x, traffic_light(x, n, level)))
    return out


def rolling_traffic_light(
    hit_seq: ArrayLike,
    level: float = 0.99,
    window: int = 250,
    min_periods: int | None = None,
) -> NDArray[np.object_]:
    """Traffic-light zone over the last ``window`` days, at each day.

    Parameters
    ----------
    hit_seq : ndarray of bool of shape (n_obs,)
    level : float
    window : int
        Look-back length (250 trading days in the Basel framework).
    min_periods : int, optional
        Fewest days needed for a zone; defaults to ``window``. Earlier days get
        ``None``. Windows shorter than ``window`` use thresholds scaled to
        their length by the binomial rule.

    Returns
    -------
    ndarray of object of shape (n_obs,)
        ``"green"``, ``"yellow"``, ``"red"`` or ``None``; entry ``t`` covers
        days ``t - window + 1 .. t``.

    Examples
    --------
    >>> rolling_traffic_light([0, 1, 1, 0], level=0.5, window=2).tolist()
    [None, 'green', 'red', 'green']
    """
    h = as_hits(hit_seq).astype(np.int64)
    lv = check_level(level)
    if int(window) != window or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window}")
    mp = window if min_periods is None else int(min_periods)
    if not 1 <= mp <= window:
        raise ValueError(f"min_periods must lie in [1, window={window}], got {min_periods}")
    csum = np.concatenate([[0], np.cumsum(h)])
    t = np.arange(h.size)
    start = np.maximum(t + 1 - window, 0)
    counts = csum[t + 1] - csum[start]
    lengths = t + 1 - start
    out = np.full(h.size, None, dtype=object)
    for n in np.unique(lengths[lengths >= mp]):
        green_max, yellow_max = traffic_light_thresholds(int(n), lv)
        sel = lengths == n
        c = counts[sel]
        out[sel] = np.where(c <= green_max, "green", np.where(c <= yellow_max, "yellow", "red"))
    return out


# ----------------------------------------------------------------- ES: Acerbi-Szekely


def acerbi_szekely_z2(
    realized: ArrayLike, var: ArrayLike, es: ArrayLike, level: float = 0.975
) -> float:
    """Acerbi & Szekely's (2014) unconditional ES test statistic Z2.

    Parameters
    ----------
    realized, var, es : ndarray of shape (n_obs,)
        Realised returns, VaR and ES forecasts (positive losses, ``es > 0``).
    level : float
        Confidence level of the ES (97.5 % in FRTB).

    Returns
    -------
    float
        ``Z2 = sum_t X_t I_t / (T alpha ES_t) + 1`` with ``X_t`` the return,
        ``I_t = 1{X_t < -VaR_t}`` and ``alpha = 1 - level``. ``E[Z2] = 0`` when
        the forecasts are right; negative when ES (or VaR) is underestimated.
        Compare with :data:`Z2_CRITICAL_VALUES` at 97.5 %.

    Examples
    --------
    >>> acerbi_szekely_z2([-0.05, 0.01, 0.02, 0.0], [0.03] * 4, [0.04] * 4, 0.75)
    -0.25
    """
    y = as_series(realized, "realized")
    v = as_series(var, "var")
    e = as_series(es, "es", positive=True)
    same_shape(realized=y, var=v, es=e)
    alpha = 1.0 - check_level(level)
    if y.size == 0:
        raise ValueError("need at least one observation")
    i = y < -v
    return float(np.sum(np.where(i, y, 0.0) / e) / (y.size * alpha) + 1.0)


def acerbi_szekely_z2_test(
    realized: ArrayLike,
    var: ArrayLike,
    es: ArrayLike,
    level: float,
    simulated: ArrayLike,
) -> TestResult:
    """Z2 with a p-value by simulation under H0.

    Parameters
    ----------
    realized, var, es : ndarray of shape (n_obs,)
    level : float
    simulated : ndarray of shape (n_sims, n_obs)
        Returns drawn from each day's *forecast* distribution (the law whose
        VaR and ES are ``var`` and ``es``): column ``t`` holds draws for day ``t``.

    Returns
    -------
    TestResult
        ``statistic = Z2`` of the realised returns, ``pvalue = (1 + #{Z2_sim <= Z2})
        / (n_sims + 1)`` (one-sided, small when risk is underestimated).
    """
    y = as_series(realized, "realized")
    v = as_series(var, "var")
    e = as_series(es, "es", positive=True)
    same_shape(realized=y, var=v, es=e)
    sims = np.asarray(simulated, dtype=float)
    if sims.ndim != 2 or sims.shape[1] != y.size or sims.shape[0] < 1:
        raise ValueError(f"simulated must have shape (n_sims, {y.size}), got {sims.shape}")
    if not np.all(np.isfinite(sims)):
        raise ValueError("simulated returns must be finite")
    z2 = acerbi_szekely_z2(y, v, e, level)
    alpha = 1.0 - check_level(level)
    z2_sim = np.sum(np.where(sims < -v, sims, 0.0) / e, axis=1) / (y.size * alpha) + 1.0
    p = (1.0 + np.count_nonzero(z2_sim <= z2)) / (sims.shape[0] + 1.0)
    return TestResult(z2, float(p), n_obs=int(y.size), n_exceptions=int(np.sum(y < -v)))


# ----------------------------------------------------------------- Diebold-Mariano


def default_hac_lag(n_obs: int, h: int = 1) -> int:
    """``max(floor(4 (T/100)^(2/9)), h - 1)`` (Newey & West 1994 rule of thumb).

    Examples
    --------
    >>> default_hac_lag(250), default_hac_lag(1000), default_hac_lag(250, h=10)
    (4, 6, 9)
    """
    return max(int(np.floor(4.0 * (n_obs / 100.0) ** (2.0 / 9.0))), int(h) - 1)


def hac_variance_of_mean(d: NDArray[np.float64], max_lag: int) -> float:
    """Newey-West (Bartlett kernel) variance of the sample mean of ``d``.

    ``(gamma_0 + 2 sum_{k=1}^{L} (1 - k/(L+1)) gamma_k) / T`` with
    ``gamma_k = (1/T) sum_{t>k} (d_t - dbar)(d_{t-k} - dbar)``; never negative.
    """
    t = d.size
    u = d - d.mean()
    lrv = float(u @ u) / t
    for k in range(1, max_lag + 1):
        lrv += 2.0 * (1.0 - k / (max_lag + 1.0)) * float(u[k:] @ u[:-k]) / t
    return max(lrv, 0.0) / t


def diebold_mariano(
    loss_a: ArrayLike, loss_b: ArrayLike, h: int = 1, max_lag: int | None = None
) -> TestResult:
    """Diebold-Mariano test of equal expected loss of two forecasts.

    Parameters
    ----------
    loss_a, loss_b : ndarray of shape (n_obs,)
        Per-day losses of forecasts A and B (e.g. :func:`fz0_losses`).
    h : int
        Forecast horizon in days (sets the minimum HAC lag ``h - 1``).
    max_lag : int, optional
        Bartlett lag; defaults to :func:`default_hac_lag`.

    Returns
    -------
    TestResult
        ``statistic = mean(d) / se`` with ``d = loss_a - loss_b`` and ``se`` the
        Newey-West standard error of the mean; ``pvalue`` two-sided from N(0, 1);
        ``pvalue_less`` the one-sided p of H1 "A has lower expected loss"
        (``Phi(statistic)``). If ``d`` has zero variance: ``statistic = 0`` and
        ``pvalue = 1`` when ``d`` is all zero, otherwise ``+-inf`` and ``pvalue = 0``.

    Examples
    --------
    >>> r = diebold_mariano([1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 3.5, 4.5])
    >>> r.statistic, r.pvalue, r.pvalue_less
    (-inf, 0.0, 0.0)
    """
    a = as_series(loss_a, "loss_a")
    b = as_series(loss_b, "loss_b")
    same_shape(loss_a=a, loss_b=b)
    n = a.size
    if n < 2:
        raise ValueError(f"need at least 2 observations, got {n}")
    if int(h) != h or h < 1:
        raise ValueError(f"h must be an integer >= 1, got {h}")
    lag = default_hac_lag(n, h) if max_lag is None else int(max_lag)
    if not 0 <= lag < n:
        raise ValueError(f"max_lag must lie in [0, n_obs - 1 = {n - 1}], got {max_lag}")
    d = a - b
    dbar = float(d.mean())
    scale = float(np.max(np.abs(d)))
    se = float(np.sqrt(hac_variance_of_mean(d, lag)))
    if se <= 1e-12 * scale or scale == 0.0:
        if abs(dbar) <= 1e-12 * scale or scale == 0.0:
            stat = 0.0
        else:
            stat = float(np.copysign(np.inf, dbar))
    else:
        stat = dbar / se
    p2 = float(2.0 * stats.norm.sf(abs(stat)))
    p_less = float(stats.norm.cdf(stat))
    return TestResult(stat, min(p2, 1.0), n_obs=int(n), pvalue_less=p_less)


__all__ = [
    "GREEN_BOUND",
    "YELLOW_BOUND",
    "Z2_CRITICAL_VALUES",
    "TestResult",
    "YearZone",
    "Zone",
    "acerbi_szekely_z2",
    "acerbi_szekely_z2_test",
    "christoffersen_conditional_coverage",
    "christoffersen_independence",
    "default_hac_lag",
    "diebold_mariano",
    "hac_variance_of_mean",
    "hits",
    "kupiec_pof",
    "rolling_traffic_light",
    "traffic_light",
    "traffic_light_thresholds",
    "traffic_light_zones",
    "transition_counts",
]
