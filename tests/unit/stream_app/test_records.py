"""Records: JSON round trips (hypothesis) and the event-time helpers."""

import datetime as dt

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.exceptions import DataError
from stream_app.records import (
    NS_PER_DAY,
    Bar,
    RiskSnapshot,
    Tick,
    day_index,
    day_to_iso,
    iso_to_ns,
    loads,
    ns_to_iso,
)
from stream_app.validate import MAX_TS_NS

assets = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._^=/-]{0,31}", fullmatch=True)
run_ids = st.from_regex(r"[A-Za-z0-9_.:-]{0,64}", fullmatch=True)
prices = st.floats(min_value=1e-12, max_value=1e12, allow_nan=False, allow_infinity=False)
sizes = st.floats(min_value=0.0, max_value=1e15, allow_nan=False, allow_infinity=False)
seqs = st.integers(min_value=0, max_value=2**63 - 1)
stamps = st.integers(min_value=0, max_value=MAX_TS_NS)


@given(assets, stamps, prices, sizes, seqs, st.text(max_size=64), run_ids, st.booleans())
def test_tick_round_trip(asset, ts, price, size, seq, source, run_id, eod):
    tick = Tick(asset, ts, price, size, seq, source, run_id, eod)
    assert Tick.decode(tick.encode()) == tick


@given(
    assets,
    st.dates(min_value=dt.date(1970, 1, 1), max_value=dt.date(2199, 12, 31)),
    st.lists(prices, min_size=4, max_size=4),
    sizes,
    st.integers(0, 10**9),
    seqs,
    stamps,
    st.sampled_from(["bar", "last"]),
    st.sampled_from(["", "eod", "next_day", "evicted"]),
)
def test_bar_round_trip(asset, day, ohlc, volume, n, seq, ts, kind, closed_by):
    bar = Bar(
        asset, day.isoformat(), *ohlc, volume, n, seq, seq, ts, ts, "pf", "r1", kind, closed_by
    )
    assert Bar.decode(bar.encode()) == bar
    assert loads(bar.encode())["asset"] == asset
    other = Bar("B", bar.day, *ohlc, volume, n, seq + 1, seq + 1, ts, ts, "pf", "r1", "last")
    assert Bar.decode_many(Bar.encode_many([bar, other, bar])) == [bar, other, bar]


def test_compact_json():
    raw = Tick("SPY", 1, 2.5, 0.0, 3).encode()
    assert b" " not in raw
    assert loads(raw) == {"asset": "SPY", "ts": 1, "price": 2.5, "size": 0.0, "seq": 3}


def test_bad_bars_raise_data_error():
    with pytest.raises(DataError, match="not JSON"):
        Bar.decode(b"{")
    with pytest.raises(DataError, match="not a JSON object"):
        Bar.decode(b"[1]")
    with pytest.raises(DataError, match="not a bar"):
        Bar.decode(b'{"asset": "x"}')
    with pytest.raises(DataError, match="not JSON"):
        Bar.decode_many(b"[{")
    with pytest.raises(DataError, match="not a bar or an array of bars"):
        Bar.decode_many(b"[1]")
    with pytest.raises(DataError, match="not a bar"):
        Bar.decode_many(b'[{"asset": "x"}]')
    assert Bar.decode_many(b"[]") == []
    with pytest.raises(DataError, match="cannot decode tick"):
        Tick.decode(b'{"asset": "x"}')


def test_bad_risk_snapshots_raise_data_error():
    with pytest.raises(DataError, match="risk snapshot is not JSON"):
        RiskSnapshot.decode(b"{")
    with pytest.raises(DataError, match="risk snapshot is not a JSON object"):
        RiskSnapshot.decode("[1]")
    with pytest.raises(DataError, match="not a risk snapshot"):
        RiskSnapshot.decode(b'{"portfolio": "p"}')


@given(st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2199, 12, 31)))
def test_iso_to_ns_matches_numpy(moment):
    text = moment.isoformat()
    expected = int(np.datetime64(text, "ns").astype(np.int64))
    assert iso_to_ns(text) == expected
    assert iso_to_ns(text + "+00:00") == expected
    assert ns_to_iso(expected) == moment.replace(tzinfo=dt.UTC).isoformat()
    assert day_to_iso(day_index(expected)) == moment.date().isoformat()


def test_day_index_offset():
    ts = iso_to_ns("2008-09-15T23:30:00Z")
    assert day_to_iso(day_index(ts)) == "2008-09-15"
    assert day_to_iso(day_index(ts, offset_ns=3600 * 10**9)) == "2008-09-16"
    assert day_index(NS_PER_DAY - 1) == 0
