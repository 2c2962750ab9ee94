"""Tests of models.contributions.euler_contributions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from models.contributions import euler_contributions
from models.measures import var_es_from_samples


@pytest.mark.parametrize("level", [0.95, 0.975, 0.99])
def test_contributions_add_up_to_portfolio_var_es(rng, level):
    r = rng.standard_t(4, size=(5000, 4)) * [0.01, 0.02, 0.005, 0.015]
    w = np.array([0.4, 0.3, 0.2, 0.1])
    vc, ec = euler_contributions(r, w, level)
    var, es = var_es_from_samples(r @ w, [level])
    assert vc.sum() == pytest.approx(var[0], rel=1e-12)
    assert ec.sum() == pytest.approx(es[0], rel=1e-12)


def test_contributions_match_gaussian_closed_form(rng):
    """For N(0, S): VaR_i = w_i (S w)_i / s_p z_a, ES_i = w_i (S w)_i / s_p phi(z_a) / (1 - a)."""
    sd = np.array([0.01, 0.02, 0.015])
    corr = np.array([[1.0, 0.5, -0.2], [0.5, 1.0, 0.3], [-0.2, 0.3, 1.0]])
    cov = corr * np.outer(sd, sd)
    w = np.array([0.5, 0.2, 0.3])
    r = rng.multivariate_normal(np.zeros(3), cov, size=400_000)
    level = 0.99
    z = stats.norm.ppf(level)
    beta = w * (cov @ w) / np.sqrt(w @ cov @ w)
    vc, ec = euler_contributions(r, w, level)
    np.testing.assert_allclose(vc, beta * z, rtol=0.06)
    np.testing.assert_allclose(ec, beta * stats.norm.pdf(z) / (1 - level), rtol=0.04)


def test_zero_weight_asset_contributes_nothing(rng):
    r = rng.standard_normal((1000, 3))
    vc, ec = euler_contributions(r, [0.5, 0.0, 0.5], 0.95)
    assert vc[1] == 0.0 and ec[1] == 0.0


def test_hedge_has_negative_contribution(rng):
    x = rng.standard_normal(20000) * 0.02
    r = np.column_stack([x, -x + 0.002 * rng.standard_normal(20000)])
    vc, ec = euler_contributions(r, [1.0, 0.5], 0.975)
    assert vc[0] > 0 > vc[1]
    assert ec[0] > 0 > ec[1]


def test_input_unchanged(rng):
    r = rng.standard_normal((500, 2))
    before = r.copy()
    euler_contributions(r, [0.5, 0.5], 0.95)
    np.testing.assert_array_equal(r, before)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    level=st.floats(0.5, 0.999),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_sums_any_sample(n, level, seed):
    g = np.random.default_rng(seed)
    r = g.standard_normal((n, 3))
    w = g.uniform(-1, 1, 3) + np.array([2.0, 0, 0])
    vc, ec = euler_contributions(r, w, level)
    var, es = var_es_from_samples(r @ w, [level])
    assert vc.sum() == pytest.approx(var[0], rel=1e-9, abs=1e-12)
    assert ec.sum() == pytest.approx(es[0], rel=1e-9, abs=1e-12)


def test_validation(rng):
    r = rng.standard_normal((10, 2))
    with pytest.raises(ValueError, match="shape"):
        euler_contributions(r, [1.0, 0.0, 0.0], 0.95)
    with pytest.raises(ValueError, match="level"):
        euler_contributions(r, [1.0, 0.0], 1.0)
    with pytest.raises(ValueError, match="bandwidth"):
        euler_contributions(r, [1.0, 0.0], 0.95, bandwidth=0.0)
    with pytest.raises(ValueError, match="finite"):
        euler_contributions(np.full((3, 2), np.nan), [1.0, 0.0], 0.95)
