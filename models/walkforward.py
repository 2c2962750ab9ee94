"""Walk-forward, out-of-sample evaluation of a streaming VaR model.

The same loop the stream runs: on each day ``t`` the model first forecasts
(from data up to the close of ``t - 1``), then the day's returns are revealed
and fed with ``update``. No forecast ever sees the day it predicts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from models.base import LEVELS, VaRModel, portfolio_simple_return
from models.panel import as_day


@dataclass(frozen=True)
class WalkForwardResult:
    """Forecasts of one model against realised portfolio returns.

    Parameters
    ----------
    model : str
        The model's name.
    dates : ndarray of datetime64[D] of shape (n_eval,)
    realized : ndarray of shape (n_eval,)
        Portfolio simple return of each day, a fraction.
    var, es : ndarray of shape (n_eval, n_levels)
        Forecasts made the evening before, positive loss fractions; NaN where
        the model was still warming up.
    levels : tuple of float
    update_seconds : ndarray of shape (n_days_fed,)
        Wall time of each ``predict`` + ``update`` pair, for benchmarks.
    """

    model: str
    dates: NDArray[np.datetime64]
    realized: NDArray[np.float64]
    var: NDArray[np.float64]
    es: NDArray[np.float64]
    levels: tuple[float, ...]
    update_seconds: NDArray[np.float64]

    @property
    def n_forecasts(self) -> int:
        return int(np.isfinite(self.var[:, 0]).sum())


def walk_forward(
    model: VaRModel,
    log_returns: NDArray[np.float64],
    dates: NDArray[np.datetime64],
    eval_start: np.datetime64 | str,
    eval_end: np.datetime64 | str | None = None,
    *,
    progress: Callable[[int], None] | None = None,
) -> WalkForwardResult:
    """Feed ``model`` day by day and collect its next-day forecasts.

    Parameters
    ----------
    model : VaRModel
        Reset before use; its ``weights`` define the portfolio.
    log_returns : ndarray of shape (n_days, n_assets)
        Asset log returns; row ``t`` is dated ``dates[t]``. Days before
        ``eval_start`` are warm-up: fed, not scored.
    dates : ndarray of datetime64[D] of shape (n_days,)
    eval_start, eval_end : date-like
        The scored period (inclusive). Feeding stops after ``eval_end``.
    progress : callable, optional
        Called with the number of days just processed (1) after each day.

    Returns
    -------
    WalkForwardResult

    Examples
    --------
    >>> import numpy as np
    >>> from models.hs import HistoricalSimulation
    >>> rng = np.random.default_rng(42)
    >>> r = rng.normal(0, 0.01, size=(300, 2))
    >>> d = np.datetime64("2020-01-01") + np.arange(300)
    >>> res = walk_forward(HistoricalSimulation([0.5, 0.5], window=100), r, d, d[200])
    >>> res.var.shape, res.n_forecasts
    ((100, 3), 100)
    """
    x = np.asarray(log_returns, dtype=float)
    d = np.asarray(dates, dtype="datetime64[D]")
    if x.ndim != 2 or x.shape[0] != d.shape[0]:
        raise ValueError(f"log_returns {x.shape} and dates {d.shape} do not align")
    start = as_day(eval_start)
    end = as_day(eval_end) if eval_end is not None else d[-1]
    last = int(np.searchsorted(d, end, side="right"))
    first = int(np.searchsorted(d, start, side="left"))
    if first >= last:
        raise ValueError(f"no days to evaluate between {start} and {end}")
    n_eval = last - first
    levels = LEVELS
    var = np.full((n_eval, len(levels)), np.nan)
    es = np.full((n_eval, len(levels)), np.nan)
    realized = portfolio_simple_return(model.weights, x[first:last])
    seconds = np.empty(last)
    model.reset()
    clock = time.perf_counter
    for t in range(last):
        t0 = clock()
        if t >= first:
            forecast = model.predict_or_none()
            if forecast is not None:
                var[t - first] = forecast.var
                es[t - first] = forecast.es
        model.update(x[t])
        seconds[t] = clock() - t0
        if progress is not None:
            progress(1)
    return WalkForwardResult(
        model=model.name,
        dates=d[first:last],
        realized=realized,
        var=var,
        es=es,
        levels=levels,
        update_seconds=seconds,
    )
