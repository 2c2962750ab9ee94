"""Named crisis periods for replays, and the parsing of a period argument.

A period is a preset name (``gfc2008``), ``YYYY-MM-DD:YYYY-MM-DD`` or ``YYYY``
(one calendar year). :func:`resolve_period` snaps it to the trading dates of a
panel and adds the warm-up that models need before the first forecast.

Examples
--------
>>> import numpy as np
>>> dates = np.arange("2019-01-01", "2021-01-01", dtype="datetime64[D]")
>>> start, end, warmup_start = resolve_period("covid2020", dates, warmup_days=30)
>>> str(start), str(end), str(warmup_start)
('2020-01-02', '2020-12-31', '2019-12-03')
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from models.exceptions import DataError

__all__ = [
    "DEFAULT_WARMUP_DAYS",
    "PRESETS",
    "PeriodError",
    "Preset",
    "get_preset",
    "resolve_period",
]

#: Trading days of history a replay feeds the models before its first day.
DEFAULT_WARMUP_DAYS = 500

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class PeriodError(DataError):
    """A replay period that the data cannot serve (outside it, or without warm-up)."""


@dataclass(frozen=True)
class Preset:
    """A named stress period.

    Parameters
    ----------
    name : str
        Identifier used on the command line.
    start, end : numpy.datetime64 or str
        First and last calendar day of the period (inclusive).
    description : str
        One line on what happened.
    warmup_days : int, default 500
        Trading days of history to run through the models before ``start``.
    """

    name: str
    start: np.datetime64
    end: np.datetime64
    description: str
    warmup_days: int = DEFAULT_WARMUP_DAYS

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", np.datetime64(self.start, "D"))
        object.__setattr__(self, "end", np.datetime64(self.end, "D"))
        if self.end < self.start:
            raise ValueError(f"preset {self.name!r}: end {self.end} is before start {self.start}")
        if self.warmup_days < 0:
            raise ValueError(f"warmup_days must be >= 0, got {self.warmup_days!r}")


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "gfc2008",
            "2007-07-01",
            "2009-06-30",
            "Global financial crisis: subprime losses, Bear Stearns, Lehman's failure "
            "(15 Sep 2008), equity trough on 9 Mar 2009.",
        ),
        Preset(
            "euro2011",
            "2011-07-01",
            "2012-06-30",
            "Euro-area sovereign debt crisis and the US downgrade (Aug 2011), "
            "until 'whatever it takes' came near.",
        ),
        Preset(
            "china2015",
            "2015-06-01",
            "2016-03-31",
            "Chinese equity crash, CNY devaluation (11 Aug 2015), global sell-offs in "
            "Aug 2015 and Jan-Feb 2016, oil below 30 USD.",
        ),
        Preset(
            "covid2020",
            "2020-01-02",
            "2020-12-31",
            "COVID-19 crash: fastest 30 % fall of the S&P 500 (Feb-Mar 2020), "
            "volatility spike, then the recovery.",
        ),
        Preset(
            "rates2022",
            "2022-01-03",
            "2022-12-30",
            "Inflation and rate hikes: stocks and bonds fell together, strong USD.",
        ),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (case-insensitive).

    Raises
    ------
    ValueError
        If there is no such preset; the message lists the valid names.
    """
    preset = PRESETS.get(str(name).strip().lower())
    if preset is None:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return preset


def _parse(spec: str) -> tuple[np.datetime64, np.datetime64, int, str]:
    """(start, end, default warm-up days, label) of a period spec."""
    if not isinstance(spec, str):
        raise ValueError(f"period must be a string, got {spec!r}")
    text = spec.strip()
    if text.lower() in PRESETS:
        p = PRESETS[text.lower()]
        return p.start, p.end, p.warmup_days, f"{p.name} ({p.start}..{p.end})"
    try:
        if re.fullmatch(r"\d{4}", text):
            start, end = np.datetime64(f"{text}-01-01", "D"), np.datetime64(f"{text}-12-31", "D")
        else:
            left, sep, right = text.partition(":")
            if not (sep and _DAY.fullmatch(left.strip()) and _DAY.fullmatch(right.strip())):
                raise ValueError
            start, end = np.datetime64(left.strip(), "D"), np.datetime64(right.strip(), "D")
    except ValueError:
        raise ValueError(
            f"period {spec!r} is not a preset, YYYY-MM-DD:YYYY-MM-DD or YYYY; "
            f"presets: {', '.join(PRESETS)}"
        ) from None
    if end < start:
        raise ValueError(f"period {spec!r}: end {end} is before start {start}")
    return start, end, DEFAULT_WARMUP_DAYS, f"{start}..{end}"


def resolve_period(
    spec: str,
    panel_dates: Sequence[np.datetime64] | NDArray[np.datetime64],
    *,
    warmup_days: int | None = None,
) -> tuple[np.datetime64, np.datetime64, np.datetime64]:
    """Snap a period to the trading dates of the data.

    Parameters
    ----------
    spec : str
        A preset name (see :data:`PRESETS`), ``YYYY-MM-DD:YYYY-MM-DD``
        (inclusive) or ``YYYY`` (that calendar year).
    panel_dates : array-like of datetime64[D] of shape (n_days,)
        The data's trading dates, strictly increasing (``Panel.dates``).
    warmup_days : int, optional
        Trading days needed before the start; default the preset's
        ``warmup_days``, or :data:`DEFAULT_WARMUP_DAYS` for explicit dates.

    Returns
    -------
    start : numpy.datetime64
        First trading date on or after the period's start.
    end : numpy.datetime64
        Last trading date on or before the period's end; a period that runs
        past the end of the data is cut at the data's last date.
    warmup_start : numpy.datetime64
        The trading date ``warmup_days`` rows before ``start`` (``start``
        itself when ``warmup_days`` is 0).

    Raises
    ------
    ValueError
        A malformed spec or an unknown preset (the message lists the presets).
    PeriodError
        The period lies outside the data, holds no trading day, or has fewer
        than ``warmup_days`` trading days before it; the message gives the
        data's range.
    """
    start, end, default_warmup, label = _parse(spec)
    warmup = default_warmup if warmup_days is None else warmup_days
    if isinstance(warmup, bool) or not isinstance(warmup, int | np.integer) or warmup < 0:
        raise ValueError(f"warmup_days must be an integer >= 0, got {warmup_days!r}")
    dates = np.asarray(panel_dates, dtype="datetime64[D]")
    if dates.size == 0:
        raise PeriodError(f"period {label}: the data has no dates")
    first, last = dates[0], dates[-1]
    if end < first or start > last:
        raise PeriodError(f"period {label} lies outside the data ({first}..{last})")
    i = int(np.searchsorted(dates, start, side="left"))
    j = int(np.searchsorted(dates, end, side="right")) - 1
    if j < i:
        raise PeriodError(f"period {label} holds no trading date of the data ({first}..{last})")
    if i < warmup:
        raise PeriodError(
            f"period {label} needs {warmup} trading days of warm-up before {dates[i]}, "
            f"but the data ({first}..{last}) has {i}; load earlier data or pass a smaller "
            f"warmup_days"
        )
    return dates[i], dates[j], dates[i - warmup]
