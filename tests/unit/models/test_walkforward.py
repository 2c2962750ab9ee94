import numpy as np
import pytest

from models.base import RiskForecast, VaRModel
from models.walkforward import walk_forward


class LastReturn(VaRModel):
    """VaR = |yesterday's portfolio log-return sum|: exposes any look-ahead."""

    name = "last"

    def __init__(self, weights):
        super().__init__(weights, min_obs=3)
        self.reset()

    def reset(self):
        super().reset()
        self.last_ = None

    def _update(self, x):
        self.last_ = float(np.abs(x).sum())

    def _predict(self):
        v = np.full(3, self.last_)
        return RiskForecast(v, v + 1.0)


def _data(n=50, k=2):
    rng = np.random.default_rng(42)
    r = rng.normal(0, 0.01, size=(n, k))
    d = np.datetime64("2021-01-04") + np.arange(n)
    return r, d


def test_forecast_uses_only_previous_days():
    r, d = _data()
    res = walk_forward(LastReturn([0.5, 0.5]), r, d, d[10], d[40])
    assert res.dates[0] == d[10] and res.dates[-1] == d[40]
    np.testing.assert_allclose(res.var[:, 0], np.abs(r[9:40]).sum(axis=1))
    np.testing.assert_allclose(res.realized, np.expm1(r[10:41]) @ [0.5, 0.5])


def test_warmup_days_are_nan():
    r, d = _data()
    res = walk_forward(LastReturn([1.0, 0.0]), r, d, d[0])
    assert np.isnan(res.var[:3]).all() and np.isfinite(res.var[3:]).all()
    assert res.n_forecasts == r.shape[0] - 3


def test_progress_counts_every_fed_day():
    r, d = _data()
    seen = []
    walk_forward(LastReturn([1.0, 0.0]), r, d, d[20], d[29], progress=seen.append)
    assert sum(seen) == 30


def test_empty_period_is_an_error():
    r, d = _data()
    with pytest.raises(ValueError, match="no days to evaluate"):
        walk_forward(LastReturn([1.0, 0.0]), r, d, d[-1] + 5)


def test_misaligned_inputs():
    r, d = _data()
    with pytest.raises(ValueError, match="do not align"):
        walk_forward(LastReturn([1.0, 0.0]), r, d[:-1], d[5])
