"""Daily OHLCV bars -> intraday ticks, by a Brownian bridge (pure numpy, no Kafka).

The path of one asset-day starts at the open, visits the high and the low (in random
order) and ends at the close; in between it is a Brownian bridge in log price,
folded back into ``[low, high]``, so the ticks rebuild exactly the daily bar they came
from: first price = open, max = high, min = low, last = close, and (for integer
volumes) the sizes add up to the volume. Everything is seeded: the same
``(seed, day, asset)`` always gives the same ticks, whatever else is generated.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from models.exceptions import DataError
from models.panel import Panel

__all__ = ["DayTicks", "bar_to_ticks", "bridge_prices", "panel_ticks", "session_bounds_ns"]

_NS = 1_000_000_000


def _fold(x: NDArray[np.float64], lo: float, hi: float) -> NDArray[np.float64]:
    """Reflect ``x`` into ``[lo, hi]`` (a triangle wave; identity inside the interval)."""
    width = hi - lo
    if width <= 0:
        return np.full_like(x, lo)
    y = np.mod(x - lo, 2.0 * width)
    return lo + np.where(y > width, 2.0 * width - y, y)


def bridge_prices(
    open_: float,
    high: float,
    low: float,
    close: float,
    n_ticks: int,
    rng: np.random.Generator,
    *,
    volatility: float | None = None,
) -> NDArray[np.float64]:
    """Prices of ``n_ticks`` trades that make exactly the bar ``(open, high, low, close)``.

    Parameters
    ----------
    open_, high, low, close : float
        The daily bar; ``0 < low <= min(open, close)`` and ``high >= max(open, close)``.
    n_ticks : int
        Number of trades, >= 4 (open, high, low, close may need one tick each).
    rng : numpy.random.Generator
    volatility : float or None
        Standard deviation of the log-price bridge over the whole day; ``None``
        uses ``log(high / low) / 2``.

    Returns
    -------
    ndarray of shape (n_ticks,)
        ``p[0] == open_``, ``p[-1] == close``, ``p.max() == high``, ``p.min() == low``
        (exact float equality).

    Notes
    -----
    Anchors: index 0 = open, index ``n_ticks - 1`` = close, and two distinct interior
    indices for the high and the low, visited in random order (an extreme already
    reached by the open or the close needs no anchor). Between anchors the log price
    is a Brownian bridge; the path is folded into ``[log low, log high]`` (identity
    inside), exponentiated, clipped against rounding, and the anchors are set to the
    exact input values.

    Examples
    --------
    >>> p = bridge_prices(100.0, 103.0, 98.5, 101.0, 50, np.random.default_rng(0))
    >>> float(p[0]), float(p.max()), float(p.min()), float(p[-1])
    (100.0, 103.0, 98.5, 101.0)
    """
    if n_ticks < 4:
        raise ValueError(f"n_ticks={n_ticks} must be >= 4")
    vals = (open_, high, low, close)
    if not all(np.isfinite(v) for v in vals) or low <= 0:
        raise DataError(f"bar {vals} must be finite with low > 0")
    if low > min(open_, close) or high < max(open_, close):
        raise DataError(
            f"inconsistent bar open={open_} high={high} low={low} close={close}: "
            "need low <= min(open, close) and high >= max(open, close)"
        )
    if high == low:
        return np.full(n_ticks, open_, dtype=float)

    extremes: list[float] = []
    if high > max(open_, close):
        extremes.append(high)
    if low < min(open_, close):
        extremes.append(low)
    inner = rng.choice(np.arange(1, n_ticks - 1), size=len(extremes), replace=False)
    inner = np.sort(inner)
    if len(extremes) == 2 and rng.random() < 0.5:
        extremes.reverse()
    anchor_idx = np.concatenate(([0], inner, [n_ticks - 1])).astype(int)
    anchor_val = np.array([open_, *extremes, close], dtype=float)

    log_lo, log_hi = np.log(low), np.log(high)
    sigma = volatility if volatility is not None else (log_hi - log_lo) / 2.0
    step_sd = sigma / np.sqrt(n_ticks - 1)
    logp = np.empty(n_ticks)
    log_anchor = np.log(anchor_val)
    for k in range(len(anchor_idx) - 1):
        i0, i1 = int(anchor_idx[k]), int(anchor_idx[k + 1])
        v0, v1 = log_anchor[k], log_anchor[k + 1]
        m = i1 - i0
        walk = np.concatenate(([0.0], np.cumsum(rng.normal(0.0, step_sd, size=m))))
        frac = np.arange(m + 1) / m
        bridge = walk - frac * walk[-1]  # 0 at both ends
        logp[i0 : i1 + 1] = v0 + frac * (v1 - v0) + bridge
    prices = np.clip(np.exp(_fold(logp, log_lo, log_hi)), low, high)
    prices[anchor_idx] = anchor_val
    return prices


def session_bounds_ns(
    day: np.datetime64 | str,
    *,
    session: tuple[str, str] = ("09:30", "16:00"),
    tz: str = "America/New_York",
) -> tuple[int, int]:
    """Start and end of the trading session of ``day`` in ns since the epoch (UTC).

    Examples
    --------
    >>> s, e = session_bounds_ns("2008-09-15")
    >>> (e - s) // 60_000_000_000
    390
    """
    date = _dt.date.fromisoformat(str(np.datetime64(day, "D")))
    zone = ZoneInfo(tz)
    out = []
    for hhmm in session:
        t = _dt.time.fromisoformat(hhmm)
        local = _dt.datetime.combine(date, t, tzinfo=zone)
        out.append(int(local.timestamp()) * _NS)
    if out[1] <= out[0]:
        raise ValueError(f"session={session} must end after it starts")
    return out[0], out[1]


def _split_volume(volume: float, n: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """``n`` non-negative sizes adding up to ``volume`` (exactly when it is an integer)."""
    if volume <= 0:
        return np.zeros(n)
    weights = rng.gamma(1.0, 1.0, size=n)
    weights /= weights.sum()
    if float(volume).is_integer() and volume < 2**53:
        return rng.multinomial(int(volume), weights).astype(float)
    sizes = weights * volume
    sizes[-1] = max(volume - sizes[:-1].sum(), 0.0)
    return sizes


def bar_to_ticks(
    day: np.datetime64 | str,
    open_: float,
    high: float,
    low: float,
    close: float,
    volume: float,
    n_ticks: int,
    rng: np.random.Generator,
    *,
    session: tuple[str, str] = ("09:30", "16:00"),
    tz: str = "America/New_York",
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Ticks of one asset-day: event times, prices and sizes.

    Returns
    -------
    ts : ndarray of int64 of shape (n_ticks,)
        Strictly increasing ns since the epoch; the first at the session open, the
        last at the session close.
    prices : ndarray of shape (n_ticks,)
        From :func:`bridge_prices`.
    sizes : ndarray of shape (n_ticks,)
        Non-negative, adding up to ``volume``.
    """
    if n_ticks < 4:
        raise ValueError(f"n_ticks={n_ticks} must be >= 4 (open, high, low and close)")
    start, end = session_bounds_ns(day, session=session, tz=tz)
    span_ms = (end - start) // 1_000_000
    if span_ms < n_ticks - 1:
        raise ValueError(f"n_ticks={n_ticks} does not fit in a {span_ms} ms session")
    inner = 1 + np.sort(rng.choice(span_ms - 1, size=n_ticks - 2, replace=False))
    ts = start + np.concatenate(([0], inner, [span_ms])).astype(np.int64) * 1_000_000
    prices = bridge_prices(open_, high, low, close, n_ticks, rng)
    sizes = _split_volume(float(volume), n_ticks, rng)
    return ts.astype(np.int64), prices, sizes


@dataclass(frozen=True)
class DayTicks:
    """All ticks of one trading day, across assets, sorted by event time.

    Attributes
    ----------
    day : numpy.datetime64
    asset_idx : ndarray of int of shape (n,)
        Column of the panel's asset.
    ts : ndarray of int64 of shape (n,)
    price, size : ndarray of shape (n,)
    """

    day: np.datetime64
    asset_idx: NDArray[np.int64]
    ts: NDArray[np.int64]
    price: NDArray[np.float64]
    size: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.ts.shape[0])


def panel_ticks(
    panel: Panel,
    ticks_per_day: int = 78,
    *,
    seed: int = 42,
    skip_filled: bool = False,
    session: tuple[str, str] = ("09:30", "16:00"),
    tz: str = "America/New_York",
    day_range: tuple[int, int] | None = None,
) -> Iterator[DayTicks]:
    """Ticks of every day of ``panel``, one :class:`DayTicks` per day, in date order.

    Parameters
    ----------
    panel : Panel
    ticks_per_day : int
        Ticks per asset-day (>= 4).
    seed : int
        The ticks of (day ``i``, asset ``j``) come from
        ``np.random.default_rng([seed, i, j])`` (day index within the full panel).
    skip_filled : bool
        Leave out asset-days that the calendar policy carried forward.
    day_range : (int, int) or None
        Only days ``start <= i < stop``.
    """
    start, stop = day_range if day_range is not None else (0, panel.n_days)
    for i in range(start, stop):
        parts_ts: list[NDArray[np.int64]] = []
        parts_p: list[NDArray[np.float64]] = []
        parts_s: list[NDArray[np.float64]] = []
        parts_a: list[NDArray[np.int64]] = []
        for j in range(panel.n_assets):
            if skip_filled and panel.filled[i, j]:
                continue
            rng = np.random.default_rng([seed, i, j])
            ts, p, s = bar_to_ticks(
                panel.dates[i],
                panel.open[i, j],
                panel.high[i, j],
                panel.low[i, j],
                panel.close[i, j],
                panel.volume[i, j],
                ticks_per_day,
                rng,
                session=session,
                tz=tz,
            )
            parts_ts.append(ts)
            parts_p.append(p)
            parts_s.append(s)
            parts_a.append(np.full(ts.shape[0], j, dtype=np.int64))
        if not parts_ts:
            continue
        ts_all = np.concatenate(parts_ts)
        a_all = np.concatenate(parts_a)
        order = np.lexsort((a_all, ts_all))  # by time, ties by asset: deterministic
        yield DayTicks(
            panel.dates[i],
            a_all[order],
            ts_all[order],
            np.concatenate(parts_p)[order],
            np.concatenate(parts_s)[order],
        )
