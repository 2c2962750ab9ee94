"""FeatureState: each feature against a pandas/numpy batch formula; streaming == batch."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.exceptions import DataError, NotEnoughObservations
from models.features import FEATURE_NAMES, FeatureState, features_from_panel
from models.panel import Panel

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def random_panel(rng: np.random.Generator, n_days: int = 300, n_assets: int = 4) -> Panel:
    """Consistent OHLCV bars: L <= min(O, C) <= max(O, C) <= H."""
    gap = rng.normal(0, 0.004, size=(n_days, n_assets))
    intraday = rng.standard_t(4, size=(n_days, n_assets)) * 0.01
    log_close = np.cumsum(gap + intraday, axis=0) + np.log(50.0)
    close = np.exp(log_close)
    prev = np.vstack([close[:1] * np.exp(-gap[:1]), close[:-1]])
    open_ = prev * np.exp(gap)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.004, size=close.shape)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.004, size=close.shape)))
    volume = np.round(rng.lognormal(15, 0.5, size=close.shape))
    dates = np.datetime64("2008-01-02") + np.arange(n_days)
    return Panel(dates, tuple(f"A{i}" for i in range(n_assets)), open_, high, low, close, volume)


def oracle(panel: Panel, rv_window: int = 10, volume_window: int = 20, lam: float = 0.94):
    """Every feature by direct batch formulas (numpy / pandas), shape (n_days, n_assets, 8)."""
    o, h, lo, c, v = panel.open, panel.high, panel.low, panel.close, panel.volume
    n_days, n_assets = c.shape
    out = np.zeros((n_days, n_assets, len(FEATURE_NAMES)))
    r = np.vstack([np.zeros((1, n_assets)), np.diff(np.log(c), axis=0)])
    out[..., COL["log_return"]] = r
    out[..., COL["abs_return"]] = np.abs(r)
    out[1:, :, COL["overnight_gap"]] = np.log(o[1:] / c[:-1])
    # Garman-Klass (1980): sigma^2 = 0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2
    gk_var = 0.5 * np.log(h / lo) ** 2 - (2 * math.log(2) - 1) * np.log(c / o) ** 2
    out[..., COL["gk_vol"]] = np.sqrt(gk_var)
    rets = pd.DataFrame(r[1:])
    rv = (rets**2).rolling(rv_window, min_periods=1).mean() ** 0.5
    dv = (rets.clip(upper=0.0) ** 2).rolling(rv_window, min_periods=1).mean() ** 0.5
    ew = (rets**2).ewm(alpha=1 - lam, adjust=False).mean() ** 0.5
    out[1:, :, COL["realized_vol"]] = rv.to_numpy()
    out[1:, :, COL["downside_vol"]] = dv.to_numpy()
    out[1:, :, COL["ewma_vol"]] = ew.to_numpy()
    lv = pd.DataFrame(np.log1p(v))
    mean = lv.rolling(volume_window, min_periods=1).mean()
    std = lv.rolling(volume_window, min_periods=1).std(ddof=0)
    z = ((lv - mean) / std).where(std > 1e-9, 0.0)
    out[..., COL["volume_z"]] = z.to_numpy()
    return out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


def test_feature_names() -> None:
    assert FEATURE_NAMES == (
        "log_return",
        "abs_return",
        "overnight_gap",
        "gk_vol",
        "realized_vol",
        "downside_vol",
        "ewma_vol",
        "volume_z",
    )
    assert FeatureState(3).n_features == 8


@pytest.mark.parametrize(("rv_window", "volume_window"), [(10, 20), (3, 2), (1, 5)])
def test_each_feature_matches_batch_oracle(
    rng: np.random.Generator, rv_window: int, volume_window: int
) -> None:
    panel = random_panel(rng)
    got = features_from_panel(panel, rv_window=rv_window, volume_window=volume_window)
    want = oracle(panel, rv_window, volume_window)
    assert got.shape == (300, 4, 8)
    for name, i in COL.items():
        np.testing.assert_allclose(got[..., i], want[..., i], rtol=1e-10, atol=1e-12, err_msg=name)


def test_hand_computed_two_days() -> None:
    s = FeatureState(1, rv_window=10, volume_window=20)
    s.update([100.0], [104.0], [98.0], [102.0], [1000.0])
    day0 = s.get()[0]
    gk0 = math.sqrt(0.5 * math.log(104 / 98) ** 2 - (2 * math.log(2) - 1) * math.log(1.02) ** 2)
    np.testing.assert_allclose(day0, [0, 0, 0, gk0, 0, 0, 0, 0], atol=1e-15)
    s.update([101.0], [101.0], [95.0], [96.0], [3000.0])
    day1 = s.get()[0]
    r = math.log(96 / 102)
    gk1 = math.sqrt(0.5 * math.log(101 / 95) ** 2 - (2 * math.log(2) - 1) * math.log(96 / 101) ** 2)
    lv = np.log1p([1000.0, 3000.0])
    z = (lv[1] - lv.mean()) / lv.std()  # = 1 for two points
    want = [r, -r, math.log(101 / 102), gk1, -r, -r, -r, z]
    np.testing.assert_allclose(day1, want, rtol=1e-13)
    assert z == pytest.approx(1.0)


def test_flat_bars_fall_back_to_abs_return_and_zero_volume() -> None:
    """ECB reference rates: O = H = L = C, no volume."""
    closes = np.array([[1.35, 150.0], [1.34, 151.5], [1.36, 150.0], [1.36, 149.0]])
    s = FeatureState(2)
    rows = []
    for c in closes:
        s.update(c, c, c, c, np.zeros(2))
        rows.append(s.get())
    f = np.stack(rows)
    r = np.vstack([np.zeros((1, 2)), np.diff(np.log(closes), axis=0)])
    np.testing.assert_allclose(f[..., COL["gk_vol"]], np.abs(r), rtol=1e-12)
    np.testing.assert_array_equal(f[..., COL["volume_z"]], 0.0)
    np.testing.assert_allclose(f[..., COL["overnight_gap"]], r)  # O_t = C_t


def test_unknown_volume_counts_as_zero() -> None:
    a, b = FeatureState(2), FeatureState(2)
    for v in ([np.nan, 5.0], [np.nan, 7.0], [np.nan, 6.0]):
        p = np.array([10.0, 20.0])
        a.update(p, p * 1.01, p * 0.99, p, np.array(v))
        b.update(p, p * 1.01, p * 0.99, p, np.nan_to_num(np.array(v)))
    np.testing.assert_array_equal(a.get(), b.get())
    assert a.get()[0, COL["volume_z"]] == 0.0
    c = FeatureState(1)
    c.update([1.0], [1.0], [1.0], [1.0])  # volume=None
    assert c.get()[0, COL["volume_z"]] == 0.0


def test_inconsistent_bar_is_repaired() -> None:
    """A close above the high: the range is widened to max(O, H, C) / min(O, L, C)."""
    s = FeatureState(1)
    s.update([100.0], [101.0], [99.0], [103.0], [1.0])
    hi, lo, co = 103.0, 99.0, math.log(1.03)
    want = math.sqrt(0.5 * math.log(hi / lo) ** 2 - (2 * math.log(2) - 1) * co**2)
    assert s.get()[0, COL["gk_vol"]] == pytest.approx(want, rel=1e-14)


def test_streaming_equals_batch_exactly_and_pickle_resumes(rng: np.random.Generator) -> None:
    panel = random_panel(rng, n_days=120, n_assets=3)
    batch = features_from_panel(panel, rv_window=5)
    s = FeatureState(3, rv_window=5)
    rows = []
    for t in range(panel.n_days):
        if t == 60:
            s = pickle.loads(pickle.dumps(s))
        s.update(panel.open[t], panel.high[t], panel.low[t], panel.close[t], panel.volume[t])
        rows.append(s.get())
    np.testing.assert_array_equal(np.stack(rows), batch)


def test_inputs_left_unchanged(rng: np.random.Generator) -> None:
    panel = random_panel(rng, n_days=30, n_assets=2)
    copies = [getattr(panel, f).copy() for f in ("open", "high", "low", "close", "volume")]
    features_from_panel(panel)
    for f, c in zip(("open", "high", "low", "close", "volume"), copies, strict=True):
        np.testing.assert_array_equal(getattr(panel, f), c)


def test_get_before_update_raises() -> None:
    s = FeatureState(2)
    assert s.get_or_none() is None
    with pytest.raises(NotEnoughObservations, match="FeatureState needs 1"):
        s.get()


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("close", [1.0, -1.0], "close prices must be finite and > 0"),
        ("open", [1.0, np.nan], "open prices must be finite and > 0"),
        ("high", [1.0, np.inf], "high prices must be finite and > 0"),
        ("low", [1.0], r"low has shape \(1,\), expected \(2,\)"),
        ("volume", [1.0, -5.0], "volume must be finite and >= 0"),
        ("volume", [1.0, np.inf], "volume must be finite and >= 0"),
    ],
)
def test_bad_bars_raise_and_leave_state(field: str, value: list, match: str) -> None:
    s = FeatureState(2)
    ok = {f: np.array([10.0, 20.0]) for f in ("open", "high", "low", "close", "volume")}
    s.update(**ok)
    before = pickle.dumps(s)
    with pytest.raises(DataError, match=match):
        s.update(**{**ok, field: np.array(value)})
    assert pickle.dumps(s) == before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_assets": 0}, "n_assets must be an integer >= 1, got 0"),
        ({"rv_window": 0}, "rv_window must be an integer >= 1, got 0"),
        ({"volume_window": 1}, "volume_window must be an integer >= 2, got 1"),
        ({"ewma_lambda": 1.0}, r"ewma_lambda must be in \(0, 1\), got 1.0"),
    ],
)
def test_bad_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FeatureState(**{"n_assets": 2, **kwargs})


positive = st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    bars=st.lists(
        st.tuples(positive, positive, positive, positive, st.floats(0, 1e15)),
        min_size=1,
        max_size=25,
    )
)
def test_outputs_always_finite(bars: list) -> None:
    """Any positive prices (even inconsistent bars, 600 orders of magnitude) give finite rows."""
    s = FeatureState(1, rv_window=3, volume_window=4)
    for o, h, lo, c, v in bars:
        s.update([o], [h], [lo], [c], [v])
        row = s.get()
        assert np.all(np.isfinite(row))
        assert np.all(row[0, [1, 3, 4, 5, 6]] >= 0)
        assert abs(row[0, COL["volume_z"]]) <= math.sqrt(3) + 1e-9
