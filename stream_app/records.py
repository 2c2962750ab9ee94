"""Wire records of the stream: ticks in, daily bars out, as compact JSON.

Records are frozen dataclasses with their own codec rather than ``faust.Record``:
the ingest agent reads raw bytes (the validator must see exactly what arrived),
and a plain codec keeps the hot path cheap. JSON goes through ``orjson`` when it is
installed, the standard library otherwise; both give the same bytes-level contract
(UTF-8 JSON objects, floats round-trip exactly).

Time is event time: ``ts`` is an integer of nanoseconds since the Unix epoch (UTC).
On the wire a tick may also carry an ISO-8601 string (``"2008-09-15T14:30:00Z"``;
no zone means UTC).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from models.exceptions import DataError

try:  # pragma: no cover - depends on the environment
    import orjson

    _dumps: Callable[[Any], bytes] = orjson.dumps
    _loads: Callable[[bytes | str], Any] = orjson.loads
except ImportError:  # pragma: no cover
    _dumps = lambda obj: json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()  # noqa: E731
    _loads = json.loads

__all__ = [
    "NS_PER_DAY",
    "NS_PER_SECOND",
    "Bar",
    "Tick",
    "day_index",
    "day_to_iso",
    "dumps",
    "iso_to_ns",
    "loads",
    "ns_to_iso",
]

NS_PER_SECOND = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_SECOND
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_EPOCH_DATE = _dt.date(1970, 1, 1)


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes (orjson when available)."""
    return _dumps(obj)


def loads(raw: bytes | str) -> Any:
    """Parse JSON (orjson when available); raises ``ValueError`` on bad input."""
    return _loads(raw)


def iso_to_ns(text: str) -> int:
    """Nanoseconds since the epoch of an ISO-8601 timestamp (naive = UTC).

    Examples
    --------
    >>> iso_to_ns("1970-01-02T00:00:00Z")
    86400000000000
    >>> iso_to_ns("2008-09-15T10:30:00-04:00") == iso_to_ns("2008-09-15T14:30:00")
    True
    """
    dt = _dt.datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_dt.UTC)
    return ((dt - _EPOCH) // _dt.timedelta(microseconds=1)) * 1000


def ns_to_iso(ts: int) -> str:
    """ISO-8601 UTC string (microsecond precision) of nanoseconds since the epoch.

    Examples
    --------
    >>> ns_to_iso(86400000000000)
    '1970-01-02T00:00:00+00:00'
    """
    return (_EPOCH + _dt.timedelta(microseconds=ts // 1000)).isoformat()


def day_index(ts: int, offset_ns: int = 0) -> int:
    """Trading day of an event time: days since 1970-01-01 of ``ts + offset_ns`` (UTC).

    Examples
    --------
    >>> day_index(iso_to_ns("2008-09-15T20:00:00Z")) == day_index(iso_to_ns("2008-09-15"))
    True
    """
    return (ts + offset_ns) // NS_PER_DAY


def day_to_iso(day: int) -> str:
    """ISO date of a day index.

    Examples
    --------
    >>> day_to_iso(0), day_to_iso(14137)
    ('1970-01-01', '2008-09-15')
    """
    return (_EPOCH_DATE + _dt.timedelta(days=day)).isoformat()


@dataclass(frozen=True, slots=True)
class Tick:
    """One trade (or an end-of-day marker) of one asset.

    Parameters
    ----------
    asset : str
        Asset name; also the Kafka key of the message.
    ts : int
        Event time, nanoseconds since the epoch (UTC).
    price : float
        Trade price (> 0). Ignored for end-of-day markers.
    size : float
        Traded quantity (>= 0; 0 where unknown, e.g. FX reference rates).
    seq : int
        Per-(run, asset) sequence number, strictly increasing; duplicates are dropped.
    source : str
        Producer name (``replay``, ``synthetic``, ``csv``, ...).
    run_id : str
        Replay run id; ``""`` for live data. State and outputs are kept apart per run.
    eod : bool
        End-of-day marker: closes the asset's bar of the trading day of ``ts`` at once
        instead of waiting for the first tick of the next day.
    """

    asset: str
    ts: int
    price: float
    size: float = 0.0
    seq: int = 0
    source: str = ""
    run_id: str = ""
    eod: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON; optional fields at their defaults are left out."""
        out: dict[str, Any] = {
            "asset": self.asset,
            "ts": self.ts,
            "price": self.price,
            "size": self.size,
            "seq": self.seq,
        }
        if self.source:
            out["source"] = self.source
        if self.run_id:
            out["run_id"] = self.run_id
        if self.eod:
            out["eod"] = True
        return out

    def encode(self) -> bytes:
        """Compact JSON bytes (the message value on topic ``ticks``)."""
        return dumps(self.to_dict())

    @classmethod
    def decode(cls, raw: bytes) -> Tick:
        """Strict decode of trusted bytes; raises :class:`DataError` on anything odd.

        Untrusted input goes through :func:`stream_app.validate.validate_tick`
        instead, which never raises and gives a reason.
        """
        from stream_app.validate import validate_tick

        tick, reason = validate_tick(raw, {}, max_bytes=len(raw) + 1)
        if tick is None:
            raise DataError(f"cannot decode tick ({reason}): {raw[:200]!r}")
        return tick


@dataclass(frozen=True, slots=True)
class Bar:
    """A daily OHLCV bar of one asset built from ticks in event time.

    ``kind="bar"`` is a closed bar (``closed_by`` says what closed it: ``"next_day"``,
    ``"eod"`` or ``"evicted"``); ``kind="last"`` is a throttled snapshot of the
    still-open bar, whose ``close`` is the last price.

    Parameters
    ----------
    asset, day : str
        Asset and trading date (ISO ``YYYY-MM-DD``).
    open, high, low, close, volume : float
    n_ticks : int
        Trades aggregated into the bar.
    first_seq, last_seq : int
        Sequence numbers of its first and last trades.
    ts_first, ts_last : int
        Event times (ns) of its first and last trades.
    portfolio : str
        Portfolio whose stream carries the bar (the message key on topic ``bars``).
    run_id : str
        Replay run id, ``""`` for live.
    kind, closed_by : str
    """

    asset: str
    day: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    n_ticks: int
    first_seq: int
    last_seq: int
    ts_first: int
    ts_last: int
    portfolio: str = "default"
    run_id: str = ""
    kind: str = "bar"
    closed_by: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def encode(self) -> bytes:
        """Compact JSON bytes (the message value on topic ``bars``)."""
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Bar:
        try:
            return cls(**data)
        except TypeError as exc:
            raise DataError(f"not a bar: {exc}") from exc

    @classmethod
    def decode(cls, raw: bytes) -> Bar:
        try:
            data = loads(raw)
        except ValueError as exc:
            raise DataError(f"bar is not JSON: {raw[:200]!r}") from exc
        if not isinstance(data, dict):
            raise DataError(f"bar is not a JSON object: {raw[:200]!r}")
        return cls.from_dict(data)
