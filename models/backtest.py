"""Backtest scoring of VaR/ES forecasts: losses, tests and a one-call summary.

Sign convention (as in :mod:`models.measures`): ``realized`` are portfolio
simple returns (gains positive); ``var`` and ``es`` are positive losses at
confidence ``level``; ``alpha = 1 - level``; an exception is ``realized < -var``.

The statistical tests live in :mod:`models.scoring_tests` and are re-exported
here, so ``from models.backtest import kupiec_pof`` works. This module adds the
consistent scoring functions (pinball for VaR, FZ0 for VaR and ES jointly) and
:func:`score`, which runs everything over a forecast table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from models.base import LEVELS
from models.scoring_tests import (
    GREEN_BOUND,
    YELLOW_BOUND,
    Z2_CRITICAL_VALUES,
    TestResult,
    YearZone,
    Zone,
    acerbi_szekely_z2,
    acerbi_szekely_z2_test,
    as_series,
    check_level,
    christoffersen_conditional_coverage,
    christoffersen_independence,
    default_hac_lag,
    diebold_mariano,
    hac_variance_of_mean,
    hits,
    kupiec_pof,
    rolling_traffic_light,
    same_shape,
    traffic_light,
    traffic_light_thresholds,
    traffic_light_zones,
    transition_counts,
)

# ----------------------------------------------------------------- scoring functions


def pinball_losses(realized: ArrayLike, var: ArrayLike, level: float) -> NDArray[np.float64]:
    """Quantile (pinball) loss of each VaR forecast.

    Parameters
    ----------
    realized, var : ndarray of shape (n_obs,)
        Realised returns and VaR forecasts (positive losses).
    level : float
        VaR confidence level in (0, 1).

    Returns
    -------
    ndarray of shape (n_obs,)
        ``(alpha - 1{y < q}) (y - q)`` with ``q = -var`` the forecast return
        quantile at tail probability ``alpha = 1 - level``; always ``>= 0``.
        Its expectation is minimised by the true quantile.

    Examples
    --------
    >>> pinball_losses([-0.03, 0.01], [0.02, 0.02], 0.99).round(6).tolist()
    [0.0099, 0.0003]
    """
    y = as_series(realized, "realized")
    v = as_series(var, "var")
    same_shape(realized=y, var=v)
    alpha = 1.0 - check_level(level)
    q = -v
    return (alpha - (y < q)) * (y - q)


def pinball_loss(realized: ArrayLike, var: ArrayLike, level: float) -> float:
    """Mean of :func:`pinball_losses`."""
    return float(np.mean(pinball_losses(realized, var, level)))


def fz0_losses(
    realized: ArrayLike, var: ArrayLike, es: ArrayLike, level: float
) -> NDArray[np.float64]:
    """FZ0 joint VaR-ES loss of Patton, Ziegel & Chen (2019), per observation.

    Parameters
    ----------
    realized, var, es : ndarray of shape (n_obs,)
        Realised returns, VaR and ES forecasts as positive losses; ``es > 0``
        and ``es >= var`` are required.
    level : float
        Confidence level in (0, 1).

    Returns
    -------
    ndarray of shape (n_obs,)
        With ``v = -var``, ``e = -es`` (so ``e <= v``, ``e < 0``) and
        ``alpha = 1 - level``:
        ``L = -1{y <= v} (v - y) / (alpha e) + v / e + log(-e) - 1``.
        Strictly consistent for (VaR, ES) jointly; can be negative; lower is better.

    Examples
    --------
    >>> fz0_losses([-0.05, 0.01], [0.03, 0.03], [0.04, 0.04], 0.5).round(4).tolist()
    [-2.4689, -3.4689]
    """
    y = as_series(realized, "realized")
    v_pos = as_series(var, "var")
    e_pos = as_series(es, "es", positive=True)
    same_shape(realized=y, var=v_pos, es=e_pos)
    if np.any(e_pos < v_pos):
        bad = int(np.flatnonzero(e_pos < v_pos)[0])
        raise ValueError(
            f"es must be >= var, got es={e_pos[bad]} < var={v_pos[bad]} at index {bad}"
        )
    alpha = 1.0 - check_level(level)
    v, e = -v_pos, -e_pos
    tail = np.where(y <= v, v - y, 0.0)
    return -tail / (alpha * e) + v / e + np.log(-e) - 1.0


def fz0_loss(realized: ArrayLike, var: ArrayLike, es: ArrayLike, level: float) -> float:
    """Mean of :func:`fz0_losses`."""
    return float(np.mean(fz0_losses(realized, var, es, level)))


# ----------------------------------------------------------------- summary


def _pct(level: float) -> str:
    return f"{100.0 * level:.10g}"


@dataclass(frozen=True)
class LevelScores:
    """Backtest figures at one confidence level.

    ``traffic_light`` is the zone of the last ``min(250, n_obs)`` days
    (binomial thresholds at that length). ``z2``, ``fz0`` are ``None`` without ES.
    """

    level: float
    n_obs: int
    n_exceptions: int
    exception_rate: float
    kupiec: TestResult
    christoffersen_ind: TestResult
    christoffersen_cc: TestResult
    traffic_light: Zone
    pinball: float
    z2: float | None
    fz0: float | None

    @property
    def expected_rate(self) -> float:
        return 1.0 - self.level


@dataclass(frozen=True)
class BacktestSummary:
    """Result of :func:`score`.

    Parameters
    ----------
    n_obs : int
        Days scored (rows with a forecast and a realised return).
    n_skipped : int
        Rows dropped because a return, VaR or ES was NaN.
    levels : tuple of float
    per_level : tuple of LevelScores
        One per level, in the order of ``levels``.
    yearly_zones : tuple of YearZone
        Traffic light per calendar year at ``traffic_light_level`` (empty
        without dates or when that level is not scored).
    traffic_light_level : float
    """

    n_obs: int
    n_skipped: int
    levels: tuple[float, ...]
    per_level: tuple[LevelScores, ...]
    yearly_zones: tuple[YearZone, ...]
    traffic_light_level: float = 0.99

    def at(self, level: float) -> LevelScores:
        """Scores at one level (``ValueError`` if it was not scored)."""
        for s in self.per_level:
            if np.isclose(s.level, level, rtol=0.0, atol=1e-12):
                return s
        raise ValueError(f"level {level} not scored; scored levels are {self.levels}")

    def to_dict(self) -> dict[str, float | int | str | bool | None]:
        """Flat mapping for tables: keys end in the level in percent (``_97.5``).

        Examples
        --------
        >>> import numpy as np
        >>> r = np.array([-0.03, 0.01, 0.0, np.nan])
        >>> v = np.full((4, 1), 0.02)
        >>> d = score(r, v, None, levels=[0.99]).to_dict()
        >>> d["n_obs"], d["n_skipped"], d["n_exceptions_99"]
        (3, 1, 1)
        """
        out: dict[str, float | int | str | bool | None] = {
            "n_obs": self.n_obs,
            "n_skipped": self.n_skipped,
        }
        for s in self.per_level:
            k = _pct(s.level)
            out[f"n_obs_{k}"] = s.n_obs
            out[f"n_exceptions_{k}"] = s.n_exceptions
            out[f"exception_rate_{k}"] = s.exception_rate
            out[f"expected_rate_{k}"] = s.expected_rate
            out[f"kupiec_stat_{k}"] = s.kupiec.statistic
            out[f"kupiec_pvalue_{k}"] = s.kupiec.pvalue
            out[f"christoffersen_ind_stat_{k}"] = s.christoffersen_ind.statistic
            out[f"christoffersen_ind_pvalue_{k}"] = s.christoffersen_ind.pvalue
            out[f"christoffersen_cc_stat_{k}"] = s.christoffersen_cc.statistic
            out[f"christoffersen_cc_pvalue_{k}"] = s.christoffersen_cc.pvalue
            out[f"traffic_light_{k}"] = s.traffic_light
            out[f"pinball_{k}"] = s.pinball
            out[f"z2_{k}"] = s.z2
            out[f"fz0_{k}"] = s.fz0
            if s.z2 is not None and np.isclose(s.level, 0.975):
                out[f"z2_reject_5pct_{k}"] = s.z2 < Z2_CRITICAL_VALUES[0.05]
                out[f"z2_reject_0.01pct_{k}"] = s.z2 < Z2_CRITICAL_VALUES[0.0001]
        for z in self.yearly_zones:
            out[f"year_{z.year}_n_obs"] = z.n_obs
            out[f"year_{z.year}_n_exceptions"] = z.n_exceptions
            out[f"year_{z.year}_zone"] = z.zone
        return out


def _table(x: ArrayLike, name: str, shape: tuple[int, int]) -> NDArray[np.float64]:
    a = np.asarray(x, dtype=float)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape (n_obs, n_levels) = {shape}, got {a.shape}")
    return a


def score(
    realized: ArrayLike,
    var: ArrayLike,
    es: ArrayLike | None = None,
    levels: Sequence[float] = LEVELS,
    dates: ArrayLike | None = None,
    *,
    traffic_light_level: float = 0.99,
    window: int = 250,
) -> BacktestSummary:
    """Run every backtest on a table of forecasts.

    Parameters
    ----------
    realized : ndarray of shape (n_obs,)
        Realised returns, NaN on days without one.
    var : ndarray of shape (n_obs, n_levels)
        VaR forecasts (positive losses) for the same days, NaN where missing.
    es : ndarray of shape (n_obs, n_levels), optional
        ES forecasts; without them Z2 and FZ0 are ``None``.
    levels : sequence of float
        Confidence levels of the columns.
    dates : array-like of shape (n_obs,), optional
        Dates of the rows, for the yearly traffic light.
    traffic_light_level : float
        Level whose exceptions feed the yearly traffic light (99 % in Basel).
    window : int
        Length of the trailing window of :attr:`LevelScores.traffic_light`.

    Returns
    -------
    BacktestSummary

    Notes
    -----
    NaN policy: a row is dropped, for every level at once, when its return or
    any VaR or ES of that row is NaN; ``n_skipped`` counts the dropped rows, and
    Christoffersen's transitions run over the remaining rows as if contiguous.
    Infinite values raise ``ValueError``. At least 2 rows must remain.
    """
    lv = tuple(check_level(a) for a in levels)
    if len(lv) == 0 or len(set(lv)) != len(lv):
        raise ValueError(f"levels must be non-empty and distinct, got {levels}")
    y = np.asarray(realized, dtype=float)
    if y.ndim != 1:
        raise ValueError(f"realized must be 1-d of shape (n_obs,), got shape {y.shape}")
    shape = (y.size, len(lv))
    v = _table(var, "var", shape)
    e = None if es is None else _table(es, "es", shape)
    keep = ~np.isnan(y) & ~np.isnan(v).any(axis=1)
    if e is not None:
        keep &= ~np.isnan(e).any(axis=1)
    n = int(keep.sum())
    if n < 2:
        raise ValueError(f"need at least 2 rows without NaN, got {n} of {y.size}")
    y, v = y[keep], v[keep]
    e = None if e is None else e[keep]

    per_level = []
    for j, level in enumerate(lv):
        h = hits(y, v[:, j])
        x = int(h.sum())
        last = h[-window:]
        per_level.append(
            LevelScores(
                level=level,
                n_obs=n,
                n_exceptions=x,
                exception_rate=x / n,
                kupiec=kupiec_pof(x, n, level),
                christoffersen_ind=christoffersen_independence(h),
                christoffersen_cc=christoffersen_conditional_coverage(h, level),
                traffic_light=traffic_light(int(last.sum()), int(last.size), level),
                pinball=pinball_loss(y, v[:, j], level),
                z2=None if e is None else acerbi_szekely_z2(y, v[:, j], e[:, j], level),
                fz0=None if e is None else fz0_loss(y, v[:, j], e[:, j], level),
            )
        )

    yearly: tuple[YearZone, ...] = ()
    tl_level = check_level(traffic_light_level)
    if dates is not None:
        d = np.asarray(dates)
        if d.shape != keep.shape:
            raise ValueError(f"dates must have shape {keep.shape}, got {d.shape}")
        idx = [i for i, a in enumerate(lv) if np.isclose(a, tl_level, rtol=0.0, atol=1e-12)]
        if idx:
            yearly = tuple(traffic_light_zones(d[keep], hits(y, v[:, idx[0]]), tl_level))
    return BacktestSummary(
        n_obs=n,
        n_skipped=int(keep.size - n),
        levels=lv,
        per_level=tuple(per_level),
        yearly_zones=yearly,
        traffic_light_level=tl_level,
    )


__all__ = [
    "GREEN_BOUND",
    "YELLOW_BOUND",
    "Z2_CRITICAL_VALUES",
    "BacktestSummary",
    "LevelScores",
    "TestResult",
    "YearZone",
    "Zone",
    "acerbi_szekely_z2",
    "acerbi_szekely_z2_test",
    "christoffersen_conditional_coverage",
    "christoffersen_independence",
    "default_hac_lag",
    "diebold_mariano",
    "fz0_loss",
    "fz0_losses",
    "hac_variance_of_mean",
    "hits",
    "kupiec_pof",
    "pinball_loss",
    "pinball_losses",
    "rolling_traffic_light",
    "score",
    "traffic_light",
    "traffic_light_thresholds",
    "traffic_light_zones",
    "transition_counts",
]
