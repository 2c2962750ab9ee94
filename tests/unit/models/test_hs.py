"""models.hs: historical simulation (plain and filtered) against batch oracles."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from arch import arch_model
from hypothesis import given, settings
from hypothesis import strategies as st

from models.base import LEVELS
from models.exceptions import NotEnoughObservations
from models.garch import fit_garch
from models.hs import FilteredHistoricalSimulation, HistoricalSimulation

W3 = np.array([0.5, 0.3, 0.2])


@pytest.fixture(scope="module")
def returns() -> np.ndarray:
    """Log returns (n_days, 3) with volatility clustering (a common GARCH factor)."""
    rng = np.random.default_rng(42)
    n = 420
    out = np.empty((n, 3))
    s2 = 1.0
    for t in range(n):
        z = rng.standard_t(6, size=3) * np.sqrt(4 / 6)
        out[t] = 0.01 * np.sqrt(s2) * z
        s2 = 0.05 + 0.1 * z.mean() ** 2 * s2 * 3 + 0.85 * s2
    return out


def hand_var_es(x: np.ndarray, level: float) -> tuple[float, float]:
    """The m-th smallest return and the mean of the m smallest, m = n(1-level) an integer."""
    m = round(x.size * (1 - level))
    assert abs(x.size * (1 - level) - m) < 1e-9
    worst = np.sort(x)[:m]
    return float(-worst[-1]), float(-worst.mean())


# --- HistoricalSimulation -----------------------------------------------------------------------


def test_hs_matches_quantiles_of_the_window(returns: np.ndarray) -> None:
    model = HistoricalSimulation(W3, window=200).fit(returns[:350])  # ring buffer has wrapped
    port = np.expm1(returns[150:350]) @ W3
    f = model.predict()
    for i, level in enumerate(LEVELS):
        var, es = hand_var_es(port, level)
        assert f.var[i] == pytest.approx(var, rel=1e-12)
        assert f.es[i] == pytest.approx(es, rel=1e-12)
    np.testing.assert_allclose(np.sort(model.scenarios()), np.sort(port), rtol=1e-15)
    assert model.n_window_ == 200


def test_hs_reprices_the_window_with_current_weights(returns: np.ndarray) -> None:
    model = HistoricalSimulation(W3, window=200).fit(returns[:300])
    w2 = np.array([-0.2, 0.7, 0.5])
    model.weights = w2  # today's mix applies to every day of the window
    np.testing.assert_allclose(
        np.sort(model.scenarios()), np.sort(np.expm1(returns[100:300]) @ w2), rtol=1e-15
    )


def test_hs_warm_up_uses_growing_window(returns: np.ndarray) -> None:
    assert HistoricalSimulation(W3, window=300).min_obs == 250
    assert HistoricalSimulation(W3, window=100).min_obs == 100
    model = HistoricalSimulation(W3, window=300, min_obs=200)
    model.fit(returns[:199])
    with pytest.raises(NotEnoughObservations, match="needs 200"):
        model.predict()
    assert model.predict_or_none() is None
    model.update(returns[199])
    var, es = hand_var_es(np.expm1(returns[:200]) @ W3, 0.99)
    assert model.predict().at(0.99) == pytest.approx((var, es), rel=1e-12)


def test_hs_validation() -> None:
    with pytest.raises(ValueError, match="window must be >= 10"):
        HistoricalSimulation(W3, window=5)
    with pytest.raises(ValueError, match="min_obs must lie in"):
        HistoricalSimulation(W3, window=100, min_obs=101)
    with pytest.raises(ValueError, match="expected returns of shape"):
        HistoricalSimulation(W3, window=100).update(np.zeros(2))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.001, 0.1))
def test_hs_es_above_var_and_var_increasing(seed: int, scale: float) -> None:
    x = scale * np.random.default_rng(seed).standard_t(3, size=(60, 3))
    f = HistoricalSimulation(W3, window=50, min_obs=20).fit(x).predict()
    assert np.all(f.es >= f.var - 1e-15)
    assert np.all(np.diff(f.var) >= 0) and np.all(np.diff(f.es) >= 0)


# --- FilteredHistoricalSimulation ---------------------------------------------------------------


def test_fhs_scenarios_from_arch_oracle(returns: np.ndarray) -> None:
    # one fit at day 250 (refit_every large), then 30 days filtered with frozen parameters
    model = FilteredHistoricalSimulation(
        W3, window=200, garch_window=300, refit_every=1000, min_obs=250
    ).fit(returns[:280])
    y = np.array([100 * float(np.expm1(r) @ W3) for r in returns[:280]])
    params = fit_garch(y[:250], "garch", "normal").params
    np.testing.assert_allclose(model.garch_.params_.to_array(), params.to_array(), rtol=1e-12)
    res = arch_model(y, mean="Constant", vol="GARCH", p=1, q=1, dist="normal", rescale=False)
    fixed = res.fix(params.to_array())
    sigma2 = fixed.forecast(horizon=1, reindex=False).variance.to_numpy()[-1, 0]
    # in-sample residuals of the fit == those of arch's fixed-parameter filter on the same data
    z = np.asarray(fixed.std_resid)[-200:]
    scen = (params.mu + np.sqrt(sigma2) * z) / 100
    np.testing.assert_allclose(model.scenarios(), scen, rtol=1e-8)
    f = model.predict()
    for i, level in enumerate(LEVELS):
        var, es = hand_var_es(scen, level)
        assert f.var[i] == pytest.approx(var, rel=1e-8)
        assert f.es[i] == pytest.approx(es, rel=1e-8)


def test_fhs_uses_all_residuals_until_window_full(returns: np.ndarray) -> None:
    model = FilteredHistoricalSimulation(W3, window=300, garch_window=300, min_obs=250)
    model.fit(returns[:260])
    assert model.scenarios().shape == (260,)
    with pytest.raises(NotEnoughObservations):
        FilteredHistoricalSimulation(W3, window=300, garch_window=300).fit(returns[:249]).predict()


def test_fhs_validation() -> None:
    with pytest.raises(ValueError, match="dist must be 'normal' or 't'"):
        FilteredHistoricalSimulation(W3, dist="skewt")
    with pytest.raises(ValueError, match="window must lie in"):
        FilteredHistoricalSimulation(W3, window=600, garch_window=500)


# --- the streaming contract, for both -----------------------------------------------------------

MAKERS = {
    "hs": lambda: HistoricalSimulation(W3, window=100, min_obs=50),
    "fhs": lambda: FilteredHistoricalSimulation(
        W3, window=100, garch_window=200, refit_every=40, min_obs=150
    ),
}


@pytest.mark.parametrize("name", MAKERS)
def test_contract(name: str, returns: np.ndarray) -> None:
    x = returns[:260]
    x_before = x.copy()
    a = MAKERS[name]()
    assert a.name == name
    a.fit(x[:170])
    b = pickle.loads(pickle.dumps(a))
    c = MAKERS[name]()
    for row in x[:170]:
        c.update(row)
    for row in x[170:]:  # crosses the refits at 190, 230 for fhs
        a.update(row)
        b.update(row)
        c.update(row)
        fa, fb, fc = a.predict(), b.predict(), c.predict()
        np.testing.assert_array_equal(fa.var, fb.var)
        np.testing.assert_array_equal(fa.es, fb.es)
        np.testing.assert_array_equal(fa.var, fc.var)
        assert np.all(fa.es >= fa.var) and np.all(np.diff(fa.var) > 0)
    np.testing.assert_array_equal(x, x_before)
    d = MAKERS[name]().fit(x)  # fit == reset + updates, also after earlier use
    np.testing.assert_array_equal(d.predict().var, a.predict().var)
    a.fit(x)
    np.testing.assert_array_equal(d.predict().es, a.predict().es)
    a.reset()
    assert a.n_seen_ == 0 and a.predict_or_none() is None
