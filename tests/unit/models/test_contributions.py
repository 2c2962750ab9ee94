"""Tests of models.contributions.euler_contributions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from models.contributions import euler_contributions, euler_contributions_multi
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


def _full_sort_oracle(r, w, level, bandwidth=0.0025):
    """The textbook estimator with a full stable sort (no partial-sort shortcut)."""
    n = r.shape[0]
    contrib = r * w
    port = contrib.sum(axis=1)
    order = np.argsort(port, kind="stable")
    tail = 1.0 - level
    cum = np.cumsum(np.full(n, 1.0 / n))
    k = min(int(np.searchsorted(cum, tail - 1e-12, side="left")), n - 1)
    before = float(cum[k - 1]) if k > 0 else 0.0
    var, es = var_es_from_samples(port, [level])
    es_c = -(contrib[order[:k]].sum(axis=0) / n + (tail - before) * contrib[order[k]]) / tail
    m = max(1, round(bandwidth * n))
    var_c = -contrib[order[max(0, k - m) : k + m + 1]].mean(axis=0)
    return var_c * (var[0] / var_c.sum()), es_c * (es[0] / es_c.sum())


@pytest.mark.parametrize("n", [20000, 2001, 150])
def test_multi_level_partial_sort_matches_full_sort(rng, n):
    r = rng.standard_t(4, size=(n, 4)) * [0.01, 0.02, 0.015, 0.03]
    w = np.array([0.4, 0.3, 0.2, 0.1])
    levels = (0.95, 0.975, 0.99)
    var_c, es_c = euler_contributions_multi(r, w, levels)
    assert var_c.shape == es_c.shape == (3, 4)
    for i, level in enumerate(levels):
        ov, oe = _full_sort_oracle(r, w, level)
        np.testing.assert_allclose(var_c[i], ov, rtol=1e-9)
        np.testing.assert_allclose(es_c[i], oe, rtol=1e-9)
