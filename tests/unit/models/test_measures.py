import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from models.measures import (
    var_es_from_ppf,
    var_es_from_samples,
    var_es_normal,
    var_es_student_t,
)


def test_samples_hand_case():
    # 20 scenarios -1..-20 %: 5 % tail = 1 scenario, 10 % = 2 scenarios.
    r = -np.arange(1, 21) / 100.0
    var, es = var_es_from_samples(r, levels=[0.95, 0.90])
    assert var == pytest.approx([0.20, 0.19])
    assert es == pytest.approx([0.20, 0.195])


def test_samples_fractional_tail():
    # 10 scenarios, 97.5 %: tail 0.25 scenario -> VaR = ES = worst.
    r = np.array([-0.05, -0.01, 0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07])
    var, es = var_es_from_samples(r, levels=[0.975, 0.85])
    assert var[0] == pytest.approx(0.05) and es[0] == pytest.approx(0.05)
    # 15 % tail = 1.5 scenarios: VaR = 2nd worst, ES = (0.05 + 0.5 * 0.01) / 1.5
    assert var[1] == pytest.approx(0.01)
    assert es[1] == pytest.approx((0.05 + 0.5 * 0.01) / 1.5)


def test_samples_match_normal_on_large_sample(rng):
    x = rng.normal(0.001, 0.02, 400_000)
    var, es = var_es_from_samples(x)
    var_n, es_n = var_es_normal(0.001, 0.02)
    np.testing.assert_allclose(var, var_n, rtol=0.01)
    np.testing.assert_allclose(es, es_n, rtol=0.01)


def test_weighted_samples_equal_repeated():
    x = np.array([-0.03, -0.02, 0.01, 0.02])
    w = np.array([2, 1, 1, 1])
    var_w, es_w = var_es_from_samples(x, [0.8, 0.6], weights=w)
    var_r, es_r = var_es_from_samples(np.repeat(x, w), [0.8, 0.6])
    np.testing.assert_allclose(var_w, var_r)
    np.testing.assert_allclose(es_w, es_r)


def test_student_t_against_numerical_integral():
    mu, sigma, nu = 0.0005, 0.015, 4.5
    var, es = var_es_student_t(mu, sigma, nu, standardized=True)
    s = sigma * np.sqrt((nu - 2) / nu)
    law = stats.t(nu, loc=mu, scale=s)
    for i, a in enumerate([0.95, 0.975, 0.99]):
        q = law.ppf(1 - a)
        assert var[i] == pytest.approx(-q)
        tail_mean = law.expect(lambda y: y, ub=q, conditional=True)
        assert es[i] == pytest.approx(-tail_mean, rel=1e-6)


def test_from_ppf_matches_student_t():
    nu = 5.0
    s = np.sqrt((nu - 2) / nu)
    var, es = var_es_from_ppf(0.0, 1.0, lambda u: stats.t.ppf(u, nu) * s, n_grid=20000)
    var_t, es_t = var_es_student_t(0.0, 1.0, nu)
    np.testing.assert_allclose(var, var_t, rtol=1e-9)
    np.testing.assert_allclose(es, es_t, rtol=2e-3)


@pytest.mark.parametrize("bad", [[0.0], [1.0], [1.5], [-0.1]])
def test_bad_levels(bad):
    with pytest.raises(ValueError, match="confidence levels"):
        var_es_from_samples([0.1, 0.2], bad)


def test_rejects_nan():
    with pytest.raises(ValueError, match="finite"):
        var_es_from_samples([0.1, np.nan])


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(1, 300), elements=st.floats(-1, 1)))
def test_es_at_least_var_and_monotone(x):
    var, es = var_es_from_samples(x)
    assert np.all(es >= var - 1e-12)
    assert np.all(np.diff(var) >= -1e-12)
