"""Per-asset rolling windows of daily features, keyed by event time.

A :class:`RollingWindow` keeps the last ``window_size`` *trading days* that
were fed to it, in a ring buffer. Days are the event time of the data (the bar's
date), never the wall clock, so a replay of 2008 evicts exactly as the live
stream would. :func:`sliding_windows` is the batch twin used for training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from models.exceptions import DataError, NotEnoughObservations

__all__ = ["RollingWindow", "sliding_windows"]

_NAT = np.datetime64("NaT", "D")


class RollingWindow:
    """The last ``window_size`` trading days of an (n_assets, n_features) panel.

    Parameters
    ----------
    window_size : int, default=10
        Trading days kept (>= 1). A day counts when it is fed with
        :meth:`update`; calendar gaps (weekends, holidays) do not.
    n_assets : int
        Assets per day (>= 1).
    n_features : int
        Features per asset and day (>= 1).
    max_age : int or None, default=None
        If given (calendar days, >= 0), days more than ``max_age`` calendar
        days older than the newest day are evicted, so a window never mixes
        data from before and after a long gap (a halted market, a feed
        outage). ``None`` keeps trading days regardless of their age.

    Attributes
    ----------
    n_obs_ : int
        Days currently held (0 .. window_size).

    Notes
    -----
    Event-time rules of :meth:`update`:

    - a day later than the newest one is appended; the oldest day is evicted
      once ``window_size`` days are held;
    - a day equal to the newest one replaces it (a late correction of the
      same day's bar);
    - a day older than the newest one raises :class:`~models.exceptions.DataError`
      (a ``ValueError``): history is not rewritten.

    The state is three numpy arrays and three ints, so the object pickles as
    is (Faust tables serialise it).

    Examples
    --------
    >>> import numpy as np
    >>> w = RollingWindow(window_size=2, n_assets=1, n_features=1)
    >>> w.update(np.datetime64("2008-09-12"), np.array([[1.0]]))
    >>> w.get_or_none() is None
    True
    >>> w.update(np.datetime64("2008-09-15"), np.array([[2.0]]))
    >>> w.update(np.datetime64("2008-09-16"), np.array([[3.0]]))
    >>> w.get()[0, 0]
    array([2., 3.])
    >>> w.days_
    array(['2008-09-15', '2008-09-16'], dtype='datetime64[D]')
    """

    def __init__(
        self,
        window_size: int = 10,
        *,
        n_assets: int,
        n_features: int,
        max_age: int | None = None,
    ) -> None:
        for name, value in (
            ("window_size", window_size),
            ("n_assets", n_assets),
            ("n_features", n_features),
        ):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if max_age is not None and (int(max_age) != max_age or max_age < 0):
            raise ValueError(f"max_age must be None or an integer >= 0 (days), got {max_age!r}")
        self.window_size = int(window_size)
        self.n_assets = int(n_assets)
        self.n_features = int(n_features)
        self.max_age = None if max_age is None else int(max_age)
        self.reset()

    def reset(self) -> None:
        """Forget every day held."""
        shape = (self.window_size, self.n_assets, self.n_features)
        self._values: NDArray[np.float64] = np.zeros(shape, dtype=np.float64)
        self._days: NDArray[np.datetime64] = np.full(self.window_size, _NAT)
        self._head = 0  # slot the next new day is written to
        self.n_obs_ = 0

    # -- state -----------------------------------------------------------------

    def _order(self) -> NDArray[np.intp]:
        """Ring slots of the days held, oldest first."""
        start = self._head - self.n_obs_
        return (start + np.arange(self.n_obs_)) % self.window_size

    @property
    def days_(self) -> NDArray[np.datetime64]:
        """ndarray of datetime64[D] of shape (n_obs_,): the days held, oldest first."""
        return self._days[self._order()].copy()

    @property
    def last_day_(self) -> np.datetime64 | None:
        """The newest day held, or ``None`` when empty."""
        if self.n_obs_ == 0:
            return None
        return self._days[(self._head - 1) % self.window_size]

    @property
    def is_ready(self) -> bool:
        """True when ``window_size`` days are held and :meth:`get` answers."""
        return self.n_obs_ == self.window_size

    def __len__(self) -> int:
        return self.n_obs_

    # -- streaming API ---------------------------------------------------------

    def update(self, day: Any, x: ArrayLike) -> None:
        """Add (or correct) one trading day.

        Parameters
        ----------
        day : numpy.datetime64 or str
            Event date of the row, converted to ``datetime64[D]``.
        x : array-like of shape (n_assets, n_features)
            Finite feature values of that day.

        Raises
        ------
        DataError
            (a ``ValueError``) if ``day`` is older than the newest day held,
            is NaT, or ``x`` has the wrong shape or non-finite values.
        """
        d = np.datetime64(day, "D")
        if np.isnat(d):
            raise DataError("day must be a date, got NaT")
        values = np.asarray(x, dtype=np.float64)
        if values.shape != (self.n_assets, self.n_features):
            raise DataError(
                f"expected x of shape ({self.n_assets}, {self.n_features}), got {values.shape}"
            )
        if not np.all(np.isfinite(values)):
            raise DataError(f"x must be finite, got non-finite values on {d}")
        last = self.last_day_
        if last is not None and d < last:
            raise DataError(f"day {d} is older than the newest day held {last}")
        if last is not None and d == last:
            self._values[(self._head - 1) % self.window_size] = values
            return
        self._values[self._head] = values
        self._days[self._head] = d
        self._head = (self._head + 1) % self.window_size
        self.n_obs_ = min(self.n_obs_ + 1, self.window_size)
        if self.max_age is not None:
            oldest_allowed = d - np.timedelta64(self.max_age, "D")
            while self.n_obs_ > 1 and self._days[self._order()[0]] < oldest_allowed:
                self.n_obs_ -= 1

    def get(self) -> NDArray[np.float64]:
        """The full window, oldest day first.

        Returns
        -------
        ndarray of shape (n_assets, n_features, window_size)
            A copy; ``[..., -1]`` is the newest day.

        Raises
        ------
        NotEnoughObservations
            While fewer than ``window_size`` days are held.
        """
        if self.n_obs_ < self.window_size:
            raise NotEnoughObservations(self.window_size, self.n_obs_, "RollingWindow")
        return np.ascontiguousarray(np.moveaxis(self._values[self._order()], 0, -1))

    def get_or_none(self) -> NDArray[np.float64] | None:
        """Like :meth:`get` but ``None`` during warm-up."""
        if self.n_obs_ < self.window_size:
            return None
        return self.get()


def sliding_windows(features: ArrayLike, window_size: int = 10) -> NDArray[np.float64]:
    """Every full window of a daily feature panel (the batch twin of :class:`RollingWindow`).

    Parameters
    ----------
    features : array-like of shape (n_days, n_assets, n_features)
        One row per trading day, oldest first.
    window_size : int, default=10

    Returns
    -------
    ndarray of shape (n_days - window_size + 1, n_assets, n_features, window_size)
        Window ``i`` holds days ``i .. i + window_size - 1`` and equals what a
        :class:`RollingWindow` (without ``max_age``) returns after day
        ``i + window_size - 1``. Empty (first dimension 0) if there are fewer
        than ``window_size`` days.

    Examples
    --------
    >>> import numpy as np
    >>> sliding_windows(np.arange(4.0).reshape(4, 1, 1), 3)[:, 0, 0]
    array([[0., 1., 2.],
           [1., 2., 3.]])
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 3:
        raise ValueError(f"features must have shape (n_days, n_assets, n_features), got {f.shape}")
    if int(window_size) != window_size or window_size < 1:
        raise ValueError(f"window_size must be an integer >= 1, got {window_size!r}")
    n_days, n_assets, n_features = f.shape
    if n_days < window_size:
        return np.empty((0, n_assets, n_features, window_size))
    view = np.lib.stride_tricks.sliding_window_view(f, window_size, axis=0)
    return np.ascontiguousarray(view)
