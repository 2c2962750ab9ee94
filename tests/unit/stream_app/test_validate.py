"""validate_tick: never raises (hypothesis), and one hand-made case per reason."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.records import NS_PER_DAY, Tick
from stream_app.validate import (
    MAX_TS_NS,
    Reason,
    parse_payload,
    validate_tick,
    validate_tick_obj,
)

GOOD = {"asset": "SPY", "ts": 10 * NS_PER_DAY + 5, "price": 101.5, "size": 3.0, "seq": 7}


def raw(**changes):
    d = {**GOOD, **changes}
    return json.dumps({k: v for k, v in d.items() if v is not ...}).encode()


def check(value, state=None, **kw):
    tick, reason = validate_tick(value, state or {}, **kw)
    assert (tick is None) != (reason is None)
    return tick, reason


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["asset", "ts", "price", "size", "seq", "source", "run_id", "eod", "x"]
)


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_never_raises_on_arbitrary_bytes(data):
    check(data)
    check(data, {("", "SPY"): {"seq": 5, "ts": 0, "closed_day": 3}}, assets={"SPY"}, max_bytes=100)


@settings(max_examples=300)
@given(st.dictionaries(field_names, json_values, max_size=8))
def test_never_raises_on_arbitrary_objects(obj):
    try:
        data = json.dumps(obj).encode()
    except (ValueError, OverflowError):
        return
    check(data)
    check(data, {("", "SPY"): {"seq": 5, "ts": 0, "closed_day": 3}})


@given(st.dictionaries(field_names, json_values, max_size=8).map(lambda d: {**GOOD, **d}))
def test_mutations_of_a_good_tick_never_raise(obj):
    try:
        data = json.dumps(obj).encode()
    except (ValueError, OverflowError):
        return
    tick, _ = check(data)
    if tick is not None:
        assert tick.price > 0 or tick.eod
        assert 0 <= tick.ts <= MAX_TS_NS


def test_good_tick():
    tick, reason = check(raw(source="replay", run_id="r1"))
    assert reason is None
    assert tick == Tick("SPY", GOOD["ts"], 101.5, 3.0, 7, "replay", "r1", False)


def test_iso_timestamp_and_defaults():
    tick, _ = check(raw(ts="1970-01-11T00:00:00.000001Z", size=...))
    assert tick.ts == 10 * NS_PER_DAY + 1000
    assert tick.size == 0.0
    assert tick.price == 101.5 and isinstance(tick.price, float)


def test_eod_marker_needs_no_price():
    tick, reason = check(raw(price=..., size=..., eod=True))
    assert reason is None and tick.eod


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", Reason.MALFORMED),
        (b"\xff\xfe", Reason.MALFORMED),
        (b"[1, 2]", Reason.MALFORMED),
        (b"", Reason.MALFORMED),
        (b'{"asset": "SPY", "ts": 1, "price": NaN, "seq": 1}', Reason.NON_FINITE),
        (b'{"asset": "SPY", "ts": 1, "price": NaN, "seq": 1', Reason.MALFORMED),
        (b'{"asset": "SPY", "ts": 1, "price": "NaN", "seq": 1}', Reason.BAD_TYPE),
        (raw(price=...), Reason.MISSING_FIELD),
        (raw(seq=...), Reason.MISSING_FIELD),
        (raw(asset=...), Reason.MISSING_FIELD),
        (raw(price="1.0"), Reason.BAD_TYPE),
        (raw(price=True), Reason.BAD_TYPE),
        (raw(seq=1.0), Reason.BAD_TYPE),
        (raw(seq=-1), Reason.BAD_TYPE),
        (raw(seq=2**64), Reason.BAD_TYPE),
        (raw(ts=1.5), Reason.BAD_TYPE),
        (raw(asset=3), Reason.BAD_TYPE),
        (raw(eod="yes"), Reason.BAD_TYPE),
        (raw(run_id="has space"), Reason.BAD_TYPE),
        (raw(asset=""), Reason.BAD_ASSET),
        (raw(asset="A" * 33), Reason.BAD_ASSET),
        (raw(asset="SP Y"), Reason.BAD_ASSET),
        (raw(ts="yesterday"), Reason.BAD_TIMESTAMP),
        (raw(ts=-1), Reason.BAD_TIMESTAMP),
        (raw(ts=MAX_TS_NS + 1), Reason.BAD_TIMESTAMP),
        (raw(price=1e308 * 10 if False else 0.0), Reason.NON_POSITIVE),
        (raw(price=-2.0), Reason.NON_POSITIVE),
        (raw(size=-1), Reason.NEGATIVE_SIZE),
    ],
)
def test_reasons(value, reason):
    assert check(value) == (None, reason)


@pytest.mark.parametrize(
    "changes",
    [
        {"price": float("inf")},
        {"price": float("-inf")},
        {"price": float("nan")},
        {"size": float("nan")},
        {"size": float("inf")},
        {"price": "1e999"},
        {"price": "-1E+400"},
        {"size": "2.5e309"},
    ],
)
def test_non_finite_from_a_lenient_encoder(changes):
    # Python's json writes NaN/Infinity/-Infinity literals, and 1e999 overflows a
    # double; orjson rejects both as malformed JSON, the stdlib re-parse lets the
    # price/size check name the fault
    value = json.dumps({**GOOD, **changes}).encode()
    value = value.replace(b'"1e999"', b"1e999").replace(b'"-1E+400"', b"-1E+400")
    value = value.replace(b'"2.5e309"', b"2.5e309")
    assert check(value) == (None, Reason.NON_FINITE)
    assert check(value.decode()) == (None, Reason.NON_FINITE)  # str input too


def test_non_finite_literal_in_a_bundle_parses_per_item():
    value = json.dumps([GOOD, {**GOOD, "seq": 8, "price": float("nan")}]).encode()
    items, reason = parse_payload(value, 4096)
    assert reason is None and len(items) == 2
    assert validate_tick_obj(items[0], {})[1] is None
    assert validate_tick_obj(items[1], {}) == (None, Reason.NON_FINITE)


def test_non_finite_literal_does_not_rescue_other_faults():
    assert parse_payload(b'{"price": NaN,}', 4096) == (None, Reason.MALFORMED)
    assert parse_payload(b"NaN", 4096)[1] is None  # a bare number: validate_tick says malformed
    assert check(b"NaN") == (None, Reason.MALFORMED)
    assert check(b"-Infinity") == (None, Reason.MALFORMED)


def test_oversized_checked_before_parsing():
    assert check(b"x" * 5000, max_bytes=4096) == (None, Reason.OVERSIZED)
    assert check(raw(), max_bytes=10) == (None, Reason.OVERSIZED)


def test_unknown_asset():
    assert check(raw(), assets={"TLT"}) == (None, Reason.UNKNOWN_ASSET)
    assert check(raw(), assets={"SPY"})[1] is None


def test_cursor_reasons():
    state = {("", "SPY"): {"seq": 7, "ts": GOOD["ts"], "closed_day": 9}}
    assert check(raw(), state) == (None, Reason.DUPLICATE_SEQ)
    assert check(raw(seq=6), state) == (None, Reason.DUPLICATE_SEQ)
    assert check(raw(seq=8, ts=GOOD["ts"] - 1), state) == (None, Reason.OUT_OF_ORDER)
    assert check(raw(seq=8), state)[1] is None  # equal ts is fine
    state[("", "SPY")]["closed_day"] = 10
    assert check(raw(seq=8), state) == (None, Reason.AFTER_CLOSE)
    assert check(raw(seq=8, eod=True), state) == (None, Reason.AFTER_CLOSE)
    assert check(raw(seq=8, ts=11 * NS_PER_DAY), state)[1] is None
    # the trading-day offset moves the day boundary
    assert check(raw(seq=8), state, day_offset_ns=NS_PER_DAY)[1] is None


def test_cursor_is_per_run():
    state = {("", "SPY"): {"seq": 100, "ts": GOOD["ts"] + 10}}
    assert check(raw(), state)[1] is Reason.DUPLICATE_SEQ
    assert check(raw(run_id="replay-1"), state)[1] is None


def test_state_is_not_modified():
    state = {("", "SPY"): {"seq": 1, "ts": 0}}
    check(raw(), state)
    assert state == {("", "SPY"): {"seq": 1, "ts": 0}}


def test_reason_strings_are_stable():
    assert Reason.DUPLICATE_SEQ == "duplicate_seq"
    assert {r.value for r in Reason} >= {
        "malformed",
        "oversized",
        "missing_field",
        "non_finite",
        "non_positive",
        "unknown_asset",
        "out_of_order",
        "duplicate_seq",
    }


@settings(max_examples=300)
@given(st.dictionaries(field_names, json_values | st.floats(), max_size=8))
def test_obj_check_never_raises(obj):
    state = {("", "SPY"): {"seq": 5, "ts": 0, "closed_day": 3}}
    for args in ({}, state):
        tick, reason = validate_tick_obj(obj, args)
        assert (tick is None) != (reason is None)
