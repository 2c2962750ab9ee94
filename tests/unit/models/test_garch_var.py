"""models.garch_var: GarchT and GjrSkewT against arch's fixed-parameter filter and laws."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from arch import arch_model
from arch.univariate import SkewStudent

from models.base import LEVELS
from models.exceptions import NotEnoughObservations
from models.garch import GarchParams
from models.garch_var import GarchT, GjrSkewT
from models.measures import var_es_from_ppf, var_es_student_t

W3 = np.array([0.5, 0.3, 0.2])


def simulate_pct(p: GarchParams, n: int, seed: int) -> np.ndarray:
    z = p.std_ppf(np.random.default_rng(seed).uniform(size=n))
    y = np.empty(n)
    s2 = p.omega / (1.0 - p.persistence)
    for t in range(n):
        e = np.sqrt(s2) * z[t]
        y[t] = p.mu + e
        s2 = p.omega + (p.alpha + p.gamma * (e < 0)) * e * e + p.beta * s2
    return y


@pytest.fixture(scope="module")
def returns() -> np.ndarray:
    """Log returns (n_days, 3): a common GJR-skew-t factor plus idiosyncratic noise."""
    p = GarchParams("gjr", "skewt", 0.03, 0.03, 0.03, 0.1, 0.88, nu=6.0, lam=-0.2)
    f = simulate_pct(p, 400, seed=42) / 100
    noise = 0.004 * np.random.default_rng(7).standard_normal((400, 3))
    return np.log1p(f[:, None] + noise)


def portfolio_pct(x: np.ndarray) -> np.ndarray:
    return np.array([100 * float(np.expm1(r) @ W3) for r in x])


def arch_fixed_forecast(y: np.ndarray, p: GarchParams) -> float:
    model = arch_model(
        y, mean="Constant", vol="GARCH", p=1, o=int(p.vol == "gjr"), q=1, dist=p.dist, rescale=False
    )
    fc = model.fix(p.to_array()).forecast(horizon=1, reindex=False)
    return float(fc.variance.to_numpy()[-1, 0])


@pytest.mark.parametrize("cls", [GarchT, GjrSkewT])
def test_filter_forward_matches_arch_fix(cls, returns: np.ndarray) -> None:
    # window 300: refits at 250 (y[0:250]), 290 (y[0:290]), 330 (y[30:330]); then 17 filtered
    model = cls(W3, window=300, refit_every=40, min_obs=250).fit(returns[:347])
    p = model.garch_.params_
    assert (p.vol, p.dist) == (cls.vol, cls.dist) and model.garch_.n_refits_ == 3
    y = portfolio_pct(returns[:347])
    sigma2 = arch_fixed_forecast(y[30:], p)
    mean, sd = model.forecast_moments()
    assert mean == p.mu / 100
    assert sd**2 == pytest.approx(sigma2 / 1e4, rel=1e-8)


def test_garch_t_var_es_is_the_standardised_t(returns: np.ndarray) -> None:
    model = GarchT(W3, window=300, refit_every=40, min_obs=250).fit(returns[:347])
    p = model.garch_.params_
    mu, sigma2 = model.garch_.forecast()
    var, es = var_es_student_t(mu, np.sqrt(sigma2), p.nu, LEVELS, standardized=True)
    f = model.predict()
    np.testing.assert_allclose(f.var, var / 100, rtol=1e-12)
    np.testing.assert_allclose(f.es, es / 100, rtol=1e-12)


def test_gjr_skewt_var_es_against_arch_law(returns: np.ndarray) -> None:
    model = GjrSkewT(W3, window=300, refit_every=40, min_obs=250).fit(returns[:347])
    p = model.garch_.params_
    mu, sigma2 = model.garch_.forecast()
    sigma = np.sqrt(sigma2)
    law, shape = SkewStudent(), [p.nu, p.lam]
    f = model.predict()
    for i, level in enumerate(LEVELS):
        q = law.ppf(1 - level, shape)
        tail_mean = law.partial_moment(1, q, shape) / (1 - level)
        assert f.var[i] == pytest.approx(-(mu + sigma * q) / 100, rel=1e-10)
        assert f.es[i] == pytest.approx(-(mu + sigma * tail_mean) / 100, rel=1e-10)
    var_n, es_n = var_es_from_ppf(mu, sigma, lambda u: law.ppf(u, shape), LEVELS, n_grid=100_000)
    np.testing.assert_allclose(f.var, var_n / 100, rtol=1e-10)
    np.testing.assert_allclose(f.es, es_n / 100, rtol=2e-4)


@pytest.mark.parametrize("cls", [GarchT, GjrSkewT])
def test_contract(cls, returns: np.ndarray) -> None:
    def make():
        return cls(W3, window=200, refit_every=30, min_obs=150)

    x = returns[:260]
    x_before = x.copy()
    a = make()
    assert a.name == {"GarchT": "garch_t", "GjrSkewT": "gjr_skewt"}[cls.__name__]
    a.fit(x[:149])
    with pytest.raises(NotEnoughObservations, match="needs 150 observations"):
        a.predict()
    a.update(x[149])
    b = pickle.loads(pickle.dumps(a))
    c = make()
    for row in x[:150]:
        c.update(row)
    for row in x[150:]:  # refits at 180, 210, 240
        for m in (a, b, c):
            m.update(row)
        fa, fb, fc = a.predict(), b.predict(), c.predict()
        np.testing.assert_array_equal(fa.var, fb.var)
        np.testing.assert_array_equal(fa.es, fb.es)
        np.testing.assert_array_equal(fa.var, fc.var)
        assert np.all(fa.es >= fa.var) and np.all(np.diff(fa.var) > 0)
        assert np.all(np.diff(fa.es) > 0)
    assert a.garch_.n_refits_ == 4
    np.testing.assert_array_equal(x, x_before)
    d = make().fit(x)
    a.fit(x)  # refit after use == fresh fit
    np.testing.assert_array_equal(d.predict().es, a.predict().es)
    a.reset()
    assert a.n_seen_ == 0 and a.garch_.n_seen_ == 0 and a.predict_or_none() is None


def exception_rates(model, y_pct: np.ndarray, start: int) -> dict[float, float]:
    x = np.log1p(y_pct / 100)[:, None]
    hits = {level: 0 for level in LEVELS}
    n = 0
    for t in range(len(x)):
        if t >= start:
            f = model.predict()
            for i, level in enumerate(LEVELS):
                hits[level] += y_pct[t] / 100 < -f.var[i]
            n += 1
        model.update(x[t])
    return {level: h / n for level, h in hits.items()}


def test_garch_t_exception_rate_on_simulated_garch_t() -> None:
    true = GarchParams("garch", "t", 0.04, 0.02, 0.08, 0.0, 0.9, nu=6.0)
    y = simulate_pct(true, 3000, seed=42)
    rates = exception_rates(GarchT([1.0], window=1000, refit_every=250, min_obs=500), y, 500)
    # 2,500 forecasts: binomial sd 0.20 % at 99 %, 0.44 % at 95 %
    assert 0.005 <= rates[0.99] <= 0.016
    assert 0.037 <= rates[0.95] <= 0.063


@pytest.mark.slow
def test_gjr_skewt_exception_rate_on_simulated_gjr_skewt() -> None:
    true = GarchParams("gjr", "skewt", 0.04, 0.02, 0.03, 0.1, 0.88, nu=6.0, lam=-0.25)
    y = simulate_pct(true, 8000, seed=42)
    rates = exception_rates(GjrSkewT([1.0], window=1000, refit_every=63), y, 1000)
    assert 0.0065 <= rates[0.99] <= 0.0135  # 7,000 forecasts: binomial sd 0.12 %
    assert 0.022 <= rates[0.975] <= 0.028
    assert 0.045 <= rates[0.95] <= 0.055
