"""Brownian-bridge ticks: exact O/H/L/C, volumes, session times, determinism."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.exceptions import DataError
from producers.synthetic import synthetic_panel
from producers.ticks import bar_to_ticks, bridge_prices, panel_ticks, session_bounds_ns
from stream_app.records import iso_to_ns


@st.composite
def bars(draw):
    o = draw(st.floats(0.01, 1e5))
    c = draw(st.floats(0.01, 1e5))
    up = draw(st.floats(1.0, 1.2))
    down = draw(st.floats(0.8, 1.0))
    return o, max(o, c) * up, min(o, c) * down, c


@settings(max_examples=200)
@given(bars(), st.integers(4, 200), st.integers(0, 2**32))
def test_bridge_hits_open_high_low_close_exactly(bar, n, seed):
    o, h, lo, c = bar
    p = bridge_prices(o, h, lo, c, n, np.random.default_rng(seed))
    assert p.shape == (n,)
    assert p[0] == o and p[-1] == c
    assert p.max() == h and p.min() == lo
    assert np.all(np.isfinite(p))


def test_flat_and_degenerate_bars():
    rng = np.random.default_rng(42)
    assert np.all(bridge_prices(5.0, 5.0, 5.0, 5.0, 10, rng) == 5.0)
    p = bridge_prices(5.0, 6.0, 5.0, 6.0, 4, rng)  # open = low, close = high
    assert (p[0], p[-1], p.max(), p.min()) == (5.0, 6.0, 6.0, 5.0)


def test_bridge_rejects_bad_bars():
    rng = np.random.default_rng(42)
    with pytest.raises(DataError, match="inconsistent bar"):
        bridge_prices(10.0, 9.0, 8.0, 9.5, 10, rng)
    with pytest.raises(DataError, match="low > 0"):
        bridge_prices(1.0, 2.0, 0.0, 1.0, 10, rng)
    with pytest.raises(ValueError, match="n_ticks=3"):
        bridge_prices(1.0, 2.0, 0.5, 1.0, 3, rng)


def test_bar_to_ticks_times_and_volume():
    rng = np.random.default_rng(42)
    ts, _p, s = bar_to_ticks("2008-09-15", 100.0, 103.0, 98.5, 101.0, 123_457.0, 78, rng)
    start, end = session_bounds_ns("2008-09-15")
    assert start == iso_to_ns("2008-09-15T09:30:00-04:00")
    assert ts[0] == start and ts[-1] == end
    assert np.all(np.diff(ts) > 0) and ts.dtype == np.int64
    assert s.sum() == 123_457.0 and np.all(s >= 0) and np.all(s == np.round(s))
    _ts2, _, s2 = bar_to_ticks("2008-09-15", 1.0, 1.0, 1.0, 1.0, 2.5, 5, rng)
    assert s2.sum() == pytest.approx(2.5, rel=1e-12) and np.all(s2 >= 0)
    _, _, s3 = bar_to_ticks("2008-09-15", 1.0, 1.0, 1.0, 1.0, 0.0, 5, rng)
    assert np.all(s3 == 0)


def test_winter_session_in_utc():
    start, end = session_bounds_ns("2020-01-02")
    assert start == iso_to_ns("2020-01-02T14:30:00Z") and end == iso_to_ns("2020-01-02T21:00:00Z")


def test_panel_ticks_deterministic_and_rebuild_the_panel():
    panel = synthetic_panel(6, ("A", "B", "C"), seed=42)
    days1 = list(panel_ticks(panel, 12, seed=7))
    days2 = list(panel_ticks(panel, 12, seed=7))
    assert len(days1) == 6
    for d1, d2 in zip(days1, days2, strict=True):
        for name in ("asset_idx", "ts", "price", "size"):
            assert np.array_equal(getattr(d1, name), getattr(d2, name))
    other = list(panel_ticks(panel, 12, seed=8))
    assert not np.array_equal(days1[0].price, other[0].price)
    for i, day in enumerate(days1):
        assert len(day) == 36 and np.all(np.diff(day.ts) >= 0)
        for j in range(3):
            m = day.asset_idx == j
            p = day.price[m]
            assert (p[0], p.max(), p.min(), p[-1]) == (
                panel.open[i, j],
                panel.high[i, j],
                panel.low[i, j],
                panel.close[i, j],
            )
            assert day.size[m].sum() == panel.volume[i, j]
    # a day's ticks do not depend on which other days are generated
    (only_day3,) = panel_ticks(panel, 12, seed=7, day_range=(3, 4))
    assert np.array_equal(only_day3.price, days1[3].price)


def test_skip_filled():
    panel = synthetic_panel(3, ("A", "B"), seed=1)
    filled = panel.filled.copy()
    filled[1, 0] = True
    from models.panel import Panel

    p2 = Panel(panel.dates, panel.assets, panel.open, panel.high, panel.low, panel.close,
               panel.volume, filled=filled)  # fmt: skip
    days = list(panel_ticks(p2, 5, skip_filled=True))
    assert set(days[1].asset_idx.tolist()) == {1}
    assert set(days[0].asset_idx.tolist()) == {0, 1}
