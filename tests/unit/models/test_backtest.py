"""Tests of models.backtest (and models.scoring_tests, re-exported by it).

Oracles: arithmetic written out by hand, scipy.stats (binomial log-pmf, G-test
of a contingency table), statsmodels (logit likelihood ratio, HAC standard
errors) and brute-force loops.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from models.backtest import (
    Z2_CRITICAL_VALUES,
    BacktestSummary,
    TestResult,
    acerbi_szekely_z2,
    acerbi_szekely_z2_test,
    christoffersen_conditional_coverage,
    christoffersen_independence,
    default_hac_lag,
    diebold_mariano,
    fz0_loss,
    fz0_losses,
    hits,
    kupiec_pof,
    pinball_loss,
    pinball_losses,
    rolling_traffic_light,
    score,
    traffic_light,
    traffic_light_thresholds,
    traffic_light_zones,
    transition_counts,
)
from models.measures import var_es_normal


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


def normal_forecasts(sigma: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """VaR and ES of N(0, sigma_t^2) for each day."""
    var1, es1 = var_es_normal(0.0, 1.0, [level])
    return sigma * var1[0], sigma * es1[0]


# ------------------------------------------------------------------ hits


def test_hits_is_strict_loss_beyond_var() -> None:
    realized = np.array([-0.03, -0.02, 0.05, -0.0200001])
    var = np.array([0.02, 0.02, 0.02, 0.02])
    assert hits(realized, var).tolist() == [True, False, False, True]


@pytest.mark.parametrize(
    ("realized", "var", "match"),
    [
        ([0.0, 0.1], [0.1], "shapes must match"),
        ([0.0, np.nan], [0.1, 0.1], "realized must be finite"),
        ([0.0, 0.1], [0.1, np.inf], "var must be finite"),
        ([[0.0, 0.1]], [[0.1, 0.1]], "must be 1-d"),
    ],
)
def test_hits_rejects_bad_input(realized, var, match) -> None:
    with pytest.raises(ValueError, match=match):
        hits(realized, var)


# ------------------------------------------------------------------ Kupiec


def test_kupiec_hand_computed_5_in_250_at_99() -> None:
    # LR = -2 ln[(0.99^245 0.01^5) / ((1 - 0.02)^245 0.02^5)], x/n = 5/250 = 0.02
    lr = -2.0 * (
        245 * math.log(0.99) + 5 * math.log(0.01) - 245 * math.log(0.98) - 5 * math.log(0.02)
    )
    r = kupiec_pof(5, 250, 0.99)
    assert r.statistic == pytest.approx(lr, rel=1e-12)
    assert r.statistic == pytest.approx(1.9568, abs=1e-4)
    assert r.pvalue == pytest.approx(stats.chi2.sf(lr, 1), rel=1e-12)
    assert (r.n_obs, r.n_exceptions, r.df) == (250, 5, 1)


def test_kupiec_zero_and_all_exceptions_use_x_log_x_limit() -> None:
    # x = 0: the unrestricted likelihood is 1^n, so LR = -2 n ln(1 - p)
    r0 = kupiec_pof(0, 250, 0.99)
    assert r0.statistic == pytest.approx(-2 * 250 * math.log(0.99), rel=1e-12)
    assert r0.pvalue == pytest.approx(stats.chi2.sf(5.025167926, 1), rel=1e-8)
    # x = n: LR = -2 n ln p
    rn = kupiec_pof(20, 20, 0.95)
    assert rn.statistic == pytest.approx(-2 * 20 * math.log(0.05), rel=1e-12)
    assert 0.0 <= rn.pvalue < 1e-20
    # x = n p exactly: LR = 0, p = 1
    assert kupiec_pof(10, 1000, 0.99).statistic == pytest.approx(0.0, abs=1e-10)
    assert kupiec_pof(10, 1000, 0.99).pvalue == pytest.approx(1.0)


@pytest.mark.parametrize("n_obs", [1, 50, 250, 1000])
@pytest.mark.parametrize("level", [0.95, 0.975, 0.99])
def test_kupiec_matches_binomial_likelihood_ratio(n_obs: int, level: float) -> None:
    # Independent oracle: the binomial coefficients cancel in the LR.
    p = 1.0 - level
    for x in sorted({*range(0, min(n_obs, 60) + 1), *range(0, n_obs + 1, 37), n_obs}):
        lr = 2.0 * (stats.binom.logpmf(x, n_obs, x / n_obs) - stats.binom.logpmf(x, n_obs, p))
        r = kupiec_pof(x, n_obs, level)
        assert r.statistic == pytest.approx(max(lr, 0.0), rel=1e-9, abs=1e-9)
        assert r.pvalue == pytest.approx(stats.chi2.sf(max(lr, 0.0), 1), rel=1e-7, abs=1e-300)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((5, 250, 1.0), "level must lie"),
        ((5, 250, 0.0), "level must lie"),
        ((5, 250, -0.5), "level must lie"),
        ((251, 250, 0.99), "n_exceptions must lie"),
        ((-1, 250, 0.99), "n_exceptions must lie"),
        ((0, 0, 0.99), "n_obs must be >= 1"),
        ((2.5, 250, 0.99), "integers"),
    ],
)
def test_kupiec_rejects_bad_input(args, match) -> None:
    with pytest.raises(ValueError, match=match):
        kupiec_pof(*args)


# ------------------------------------------------------------------ Christoffersen

HAND_SEQ = [0, 0, 1, 1, 0, 1, 0, 0, 0, 1]


def test_transition_counts_hand_sequence() -> None:
    # pairs: 00 01 11 10 01 10 00 00 01 -> n00=3, n01=3, n10=2, n11=1
    assert transition_counts(HAND_SEQ) == (3, 3, 2, 1)
    assert transition_counts([True, True]) == (0, 0, 0, 1)
    with pytest.raises(ValueError, match="at least 2"):
        transition_counts([1])


def test_christoffersen_independence_hand_computed() -> None:
    # pi01 = 3/6, pi11 = 1/3, pooled pi = 4/9 over 9 transitions
    log_l0 = 5 * math.log(5 / 9) + 4 * math.log(4 / 9)
    log_l1 = 3 * math.log(0.5) + 3 * math.log(0.5) + 2 * math.log(2 / 3) + math.log(1 / 3)
    lr = -2 * (log_l0 - log_l1)
    r = christoffersen_independence(HAND_SEQ)
    assert r.statistic == pytest.approx(lr, rel=1e-12)
    assert r.pvalue == pytest.approx(stats.chi2.sf(lr, 1), rel=1e-12)
    assert r.transitions == (3, 3, 2, 1)
    assert (r.n_obs, r.n_exceptions, r.df) == (10, 4, 1)


def test_christoffersen_cc_hand_computed() -> None:
    lr_pof = -2 * (6 * math.log(0.95) + 4 * math.log(0.05) - 6 * math.log(0.6) - 4 * math.log(0.4))
    lr_ind = christoffersen_independence(HAND_SEQ).statistic
    r = christoffersen_conditional_coverage(HAND_SEQ, 0.95)
    assert r.statistic == pytest.approx(lr_pof + lr_ind, rel=1e-12)
    assert r.pvalue == pytest.approx(stats.chi2.sf(lr_pof + lr_ind, 2), rel=1e-12)
    assert r.df == 2


def test_christoffersen_independence_is_the_g_test_of_the_transition_table(rng) -> None:
    for p in (0.05, 0.2, 0.5):
        h = rng.random(400) < p
        n00, n01, n10, n11 = transition_counts(h)
        g, pval, dof, _ = stats.chi2_contingency(
            [[n00, n01], [n10, n11]], correction=False, lambda_="log-likelihood"
        )
        r = christoffersen_independence(h)
        assert dof == 1
        assert r.statistic == pytest.approx(g, rel=1e-10)
        assert r.pvalue == pytest.approx(pval, rel=1e-8)


def test_christoffersen_matches_statsmodels_logit_likelihood_ratio(rng) -> None:
    # LR_ind is the LR of a logit of hit_t on hit_{t-1} against a constant.
    h = (rng.random(1000) < 0.1).astype(float)
    h[500:520] = 1.0  # a cluster, so the test has something to find
    res = sm.Logit(h[1:], sm.add_constant(h[:-1])).fit(disp=0)
    r = christoffersen_independence(h)
    assert r.statistic == pytest.approx(res.llr, rel=1e-6)
    assert r.pvalue == pytest.approx(res.llr_pvalue, rel=1e-5)
    assert r.pvalue < 0.01
    cc = christoffersen_conditional_coverage(h, 0.9)
    lr_pof = 2 * (
        stats.binom.logpmf(h.sum(), h.size, h.mean()) - stats.binom.logpmf(h.sum(), h.size, 0.1)
    )
    assert cc.statistic == pytest.approx(lr_pof + res.llr, rel=1e-6)
    assert cc.pvalue == pytest.approx(stats.chi2.sf(lr_pof + res.llr, 2), rel=1e-5)


@pytest.mark.parametrize(
    ("seq", "expected_lr"),
    [
        ([0] * 10, 0.0),  # no exception at all
        ([1] * 10, 0.0),  # only exceptions
        ([0] * 9 + [1], 0.0),  # single exception on the last day: row 1 empty
        ([1] + [0] * 9, 0.0),  # n11 = 0, n10 = 1, n01 = 0: pooled pi01 = 0 = pi
        # alternating: n01 = n10 = 5... pi01 = 1, pi11 = 0 (n00 = n11 = 0)
        ([0, 1] * 5, -2 * (4 * math.log(4 / 9) + 5 * math.log(5 / 9))),
    ],
)
def test_christoffersen_zero_cells(seq, expected_lr) -> None:
    r = christoffersen_independence(seq)
    assert r.statistic == pytest.approx(expected_lr, abs=1e-12)
    assert 0.0 <= r.pvalue <= 1.0
    assert math.isfinite(christoffersen_conditional_coverage(seq, 0.99).statistic)


def test_christoffersen_rejects_non_binary() -> None:
    with pytest.raises(ValueError, match="booleans or 0/1"):
        christoffersen_independence([0, 1, 2])
    with pytest.raises(ValueError, match="level must lie"):
        christoffersen_conditional_coverage([0, 1], 1.5)


@settings(max_examples=200, deadline=None)
@given(
    seq=st.lists(st.booleans(), min_size=2, max_size=300),
    level=st.floats(min_value=1e-4, max_value=1 - 1e-4),
)
def test_pvalues_in_unit_interval_for_any_hit_sequence(seq, level) -> None:
    h = np.array(seq)
    for r in (
        kupiec_pof(int(h.sum()), h.size, level),
        christoffersen_independence(h),
        christoffersen_conditional_coverage(h, level),
    ):
        assert 0.0 <= r.pvalue <= 1.0
        assert r.statistic >= 0.0
    assert traffic_light(int(h.sum()), h.size, level) in ("green", "yellow", "red")


@settings(max_examples=100, deadline=None)
@given(
    a=st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=60),
    shift=st.floats(-10, 10),
    noise=st.floats(0, 1),
)
def test_dm_pvalues_in_unit_interval(a, shift, noise) -> None:
    la = np.array(a)
    lb = la + shift + noise * np.sin(np.arange(la.size))
    r = diebold_mariano(la, lb)
    assert 0.0 <= r.pvalue <= 1.0
    assert r.pvalue_less is not None and 0.0 <= r.pvalue_less <= 1.0


# ------------------------------------------------------------------ traffic light


def test_traffic_light_basel_table_99_250() -> None:
    expected = ["green"] * 5 + ["yellow"] * 5 + ["red"] * 3  # 0..4, 5..9, 10..12
    assert [traffic_light(k, 250, 0.99) for k in range(13)] == expected
    assert traffic_light_thresholds(250, 0.99) == (4, 9)
    # The Basel table's cumulative probabilities (1996, Table 2) at the zone edges.
    cdf = stats.binom.cdf([4, 5, 9, 10], 250, 0.01)
    assert np.round(100 * cdf, 2).tolist() == [89.22, 95.88, 99.97, 99.99]


@pytest.mark.parametrize(
    ("n_obs", "level"), [(500, 0.99), (120, 0.99), (250, 0.95), (30, 0.975), (3, 0.99)]
)
def test_traffic_light_thresholds_match_exact_binomial_sums(n_obs: int, level: float) -> None:
    # Brute force with exact integer binomial coefficients (no scipy).
    p = 1.0 - level
    cum, green_max, yellow_max = 0.0, 0, 0  # 0 exceptions is green by convention
    for k in range(n_obs + 1):
        cum += math.comb(n_obs, k) * p**k * (1 - p) ** (n_obs - k)
        if cum < 0.95:
            green_max = k
        if cum < 0.9999:
            yellow_max = k
    assert traffic_light_thresholds(n_obs, level) == (green_max, yellow_max)


def test_traffic_light_zero_exceptions_always_green() -> None:
    # Literal rule: 3 days at 99 % give P(X <= 0) = 0.970 >= 95 %, i.e. "yellow" for 0
    # exceptions; the engine keeps 0 green and leaves the other edges as they are.
    assert stats.binom.cdf(0, 3, 0.01) >= 0.95
    assert traffic_light_thresholds(3, 0.99) == (0, 1)  # P(X <= 1) = 0.99970 < 99.99 %
    assert [traffic_light(k, 3, 0.99) for k in range(4)] == ["green", "yellow", "red", "red"]
    assert traffic_light_thresholds(5, 0.99) == (0, 1)  # P(X<=0)=0.951, P(X<=1)=0.99902
    assert traffic_light_thresholds(6, 0.99) == (0, 1)  # P(X<=0)=0.941 < 95 %: rule itself


def test_traffic_light_boundary_probability_leaves_the_zone() -> None:
    # One day at 99.99 %: P(X <= 0) = 0.9999 exactly, not < 99.99 %, so 1 exception is red.
    assert stats.binom.cdf(0, 1, 1 - 0.9999) == 0.9999
    assert traffic_light_thresholds(1, 0.9999) == (0, 0)
    assert traffic_light(1, 1, 0.9999) == "red"


def test_traffic_light_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="n_exceptions must lie"):
        traffic_light(251, 250)
    with pytest.raises(ValueError, match="level must lie"):
        traffic_light(3, 250, 99.0)
    with pytest.raises(ValueError, match="n_obs must be"):
        traffic_light_thresholds(0, 0.99)


def test_traffic_light_zones_per_calendar_year() -> None:
    dates = np.concatenate(
        [
            np.arange("2019-01-01", "2019-12-31", dtype="datetime64[D]")[:250],
            np.arange("2020-01-01", "2020-12-31", dtype="datetime64[D]")[:250],
            np.arange("2021-01-01", "2021-12-31", dtype="datetime64[D]")[:100],
        ]
    )
    h = np.zeros(600, dtype=bool)
    h[[0, 1, 2, 3]] = True  # 2019: 4 -> green
    h[250:260] = True  # 2020: 10 -> red
    h[[500, 510, 520]] = True  # 2021: 3 in 100 at 99 %
    zones = traffic_light_zones(dates, h, 0.99)
    # 3 in 100: P(X <= 2) = 0.9206 < 0.95, P(X <= 3) = 0.9816 -> yellow
    assert stats.binom.cdf(2, 100, 0.01) < 0.95 <= stats.binom.cdf(3, 100, 0.01)
    assert [tuple(z) for z in zones] == [
        (2019, 250, 4, "green"),
        (2020, 250, 10, "red"),
        (2021, 100, 3, "yellow"),
    ]
    with pytest.raises(ValueError, match="shapes must match"):
        traffic_light_zones(dates[:-1], h)


def test_rolling_traffic_light_matches_a_loop(rng) -> None:
    h = rng.random(700) < 0.02
    h[300:312] = True
    window = 250
    zones = rolling_traffic_light(h, 0.99, window)
    assert all(z is None for z in zones[: window - 1])
    for t in range(window - 1, h.size):
        assert zones[t] == traffic_light(int(h[t - window + 1 : t + 1].sum()), window, 0.99)
    assert set(zones[window - 1 :]) == {"green", "yellow", "red"}
    partial = rolling_traffic_light(h, 0.99, window, min_periods=50)
    assert partial[48] is None
    for t in range(49, window):
        assert partial[t] == traffic_light(int(h[: t + 1].sum()), t + 1, 0.99)
    assert partial[window:].tolist() == zones[window:].tolist()


# ------------------------------------------------------------------ Acerbi-Szekely Z2


def test_z2_hand_computed() -> None:
    # level 0.8, alpha 0.2, T 5; hits on days 0 (-0.05 < -0.03) and 3 (-0.04 < -0.035)
    realized = np.array([-0.05, 0.01, -0.02, -0.04, 0.02])
    var = np.array([0.03, 0.03, 0.03, 0.035, 0.03])
    es = np.array([0.04, 0.04, 0.04, 0.05, 0.04])
    expected = (-0.05 / 0.04 + -0.04 / 0.05) / (5 * 0.2) + 1  # = -1.05
    assert acerbi_szekely_z2(realized, var, es, 0.8) == pytest.approx(expected, rel=1e-12)
    assert acerbi_szekely_z2(realized, var, es, 0.8) == pytest.approx(-1.05, rel=1e-12)
    # no exception at all: Z2 = 1
    assert acerbi_szekely_z2([0.01, 0.02], [0.03, 0.03], [0.04, 0.04], 0.975) == 1.0


def test_z2_critical_values_from_the_paper() -> None:
    assert Z2_CRITICAL_VALUES == {0.05: -0.70, 0.0001: -1.8}


def test_z2_is_zero_in_expectation_under_the_true_model(rng) -> None:
    # 400 backtests of 250 days each, heteroscedastic normal returns, exact forecasts.
    n_rep, n_days, level = 400, 250, 0.975
    sigma = 0.01 * np.exp(0.5 * np.sin(np.arange(n_days) / 20.0))
    var, es = normal_forecasts(sigma, level)
    y = rng.standard_normal((n_rep, n_days)) * sigma
    z2 = np.array([acerbi_szekely_z2(y[i], var, es, level) for i in range(n_rep)])
    # sd of one Z2 ~ 0.4 here, so the mean of 400 has sd ~ 0.02
    assert abs(z2.mean()) < 0.06
    # and the 5 % critical value rejects about 5 % of the true-model backtests
    assert 0.01 < np.mean(z2 < Z2_CRITICAL_VALUES[0.05]) < 0.10


def test_z2_negative_when_es_underestimated(rng) -> None:
    n, level = 100_000, 0.975
    sigma = np.full(n, 0.01)
    var, es = normal_forecasts(sigma, level)
    y = rng.standard_normal(n) * sigma
    # Scaling ES by 0.8 only rescales the sum: Z2 -> 1 - 1/0.8 = -0.25 in expectation.
    assert acerbi_szekely_z2(y, var, 0.8 * es, level) == pytest.approx(-0.25, abs=0.05)
    # Truth with 1.5 times the forecast volatility: E[Z2] = 1 + E[X 1{X < -VaR}] / (alpha ES)
    # by quadrature under N(0, 1.5^2) (about -3.36): far below the 0.01 % critical value.
    var1, es1 = (float(a[0]) for a in var_es_normal(0.0, 1.0, [level]))
    tail = integrate.quad(lambda x: x * stats.norm.pdf(x, scale=1.5), -np.inf, -var1)[0]
    expected = 1.0 + tail / ((1.0 - level) * es1)
    z2_wide = acerbi_szekely_z2(1.5 * y, var, es, level)
    assert z2_wide == pytest.approx(expected, abs=0.1)
    assert z2_wide < Z2_CRITICAL_VALUES[0.0001]
    # Fat tails at equal variance (standardised Student t, 3 df): mildly negative, about
    # -0.125 by quadrature; 97.5 % ES was chosen to be close to 99 % VaR, so only slightly.
    t3 = stats.t.rvs(3, size=n, random_state=rng) / math.sqrt(3.0) * sigma
    s3 = math.sqrt(3.0)
    tail3 = integrate.quad(lambda x: x * stats.t.pdf(x * s3, 3) * s3, -np.inf, -var1)[0]
    expected3 = 1.0 + tail3 / ((1.0 - level) * es1)
    assert expected3 < -0.1
    assert acerbi_szekely_z2(t3, var, es, level) == pytest.approx(expected3, abs=0.06)


def test_z2_simulated_pvalue(rng) -> None:
    n_days, n_sims, level = 250, 2000, 0.975
    sigma = np.full(n_days, 0.01)
    var, es = normal_forecasts(sigma, level)
    sims = rng.standard_normal((n_sims, n_days)) * sigma
    y_true = rng.standard_normal(n_days) * sigma
    y_bad = y_true * 2.0  # risk underestimated by half
    good = acerbi_szekely_z2_test(y_true, var, es, level, sims)
    bad = acerbi_szekely_z2_test(y_bad, var, es, level, sims)
    assert good.statistic == pytest.approx(acerbi_szekely_z2(y_true, var, es, level))
    assert good.pvalue > 0.05
    assert bad.pvalue < 0.01
    assert bad.pvalue >= 1.0 / (n_sims + 1)
    with pytest.raises(ValueError, match="simulated must have shape"):
        acerbi_szekely_z2_test(y_true, var, es, level, sims[:, :-1])


def test_z2_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="es must be > 0"):
        acerbi_szekely_z2([0.0, 0.0], [0.01, 0.01], [0.02, 0.0], 0.975)
    with pytest.raises(ValueError, match="shapes must match"):
        acerbi_szekely_z2([0.0, 0.0], [0.01, 0.01], [0.02], 0.975)
    with pytest.raises(ValueError, match="level must lie"):
        acerbi_szekely_z2([0.0], [0.01], [0.02], 1.0)


# ------------------------------------------------------------------ pinball


def test_pinball_against_direct_formula(rng) -> None:
    n, level = 1000, 0.99
    y = rng.standard_normal(n) * 0.01
    var = np.abs(rng.standard_normal(n)) * 0.02 + 0.005
    q, alpha = -var, 1.0 - level
    direct = np.where(y >= q, alpha * (y - q), (1.0 - alpha) * (q - y))
    np.testing.assert_allclose(pinball_losses(y, var, level), direct, rtol=1e-12)
    assert pinball_loss(y, var, level) == pytest.approx(direct.mean(), rel=1e-12)
    assert np.all(pinball_losses(y, var, level) >= 0)


def test_pinball_minimised_by_the_true_quantile(rng) -> None:
    n, level = 200_000, 0.95
    y = rng.standard_normal(n)
    true_var = -stats.norm.ppf(1.0 - level)  # 1.645
    grid = true_var * np.linspace(0.8, 1.2, 41)
    losses = [pinball_loss(y, np.full(n, v), level) for v in grid]
    assert grid[int(np.argmin(losses))] == pytest.approx(true_var, rel=0.02)
    at_true = pinball_loss(y, np.full(n, true_var), level)
    for factor in (0.9, 1.1):
        assert at_true < pinball_loss(y, np.full(n, factor * true_var), level)


# ------------------------------------------------------------------ FZ0


def fz_general(y, v, e, alpha, g1, g2, zeta2):
    """Patton-Ziegel-Chen general FZ loss (their eq. 3.1) with a(y) = 0."""
    ind = (y <= v).astype(float)
    return (ind - alpha) * (g1(v) - g1(y)) + g2(e) * (e - v + ind * (v - y) / alpha) - zeta2(e)


def test_fz0_against_the_general_fz_family(rng) -> None:
    # FZ0: G1 = 0, G2(e) = -1/e, zeta2(e) = -log(-e)
    n, level = 1000, 0.975
    y = rng.standard_normal(n) * 0.01
    var = np.abs(rng.standard_normal(n)) * 0.01 + 0.01
    es = var * (1.0 + rng.random(n))
    alpha, v, e = 1.0 - level, -var, -es
    expected = fz_general(
        y, v, e, alpha, lambda x: 0.0 * x, lambda x: -1.0 / x, lambda x: -np.log(-x)
    )
    direct = -((y <= v) * (v - y)) / (alpha * e) + v / e + np.log(-e) - 1.0
    np.testing.assert_allclose(fz0_losses(y, var, es, level), expected, rtol=1e-12)
    np.testing.assert_allclose(fz0_losses(y, var, es, level), direct, rtol=1e-12)
    assert fz0_loss(y, var, es, level) == pytest.approx(expected.mean(), rel=1e-12)


def test_fz0_minimised_by_the_true_var_and_es(rng) -> None:
    n, level = 300_000, 0.975
    y = rng.standard_normal(n)
    var0, es0 = (float(a[0]) for a in var_es_normal(0.0, 1.0, [level]))

    def loss(v: float, e: float) -> float:
        return fz0_loss(y, np.full(n, v), np.full(n, e), level)

    at_true = loss(var0, es0)
    for v, e in [
        (var0, 1.1 * es0),
        (var0, 0.95 * es0),
        (1.1 * var0, 1.1 * es0),
        (0.9 * var0, es0),
        (0.9 * var0, 0.9 * es0),
    ]:
        assert at_true < loss(v, e), (v, e)
    # A fine grid through the same formula, fast with sorted draws and prefix sums:
    # sum_{y <= v} (v - y) = k v - S_k with k = #{y <= v}, S_k the sum of those y.
    ys = np.sort(y)
    prefix = np.concatenate([[0.0], np.cumsum(ys)])

    def fast(v_pos: float, e_pos: float) -> float:
        v, e = -v_pos, -e_pos
        k = int(np.searchsorted(ys, v, side="right"))
        tail_mean = (k * v - prefix[k]) / n
        return -tail_mean / ((1 - level) * e) + v / e + math.log(-e) - 1.0

    assert fast(var0, es0) == pytest.approx(at_true, rel=1e-9)
    assert fast(0.9 * var0, es0) == pytest.approx(loss(0.9 * var0, es0), rel=1e-9)
    vs = var0 * np.linspace(0.85, 1.15, 61)
    es_grid = es0 * np.linspace(0.85, 1.15, 61)
    table = np.array([[fast(v, e) if e >= v else np.inf for e in es_grid] for v in vs])
    i, j = np.unravel_index(np.argmin(table), table.shape)
    assert vs[i] == pytest.approx(var0, rel=0.03)
    assert es_grid[j] == pytest.approx(es0, rel=0.03)


def test_fz0_rejects_inconsistent_forecasts() -> None:
    with pytest.raises(ValueError, match="es must be >= var"):
        fz0_losses([0.0], [0.03], [0.02], 0.975)
    with pytest.raises(ValueError, match="es must be > 0"):
        fz0_losses([0.0], [-0.01], [0.0], 0.975)


# ------------------------------------------------------------------ Diebold-Mariano


def ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    x = np.empty(n)
    x[0] = rng.standard_normal()
    for t in range(1, n):
        x[t] = phi * x[t - 1] + rng.standard_normal()
    return x


@pytest.mark.parametrize("max_lag", [None, 0, 1, 10])
def test_dm_matches_statsmodels_hac(rng, max_lag) -> None:
    n = 500
    loss_b = rng.standard_normal(n) ** 2
    loss_a = loss_b + 0.1 + 0.5 * ar1(rng, n, 0.6)
    d = loss_a - loss_b
    lag = default_hac_lag(n) if max_lag is None else max_lag
    ols = sm.OLS(d, np.ones(n)).fit(
        cov_type="HAC", cov_kwds={"maxlags": lag, "use_correction": False}
    )
    r = diebold_mariano(loss_a, loss_b, max_lag=max_lag)
    assert r.statistic == pytest.approx(ols.tvalues[0], rel=1e-10)
    assert r.pvalue == pytest.approx(2 * stats.norm.sf(abs(ols.tvalues[0])), rel=1e-10)
    assert r.pvalue_less == pytest.approx(stats.norm.cdf(ols.tvalues[0]), rel=1e-10)
    from statsmodels.stats.sandwich_covariance import cov_hac

    se = math.sqrt(cov_hac(sm.OLS(d, np.ones(n)).fit(), nlags=lag, use_correction=False)[0, 0])
    assert r.statistic == pytest.approx(d.mean() / se, rel=1e-10)


def test_dm_default_lag_and_horizon(rng) -> None:
    assert default_hac_lag(100) == 4  # floor(4 * 1)
    assert default_hac_lag(250) == math.floor(4 * 2.5 ** (2 / 9))  # 4
    assert default_hac_lag(10_000) == math.floor(4 * 100 ** (2 / 9))  # 11
    assert default_hac_lag(250, h=10) == 9
    a, b = rng.standard_normal(250), rng.standard_normal(250)
    ols = sm.OLS(a - b, np.ones(250)).fit(
        cov_type="HAC", cov_kwds={"maxlags": 9, "use_correction": False}
    )
    assert diebold_mariano(a, b, h=10).statistic == pytest.approx(ols.tvalues[0], rel=1e-10)


def test_dm_one_sided_direction(rng) -> None:
    b = rng.standard_normal(1000) ** 2
    a = 0.5 * b  # A clearly better
    r = diebold_mariano(a, b)
    assert r.statistic < 0
    assert r.pvalue_less < 1e-6 and r.pvalue < 1e-6
    assert diebold_mariano(b, a).pvalue_less > 1 - 1e-6


def test_dm_zero_variance() -> None:
    same = diebold_mariano([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert (same.statistic, same.pvalue, same.pvalue_less) == (0.0, 1.0, 0.5)
    shifted = diebold_mariano([0.1, 0.2, 0.3, 0.4], [0.2, 0.3, 0.4, 0.5])
    assert shifted.statistic == -np.inf and shifted.pvalue == 0.0 and shifted.pvalue_less == 0.0
    worse = diebold_mariano([0.3, 0.3], [0.1, 0.1])
    assert worse.statistic == np.inf and worse.pvalue_less == 1.0


def test_dm_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="shapes must match"):
        diebold_mariano([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="max_lag must lie"):
        diebold_mariano([1.0, 2.0], [1.0, 3.0], max_lag=2)
    with pytest.raises(ValueError, match="h must be"):
        diebold_mariano([1.0, 2.0], [1.0, 3.0], h=0)
    with pytest.raises(ValueError, match="loss_a must be finite"):
        diebold_mariano([1.0, np.nan], [1.0, 3.0])


# ------------------------------------------------------------------ score / summary


@pytest.fixture
def table(rng):
    levels = (0.95, 0.975, 0.99)
    n = 800
    dates = np.busday_offset("2019-01-01", np.arange(n), roll="forward")
    sigma = 0.01 * np.exp(0.3 * np.sin(np.arange(n) / 30.0))
    realized = rng.standard_t(4, n) * sigma * 0.8
    var = np.column_stack([normal_forecasts(sigma, a)[0] for a in levels])
    es = np.column_stack([normal_forecasts(sigma, a)[1] for a in levels])
    var[:20] = np.nan  # warm-up: no forecast
    es[:20] = np.nan
    es[100, 1] = np.nan  # one missing ES at one level drops the whole row
    realized[300] = np.nan  # a missing return
    return realized, var, es, levels, dates


def test_score_matches_direct_calls_and_skips_nan_rows(table) -> None:
    realized, var, es, levels, dates = table
    before = [a.copy() for a in (realized, var, es)]
    s = score(realized, var, es, levels, dates)
    for a, b in zip(before, (realized, var, es), strict=True):
        np.testing.assert_array_equal(a, b)  # inputs untouched
    keep = np.ones(800, dtype=bool)
    keep[:20] = keep[100] = keep[300] = False
    assert (s.n_obs, s.n_skipped) == (778, 22)
    y = realized[keep]
    for j, level in enumerate(levels):
        v, e = var[keep, j], es[keep, j]
        h = y < -v
        ls = s.at(level)
        assert ls.n_obs == 778 and ls.n_exceptions == int(h.sum())
        assert ls.exception_rate == pytest.approx(h.mean())
        assert ls.kupiec == kupiec_pof(int(h.sum()), 778, level)
        assert ls.christoffersen_ind == christoffersen_independence(h)
        assert ls.christoffersen_cc == christoffersen_conditional_coverage(h, level)
        assert ls.traffic_light == traffic_light(int(h[-250:].sum()), 250, level)
        assert ls.pinball == pytest.approx(pinball_loss(y, v, level))
        assert ls.fz0 == pytest.approx(fz0_loss(y, v, e, level))
        assert ls.z2 == pytest.approx(acerbi_szekely_z2(y, v, e, level))
    years = traffic_light_zones(dates[keep], y < -var[keep, 2], 0.99)
    assert list(s.yearly_zones) == years
    assert [z.year for z in years] == [2019, 2020, 2021, 2022]
    assert sum(z.n_obs for z in years) == 778


def test_score_to_dict_is_flat(table) -> None:
    realized, var, es, levels, dates = table
    s = score(realized, var, es, levels, dates)
    d = s.to_dict()
    assert d["n_obs"] == 778 and d["n_skipped"] == 22
    assert d["kupiec_pvalue_99"] == s.at(0.99).kupiec.pvalue
    assert d["z2_97.5"] == s.at(0.975).z2
    assert d["z2_reject_5pct_97.5"] == (s.at(0.975).z2 < -0.70)
    assert d["fz0_95"] == s.at(0.95).fz0
    assert d["traffic_light_99"] in ("green", "yellow", "red")
    assert d["year_2020_zone"] == s.yearly_zones[1].zone
    assert all(isinstance(v, (int, float, str, bool, type(None))) for v in d.values())
    assert isinstance(s, BacktestSummary)


def test_score_without_es_or_dates(table) -> None:
    realized, var, _, levels, _ = table
    s = score(realized, var, None, levels)
    assert s.n_skipped == 21  # row 100 is only missing ES, kept now
    assert s.yearly_zones == ()
    assert s.at(0.99).z2 is None and s.at(0.99).fz0 is None
    assert s.to_dict()["z2_99"] is None
    with pytest.raises(ValueError, match="not scored"):
        s.at(0.9)


def test_score_rejects_bad_input(table) -> None:
    realized, var, es, levels, dates = table
    with pytest.raises(ValueError, match=r"var must have shape"):
        score(realized, var[:, :2], es, levels)
    with pytest.raises(ValueError, match=r"es must have shape"):
        score(realized, var, es[:-1], levels)
    with pytest.raises(ValueError, match="level must lie"):
        score(realized, var, es, (0.95, 0.975, 99.0))
    with pytest.raises(ValueError, match="distinct"):
        score(realized, var, es, (0.95, 0.95, 0.99))
    with pytest.raises(ValueError, match="at least 2 rows"):
        score(realized[:21], var[:21], es[:21], levels)
    with pytest.raises(ValueError, match="dates must have shape"):
        score(realized, var, es, levels, dates[:-1])
    bad = var.copy()
    bad[500, 0] = np.inf
    with pytest.raises(ValueError, match="var must be finite"):
        score(realized, bad, es, levels)


def test_test_result_is_frozen() -> None:
    r = TestResult(1.0, 0.5, n_obs=10)
    with pytest.raises(AttributeError):
        r.pvalue = 0.1  # type: ignore[misc]
