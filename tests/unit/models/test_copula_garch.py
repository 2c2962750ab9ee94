"""Tests of models.copula_garch.CopulaGarchT: the VaRModel contract and oracles."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy import stats

from models.base import LEVELS
from models.copula import StudentTCopula
from models.copula_garch import CopulaGarchT
from models.exceptions import NotEnoughObservations
from models.measures import var_es_from_samples, var_es_normal

W3 = np.array([0.5, 0.3, 0.2])
SMALL = dict(window=150, refit_every=20, n_scenarios=1000, copula_window=100, min_obs=100)
CORR = np.array([[1.0, 0.5, 0.2], [0.5, 1.0, 0.1], [0.2, 0.1, 1.0]])


def simulate(n: int, seed: int = 42, sd=(0.01, 0.015, 0.008), nu: float = 6.0) -> np.ndarray:
    """Log returns with t-copula dependence and standardised-t marginals."""
    rng = np.random.default_rng(seed)
    u = StudentTCopula().set_params(CORR, nu).sample(n, rng, antithetic=False)
    z = stats.t.ppf(u, 8.0) * np.sqrt(6.0 / 8.0)
    return z * np.asarray(sd)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return simulate(170)


def forecasts_equal(a, b) -> bool:
    return np.array_equal(a.var, b.var) and np.array_equal(a.es, b.es)


def test_name_and_registry():
    from models.registry import make_model

    m = make_model("copula_garch_t", W3, seed=3, **SMALL)
    assert isinstance(m, CopulaGarchT)
    assert m.name == "copula_garch_t" and m.seed == 3


def test_warm_up_raises_then_forecasts(data):
    m = CopulaGarchT(W3, **SMALL)
    for row in data[:99]:
        m.update(row)
    with pytest.raises(NotEnoughObservations, match="100"):
        m.predict()
    assert m.predict_or_none() is None
    with pytest.raises(NotEnoughObservations):
        m.simulate_returns()
    m.update(data[99])
    f = m.predict()
    assert f.levels == LEVELS
    assert np.all(np.isfinite(f.var)) and np.all(f.var > 0)
    assert np.all(np.diff(f.var) > 0) and np.all(f.es >= f.var)
    assert m.n_copula_fits_ == 1


def test_fit_equals_repeated_update_and_inputs_unchanged(data):
    before = data.copy()
    a = CopulaGarchT(W3, seed=5, **SMALL).fit(data[:130])
    b = CopulaGarchT(W3, seed=5, **SMALL)
    for row in data[:130]:
        b.update(row)
    np.testing.assert_array_equal(data, before)
    assert forecasts_equal(a.predict(), b.predict())
    # fit resets: refitting on the same data gives the same forecast again
    assert forecasts_equal(a.fit(data[:130]).predict(), b.predict())


def test_pickle_round_trip_mid_stream(data):
    m = CopulaGarchT(W3, seed=1, **SMALL)
    for row in data[:115]:
        m.update(row)
    clone = pickle.loads(pickle.dumps(m))
    assert forecasts_equal(m.predict(), clone.predict())
    # through a GARCH + copula refit (day 120) and beyond
    for row in data[115:135]:
        m.update(row)
        clone.update(row)
        assert forecasts_equal(m.predict(), clone.predict())
    assert m.n_copula_fits_ == clone.n_copula_fits_ == 2


def test_predict_is_read_only_and_seeded(data):
    m = CopulaGarchT(W3, seed=7, **SMALL).fit(data[:120])
    f1, f2 = m.predict(), m.predict()
    assert forecasts_equal(f1, f2)
    same = CopulaGarchT(W3, seed=7, **SMALL).fit(data[:120]).predict()
    other = CopulaGarchT(W3, seed=8, **SMALL).fit(data[:120]).predict()
    assert forecasts_equal(f1, same)
    assert not np.array_equal(f1.var, other.var)
    # different seeds differ by Monte Carlo noise only
    np.testing.assert_allclose(f1.var, other.var, rtol=0.15)


def test_scenarios_differ_day_to_day(data):
    m = CopulaGarchT(W3, **SMALL).fit(data[:120])
    s1 = m.simulate_returns()
    m.update(data[120])
    s2 = m.simulate_returns()
    assert s1.shape == (1000, 3)
    assert not np.array_equal(s1, s2)


def test_predict_matches_its_own_scenarios(data):
    m = CopulaGarchT(W3, **SMALL).fit(data[:120])
    var, es = var_es_from_samples(m.simulate_returns() @ W3, LEVELS)
    f = m.predict()
    np.testing.assert_array_equal(f.var, var)
    np.testing.assert_array_equal(f.es, es)


def test_antithetic_scenarios_are_mirrored_in_score_space(data):
    m = CopulaGarchT(W3, **SMALL).fit(data[:120])
    r = np.log1p(m.simulate_returns())
    # each asset: the map score -> return is increasing, so mirrored scores give mirrored ranks
    half = r.shape[0] // 2
    for j in range(3):
        med = np.median(r[:, j])
        below = r[:half, j] < med
        assert np.mean(below != (r[half:, j] < med)) > 0.95


def test_contributions_sum_to_forecast(data):
    m = CopulaGarchT(W3, **SMALL).fit(data[:120])
    vc, ec = m.predict_contributions()
    f = m.predict()
    assert vc.shape == ec.shape == (len(LEVELS), 3)
    np.testing.assert_allclose(vc.sum(axis=1), f.var, rtol=1e-10)
    np.testing.assert_allclose(ec.sum(axis=1), f.es, rtol=1e-10)


def test_marginals_and_copula_see_the_data(data):
    m = CopulaGarchT(W3, **SMALL).fit(data)
    sig = np.array([np.sqrt(g.forecast()[1]) / 100 for g in m.marginals_])
    np.testing.assert_allclose(sig, [0.01, 0.015, 0.008], rtol=0.35)
    assert m.copula_ is not None
    assert m.copula_.corr_[0, 1] > m.copula_.corr_[1, 2]


def test_independent_normal_assets_match_analytic_var():
    """iid N(0, s_i^2) assets: the forecast is close to the normal portfolio VaR/ES."""
    rng = np.random.default_rng(42)
    sd = np.array([0.01, 0.02, 0.005])
    x = rng.standard_normal((400, 3)) * sd
    m = CopulaGarchT(W3, window=400, min_obs=400, n_scenarios=20_000, copula_window=400)
    f = m.fit(x).predict()
    # against the truth (GARCH estimation noise included)
    var, es = var_es_normal(0.0, float(np.sqrt(np.sum((W3 * sd) ** 2))))
    np.testing.assert_allclose(f.var, var, rtol=0.15)
    np.testing.assert_allclose(f.es, es, rtol=0.15)
    # against the model's own marginal forecasts joined independently (copula noise only)
    mu = np.array([g.forecast()[0] for g in m.marginals_]) / 100
    sig = np.sqrt([g.forecast()[1] for g in m.marginals_]) / 100
    var, es = var_es_normal(float(W3 @ mu), float(np.sqrt(np.sum((W3 * sig) ** 2))))
    np.testing.assert_allclose(f.var, var, rtol=0.07)
    np.testing.assert_allclose(f.es, es, rtol=0.07)
    assert m.copula_ is not None
    assert np.max(np.abs(m.copula_.corr_ - np.eye(3))) < 0.15


def test_single_asset_portfolio():
    x = simulate(120)[:, :1]
    f = CopulaGarchT([1.0], **SMALL).fit(x).predict()
    assert np.all(np.isfinite(f.var)) and np.all(f.es >= f.var)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(min_obs=10), "min_obs"),
        (dict(min_obs=200, window=150), "min_obs"),
        (dict(refit_every=0), "refit_every"),
        (dict(n_scenarios=10), "n_scenarios"),
        (dict(copula_window=5), "copula_window"),
        (dict(seed=-1), "seed"),
        (dict(seed=1.5), "seed"),
        (dict(nu_bounds=(1.0, 5.0)), "nu_bounds"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    params = {**SMALL, **kwargs}
    with pytest.raises(ValueError, match=match):
        CopulaGarchT(W3, **params)


def test_bad_input_shape():
    m = CopulaGarchT(W3, **SMALL)
    with pytest.raises(ValueError, match="shape"):
        m.update(np.zeros(2))


@pytest.mark.slow
def test_default_configuration_long_run():
    """Default sizes (1000-day window, 10,000 scenarios) on 1,300 days; VaR coverage sane."""
    x = simulate(1300, seed=1)
    m = CopulaGarchT(W3, seed=0)
    port = np.expm1(x) @ W3
    hits = []
    for t, row in enumerate(x):
        f = m.predict_or_none()
        if f is not None:
            hits.append(port[t] < -f.var)
        m.update(row)
    hits = np.array(hits)
    assert hits.shape[0] == 1300 - 250
    assert abs(hits.mean(axis=0)[0] - 0.05) < 0.025
    np.testing.assert_allclose(m.copula_.corr_, CORR, atol=0.1)
