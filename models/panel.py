"""An aligned daily OHLCV panel: the engine's view of market history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.exceptions import DataError

_FIELDS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class Panel:
    """Daily bars of several assets on one calendar.

    Parameters
    ----------
    dates : ndarray of datetime64[D] of shape (n_days,)
        Strictly increasing trading dates.
    assets : tuple of str
        Asset names, one per column.
    open, high, low, close, volume : ndarray of shape (n_days, n_assets)
        Prices must be finite and positive; volume finite and >= 0 (0 where
        unknown, as for FX reference rates).
    filled : ndarray of bool of shape (n_days, n_assets)
        True where a value was carried forward by the calendar policy.
    """

    dates: NDArray[np.datetime64]
    assets: tuple[str, ...]
    open: NDArray[np.float64]
    high: NDArray[np.float64]
    low: NDArray[np.float64]
    close: NDArray[np.float64]
    volume: NDArray[np.float64]
    filled: NDArray[np.bool_] | None = None

    def __post_init__(self) -> None:
        dates = np.asarray(self.dates, dtype="datetime64[D]")
        object.__setattr__(self, "dates", dates)
        object.__setattr__(self, "assets", tuple(self.assets))
        shape = (dates.shape[0], len(self.assets))
        for name in _FIELDS:
            a = np.asarray(getattr(self, name), dtype=float)
            if a.shape != shape:
                raise DataError(f"{name} has shape {a.shape}, expected {shape}")
            object.__setattr__(self, name, a)
        if self.filled is None:
            object.__setattr__(self, "filled", np.zeros(shape, dtype=bool))
        if dates.size > 1 and not np.all(np.diff(dates) > np.timedelta64(0, "D")):
            raise DataError("panel dates must be strictly increasing")
        if len(set(self.assets)) != len(self.assets):
            raise DataError(f"duplicate asset names in {self.assets}")

    @property
    def n_days(self) -> int:
        return int(self.dates.shape[0])

    @property
    def n_assets(self) -> int:
        return len(self.assets)

    def log_returns(self) -> NDArray[np.float64]:
        """Close-to-close log returns, shape (n_days - 1, n_assets), dated ``dates[1:]``."""
        return np.diff(np.log(self.close), axis=0)

    def select(self, assets: Sequence[str]) -> Panel:
        """The panel restricted to ``assets`` (in that order)."""
        missing = [a for a in assets if a not in self.assets]
        if missing:
            raise DataError(f"unknown assets {missing}; the data has {list(self.assets)}")
        idx = [self.assets.index(a) for a in assets]
        return self._take(self.dates, tuple(assets), (slice(None), idx))

    def between(self, start: np.datetime64 | str | None, end: np.datetime64 | str | None) -> Panel:
        """Rows with ``start <= date <= end`` (either bound optional)."""
        mask = np.ones(self.n_days, dtype=bool)
        if start is not None:
            mask &= self.dates >= as_day(start)
        if end is not None:
            mask &= self.dates <= as_day(end)
        return self._take(self.dates[mask], self.assets, mask)

    def _take(self, dates: NDArray[np.datetime64], assets: tuple[str, ...], key: Any) -> Panel:
        fields = {f: getattr(self, f)[key] for f in _FIELDS}
        assert self.filled is not None  # set in __post_init__
        return Panel(dates, assets, filled=self.filled[key], **fields)


def as_day(value: object) -> np.datetime64:
    """A date-like (``"2008-09-15"``, ``datetime.date``, ``datetime64``) as ``datetime64[D]``.

    Examples
    --------
    >>> as_day("2008-09-15")
    np.datetime64('2008-09-15')
    """
    return np.datetime64(str(np.asarray(value, dtype="datetime64[D]")), "D")
