"""Validation of raw tick bytes: a :class:`~stream_app.records.Tick` or a stable reason.

:func:`validate_tick` never raises, whatever the bytes: bad input from outside is
routed to the dead-letter topic with its :class:`Reason`, counted and logged, never
an unhandled exception in a worker.

The per-(run, asset) cursor (last accepted ``seq`` and ``ts``, last closed trading
day) belongs to the caller: a plain mapping ``{(run_id, asset): {"seq": int,
"ts": int, "closed_day": int | None}}`` that the validator only reads.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Collection, Mapping
from typing import Any

from stream_app.records import NS_PER_DAY, Tick, iso_to_ns, loads

__all__ = ["MAX_TS_NS", "Reason", "parse_payload", "validate_tick", "validate_tick_obj"]

#: Latest accepted event time: 2200-01-01T00:00:00Z in ns.
MAX_TS_NS = 7_258_118_400 * 1_000_000_000
_MAX_INT64 = 2**63 - 1
_ASSET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._^=/-]{0,31}")
_RUN_ID = re.compile(r"[A-Za-z0-9_.:-]{0,64}")
_SOURCE_MAX = 64
#: What orjson rejects but a lenient parser reads as a non-finite float: the literals
#: ``NaN``/``Infinity``/``-Infinity`` that Python's json writes, and numbers beyond the
#: double range (``1e999``: orjson says "number is infinity when parsed as double").
_NON_FINITE_TOKEN = re.compile(rb"NaN|Infinity|[0-9][eE]\+?[0-9]{3}")


class Reason(enum.StrEnum):
    """Why a tick went to the dead-letter topic (stable strings: metric labels)."""

    MALFORMED = "malformed"  #: not a UTF-8 JSON object
    OVERSIZED = "oversized"  #: more bytes than ``max_bytes``
    MISSING_FIELD = "missing_field"  #: asset, ts, price or seq absent (or null)
    BAD_TYPE = "bad_type"  #: a field of the wrong type (bool for a number, ...)
    BAD_ASSET = "bad_asset"  #: not a 1-32 character asset name
    BAD_TIMESTAMP = "bad_timestamp"  #: unparsable, or outside 1970..2200
    NON_FINITE = "non_finite"  #: NaN or infinite price or size
    NON_POSITIVE = "non_positive"  #: price <= 0
    NEGATIVE_SIZE = "negative_size"  #: size < 0
    UNKNOWN_ASSET = "unknown_asset"  #: not in the configured asset list
    DUPLICATE_SEQ = "duplicate_seq"  #: seq <= last accepted seq of the (run, asset)
    OUT_OF_ORDER = "out_of_order"  #: ts < last accepted ts of the (run, asset)
    AFTER_CLOSE = "after_close"  #: a trading day whose bar was already closed
    KEY_MISMATCH = "key_mismatch"  #: the Kafka key is not the asset (breaks partitioning)
    INTERNAL_ERROR = "internal_error"  #: the worker failed on it (a bug: see the log)


_NAMES_OK: set[str] = set()  # names that passed their regex (bounded cache)
_NAMES_MAX = 4096


def _name_ok(pattern: re.Pattern[str], name: str) -> bool:
    if name in _NAMES_OK:
        return True
    if pattern.fullmatch(name) is None:
        return False
    if len(_NAMES_OK) >= _NAMES_MAX:
        _NAMES_OK.clear()
    _NAMES_OK.add(name)
    return True


def validate_tick(
    raw: bytes,
    state: Mapping[tuple[str, str], Mapping[str, Any]],
    *,
    assets: Collection[str] | None = None,
    max_bytes: int = 4096,
    day_offset_ns: int = 0,
) -> tuple[Tick | None, Reason | None]:
    """Parse and check one raw tick message.

    Parameters
    ----------
    raw : bytes
        The message value as it arrived.
    state : mapping
        ``{(run_id, asset): cursor}``, cursor a mapping with ``"seq"``, ``"ts"`` and
        optionally ``"closed_day"`` (days since the epoch). Only read.
    assets : collection of str or None
        Accepted assets; ``None`` accepts any well-formed name.
    max_bytes : int
        Larger messages are rejected before parsing.
    day_offset_ns : int
        Trading day of a tick = UTC day of ``ts + day_offset_ns``.

    Returns
    -------
    (Tick, None) or (None, Reason)
        Exactly one of the two is ``None``.

    Examples
    --------
    >>> validate_tick(b'{"asset":"SPY","ts":0,"price":1.5,"seq":1}', {})
    (Tick(asset='SPY', ts=0, price=1.5, size=0.0, seq=1, source='', run_id='', eod=False), None)
    >>> validate_tick(b'{"asset":"SPY","ts":0,"price":-1,"seq":1}', {})[1]
    <Reason.NON_POSITIVE: 'non_positive'>
    >>> validate_tick(b'{"asset":"SPY","ts":0,"price":1,"seq":1}', {("", "SPY"): {"seq": 1, "ts": 0}})
    (None, <Reason.DUPLICATE_SEQ: 'duplicate_seq'>)
    """
    data, reason = parse_payload(raw, max_bytes)
    if reason is not None:
        return None, reason
    if not isinstance(data, dict):
        return None, Reason.MALFORMED
    return validate_tick_obj(data, state, assets=assets, day_offset_ns=day_offset_ns)


def parse_payload(raw: Any, max_bytes: int) -> tuple[Any, Reason | None]:
    """Size check and JSON parse of a message value: ``(data, None)`` or ``(None, reason)``."""
    if not isinstance(raw, bytes | bytearray | memoryview | str):
        return None, Reason.MALFORMED
    if len(raw) > max_bytes:
        return None, Reason.OVERSIZED
    data = bytes(raw) if not isinstance(raw, bytes | str) else raw
    try:
        return loads(data), None
    except Exception:
        pass
    # A non-finite number is a bad value, not bad JSON: parse it with the stdlib (NaN,
    # inf) so that the checks name it (non_finite for a price or size).
    as_bytes = data.encode(errors="replace") if isinstance(data, str) else data
    if _NON_FINITE_TOKEN.search(as_bytes) is None:
        return None, Reason.MALFORMED
    try:
        return json.loads(data), None
    except Exception:
        return None, Reason.MALFORMED


def validate_tick_obj(
    data: dict[str, Any],
    state: Mapping[tuple[str, str], Mapping[str, Any]],
    *,
    assets: Collection[str] | None = None,
    day_offset_ns: int = 0,
) -> tuple[Tick | None, Reason | None]:
    """Check one already-parsed tick object (an element of a bundle); never raises."""
    # Exact type checks (``type(x) is int`` rejects bool): the hot path of the worker.
    eod = data.get("eod", False)
    if type(eod) is not bool:
        return None, Reason.BAD_TYPE
    asset = data.get("asset")
    ts = data.get("ts")
    seq = data.get("seq")
    price = data.get("price")
    if asset is None or ts is None or seq is None or (price is None and not eod):
        return None, Reason.MISSING_FIELD

    if type(asset) is not str:
        return None, Reason.BAD_TYPE
    if not _name_ok(_ASSET, asset):
        return None, Reason.BAD_ASSET
    run_id = data.get("run_id")
    source = data.get("source")
    if run_id is None:
        run_id = ""
    if source is None:
        source = ""
    if type(run_id) is not str or type(source) is not str:
        return None, Reason.BAD_TYPE
    if (run_id and not _name_ok(_RUN_ID, run_id)) or len(source) > _SOURCE_MAX:
        return None, Reason.BAD_TYPE

    if type(ts) is str:
        try:
            ts = iso_to_ns(ts)
        except (ValueError, OverflowError):
            return None, Reason.BAD_TIMESTAMP
    elif type(ts) is not int:
        return None, Reason.BAD_TYPE
    if not 0 <= ts <= MAX_TS_NS:
        return None, Reason.BAD_TIMESTAMP

    if type(seq) is not int or not 0 <= seq <= _MAX_INT64:
        return None, Reason.BAD_TYPE

    if price is None:
        price = 0.0
    size = data.get("size", 0.0)
    tp, ts_ = type(price), type(size)
    if (tp is not float and tp is not int) or (ts_ is not float and ts_ is not int):
        return None, Reason.BAD_TYPE
    price = float(price)
    size = float(size)
    if not (math.isfinite(price) and math.isfinite(size)):
        return None, Reason.NON_FINITE
    if not eod and price <= 0.0:
        return None, Reason.NON_POSITIVE
    if size < 0.0:
        return None, Reason.NEGATIVE_SIZE

    if assets is not None and asset not in assets:
        return None, Reason.UNKNOWN_ASSET

    cursor = state.get((run_id, asset))
    if cursor is not None:
        last_seq = cursor.get("seq")
        if last_seq is not None and seq <= last_seq:
            return None, Reason.DUPLICATE_SEQ
        last_ts = cursor.get("ts")
        if last_ts is not None and ts < last_ts:
            return None, Reason.OUT_OF_ORDER
        closed_day = cursor.get("closed_day")
        if closed_day is not None and (ts + day_offset_ns) // NS_PER_DAY <= closed_day:
            return None, Reason.AFTER_CLOSE

    return Tick(asset, ts, price, size, seq, source, run_id, eod), None
