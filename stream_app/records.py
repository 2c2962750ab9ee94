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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
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
    "LEVEL_KEYS",
    "NS_PER_DAY",
    "NS_PER_SECOND",
    "AssetRisk",
    "Bar",
    "ChallengerRisk",
    "RiskSnapshot",
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
    wall_ns: int = 0  #: wall clock (ns) when the worker received the tick that emitted it

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _BAR_FIELDS}

    def for_portfolio(self, portfolio: str) -> Bar:
        """This bar on ``portfolio``'s stream (what ``dataclasses.replace(bar,
        portfolio=...)`` gives, at a fifth of its cost: ingest makes one per portfolio
        holding the asset, for every bar and last price).

        Examples
        --------
        >>> import dataclasses
        >>> b = Bar("SPY", "2008-09-15", 1.0, 2.0, 0.5, 1.5, 10.0, 3, 0, 2, 0, 1, kind="last")
        >>> b.for_portfolio("book") == dataclasses.replace(b, portfolio="book")
        True
        """
        if portfolio == self.portfolio:
            return self
        return Bar(
            self.asset, self.day, self.open, self.high, self.low, self.close, self.volume,
            self.n_ticks, self.first_seq, self.last_seq, self.ts_first, self.ts_last,
            portfolio, self.run_id, self.kind, self.closed_by, self.wall_ns,
        )  # fmt: skip

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
        return cls.from_dict(_json_object(raw, "bar"))

    @staticmethod
    def encode_many(bars: Sequence[Bar]) -> bytes:
        """One ``bars`` message for several bars of one portfolio: a JSON array, in order.

        Ingest sends one such message per portfolio and batch, which cuts the per-message
        cost of the producer, the broker and the risk agent (one Faust event per batch
        instead of one per bar).
        """
        return dumps([bar.to_dict() for bar in bars])

    @classmethod
    def decode_many(cls, raw: bytes) -> list[Bar]:
        """The bars of a ``bars`` message: a JSON array of bars, or one bar object.

        Raises :class:`DataError` when the value is not JSON, or when any item is not a bar
        (the message is then rejected as a whole: ingest never writes such a message).

        Examples
        --------
        >>> b = Bar("SPY", "2008-09-15", 1.0, 2.0, 0.5, 1.5, 10.0, 3, 0, 2, 0, 1)
        >>> Bar.decode_many(Bar.encode_many([b, b])) == [b, b]
        True
        >>> Bar.decode_many(b.encode()) == [b]
        True
        """
        try:
            data = loads(raw)
        except ValueError as exc:
            raise DataError(f"bars message is not JSON: {raw[:200]!r}") from exc
        if isinstance(data, dict):
            return [cls.from_dict(data)]
        if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
            raise DataError(f"bars message is not a bar or an array of bars: {raw[:200]!r}")
        return [cls.from_dict(d) for d in data]


_BAR_FIELDS = tuple(f.name for f in fields(Bar))


# -- risk snapshots (topic ``risk``) ----------------------------------------------------

#: Confidence levels as they appear in snapshot dicts and metric labels, in LEVELS order.
LEVEL_KEYS: tuple[str, str, str] = ("0.95", "0.975", "0.99")

_SNAPSHOT_KINDS = ("daily", "intraday")


@dataclass(frozen=True, slots=True)
class AssetRisk:
    """What a snapshot says about one asset of the portfolio.

    Parameters
    ----------
    weight : float
        Portfolio weight (constant mix).
    price : float or None
        Last price seen (a closed bar's close, or the last intraday price).
    prev_close : float or None
        Close of the last *closed* trading day (the base of today's intraday P&L).
    vol : float or None
        EWMA daily volatility of the asset's log returns (lambda 0.94), a fraction.
    last_ts : int or None
        Event time (ns) of the last tick seen of this asset (stale-feed checks).
    last_day : str or None
        Trading day (ISO) of the last closed bar.
    """

    weight: float
    price: float | None = None
    prev_close: float | None = None
    vol: float | None = None
    last_ts: int | None = None
    last_day: str | None = None


@dataclass(frozen=True, slots=True)
class ChallengerRisk:
    """A challenger model's forecast and running backtest, alongside the champion.

    Dict fields are keyed by :data:`LEVEL_KEYS`; ``None`` while the model warms up.
    Same meaning as the champion's fields of :class:`RiskSnapshot`.
    """

    model: str
    var: dict[str, float] | None = None
    es: dict[str, float] | None = None
    exception: dict[str, bool] | None = None
    n_days: int = 0
    exceptions_total: dict[str, int] = field(default_factory=dict)
    days_250d: int = 0
    exceptions_250d: dict[str, int] = field(default_factory=dict)
    kupiec_p: dict[str, float | None] = field(default_factory=dict)
    traffic_light: str | None = None

    @property
    def var99(self) -> float | None:
        return None if self.var is None else self.var["0.99"]


@dataclass(frozen=True, slots=True)
class RiskSnapshot:
    """One risk snapshot of one portfolio: the message value on topic ``risk``.

    The Kafka key is the portfolio name (UTF-8). The value is compact JSON of
    :meth:`to_dict` (nested dataclasses as objects); :meth:`decode` reverses it.
    All ratios are fractions of portfolio value (NAV): 0.02 = 2 %. VaR and ES are
    positive losses; returns and P&L are gains-positive simple returns. Dicts over
    levels are keyed by :data:`LEVEL_KEYS` (``"0.95"``, ``"0.975"``, ``"0.99"``).

    Two kinds:

    ``"daily"``
        Published once per portfolio per trading day ``day``, when that day closes
        (all assets' bars of ``day`` closed, or a later day began). ``realized_return``
        is the portfolio return of ``day``; ``prev_var``/``prev_es`` the forecast that
        was in force for ``day`` (made at the previous close); ``exception`` flags
        ``realized_return < -prev_var``; ``var``/``es`` the new forecast for the next
        trading day. ``pnl == realized_return``.
    ``"intraday"``
        Throttled while ``day`` is open: ``pnl`` is the running P&L of ``day`` from
        the last prices against the previous closes; ``var``/``es`` are the forecast in
        force for ``day`` (the last daily snapshot's ``var``/``es``); ``realized_return``,
        ``prev_var``, ``exception`` are ``None``; backtest counters are those of the
        last daily snapshot.

    Parameters
    ----------
    portfolio : str
    run_id : str
        Replay run id; ``""`` for live data (Redis keys and metric labels use ``live``).
    kind : str
        ``"daily"`` or ``"intraday"``.
    day : str
        Trading day (ISO ``YYYY-MM-DD``) the snapshot is about.
    ts : int
        Event time (ns since the epoch, UTC): daily, of the last tick of the day's bars;
        intraday, of the last price that triggered it. Increasing with ``seq`` within a
        (portfolio, run).
    seq : int
        Per-(portfolio, run) snapshot counter (daily and intraday share it).
    model, model_version : str
        The champion model and its version (artifact version, or ``"builtin"``).
    var, es : dict of str to float, or None
        Champion VaR/ES per level (see the kinds above); ``None`` during warm-up.
    prev_var, prev_es : dict of str to float, or None
        (daily) The champion forecast that was in force for ``day``.
    realized_return : float or None
        (daily) Portfolio simple return of ``day``: ``sum_i w_i (C_i,D / C_i,D-1 - 1)``.
    exception : dict of str to bool, or None
        (daily) ``realized_return < -prev_var`` per level; ``None`` without a forecast.
    pnl : float or None
        Running P&L of ``day`` (intraday) or the realised return (daily).
    n_seen : int
        Days of returns the champion has been fed.
    n_days : int
        Days scored so far (days with a forecast in force), whole run.
    exceptions_total : dict of str to int
        Exceptions per level over the whole run.
    days_250d : int
        Scored days in the rolling window (at most 250).
    exceptions_250d : dict of str to int
        Exceptions per level over the last ``days_250d`` scored days.
    kupiec_p : dict of str to float or None
        Kupiec POF p-value per level over the rolling window.
    traffic_light : str or None
        Basel zone ``"green" | "yellow" | "red"`` of the 99 % exceptions over the
        rolling window (scaled to 250 days by :func:`models.backtest.traffic_light`).
    challengers : dict of str to ChallengerRisk
        The other models, by name.
    predicted_vol : dict of str to float, or None
        CNN predicted portfolio volatility (daily units) by horizon ``"5"``, ``"10"``.
    cnn_score : float or None
        CNN risk score in [0, 1].
    avg_correlation : float or None
        Average pairwise correlation of the assets (the champion's copula correlation
        when it has one, else the EWMA correlation of log returns, lambda 0.94).
    contributions : dict of str to dict of str to float, or None
        Euler contributions to the champion's ES: ``{level: {asset: ratio}}``; they add
        up to ``es[level]``.
    assets : dict of str to AssetRisk
        Per-asset price, vol and last tick time: daily, as of the day's close (price =
        close, ``last_ts`` = its last tick); intraday, the latest seen.
    heatmap_key, heatmap_path : str or None
        Redis key holding the PNG heatmap of the feature window behind this snapshot,
        and/or the file it was written to.
    limits : dict of str to float
        The portfolio's limits from its YAML (e.g. ``var99``, ``loss_warning_share``).
    model_seconds : float
        Wall time of the day's model work (champion + challengers + extras).
    source_wall_ns : int
        Wall clock (ns) when the worker received the tick that triggered the snapshot.
    wall_ns : int
        Wall clock (ns) when the snapshot was built.
    """

    portfolio: str
    run_id: str
    kind: str
    day: str
    ts: int
    seq: int = 0
    model: str = ""
    model_version: str = ""
    var: dict[str, float] | None = None
    es: dict[str, float] | None = None
    prev_var: dict[str, float] | None = None
    prev_es: dict[str, float] | None = None
    realized_return: float | None = None
    exception: dict[str, bool] | None = None
    pnl: float | None = None
    n_seen: int = 0
    n_days: int = 0
    exceptions_total: dict[str, int] = field(default_factory=dict)
    days_250d: int = 0
    exceptions_250d: dict[str, int] = field(default_factory=dict)
    kupiec_p: dict[str, float | None] = field(default_factory=dict)
    traffic_light: str | None = None
    challengers: dict[str, ChallengerRisk] = field(default_factory=dict)
    predicted_vol: dict[str, float] | None = None
    cnn_score: float | None = None
    avg_correlation: float | None = None
    contributions: dict[str, dict[str, float]] | None = None
    assets: dict[str, AssetRisk] = field(default_factory=dict)
    heatmap_key: str | None = None
    heatmap_path: str | None = None
    limits: dict[str, float] = field(default_factory=dict)
    model_seconds: float = 0.0
    source_wall_ns: int = 0
    wall_ns: int = 0

    def __post_init__(self) -> None:
        if self.kind not in _SNAPSHOT_KINDS:
            raise ValueError(f"kind={self.kind!r} must be one of {_SNAPSHOT_KINDS}")

    @property
    def run_label(self) -> str:
        """``run_id``, or ``"live"`` for live data (Redis keys, metric labels)."""
        return self.run_id or "live"

    @property
    def var99(self) -> float | None:
        return None if self.var is None else self.var["0.99"]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (nested dataclasses as dicts; the same as ``dataclasses.asdict``)."""
        out = {name: _plain(getattr(self, name)) for name in _SNAPSHOT_FIELDS}
        out["challengers"] = {k: _record_dict(v) for k, v in self.challengers.items()}
        out["assets"] = {k: _record_dict(v) for k, v in self.assets.items()}
        return out

    def encode(self) -> bytes:
        """Compact JSON bytes (the message value on topic ``risk``)."""
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RiskSnapshot:
        try:
            d = dict(data)
            d["challengers"] = {
                k: ChallengerRisk(**v) for k, v in (d.get("challengers") or {}).items()
            }
            d["assets"] = {k: AssetRisk(**v) for k, v in (d.get("assets") or {}).items()}
            return cls(**d)
        except (TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"not a risk snapshot: {exc}") from exc

    @classmethod
    def decode(cls, raw: bytes | str) -> RiskSnapshot:
        """Parse a ``risk`` message value; raises :class:`DataError` on anything odd.

        Examples
        --------
        >>> s = RiskSnapshot("p", "", "daily", "2008-09-15", 1, var={"0.99": 0.03},
        ...                  assets={"SPY": AssetRisk(weight=1.0, price=120.0)})
        >>> RiskSnapshot.decode(s.encode()) == s
        True
        """
        return cls.from_dict(_json_object(raw, "risk snapshot"))


def _json_object(raw: bytes | str, what: str) -> dict[str, Any]:
    """``raw`` parsed as a JSON object; :class:`DataError` naming ``what`` otherwise."""
    try:
        data = loads(raw)
    except ValueError as exc:
        raise DataError(f"{what} is not JSON: {raw[:200]!r}") from exc
    if not isinstance(data, dict):
        raise DataError(f"{what} is not a JSON object: {raw[:200]!r}")
    return data


_SNAPSHOT_FIELDS = tuple(f.name for f in fields(RiskSnapshot))


def _plain(value: Any) -> Any:
    """Copies of dicts (one or two levels, as the snapshot's fields nest); others as is."""
    if isinstance(value, dict):
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in value.items()}
    return value


def _record_dict(record: Any) -> dict[str, Any]:
    return {f: _plain(getattr(record, f)) for f in record.__slots__}
