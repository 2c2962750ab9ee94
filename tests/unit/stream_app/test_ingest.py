"""IngestProcessor: ticks made from daily bars rebuild exactly those bars."""

import numpy as np
import pytest

from producers.ticks import bar_to_ticks
from stream_app.ingest import IngestProcessor, StoreView
from stream_app.records import NS_PER_DAY, NS_PER_SECOND, Tick, iso_to_ns
from stream_app.validate import Reason

DAYS = ["2008-09-12", "2008-09-15", "2008-09-16"]


def msg(tick, key=None):
    return (tick.asset.encode() if key is None else key, tick.encode(), 0, 0)


def day_ticks(rng, asset, day, bar, n=30, seq0=0, run_id=""):
    ts, p, s = bar_to_ticks(day, *bar, n, rng)
    return [
        Tick(asset, int(t), float(x), float(v), seq0 + i, "test", run_id)
        for i, (t, x, v) in enumerate(zip(ts, p, s, strict=True))
    ]


@pytest.fixture
def rng():
    return np.random.default_rng(42)


@pytest.fixture
def bars():
    # (open, high, low, close, volume) per day
    return [
        (100.0, 103.0, 98.5, 101.0, 12345.0),
        (101.0, 101.5, 92.0, 93.25, 99999.0),
        (93.0, 96.0, 93.0, 95.5, 0.0),
    ]


def test_bars_rebuilt_exactly_next_day_and_eod(rng, bars):
    proc = IngestProcessor(last_price_interval_s=0)
    store = {}
    seq = 0
    out = []
    for day, bar in zip(DAYS, bars, strict=True):
        ticks = day_ticks(rng, "SPY", day, bar, seq0=seq)
        seq += len(ticks)
        res = proc.process([msg(t) for t in ticks], store)
        assert res.n_ok == len(ticks) and not res.dead
        out += res.bars
    # the first two bars were closed by the next day's first tick
    assert [b.closed_by for b in out] == ["next_day", "next_day"]
    eod = Tick("SPY", iso_to_ns("2008-09-16T20:00:00Z"), 0.0, 0.0, seq, eod=True)
    res = proc.process([msg(eod)], store)
    out += res.bars
    assert [b.closed_by for b in out] == ["next_day", "next_day", "eod"]
    for b, day, (o, h, lo, c, v) in zip(out, DAYS, bars, strict=True):
        assert (b.day, b.open, b.high, b.low, b.close, b.volume) == (day, o, h, lo, c, v)
        assert b.n_ticks == 30 and b.kind == "bar" and b.portfolio == "default"
    assert [b.first_seq for b in out] == [0, 30, 60]
    assert [b.last_seq for b in out] == [29, 59, 89]
    # after the eod marker the day is closed: a late trade of that day is refused
    late = Tick("SPY", eod.ts, 95.0, 1.0, seq + 1)
    assert proc.process([msg(late)], store).dead[0].reason is Reason.AFTER_CLOSE
    assert store["SPY"][""]["bar"] is None


def test_dead_letters_keep_bytes_and_do_not_touch_state(rng, bars):
    proc = IngestProcessor(assets={"SPY"})
    store = {}
    good = day_ticks(rng, "SPY", DAYS[0], bars[0], n=5)
    messages = [msg(t) for t in good] + [
        (b"SPY", b"garbage", 3, 17),
        msg(good[2]),  # duplicate
        msg(Tick("TLT", good[0].ts, 1.0, 1.0, 0)),
        (b"TLT", Tick("SPY", good[-1].ts, 1.0, 1.0, 100).encode(), 0, 0),  # key != asset
    ]
    proc.process(messages[:5], store)
    before = {k: dict(v[""]) for k, v in store.items()}
    res = proc.process(messages[5:], store)
    assert [d.reason for d in res.dead] == [
        Reason.MALFORMED,
        Reason.DUPLICATE_SEQ,
        Reason.UNKNOWN_ASSET,
        Reason.KEY_MISMATCH,
    ]
    assert res.dead[0].value == b"garbage" and (res.dead[0].partition, res.dead[0].offset) == (
        3,
        17,
    )
    assert res.n_in == 4 and res.n_ok == 0
    assert {k: dict(v[""]) for k, v in store.items()} == before


def test_internal_error_is_dead_lettered(monkeypatch):
    proc = IngestProcessor()

    def boom(*a, **k):
        raise RuntimeError("bug")

    monkeypatch.setattr(proc, "_apply", boom)
    res = proc.process([msg(Tick("SPY", 1, 1.0, 0.0, 0))], {})
    assert [d.reason for d in res.dead] == [Reason.INTERNAL_ERROR]


def test_last_price_throttled_in_event_time():
    proc = IngestProcessor(last_price_interval_s=60)
    t0 = iso_to_ns("2020-01-02T15:00:00Z")
    ticks = [Tick("A", t0 + k * 20 * NS_PER_SECOND, 10.0 + k, 1.0, k) for k in range(10)]
    res = proc.process([msg(t) for t in ticks], {})
    # snapshots at 0 s, 60 s, 120 s, 180 s of event time
    assert [b.n_ticks for b in res.lasts] == [1, 4, 7, 10]
    assert [b.close for b in res.lasts] == [10.0, 13.0, 16.0, 19.0]
    assert all(b.kind == "last" for b in res.lasts)


def test_runs_are_kept_apart(rng, bars):
    proc = IngestProcessor(last_price_interval_s=0)
    store = {}
    live = day_ticks(rng, "SPY", DAYS[1], bars[1], n=6)
    replay = day_ticks(rng, "SPY", DAYS[0], bars[0], n=6, run_id="r1")
    res = proc.process([msg(t) for t in live + replay], store)
    assert res.n_ok == 12 and not res.dead
    assert set(store["SPY"]) == {"", "r1"}
    view = StoreView(store)
    assert view[("r1", "SPY")]["seq"] == 5 and len(view) == 2
    assert set(view) == {("", "SPY"), ("r1", "SPY")}
    eod = Tick("SPY", replay[-1].ts, 0.0, 0.0, 6, run_id="r1", eod=True)
    (bar,) = proc.process([msg(eod)], store).bars
    assert bar.run_id == "r1" and bar.day == DAYS[0] and bar.close == bars[0][3]
    assert store["SPY"][""]["bar"]["n"] == 6  # live bar untouched


def test_eviction_in_event_time():
    proc = IngestProcessor(state_ttl_days=2, last_price_interval_s=0)
    store = {}
    t0 = 20_000 * NS_PER_DAY
    proc.process([msg(Tick("OLD", t0, 5.0, 1.0, 0)), msg(Tick("NEW", t0, 7.0, 1.0, 0))], store)
    assert proc.evict(store).bars == []
    # NEW moves 3 days on; OLD has been idle longer than the ttl of 2 days
    proc.process([msg(Tick("NEW", t0 + 3 * NS_PER_DAY, 7.5, 1.0, 1))], store)
    res = proc.evict(store)
    assert [(b.asset, b.closed_by, b.close) for b in res.bars] == [("OLD", "evicted", 5.0)]
    assert "OLD" not in store and res.deleted == {"OLD"}
    assert "NEW" in store


def test_bad_parameters():
    with pytest.raises(ValueError, match="state_ttl_days=0"):
        IngestProcessor(state_ttl_days=0)
    with pytest.raises(ValueError, match="last_price_interval_s=-1"):
        IngestProcessor(last_price_interval_s=-1)
    with pytest.raises(ValueError, match="trading_day_offset_hours=30"):
        IngestProcessor(trading_day_offset_hours=30)


def test_bundles_items_checked_one_by_one(rng, bars):
    from stream_app.records import dumps, loads

    proc = IngestProcessor(last_price_interval_s=0)
    store = {}
    ticks = day_ticks(rng, "SPY", DAYS[0], bars[0], n=8)
    items = [t.to_dict() for t in ticks]
    items.insert(3, {**items[2], "price": -1.0, "seq": 99})  # bad item in the middle
    items.insert(5, "not an object")
    bundle = dumps(items[:6])
    res = proc.process([(b"SPY", bundle, 1, 5), (b"SPY", dumps(items[6:]), 1, 6)], store)
    assert res.n_in == 10 and res.n_ok == 8
    assert [(d.reason, d.bundle_index, d.offset) for d in res.dead] == [
        (Reason.NON_POSITIVE, 3, 5),
        (Reason.MALFORMED, 5, 5),
    ]
    assert loads(res.dead[0].value) == items[3]
    eod = Tick("SPY", ticks[-1].ts, 0.0, 0.0, 100, eod=True)
    (bar,) = proc.process([msg(eod)], store).bars
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == bars[0]
    assert bar.n_ticks == 8


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"[1, 2", Reason.MALFORMED),
        (b"[]", Reason.MALFORMED),
        (b"[" + b" " * 200 + b"]", Reason.OVERSIZED),
    ],
)
def test_bad_bundles_dead_lettered_whole(value, reason):
    proc = IngestProcessor(max_bundle_bytes=100)
    res = proc.process([(b"SPY", value, 0, 9)], {})
    assert [(d.reason, d.value, d.bundle_index) for d in res.dead] == [(reason, value, None)]
    assert res.n_in == 1


def test_bundle_key_mismatch_per_item():
    from stream_app.records import dumps

    proc = IngestProcessor()
    items = [Tick("SPY", 1, 1.0, 0.0, 0).to_dict(), Tick("TLT", 1, 1.0, 0.0, 0).to_dict()]
    res = proc.process([(b"SPY", dumps(items), 0, 0)], {})
    assert res.n_ok == 1 and [d.reason for d in res.dead] == [Reason.KEY_MISMATCH]
