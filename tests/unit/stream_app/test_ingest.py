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


# -- eviction with per-partition watermarks ---------------------------------------------
T0 = 20_000 * NS_PER_DAY + 15 * 3600 * NS_PER_SECOND


def pmsg(asset, day, seq, partition, price=100.0, run_id="r"):
    """A trade of ``asset`` ``day`` days after T0, consumed from ``partition``."""
    tick = Tick(asset, T0 + day * NS_PER_DAY + seq, price, 1.0, seq, run_id=run_id)
    return (asset.encode(), tick.encode(), partition, seq)


def test_partition_consumed_ahead_does_not_evict_the_lagging_one():
    proc = IngestProcessor(state_ttl_days=10, last_price_interval_s=0)
    store = {}
    proc.process([pmsg("TLT", 0, 0, 0, 90.0), pmsg("TLT", 0, 1, 0, 91.0)], store)
    # partition 1 runs 14 days ahead of partition 0 (e.g. catch-up after a restart)
    res = proc.process([pmsg("SPY", d, d, 1) for d in range(15)], store)
    proc.evict(store, res)
    assert not [b for b in res.bars if b.closed_by == "evicted"]
    assert res.deleted == set() and store["TLT"]["r"]["bar"]["n"] == 2
    assert proc.watermarks == {("r", 0): T0 + 1, ("r", 1): T0 + 14 * NS_PER_DAY + 14}
    # the cursor of TLT is kept: a replayed tick is still a duplicate
    res = proc.process([pmsg("TLT", 0, 1, 0)], store)
    assert [d.reason for d in res.dead] == [Reason.DUPLICATE_SEQ]
    # and its open bar goes on, then closes by the next day as usual
    res = proc.process([pmsg("TLT", 0, 2, 0, 92.0), pmsg("TLT", 1, 3, 0, 93.0)], store)
    (bar,) = res.bars
    assert (bar.asset, bar.closed_by, bar.n_ticks, bar.close) == ("TLT", "next_day", 3, 92.0)


def test_asset_evicted_by_its_own_partition_time():
    proc = IngestProcessor(state_ttl_days=2, last_price_interval_s=0)
    store = {}
    proc.process(
        [pmsg("OLD", 0, 0, 0, 5.0), pmsg("NEW", 0, 0, 0, 7.0), pmsg("FAR", 0, 0, 1, 9.0)], store
    )
    assert proc.evict(store).bars == []
    # partition 1 moves 2 days on (not past the ttl); FAR itself is still fresh
    proc.process([pmsg("FAR", 2, 1, 1, 9.5)], store)
    assert proc.evict(store).bars == []
    # partition 0 moves 3 days on: OLD (idle 3 days there) goes; partition 1's state stays
    proc.process([pmsg("NEW", 3, 1, 0, 7.5)], store)
    res = proc.evict(store)
    assert [(b.asset, b.closed_by, b.close, b.n_ticks) for b in res.bars] == [
        ("OLD", "evicted", 5.0, 1)
    ]
    assert res.deleted == {"OLD"} and "OLD" not in store
    assert set(store) == {"NEW", "FAR"}
    # its cursor is gone with it: the same tick is new again
    assert not proc.process([pmsg("OLD", 0, 0, 0, 5.0)], store).dead


def test_watermarks_kept_apart_per_run_on_one_partition():
    proc = IngestProcessor(state_ttl_days=2, last_price_interval_s=0)
    store = {}
    proc.process([pmsg("SPY", 0, 0, 0, run_id="live"), pmsg("SPY", 0, 0, 0, run_id="r1")], store)
    proc.process([pmsg("TLT", 5, 0, 0, run_id="r1")], store)  # only run r1 moves on
    res = proc.evict(store)
    assert [(b.run_id, b.asset) for b in res.bars] == [("r1", "SPY")]
    assert set(store["SPY"]) == {"live"} and res.touched == {"SPY"}


def test_state_without_partition_loads_and_is_not_evicted_by_other_time():
    """State written before partitions were recorded: kept until a tick of its own says
    where it comes from, then judged by that partition alone."""
    old_bar = {"day": 20_000, "o": 5.0, "h": 5.0, "l": 5.0, "c": 5.0, "v": 1.0, "n": 1,
               "fs": 0, "ls": 0, "ft": T0, "lt": T0}  # fmt: skip
    store = {
        "OLD": {"r": {"seq": 0, "ts": T0, "closed_day": None, "last_emit": None, "bar": old_bar}},
        "GONE": {"r": {"seq": 4, "ts": T0, "closed_day": None, "last_emit": None, "bar": None}},
    }
    proc = IngestProcessor(state_ttl_days=2, last_price_interval_s=0)
    # every partition, OLD's and GONE's included, moves far past the ttl
    proc.process([pmsg("NEW", 30, 0, 0), pmsg("FAR", 30, 0, 1)], store)
    res = proc.evict(store)
    assert res.bars == [] and res.deleted == set()
    assert "partition" not in store["GONE"]["r"]
    # the cursors still work
    res = proc.process([pmsg("OLD", 0, 0, 0), pmsg("GONE", 0, 4, 1)], store)
    assert [d.reason for d in res.dead] == [Reason.DUPLICATE_SEQ, Reason.DUPLICATE_SEQ]
    # a tick of OLD's own (partition 2) records its partition and extends the old bar
    res = proc.process([pmsg("OLD", 0, 1, 2, 6.0)], store)
    assert not res.dead and store["OLD"]["r"]["partition"] == 2
    assert store["OLD"]["r"]["bar"]["n"] == 2 and store["OLD"]["r"]["bar"]["fs"] == 0
    # now judged by partition 2's time alone: the others moving on changes nothing...
    proc.process([pmsg("NEW", 60, 1, 0), pmsg("FAR", 60, 1, 1)], store)
    assert proc.evict(store).bars == []
    # ...partition 2 moving 3 days past OLD's last tick evicts it, bar and all
    proc.process([pmsg("NEW2", 3, 0, 2)], store)
    res = proc.evict(store)
    assert [(b.asset, b.closed_by, b.n_ticks, b.close) for b in res.bars] == [
        ("OLD", "evicted", 2, 6.0)
    ]
    assert res.deleted == {"OLD"} and "GONE" in store


def test_eviction_also_waits_for_wall_clock_idleness(monkeypatch):
    import stream_app.ingest as ingest

    clock = [1000.0]
    monkeypatch.setattr(ingest.time, "monotonic", lambda: clock[0])
    proc = IngestProcessor(state_ttl_days=2, last_price_interval_s=0, evict_idle_wall_s=60)
    store = {}
    proc.process([pmsg("OLD", 0, 0, 0, 5.0), pmsg("NEW", 0, 0, 0)], store)
    clock[0] += 30
    proc.process([pmsg("NEW", 3, 1, 0)], store)
    assert proc.evict(store).bars == []  # idle in event time, but heard from 30 s ago
    clock[0] += 31
    res = proc.evict(store)
    assert [(b.asset, b.closed_by) for b in res.bars] == [("OLD", "evicted")]
