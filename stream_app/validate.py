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
import math
import re
from collections.abc import Collection, Mapping
from typing import Any

from stream_app.records import NS_PER_DAY, Tick, iso_to_ns, loads

__all__ = ["MAX_TS_NS", "Reason", "validate_tick"]

#: Latest accepted event time: 2200-01-01T00:00:00Z in ns.
MAX_TS_NS = 7_258_118_400 * 1_000_000_000
_MAX_INT64 = 2**63 - 1
_ASSET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._^=/-]{0,31}")
_RUN_ID = re.compile(r"[A-Za-z0-9_.:-]{0,64}")
_SOURCE_MAX = 64


class Reason(enum.StrEnum):
    """Why a tick went to the dead-letter topic (stable strings: metric labels)."""

    MALFORMED = "malformed"  #: not a UTF-8 JSON object
    OVERSIZED = "oversized"  #: more bytes than ``max_bytes``
    MISSING_FIELD = "missing_field"  #: asset, ts, price or seq absent
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


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


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
    return _validate(raw, state, assets, max_bytes, day_offset_ns)


def _validate(
    raw: Any,
    state: Mapping[tuple[str, str], Mapping[str, Any]],
    assets: Collection[str] | None,
    max_bytes: int,
    day_offset_ns: int,
) -> tuple[Tick | None, Reason | None]:
    if not isinstance(raw, bytes | bytearray | memoryview | str):
        return None, Reason.MALFORMED
    if len(raw) > max_bytes:
        return None, Reason.OVERSIZED
    try:
        data = loads(bytes(raw) if not isinstance(raw, bytes | str) else raw)
    except Exception:
        return None, Reason.MALFORMED
    if not isinstance(data, dict):
        return None, Reason.MALFORMED
    eod = data.get("eod", False)
    if not isinstance(eod, bool):
        return None, Reason.BAD_TYPE
    required = ("asset", "ts", "seq") if eod else ("asset", "ts", "price", "seq")
    for name in required:
        if name not in data:
            return None, Reason.MISSING_FIELD

    asset = data["asset"]
    if not isinstance(asset, str):
        return None, Reason.BAD_TYPE
    if not _ASSET.fullmatch(asset):
        return None, Reason.BAD_ASSET
    run_id = data.get("run_id", "")
    source = data.get("source", "")
    if run_id is None:
        run_id = ""
    if not isinstance(run_id, str) or not isinstance(source, str):
        return None, Reason.BAD_TYPE
    if not _RUN_ID.fullmatch(run_id) or len(source) > _SOURCE_MAX:
        return None, Reason.BAD_TYPE

    ts = data["ts"]
    if isinstance(ts, str):
        try:
            ts = iso_to_ns(ts)
        except (ValueError, OverflowError):
            return None, Reason.BAD_TIMESTAMP
    elif not _is_int(ts):
        return None, Reason.BAD_TYPE
    if not 0 <= ts <= MAX_TS_NS:
        return None, Reason.BAD_TIMESTAMP

    seq = data["seq"]
    if not _is_int(seq):
        return None, Reason.BAD_TYPE
    if not 0 <= seq <= _MAX_INT64:
        return None, Reason.BAD_TYPE

    price = data.get("price", 0.0)
    size = data.get("size", 0.0)
    if price is None and eod:
        price = 0.0
    if not _is_number(price) or not _is_number(size):
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
