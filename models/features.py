"""Per-asset daily features from OHLCV bars, computed one day at a time.

:class:`FeatureState` holds what the features of a set of assets need from
the past (previous close, the last few squared returns and log volumes, the
EWMA variance) and turns each day's bars into one row of
:data:`FEATURE_NAMES`. :func:`features_from_panel` runs the same state over a
whole :class:`~models.panel.Panel`, so the offline backtest and the stream
compute bit-identical features.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from models.exceptions import DataError, NotEnoughObservations

__all__ = ["FEATURE_NAMES", "FeatureState", "features_from_panel", "positive_prices"]

#: Columns of :meth:`FeatureState.get`, in this order.
FEATURE_NAMES: tuple[str, ...] = (
    "log_return",
    "abs_return",
    "overnight_gap",
    "gk_vol",
    "realized_vol",
    "downside_vol",
    "ewma_vol",
    "volume_z",
)

_GK_C = 2.0 * math.log(2.0) - 1.0


def _log_ratio(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """``ln(a / b)`` for positive ``a``, ``b``; ``ln a - ln b`` where ``a / b`` over/underflows."""
    with np.errstate(over="ignore", under="ignore"):
        q = a / b
    ok = np.isfinite(q) & (q >= np.finfo(np.float64).tiny)
    return np.where(ok, np.log(np.where(ok, q, 1.0)), np.log(a) - np.log(b))


def positive_prices(values: ArrayLike, n_assets: int, name: str = "close") -> NDArray[np.float64]:
    """One day's prices of ``n_assets`` assets, checked: finite and > 0.

    Parameters
    ----------
    values : array-like of shape (n_assets,)
    n_assets : int
    name : str, default="close"
        What the prices are (``open``, ``high``, ...), for the error message.

    Returns
    -------
    ndarray of shape (n_assets,)
        ``values`` as float64.

    Raises
    ------
    DataError
        (a ``ValueError``) on another shape, or a non-finite or non-positive price.

    Examples
    --------
    >>> positive_prices([100.0, 1.35], 2)
    array([100.  ,   1.35])
    >>> positive_prices([100.0, 0.0], 2, "low")
    Traceback (most recent call last):
    ...
    models.exceptions.DataError: low prices must be finite and > 0, got [100.   0.]
    """
    p = np.asarray(values, dtype=np.float64)
    if p.shape != (n_assets,):
        raise DataError(f"{name} has shape {p.shape}, expected {(n_assets,)}")
    if not np.all(np.isfinite(p) & (p > 0)):
        raise DataError(f"{name} prices must be finite and > 0, got {p}")
    return p


class FeatureState:
    r"""Streaming daily features of ``n_assets`` assets.

    Parameters
    ----------
    n_assets : int
        Assets per day (>= 1).
    rv_window : int, default=10
        Trading days (returns) in the realised and downside volatility (>= 1).
    volume_window : int, default=20
        Trading days in the volume z-score, today included (>= 2).
    ewma_lambda : float, default=0.94
        RiskMetrics decay of the EWMA variance, in (0, 1).

    Attributes
    ----------
    n_seen_ : int
        Days fed so far.

    Notes
    -----
    With prices :math:`O_t, H_t, L_t, C_t`, volume :math:`V_t` and
    :math:`r_t = \ln(C_t / C_{t-1})`, the features of day :math:`t` are:

    ``log_return``
        :math:`r_t`.
    ``abs_return``
        :math:`|r_t|`.
    ``overnight_gap``
        :math:`\ln(O_t / C_{t-1})`.
    ``gk_vol``
        Garman-Klass daily volatility
        :math:`\sqrt{\tfrac12 \ln(H_t/L_t)^2 - (2\ln 2 - 1)\ln(C_t/O_t)^2}`.
        ``H`` and ``L`` are first repaired to ``max(O, H, C)`` and
        ``min(O, L, C)``; then ``O`` and ``C`` lie inside ``[L, H]`` and the
        variance is at least :math:`0.114 \ln(H/L)^2 \ge 0`, so the Parkinson
        fallback (for negative variance) is never needed. When the bar has no
        range (``H == L``: close-only data, ECB reference rates) the feature
        falls back to :math:`|r_t|`.
    ``realized_vol``
        :math:`\sqrt{\frac1n \sum_{s} r_s^2}` over the last
        :math:`n = \min(t, \text{rv\_window})` returns (zero mean).
    ``downside_vol``
        The same with :math:`\min(r_s, 0)^2` (realised downside
        semivariance, which forecasts volatility better than its upside twin).
    ``ewma_vol``
        :math:`\sqrt{\sigma^2_t}` with :math:`\sigma^2_1 = r_1^2` and
        :math:`\sigma^2_t = \lambda \sigma^2_{t-1} + (1-\lambda) r_t^2`.
    ``volume_z``
        z-score of :math:`v_t = \ln(1 + V_t)` against the last
        :math:`m = \min(t + 1, \text{volume\_window})` log volumes, today
        included, population standard deviation; it is bounded by
        :math:`\sqrt{m - 1}`.

    NaN policy: every output is finite. Prices must be finite and positive
    (:class:`~models.exceptions.DataError` otherwise); a NaN volume means
    "unknown" and counts as 0. On the first day (``t = 0``, no previous close)
    ``log_return``, ``abs_return``, ``overnight_gap``, ``realized_vol``,
    ``downside_vol`` and ``ewma_vol`` are 0. Rolling statistics use what is
    available during warm-up (fewer than ``rv_window`` returns). ``volume_z``
    is 0 when the log volumes of the window have zero spread (all volumes
    zero or unknown, constant volume, or a single day).

    Examples
    --------
    >>> import numpy as np
    >>> s = FeatureState(n_assets=2)  # an equity and an ECB rate (O = H = L = C, no volume)
    >>> s.update([100.0, 1.35], [101.0, 1.35], [99.0, 1.35], [100.0, 1.35], [1e6, 0.0])
    >>> s.update([102.0, 1.30], [103.0, 1.30], [101.0, 1.30], [101.0, 1.30], [3e6, 0.0])
    >>> row = dict(zip(FEATURE_NAMES, s.get().round(4).T.tolist()))
    >>> row["log_return"], row["overnight_gap"], row["gk_vol"], row["volume_z"]
    ([0.01, -0.0377], [0.0198, -0.0377], [0.0124, 0.0377], [1.0, 0.0])
    """

    def __init__(
        self,
        n_assets: int,
        *,
        rv_window: int = 10,
        volume_window: int = 20,
        ewma_lambda: float = 0.94,
    ) -> None:
        if int(n_assets) != n_assets or n_assets < 1:
            raise ValueError(f"n_assets must be an integer >= 1, got {n_assets!r}")
        if int(rv_window) != rv_window or rv_window < 1:
            raise ValueError(f"rv_window must be an integer >= 1, got {rv_window!r}")
        if int(volume_window) != volume_window or volume_window < 2:
            raise ValueError(f"volume_window must be an integer >= 2, got {volume_window!r}")
        if not 0.0 < ewma_lambda < 1.0:
            raise ValueError(f"ewma_lambda must be in (0, 1), got {ewma_lambda!r}")
        self.n_assets = int(n_assets)
        self.rv_window = int(rv_window)
        self.volume_window = int(volume_window)
        self.ewma_lambda = float(ewma_lambda)
        self.reset()

    @property
    def n_features(self) -> int:
        return len(FEATURE_NAMES)

    def reset(self) -> None:
        """Forget every day seen."""
        n = self.n_assets
        self.n_seen_ = 0
        self._prev_close = np.ones(n)
        self._sq_ret = np.zeros((self.rv_window, n))  # ring of r^2
        self._sq_down = np.zeros((self.rv_window, n))  # ring of min(r, 0)^2
        self._log_vol = np.zeros((self.volume_window, n))  # ring of log(1 + V)
        self._ewma_var = np.zeros(n)
        self._row = np.zeros((n, len(FEATURE_NAMES)))

    def update(
        self,
        open: ArrayLike,
        high: ArrayLike,
        low: ArrayLike,
        close: ArrayLike,
        volume: ArrayLike | None = None,
    ) -> None:
        """Feed one day's bars.

        Parameters
        ----------
        open, high, low, close : array-like of shape (n_assets,)
            Finite, positive prices.
        volume : array-like of shape (n_assets,) or None
            Traded volume, >= 0; NaN or ``None`` means unknown (counted as 0).

        Raises
        ------
        DataError
            (a ``ValueError``) on a wrong shape, a non-finite or non-positive
            price, or a negative volume. The state is left unchanged.
        """
        shape = (self.n_assets,)
        o, h, lo, c = (
            positive_prices(a, self.n_assets, name)
            for name, a in (("open", open), ("high", high), ("low", low), ("close", close))
        )
        v = np.zeros(shape) if volume is None else np.asarray(volume, dtype=np.float64)
        if v.shape != shape:
            raise DataError(f"volume has shape {v.shape}, expected {shape}")
        v = np.where(np.isnan(v), 0.0, v)
        if not np.all(np.isfinite(v) & (v >= 0)):
            raise DataError(f"volume must be finite and >= 0 (NaN = unknown), got {v}")

        t = self.n_seen_
        if t == 0:
            r = np.zeros(shape)
            gap = np.zeros(shape)
        else:
            r = _log_ratio(c, self._prev_close)
            gap = _log_ratio(o, self._prev_close)

        hi = np.maximum(np.maximum(o, h), c)
        lw = np.minimum(np.minimum(o, lo), c)
        hl = _log_ratio(hi, lw)
        co = _log_ratio(c, o)
        gk_var = np.maximum(0.5 * hl * hl - _GK_C * co * co, 0.0)
        gk = np.where(hl > 0, np.sqrt(gk_var), np.abs(r))

        if t >= 1:
            slot = (t - 1) % self.rv_window
            self._sq_ret[slot] = r * r
            self._sq_down[slot] = np.minimum(r, 0.0) ** 2
            n_ret = min(t, self.rv_window)
            rv = np.sqrt(self._sq_ret.sum(axis=0) / n_ret)
            dv = np.sqrt(self._sq_down.sum(axis=0) / n_ret)
            if t == 1:
                self._ewma_var = r * r
            else:
                lam = self.ewma_lambda
                self._ewma_var = lam * self._ewma_var + (1.0 - lam) * (r * r)
        else:
            rv = np.zeros(shape)
            dv = np.zeros(shape)

        self._log_vol[t % self.volume_window] = np.log1p(v)
        m = min(t + 1, self.volume_window)
        lv = self._log_vol[:m] if t + 1 < self.volume_window else self._log_vol
        mean = lv.mean(axis=0)
        std = np.sqrt(((lv - mean) ** 2).mean(axis=0))
        # a spread below float noise is zero spread: all volumes equal (or unknown)
        flat = std <= 1e-12 * np.maximum(np.abs(mean), 1.0)
        vz = np.where(flat, 0.0, (np.log1p(v) - mean) / np.where(flat, 1.0, std))

        row = self._row
        row[:, 0] = r
        row[:, 1] = np.abs(r)
        row[:, 2] = gap
        row[:, 3] = gk
        row[:, 4] = rv
        row[:, 5] = dv
        row[:, 6] = np.sqrt(self._ewma_var)
        row[:, 7] = vz
        self._prev_close = c.copy()
        self.n_seen_ = t + 1

    def get(self) -> NDArray[np.float64]:
        """Features of the last day fed.

        Returns
        -------
        ndarray of shape (n_assets, n_features)
            Columns in :data:`FEATURE_NAMES` order; a copy.

        Raises
        ------
        NotEnoughObservations
            Before the first :meth:`update`.
        """
        if self.n_seen_ == 0:
            raise NotEnoughObservations(1, 0, "FeatureState")
        return self._row.copy()

    def get_or_none(self) -> NDArray[np.float64] | None:
        """Like :meth:`get` but ``None`` before the first day."""
        return None if self.n_seen_ == 0 else self.get()


def features_from_panel(panel: Any, **params: Any) -> NDArray[np.float64]:
    """Features of every day of a panel, by running a :class:`FeatureState`.

    Parameters
    ----------
    panel : Panel
        Anything with ``open``, ``high``, ``low``, ``close``, ``volume``
        arrays of shape (n_days, n_assets), such as :class:`~models.panel.Panel`.
    **params
        Hyperparameters of :class:`FeatureState` (``rv_window``, ...).

    Returns
    -------
    ndarray of shape (n_days, n_assets, n_features)
        Row ``t`` equals ``FeatureState.get()`` after the update with day
        ``t``, bit for bit (it is the same code).
    """
    close = np.asarray(panel.close, dtype=np.float64)
    if close.ndim != 2:
        raise DataError(f"panel.close must have shape (n_days, n_assets), got {close.shape}")
    n_days, n_assets = close.shape
    state = FeatureState(n_assets, **params)
    out = np.empty((n_days, n_assets, state.n_features))
    fields = [np.asarray(getattr(panel, f), dtype=np.float64) for f in ("open", "high", "low")]
    volume = np.asarray(panel.volume, dtype=np.float64)
    for t in range(n_days):
        state.update(fields[0][t], fields[1][t], fields[2][t], close[t], volume[t])
        out[t] = state._row
    return out
