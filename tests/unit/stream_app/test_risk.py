"""Risk processing without Faust: day close, exceptions, rolling backtest, parity with
the offline walk-forward, intraday P&L, eviction, run isolation, state codec."""

from __future__ import annotations

import os
import pickle
import re

import numpy as np
import pytest

from models import backtest as bt
from models.base import LEVELS
from models.ewma import RiskMetricsEWMA
from models.hs import HistoricalSimulation
from models.walkforward import walk_forward
from producers.synthetic import Crash, synthetic_panel
from stream_app.records import LEVEL_KEYS, Bar, RiskSnapshot
from stream_app.risk import (
    DayOutput,
    ModelUnavailable,
    PortfolioConfig,
    RiskProcessor,
    dumps_state,
    evict_runs,
    load_portfolio_configs,
    loads_state,
)

ASSETS = ("SPY", "TLT", "GLD")
W = (0.5, 0.3, 0.2)


def factory(name, weights, seed):
    """Small, fast models (HS window 60, EWMA min_obs 20)."""
    if name == "hs":
        return HistoricalSimulation(weights, window=60, min_obs=40), "builtin"
    if name == "ewma":
        return RiskMetricsEWMA(weights, min_obs=20), "builtin"
    if name == "cnn":  # stands for a model whose artifact cannot be loaded
        raise ModelUnavailable("no artifact")
    raise ValueError(name)


def make(champion="ewma", challengers=("hs",), **kw):
    cfg = PortfolioConfig("book", ASSETS, W, champion=champion, challengers=challengers)
    kw.setdefault("model_factory", factory)
    return RiskProcessor([cfg], **kw)


def day_bars(panel, i, run="r1", assets=None, kind="bar"):
    out = []
    for j, a in enumerate(panel.assets):
        if assets is not None and a not in assets:
            continue
        out.append(
            Bar(
                a,
                str(panel.dates[i]),
                float(panel.open[i, j]),
                float(panel.high[i, j]),
                float(panel.low[i, j]),
                float(panel.close[i, j]),
                float(panel.volume[i, j]),
                10,
                0,
                9,
                0,
                (int(panel.dates[i].astype("datetime64[s]").astype(np.int64)) + 72_000) * 10**9,
                portfolio="book",
                run_id=run,
                kind=kind,
                closed_by="eod" if kind == "bar" else "",
            )
        )
    return out


@pytest.fixture(scope="module")
def panel():
    return synthetic_panel(330, ASSETS, seed=42, crash=Crash(day=300, size=-0.12))


@pytest.fixture(scope="module")
def replayed(panel):
    proc = make()
    st = proc.new_state("book", "r1")
    outs = []
    for i in range(panel.n_days):
        outs += proc.process(st, day_bars(panel, i))
    return proc, st, [o.snapshot for o in outs if o.snapshot.kind == "daily"]


def test_a_day_closes_when_every_asset_has_its_bar(panel):
    proc = make()
    st = proc.new_state("book", "r1")
    assert proc.process(st, day_bars(panel, 0)) == []  # the base day: no return yet
    assert proc.process(st, day_bars(panel, 1, assets=("SPY", "TLT"))) == []
    assert st.open_day is not None and len(st.pending[st.open_day]) == 2
    (out,) = proc.process(st, day_bars(panel, 1, assets=("GLD",)))
    snap = out.snapshot
    assert snap.kind == "daily" and snap.day == str(panel.dates[1])
    x = np.log(panel.close[1]) - np.log(panel.close[0])
    assert snap.realized_return == pytest.approx(float(np.expm1(x) @ np.array(W)), abs=1e-15)
    assert snap.prev_var is None and snap.exception is None  # no forecast yet


def test_an_asset_without_a_bar_of_the_day_carries_its_close(panel):
    proc = make()
    st = proc.new_state("book", "r1")
    proc.process(st, day_bars(panel, 0))
    proc.process(st, day_bars(panel, 1, assets=("SPY", "TLT")))  # GLD has no bar of day 1
    # SPY runs ahead (another partition): day 1 waits for GLD
    assert proc.process(st, day_bars(panel, 2, assets=("SPY",))) == []
    assert len(st.pending) == 2 and min(st.pending) == st.open_day
    outs = proc.process(st, day_bars(panel, 2, assets=("TLT", "GLD")))  # GLD passed day 1
    assert [o.snapshot.day for o in outs] == [str(panel.dates[1]), str(panel.dates[2])]
    x = np.log(panel.close[1]) - np.log(panel.close[0])
    x[2] = 0.0  # GLD carried forward
    assert outs[0].snapshot.realized_return == pytest.approx(float(np.expm1(x) @ np.array(W)))
    assert outs[0].snapshot.assets["GLD"].last_day == str(panel.dates[0])
    assert st.pending == {}


def test_a_lagging_asset_is_waited_for_a_stalled_one_is_not(panel):
    proc = make(max_skew_days=2)  # GLD delivered just now: it lags, it is not stalled
    st = proc.new_state("book", "r1")
    proc.process(st, day_bars(panel, 0))
    proc.process(st, day_bars(panel, 1, assets=("SPY", "TLT")))
    for i in range(2, 9):
        assert proc.process(st, day_bars(panel, i, assets=("SPY", "TLT"))) == []
    proc.stall_s = 0.0  # now GLD's feed counts as stopped
    outs = proc.process(st, day_bars(panel, 9, assets=("SPY", "TLT")))
    assert [o.snapshot.day for o in outs][:1] == [str(panel.dates[1])]
    assert len(st.pending) <= 2


def test_a_stalled_asset_closes_the_day_after_max_skew_days(panel):
    proc = make(max_skew_days=5, stall_s=0.0)
    st = proc.new_state("book", "r1")
    proc.process(st, day_bars(panel, 0))
    proc.process(st, day_bars(panel, 1, assets=("SPY", "TLT")))
    outs = []
    for i in range(2, 9):  # GLD's feed stopped
        outs += proc.process(st, day_bars(panel, i, assets=("SPY", "TLT")))
        if outs:
            break
    assert outs and outs[0].snapshot.day == str(panel.dates[1]) and i == 6
    assert len(st.pending) <= 5  # bounded in event time


def test_bars_of_later_days_wait_for_a_lagging_partition(panel):
    proc = make()
    st = proc.new_state("book", "r1")
    outs = []
    # SPY and GLD (one partition) run three days ahead of TLT (another)
    for i in range(6):
        outs += proc.process(st, day_bars(panel, i, assets=("SPY", "GLD")))
        if i >= 3:
            outs += proc.process(st, day_bars(panel, i - 3, assets=("TLT",)))
    for i in range(3, 6):
        outs += proc.process(st, day_bars(panel, i, assets=("TLT",)))
    x = np.diff(np.log(panel.close[:6]), axis=0)
    got = [o.snapshot.realized_return for o in outs]
    np.testing.assert_allclose(got, np.expm1(x) @ np.array(W), rtol=0, atol=1e-15)
    for k, o in enumerate(outs, start=1):  # as of that day's close, not the fast partition's
        s = o.snapshot
        assert [s.assets[a].price for a in ASSETS] == panel.close[k].tolist()
        assert s.ts == day_bars(panel, k)[0].ts_last == s.assets["SPY"].last_ts


def test_late_and_repeated_bars_are_ignored(panel):
    proc = make()
    st = proc.new_state("book", "r1")
    for i in range(3):
        proc.process(st, day_bars(panel, i))
    n_seen = st.champion.model.n_seen_
    assert proc.process(st, day_bars(panel, 1) + day_bars(panel, 2)) == []
    assert st.n_late == 6 and st.champion.model.n_seen_ == n_seen


def test_forecasts_equal_the_offline_walk_forward(panel, replayed):
    _, _, daily = replayed
    x = panel.log_returns()
    dates = panel.dates[1:]
    assert [s.day for s in daily] == [str(d) for d in dates]
    for name in ("ewma", "hs"):
        wf = walk_forward(factory(name, np.array(W), 0)[0], x, dates, dates[0])
        if name == "ewma":  # champion: the forecast in force for each day
            got = [s.prev_var for s in daily]
            np.testing.assert_allclose(
                [s.realized_return for s in daily], wf.realized, rtol=0, atol=1e-15
            )
        else:  # challenger: its forecast made at each close is for the next day
            got = [None] + [s.challengers["hs"].var for s in daily[:-1]]
        arr = np.array([[np.nan] * 3 if g is None else [g[k] for k in LEVEL_KEYS] for g in got])
        np.testing.assert_array_equal(arr, wf.var)  # bit for bit


def test_exception_flags_and_rolling_counters_match_models_backtest(panel, replayed):
    _, _, daily = replayed
    wf = walk_forward(
        factory("ewma", np.array(W), 0)[0], panel.log_returns(), panel.dates[1:], panel.dates[1]
    )
    ok = np.isfinite(wf.var[:, 0])
    hits = np.column_stack([bt.hits(wf.realized[ok], wf.var[ok, i]) for i in range(3)])
    scored = [s for s in daily if s.exception is not None]
    assert len(scored) == ok.sum() > 250  # the ring buffer wraps
    flags = np.array([[s.exception[k] for k in LEVEL_KEYS] for s in scored])
    np.testing.assert_array_equal(flags, hits)
    zones = bt.rolling_traffic_light(hits[:, 2], 0.99, window=250, min_periods=1)
    for t, s in enumerate(scored):
        lo = max(0, t + 1 - 250)
        window = hits[lo : t + 1]
        assert s.days_250d == len(window)
        assert s.n_days == t + 1
        for i, (key, level) in enumerate(zip(LEVEL_KEYS, LEVELS, strict=True)):
            assert s.exceptions_250d[key] == int(window[:, i].sum())
            assert s.exceptions_total[key] == int(hits[: t + 1, i].sum())
            p = bt.kupiec_pof(int(window[:, i].sum()), len(window), level).pvalue
            assert s.kupiec_p[key] == pytest.approx(p, rel=1e-12)
        assert s.traffic_light == zones[t]
    assert scored[-1].exceptions_total["0.99"] >= 1  # the crash day is an exception


def test_heatmap_window_is_bounded_in_event_time(replayed):
    proc, st, daily = replayed
    assert len(st.window_days) == proc.heatmap_days == 10
    assert st.window_days == sorted(st.window_days)
    out = DayOutput(daily[-1])  # the snapshot references its heatmap by run and day
    assert out.snapshot.heatmap_key == f"riskmon:heatmap:r1:book:{daily[-1].day}"


def test_heatmap_image_and_contributions(panel):
    proc = make(heatmap_dir="/tmp/hm")
    st = proc.new_state("book", "")
    outs = []
    for i in range(40):
        outs += proc.process(st, day_bars(panel, i, run=""))
    last = outs[-1]
    assert last.heatmap.shape == (32, 32) and last.heatmap.dtype == np.uint8
    assert len(last.heatmap_dates) == 10 and last.heatmap_dates[-1] == last.snapshot.day
    assert last.snapshot.heatmap_path == f"/tmp/hm/live/book/{last.snapshot.day}.png"
    s = last.snapshot
    for key in LEVEL_KEYS:  # Euler shares of the EWMA covariance add up to the ES
        assert sum(s.contributions[key].values()) == pytest.approx(s.es[key], rel=1e-12)
    cov = st.ewma_cov / (1 - 0.94**st.n_returns)
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    assert s.avg_correlation == pytest.approx(corr[np.triu_indices(3, 1)].mean(), rel=1e-12)


def intraday_setup(panel, **kw):
    proc = make(intraday_interval_s=3600, **kw)
    st = proc.new_state("book", "r1")
    for i in range(30):
        proc.process(st, day_bars(panel, i))
    day = str(panel.dates[30])
    base = (int(panel.dates[30].astype("datetime64[s]").astype(np.int64)) + 50_000) * 10**9

    def last(asset, price, dt_s):
        return Bar(asset, day, price, price, price, price, 0.0, 1, 0, 0, base, base + dt_s * 10**9,
                   portfolio="book", run_id="r1", kind="last")  # fmt: skip

    return proc, st, day, base, last


def test_intraday_pnl_and_throttle(panel):
    proc, st, day, base, last = intraday_setup(panel, intraday_gate_s=7200)
    prev = panel.close[29]
    outs = proc.process(
        st, [last("SPY", prev[0] * 0.98, 0), last("TLT", prev[1], 0), last("GLD", prev[2], 0)]
    )
    assert len(outs) == 1  # once every asset has a price of today
    assert proc.process(st, [last("TLT", prev[1] * 1.01, 600)]) == []  # within the hour
    (out,) = proc.process(st, [last("GLD", prev[2] * 0.95, 4000)])
    snap = out.snapshot
    expected = 0.5 * -0.02 + 0.3 * 0.01 + 0.2 * -0.05
    assert snap.kind == "intraday" and snap.pnl == pytest.approx(expected, rel=1e-12)
    assert snap.var == st.last_daily.var and snap.day == day  # today's VaR: made last night
    assert snap.assets["GLD"].last_ts == base + 4000 * 10**9
    assert snap.seq == st.last_daily.seq + 2


def test_intraday_waits_for_a_lagging_asset_not_for_a_stalled_one(panel):
    proc, st, _, _, last = intraday_setup(panel)  # gate 30 min of event time
    prev = panel.close[29]
    assert proc.process(st, [last("SPY", prev[0], 0), last("TLT", prev[1], 0)]) == []
    assert len(proc.process(st, [last("GLD", prev[2], 60)])) == 1  # GLD caught up
    # two hours later SPY and TLT move on; GLD lags, then its feed counts as stopped
    assert proc.process(st, [last("SPY", prev[0], 7200), last("TLT", prev[1], 7200)]) == []
    proc.stall_s = 0.0
    assert len(proc.process(st, [last("SPY", prev[0], 7300)])) == 1


def test_no_intraday_while_the_previous_day_is_open(panel):
    proc = make(intraday_interval_s=0)
    st = proc.new_state("book", "r1")
    proc.process(st, day_bars(panel, 0))
    proc.process(st, day_bars(panel, 1, assets=("SPY",)))
    lasts = day_bars(panel, 2, kind="last")
    assert proc.process(st, lasts) == []


def test_runs_are_isolated(panel):
    proc = make()
    a, b = proc.new_state("book", "r1"), proc.new_state("book", "r2")
    alone = proc.new_state("book", "r1")
    got_a, got_alone = [], []
    for i in range(60):
        got_a += proc.process(a, day_bars(panel, i, run="r1"))
        proc.process(b, day_bars(panel, (i * 7) % 60, run="r2"))  # scrambled other run
        got_alone += proc.process(alone, day_bars(panel, i, run="r1"))
    strip = lambda s: {**s.to_dict(), "wall_ns": 0, "model_seconds": 0}  # noqa: E731
    assert [strip(o.snapshot) for o in got_a] == [strip(o.snapshot) for o in got_alone]


def test_state_codec_round_trip_continues_identically(panel):
    proc = make()
    st = proc.new_state("book", "r1")
    for i in range(50):
        proc.process(st, day_bars(panel, i))
    proc.process(st, day_bars(panel, 50, assets=("SPY",)))  # an open day with a bar
    copy = loads_state(dumps_state(st))
    assert copy.live is None  # stored apart (the worker's second table)
    copy.attach_live(loads_state(dumps_state(st.live)))
    assert list(copy.pending.values()) == [{0: st.pending[st.open_day][0]}]
    a = [o.snapshot.var for i in range(50, 70) for o in proc.process(st, day_bars(panel, i))]
    b = [o.snapshot.var for i in range(50, 70) for o in proc.process(copy, day_bars(panel, i))]
    assert a == b and len(a) == 20


def test_state_codec_refuses_foreign_code():
    with pytest.raises(pickle.UnpicklingError, match="may not reference"):
        loads_state(pickle.dumps(os.system))
    with pytest.raises(pickle.UnpicklingError, match="may not reference"):
        loads_state(pickle.dumps(dumps_state))  # a function of ours is not a class


def test_evict_runs_keeps_live_and_the_current_run():
    proc = make()
    runs = {}
    for k, run in enumerate(("live", "a", "b", "c", "d")):
        runs[run] = proc.new_state("book", run)
        runs[run].touched_wall = float(k)
    runs["live"].touched_wall = -1.0
    assert evict_runs(runs, "a", 3) == ["b", "c"]
    assert sorted(runs) == ["a", "d", "live"]


def test_champion_falls_back_when_unavailable():
    cfg = PortfolioConfig("book", ASSETS, W, champion="cnn", challengers=("hs",), fallback="ewma")
    st = RiskProcessor([cfg], model_factory=factory).new_state("book", "")
    assert st.champion.name == "ewma" and [t.name for t in st.challengers] == ["hs"]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"champion": "broken"}, "unknown champion model 'broken'"),
        ({"challengers": ("hs", "garch")}, "unknown challenger model 'garch'"),
        ({"fallback": "none"}, "unknown fallback model 'none'"),
    ],
)
def test_unknown_model_names_are_refused_up_front(kwargs, expected):
    # before, a typo surfaced only when the risk agent first built the portfolio's state
    with pytest.raises(ValueError, match=expected):
        PortfolioConfig("book", ASSETS, W, **kwargs)


def test_model_names_may_use_hyphens():
    cfg = PortfolioConfig("book", ASSETS, W, champion="lstm-copula", challengers=("gjr-skewt",))
    assert (cfg.champion, cfg.challengers) == ("lstm_copula", ("gjr_skewt",))


def test_config_validation_and_state_rebuild_on_change(panel):
    with pytest.raises(ValueError, match="3 assets and 2 weights"):
        PortfolioConfig("x", ASSETS, (0.5, 0.5))
    proc = make()
    st = proc.new_state("book", "r1")
    other = make(challengers=())
    assert other.state_for({"r1": st}, "book", "r1") is not st  # another definition
    assert proc.state_for({"r1": st}, "book", "r1") is st


def test_load_portfolio_configs(tmp_path):
    p = tmp_path / "book.yaml"
    p.write_text(
        "portfolios:\n"
        "  - name: a\n    weights: {SPY: 0.6, TLT: 0.4}\n    champion: ewma\n"
        "    challengers: [hs, ewma]\n    limits: {var99: 0.03}\n"
        "  - name: b\n    weights: {GLD: 1.0}\n"
    )
    a, b = load_portfolio_configs(p, default_champion="fhs", default_challengers=("hs",))
    assert (a.champion, a.challengers, a.limits) == ("ewma", ("hs",), {"var99": 0.03})
    assert (b.champion, b.challengers) == ("fhs", ("hs",))


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ("{var_99: 0.03}", "limits: unknown limit 'var_99'"),
        ("{var99: 0}", "limits: var99=0 not in"),
        ("{var99: 0.03, max_cnn_score: abc}", "limits: max_cnn_score='abc' is not a number"),
    ],
)
def test_limits_the_alert_rules_cannot_use_are_refused_when_the_file_loads(
    tmp_path, limits, expected
):
    """Before, a typo'd or out-of-range limit was only a warning in the alerts worker's
    log, and the default applied."""
    from stream_app.portfolio import PortfolioError

    p = tmp_path / "book.yaml"
    p.write_text(f"portfolios:\n  - name: a\n    weights: {{SPY: 1.0}}\n    limits: {limits}\n")
    with pytest.raises(PortfolioError, match=f"portfolio 'a': {re.escape(expected)}"):
        load_portfolio_configs(p)


def test_the_shipped_demo_portfolio_uses_shipped_assets():
    from pathlib import Path

    import stream_app
    from producers.history import SHIPPED_DEFAULT_ASSETS

    path = Path(stream_app.__file__).parent / "portfolios" / "demo.yaml"
    (cfg,) = load_portfolio_configs(path)
    assert set(cfg.assets) <= set(SHIPPED_DEFAULT_ASSETS) and len(cfg.assets) == 10
    assert sum(cfg.weights) == pytest.approx(1.0)


def test_snapshot_round_trips_through_json(replayed):
    _, _, daily = replayed
    s = daily[-1]
    assert RiskSnapshot.decode(s.encode()) == s


def test_snapshots_stay_in_event_time_order_under_partition_skew(panel):
    proc = make(intraday_interval_s=0)
    st = proc.new_state("book", "r1")

    def asset_day(i, asset):
        j = ASSETS.index(asset)
        t0 = (int(panel.dates[i].astype("datetime64[s]").astype(np.int64)) + 50_000) * 10**9
        lasts = [
            Bar(
                asset,
                str(panel.dates[i]),
                1.0,
                1.0,
                1.0,
                float(panel.close[i, j]) * (1 + k / 100),
                0.0,
                1,
                0,
                0,
                t0,
                t0 + k * 1800 * 10**9,
                portfolio="book",
                run_id="r1",
                kind="last",
            )
            for k in range(6)
        ]
        return [*lasts, *day_bars(panel, i, assets=(asset,))]

    def partition(assets):  # one partition's output: in event-time order
        out = []
        for i in range(40):
            day = [b for a in assets for b in asset_day(i, a)]
            out += sorted(day, key=lambda b: (b.kind == "bar", b.ts_last))
        return out

    fast, slow = partition(("SPY", "GLD")), partition(("TLT",))
    # two partitions delivered in uneven chunks: now one ahead, now the other
    stream, f, s_ = [], 0, 0
    rng = np.random.default_rng(42)
    while f < len(fast) or s_ < len(slow):
        k = int(rng.integers(1, 40))
        if f < len(fast) and (s_ >= len(slow) or rng.random() < 2 / 3):
            stream += fast[f : f + k]
            f += k
        else:
            stream += slow[s_ : s_ + k]
            s_ += k
    outs = []
    for k in range(0, len(stream), 7):
        outs += proc.process(st, stream[k : k + 7])
    snaps = [o.snapshot for o in outs]
    assert [s.seq for s in snaps] == list(range(1, len(snaps) + 1))
    marks = [(s.ts, s.seq) for s in snaps]
    assert marks == sorted(marks) and len({s.ts for s in snaps}) == len(snaps)
    daily = [s for s in snaps if s.kind == "daily"]
    assert [s.day for s in daily] == [str(d) for d in panel.dates[1:40]]
    assert sum(s.kind == "intraday" for s in snaps) > 0  # few: skew holds most back


def test_ingest_does_not_evict_an_asset_of_a_lagging_partition():
    """The bars behind the risk stage: a partition consumed behind another keeps its open
    bars and cursors while it keeps arriving (wall clock), and loses them once silent."""
    from stream_app.ingest import IngestProcessor
    from stream_app.records import NS_PER_DAY, Tick, iso_to_ns

    proc, store = IngestProcessor(state_ttl_days=10, evict_idle_wall_s=60), {}
    t0 = iso_to_ns("2020-01-02T15:00:00")

    def msg(asset, day, k, seq):
        tick = Tick(asset, t0 + day * NS_PER_DAY + k * 60 * 10**9, 100.0 + k, 1.0, seq, run_id="r")
        return (asset.encode(), tick.encode(), 0, 0)

    proc.process([msg("TLT", 0, 0, 0), msg("TLT", 0, 1, 1)], store)
    res = proc.process([msg("SPY", d, k, 10 * d + k) for d in range(15) for k in range(3)], store)
    proc.evict(store, res)  # SPY's partition is 14 days ahead: TLT lags, it is not idle
    assert [b for b in res.bars if b.closed_by == "evicted"] == []
    assert [d.reason.value for d in proc.process([msg("TLT", 0, 5, 0)], store).dead] == [
        "duplicate_seq"
    ]
    proc.evict_idle_wall_s = 1e-9  # now TLT has been silent long enough
    res = proc.evict(store)
    assert [(b.asset, b.closed_by) for b in res.bars] == [("TLT", "evicted")]
