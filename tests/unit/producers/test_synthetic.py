"""Synthetic regime-switching panel with a crash."""

import numpy as np
import pytest

from producers.synthetic import Crash, synthetic_panel


def test_shape_calendar_and_consistent_bars():
    p = synthetic_panel(300, ("A", "B", "C"), seed=42)
    assert p.close.shape == (300, 3) and p.assets == ("A", "B", "C")
    assert np.all(np.diff(p.dates) > np.timedelta64(0, "D"))
    assert np.all(np.is_busday(p.dates))
    assert np.all(p.low <= np.minimum(p.open, p.close))
    assert np.all(p.high >= np.maximum(p.open, p.close))
    assert np.all(p.low > 0) and np.all(p.volume >= 0)


def test_seeded():
    a, b = synthetic_panel(50, seed=3), synthetic_panel(50, seed=3)
    assert np.array_equal(a.close, b.close) and np.array_equal(a.volume, b.volume)
    assert not np.array_equal(a.close, synthetic_panel(50, seed=4).close)


def test_crash_day_and_turbulence():
    crash = Crash(day=200, size=-0.15, turbulent_days=30)
    calm = dict(p_calm_to_turbulent=0.0, vol_calm=0.1, vol_turbulent=0.6)
    base = synthetic_panel(400, ("A", "B"), seed=42, betas=(1.0, 0.5), **calm)
    hit = synthetic_panel(400, ("A", "B"), seed=42, crash=crash, betas=(1.0, 0.5), **calm)
    r0, r1 = base.log_returns(), hit.log_returns()
    # log_returns()[t - 1] is the return of day t
    assert r1[199, 0] < -0.1 and r1[199, 1] < -0.03
    before = r1[:199].std()
    during = r1[200:229].std()
    assert during > 3 * before
    # same shocks before the crash
    np.testing.assert_allclose(r0[:199], r1[:199])


def test_market_factor_correlation():
    p = synthetic_panel(2000, ("A", "B"), seed=42, market_weight=0.8, p_calm_to_turbulent=0.0)
    rho = np.corrcoef(p.log_returns().T)[0, 1]
    assert rho == pytest.approx(0.8, abs=0.05)


def test_bad_parameters():
    with pytest.raises(ValueError, match="n_days=1"):
        synthetic_panel(1)
    with pytest.raises(ValueError, match=r"market_weight=1\.5"):
        synthetic_panel(10, market_weight=1.5)
    with pytest.raises(ValueError, match=r"crash\.day=10"):
        synthetic_panel(10, crash=Crash(day=10))
    with pytest.raises(ValueError, match="betas has shape"):
        synthetic_panel(10, ("A",), betas=(1.0, 2.0))
