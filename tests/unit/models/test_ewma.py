"""models.ewma: RiskMetrics EWMA against a direct loop."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy import stats

from models.base import LEVELS
from models.ewma import RiskMetricsEWMA
from models.exceptions import NotEnoughObservations

W4 = np.array([0.4, 0.3, 0.2, 0.1])


@pytest.fixture(scope="module")
def returns() -> np.ndarray:
    rng = np.random.default_rng(42)
    cov = 1e-4 * (0.5 * np.ones((4, 4)) + 0.5 * np.eye(4))
    return rng.multivariate_normal(np.zeros(4), cov, size=200)


def loop_oracle(x: np.ndarray, w: np.ndarray, lam: float, m: int) -> tuple[np.ndarray, float]:
    r = np.exp(x) - 1.0
    cov = np.cov(r[:m].T)
    for t in range(m, len(r)):
        for i in range(len(w)):
            for j in range(len(w)):
                cov[i, j] = lam * cov[i, j] + (1 - lam) * r[t, i] * r[t, j]
    return cov, float(np.sqrt(w @ cov @ w))


@pytest.mark.parametrize(("lam", "m"), [(0.94, 30), (0.97, 2), (0.5, 60)])
def test_matches_direct_loop(returns: np.ndarray, lam: float, m: int) -> None:
    model = RiskMetricsEWMA(W4, lam=lam, min_obs=m).fit(returns)
    cov, sigma = loop_oracle(returns, W4, lam, m)
    np.testing.assert_allclose(model.covariance_, cov, rtol=1e-12)
    assert model.portfolio_sigma() == pytest.approx(sigma, rel=1e-12)
    f = model.predict()
    for i, level in enumerate(LEVELS):
        z = stats.norm.ppf(level)
        assert f.var[i] == pytest.approx(sigma * z, rel=1e-12)
        assert f.es[i] == pytest.approx(sigma * stats.norm.pdf(z) / (1 - level), rel=1e-12)
    assert np.all(f.es > f.var) and np.all(np.diff(f.var) > 0)


def test_first_forecast_is_the_sample_covariance(returns: np.ndarray) -> None:
    model = RiskMetricsEWMA(W4, min_obs=30).fit(returns[:29])
    assert model.covariance_ is None
    with pytest.raises(NotEnoughObservations, match="needs 30 observations"):
        model.predict()
    model.update(returns[29])
    sample = np.cov(np.expm1(returns[:30]), rowvar=False)
    np.testing.assert_allclose(model.covariance_, sample, rtol=1e-13)
    sigma = np.sqrt(W4 @ sample @ W4)
    assert model.predict().at(0.99)[0] == pytest.approx(sigma * stats.norm.ppf(0.99), rel=1e-12)


def test_single_asset_and_zero_history() -> None:
    model = RiskMetricsEWMA([1.0], min_obs=5).fit(np.zeros((8, 1)))
    assert model.covariance_.shape == (1, 1)
    f = model.predict()
    np.testing.assert_array_equal(f.var, 0.0)
    np.testing.assert_array_equal(f.es, 0.0)
    x = np.log1p(np.array([[0.01], [-0.02], [0.03]]))
    m1 = RiskMetricsEWMA([2.0], lam=0.9, min_obs=2).fit(x)
    expected = 0.9 * np.var([0.01, -0.02], ddof=1) + 0.1 * 0.03**2
    assert m1.portfolio_sigma() == pytest.approx(2 * np.sqrt(expected), rel=1e-12)


def test_validation() -> None:
    with pytest.raises(ValueError, match=r"lam must lie in \(0, 1\)"):
        RiskMetricsEWMA(W4, lam=1.0)
    with pytest.raises(ValueError, match="min_obs must be >= 2"):
        RiskMetricsEWMA(W4, min_obs=1)
    with pytest.raises(ValueError, match="weights"):
        RiskMetricsEWMA(np.zeros(4))


def test_contract(returns: np.ndarray) -> None:
    x = returns.copy()
    a = RiskMetricsEWMA(W4, min_obs=20)
    assert a.name == "ewma"
    a.fit(x[:100])
    b = pickle.loads(pickle.dumps(a))
    c = RiskMetricsEWMA(W4, min_obs=20)
    for row in x[:100]:
        c.update(row)
    for row in x[100:]:
        for m in (a, b, c):
            m.update(row)
        fa, fb, fc = a.predict(), b.predict(), c.predict()
        np.testing.assert_array_equal(fa.var, fb.var)
        np.testing.assert_array_equal(fa.es, fc.es)
    np.testing.assert_array_equal(x, returns)
    d = RiskMetricsEWMA(W4, min_obs=20).fit(x)
    a.fit(x)  # refit after use == fresh fit
    np.testing.assert_array_equal(d.predict().var, a.predict().var)
    a.reset()
    assert a.covariance_ is None and a.predict_or_none() is None
