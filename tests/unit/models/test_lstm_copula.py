"""LstmCopula: streaming contract, Monte Carlo oracles, contributions, quantile table, and the
copula nu refit spread over several updates."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from scipy import optimize, special, stats

from models.base import LEVELS
from models.copula import StudentTCopula, clip_uniform, t_copula_loglik
from models.exceptions import NotEnoughObservations
from models.lstm_copula import (
    CopulaNuRefit,
    LstmCopula,
    PitScaleCorrection,
    QuantileTable,
    recalibrated_tail_probability,
    tail_var_es,
)
from models.lstm_marginals import LstmArtifact, LstmMarginals, MarginalConfig, split_t_cdf
from models.measures import var_es_from_samples

TINY = MarginalConfig(window=10, hidden_size=5, head_size=5, burn_in=4)
KW = dict(n_scenarios=2000, copula_window=40, copula_min_obs=20, refit_every=7)


def tiny_artifact(seed: int = 0) -> LstmArtifact:
    torch.manual_seed(seed)
    net = LstmMarginals(TINY)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    return LstmArtifact(TINY, net.numpy_weights(), "lstm_copula-test", {})


@pytest.fixture(scope="module")
def artifact() -> LstmArtifact:
    return tiny_artifact()


def returns(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    corr = 0.5 * np.eye(d) + 0.5
    z = rng.standard_normal((n, d)) @ np.linalg.cholesky(corr).T
    w = rng.chisquare(5, size=(n, 1)) / 5
    return 0.01 * z / np.sqrt(w)


def test_warm_up_raises_not_enough_observations(rng, artifact) -> None:
    m = LstmCopula(np.full(3, 1 / 3), artifact, **KW)
    assert m.min_obs == TINY.min_obs + KW["copula_min_obs"]
    x = returns(rng, m.min_obs, 3)
    for row in x[:-1]:
        m.update(row)
    with pytest.raises(NotEnoughObservations):
        m.predict()
    assert m.predict_or_none() is None
    m.update(x[-1])
    f = m.predict()
    assert np.all(f.es >= f.var) and np.all(np.diff(f.var) > 0)


def test_fit_equals_repeated_update_and_same_seed_same_output(rng, artifact) -> None:
    x = returns(rng, 70, 3)
    w = np.array([0.5, 0.3, 0.2])
    a = LstmCopula(w, artifact, seed=7, **KW).fit(x)
    b = LstmCopula(w, artifact, seed=7, **KW)
    for row in x:
        b.update(row)
    fa, fb = a.predict(), b.predict()
    np.testing.assert_array_equal(fa.var, fb.var)
    np.testing.assert_array_equal(fa.es, fb.es)
    # predict only reads: asking twice gives the same numbers
    np.testing.assert_array_equal(a.predict().var, fa.var)
    c = LstmCopula(w, artifact, seed=8, **KW).fit(x)
    assert not np.array_equal(c.predict().var, fa.var)
    # a refit after reset gives the same again
    np.testing.assert_array_equal(a.fit(x).predict().es, fa.es)


def test_pickle_mid_stream_gives_identical_next_forecast(rng, artifact) -> None:
    x = returns(rng, 80, 4)
    m = LstmCopula(np.full(4, 0.25), artifact, **KW)
    for row in x[:60]:
        m.update(row)
    m.predict()  # builds the table cache
    clone = pickle.loads(pickle.dumps(m))
    for row in x[60:]:
        m.update(row)
        clone.update(row)
        np.testing.assert_array_equal(m.predict().var, clone.predict().var)
        np.testing.assert_array_equal(m.predict().es, clone.predict().es)
    assert m.n_refits_ >= 3


def test_inputs_unchanged(rng, artifact) -> None:
    x = returns(rng, 50, 3)
    w = np.array([0.2, 0.3, 0.5])
    x0, w0 = x.copy(), w.copy()
    m = LstmCopula(w, artifact, **KW).fit(x)
    m.predict()
    m.contributions()
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)


def test_contributions_sum_to_totals(rng, artifact) -> None:
    x = returns(rng, 50, 3)
    m = LstmCopula(np.array([0.6, 0.3, 0.1]), artifact, **KW).fit(x)
    f = m.predict()
    c = m.contributions()
    assert c.var.shape == c.es.shape == (3, 3)
    np.testing.assert_allclose(c.var.sum(axis=1), f.var, rtol=1e-10)
    np.testing.assert_allclose(c.es.sum(axis=1), f.es, rtol=1e-10)


def test_scenarios_follow_marginal_and_copula_laws(rng, artifact) -> None:
    """Monte Carlo oracle: each column is loc + scale * t_nu; ranks carry the copula corr."""
    x = returns(rng, 60, 2)
    m = LstmCopula(np.array([0.5, 0.5]), artifact, **{**KW, "n_scenarios": 40000}).fit(x)
    sims = m.scenarios()
    loc, s_left, s_right, nu = m.marginal_law()
    for i in range(2):
        u = split_t_cdf(sims[:, i], loc[i], s_left[i], s_right[i], nu[i])
        assert stats.kstest(u, "uniform").pvalue > 1e-3
    tau = stats.kendalltau(sims[:, 0], sims[:, 1])[0]
    assert np.sin(np.pi * tau / 2) == pytest.approx(m.corr_[0, 1], abs=0.03)
    # portfolio VaR/ES equal those of the scenarios themselves (at the recalibrated levels)
    port = np.expm1(sims) @ m.weights
    var, es = var_es_from_samples(port, m.effective_levels())
    f = m.predict()
    np.testing.assert_allclose(f.var, var, rtol=1e-12)
    np.testing.assert_allclose(f.es, es, rtol=1e-10)


@pytest.mark.parametrize("d", [3, 30])
def test_one_artifact_serves_any_number_of_assets(rng, artifact, d) -> None:
    x = returns(rng, 40, d)
    m = LstmCopula(np.full(d, 1.0 / d), artifact, **KW).fit(x)
    f = m.predict()
    assert f.var.shape == (3,) and np.all(np.isfinite(f.es))
    assert m.corr_.shape == (d, d)


def test_validation_messages(artifact) -> None:
    w = np.ones(2) / 2
    with pytest.raises(ValueError, match="n_scenarios must be >= 100, got 10"):
        LstmCopula(w, artifact, n_scenarios=10)
    with pytest.raises(ValueError, match="copula_window must be >= copula_min_obs"):
        LstmCopula(w, artifact, copula_window=20, copula_min_obs=30)
    with pytest.raises(ValueError, match="refit_every"):
        LstmCopula(w, artifact, refit_every=0)
    with pytest.raises(TypeError, match="LstmArtifact"):
        LstmCopula(w, {"weights": 1})  # type: ignore[arg-type]
    m = LstmCopula(w, artifact, **KW)
    with pytest.raises(ValueError, match="shape"):
        m.update(np.zeros(3))


def test_quantile_table_against_stdtrit() -> None:
    nus = np.array([2.2, 3.0, 5.5, 12.0, 60.0])
    tab = QuantileTable(4.0, 2.2, 100.0)
    x = np.linspace(-40.0, 40.0, 4001)[:, None] * np.ones(nus.size)
    q = tab.score_map(nus)(x)
    u = special.stdtr(4.0, x)
    exact = special.stdtrit(nus, u)
    core = (u > 1e-6) & (u < 1 - 1e-6)
    rel = np.abs(q - exact) / np.maximum(np.abs(exact), 1e-2)
    assert rel[core].max() < 2e-3
    np.testing.assert_allclose(q[2000], 0.0, atol=1e-12)  # x = 0 maps to 0


def test_tail_var_es_equals_full_computation(rng) -> None:
    for n in (101, 2000, 20001):
        x = rng.standard_t(4, size=n)
        a, b = tail_var_es(x, LEVELS), var_es_from_samples(x, LEVELS)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1], rtol=1e-12)


# -- online PIT scale correction ---------------------------------------------------------------


def test_scale_correction_equals_batch_ewma_of_normal_scores(rng) -> None:
    """Oracle: v_T = lam^T + (1 - lam) sum_t lam^(T - t) z_t^2, pooled, sqrt, clipped."""
    n, d, hl = 60, 3, 7.0
    u = rng.uniform(size=(n, d))
    u[5, 1] = 0.0  # clipped to u_clip
    c = PitScaleCorrection(d, half_life=hl, bounds=(0.6, 1.8), pooling=0.25)
    for row in u:
        c.update(row)
    lam = 0.5 ** (1 / hl)
    z = stats.norm.ppf(np.clip(u, 1e-6, 1 - 1e-6))
    wts = (1 - lam) * lam ** np.arange(n - 1, -1, -1)
    v = lam**n + wts @ (z * z)
    np.testing.assert_allclose(c.v, v, rtol=1e-12)
    pooled = 0.75 * v + 0.25 * v.mean()
    np.testing.assert_allclose(c.multiplier, np.clip(np.sqrt(pooled), 0.6, 1.8), rtol=1e-12)


def test_scale_correction_near_one_when_calibrated_and_tracks_a_scale_jump(rng) -> None:
    c = PitScaleCorrection(4, half_life=10.0, bounds=(0.5, 3.0))
    mult = []
    for _ in range(4000):  # calibrated: PITs of the true law are uniform
        c.update(rng.uniform(size=4))
        mult.append(c.multiplier.copy())
    assert np.mean(mult) == pytest.approx(1.0, abs=0.03)
    for _ in range(60):  # returns now twice as large as predicted (normal model)
        c.update(stats.norm.cdf(2.0 * rng.standard_normal(4)))
    np.testing.assert_allclose(c.multiplier, 2.0, rtol=0.3)


def test_scale_correction_validation() -> None:
    with pytest.raises(ValueError, match=r"half_life must be a finite number > 0, got 0\.0"):
        PitScaleCorrection(2, half_life=0.0)
    with pytest.raises(ValueError, match="bounds must satisfy"):
        PitScaleCorrection(2, bounds=(1.2, 3.0))
    with pytest.raises(ValueError, match="pooling must lie in"):
        PitScaleCorrection(2, pooling=1.5)
    with pytest.raises(ValueError, match="bounds must satisfy"):
        LstmCopula(np.ones(2) / 2, tiny_artifact(), scale_bounds=(0.0, 2.0))


def test_corrected_law_is_network_law_times_multiplier(rng, artifact) -> None:
    x = returns(rng, 60, 3)
    w = np.full(3, 1 / 3)
    on = LstmCopula(w, artifact, scale_bounds=(0.5, 3.0), **KW).fit(x)
    off = LstmCopula(w, artifact, scale_half_life=None, **KW).fit(x)
    assert off.scale_ is None
    for a, b in zip(off.law_, off.net_law_, strict=True):
        np.testing.assert_array_equal(a, b)
    # the network's law does not depend on the correction
    for a, b in zip(on.net_law_, off.net_law_, strict=True):
        np.testing.assert_array_equal(a, b)
    m = on.scale_.multiplier
    assert not np.allclose(m, 1.0)
    loc, s_left, s_right, nu = on.marginal_law()
    np.testing.assert_array_equal(loc, off.law_[0])
    np.testing.assert_array_equal(nu, off.law_[3])
    np.testing.assert_allclose(s_left, m * off.law_[1], rtol=1e-14)
    np.testing.assert_allclose(s_right, m * off.law_[2], rtol=1e-14)
    # the correction is fed the network's own PITs, one vector per marginal forecast
    c = PitScaleCorrection(3, half_life=10.0)
    probe = LstmCopula(w, artifact, scale_half_life=None, **KW)
    for row in x:
        if probe.law_ is not None:
            c.update(split_t_cdf(row, *probe.law_))
        probe.update(row)
    np.testing.assert_allclose(on.scale_.v, c.v, rtol=1e-12)


def test_larger_scales_give_larger_var_after_a_shock(rng, artifact) -> None:
    x = returns(rng, 70, 3)
    x[-2:] *= 30.0  # a jump far beyond anything the network predicts
    w = np.full(3, 1 / 3)
    on = LstmCopula(w, artifact, **KW).fit(x)
    off = LstmCopula(w, artifact, scale_half_life=None, **KW).fit(x)
    assert np.all(on.scale_.multiplier > 1.1)
    assert np.all(on.predict().var > off.predict().var)


def test_state_pickled_before_the_correction_resumes_without_it(rng, artifact) -> None:
    x = returns(rng, 80, 3)
    w = np.full(3, 1 / 3)
    old = LstmCopula(w, artifact, scale_half_life=None, recal_window=None, **KW)
    for row in x[:50]:
        old.update(row)
    state = old.__getstate__()
    for key in (
        "scale_half_life",
        "scale_bounds",
        "scale_pooling",
        "scale_",
        "net_law_",
        "recal_window",
        "recal_prior",
        "port_pit_ring_",
        "n_port_pit_",
    ):
        del state[key]  # what an older version pickled
    resumed = LstmCopula.__new__(LstmCopula)
    resumed.__setstate__(pickle.loads(pickle.dumps(state)))
    assert resumed.scale_ is None
    for row in x[50:]:
        old.update(row)
        resumed.update(row)
    np.testing.assert_array_equal(resumed.predict().var, old.predict().var)


def test_default_correction_only_widens(rng) -> None:
    c = PitScaleCorrection(3)
    for _ in range(50):  # returns far smaller than predicted: PITs near 1/2
        c.update(0.5 + 0.01 * rng.uniform(-1, 1, size=3))
    assert np.all(c.v < 0.1)
    np.testing.assert_array_equal(c.multiplier, 1.0)


# -- online tail recalibration of the portfolio -------------------------------------------------


def test_recalibrated_tail_probability_hand_cases(rng) -> None:
    assert recalibrated_tail_probability(np.empty(0), 0.01) == 0.01  # nothing seen: nominal
    pits = np.r_[np.full(3, 0.001), np.full(197, 0.6)]  # k = 3, n a = 2 at a = 1 %
    assert recalibrated_tail_probability(pits, 0.01, prior=5.0) == pytest.approx(0.01 * 7 / 8)
    assert recalibrated_tail_probability(pits, 0.05, prior=20.0) == pytest.approx(0.05 * 30 / 23)
    assert recalibrated_tail_probability(pits, 0.05, prior=1.0) == pytest.approx(0.1)  # 11/4 > 2
    # clipped to [a / 4, 2 a]
    assert recalibrated_tail_probability(np.zeros(1000), 0.01) == pytest.approx(0.0025)
    # calibrated PITs: close to nominal
    u = rng.uniform(size=20000)
    assert recalibrated_tail_probability(u, 0.025) == pytest.approx(0.025, rel=0.1)
    with pytest.raises(ValueError, match="tail must lie in"):
        recalibrated_tail_probability(u, 0.7)
    with pytest.raises(ValueError, match="prior must be > 0"):
        recalibrated_tail_probability(u, 0.01, prior=0.0)


def test_portfolio_pits_are_those_of_the_previous_forecast(rng, artifact) -> None:
    x = returns(rng, 70, 3)
    w = np.array([0.5, 0.3, 0.2])
    m = LstmCopula(w, artifact, recal_window=50, **KW)
    pits = []
    for row in x:
        if m.predict_or_none() is not None:
            port = np.expm1(m.scenarios()) @ w
            pits.append(np.mean(port <= np.expm1(row) @ w))
        m.update(row)
    assert m.n_port_pit_ == len(pits) > 0
    np.testing.assert_array_equal(m.port_pit_ring_[: len(pits)], pits)
    levels = m.effective_levels()
    expected = [1 - recalibrated_tail_probability(np.array(pits), 1 - lv) for lv in LEVELS]
    np.testing.assert_allclose(levels, expected, rtol=1e-15)
    port = np.expm1(m.scenarios()) @ w
    var, es = var_es_from_samples(port, levels)
    f = m.predict()
    assert f.levels == LEVELS
    np.testing.assert_allclose(f.var, var, rtol=1e-12)
    np.testing.assert_allclose(f.es, es, rtol=1e-10)


def test_without_recalibration_the_levels_are_nominal(rng, artifact) -> None:
    x = returns(rng, 60, 2)
    m = LstmCopula(np.array([0.5, 0.5]), artifact, recal_window=None, **KW).fit(x)
    assert m.port_pit_ring_ is None and m.effective_levels() == LEVELS
    var, es = var_es_from_samples(np.expm1(m.scenarios()) @ m.weights)
    np.testing.assert_allclose(m.predict().var, var, rtol=1e-12)
    np.testing.assert_allclose(m.predict().es, es, rtol=1e-10)
    with pytest.raises(ValueError, match="recal_window must be >= 50 or None, got 10"):
        LstmCopula(np.array([0.5, 0.5]), artifact, recal_window=10)


def test_scenarios_are_computed_once_per_state_and_never_stale(rng, artifact) -> None:
    x = returns(rng, 60, 3)
    m = LstmCopula(np.array([0.5, 0.3, 0.2]), artifact, **KW).fit(x[:-1])
    first = m.simple_scenarios()
    assert m.simple_scenarios() is first  # predict, contributions and the next PIT share it
    assert not first.flags.writeable
    np.testing.assert_allclose(np.expm1(m.scenarios()), first, rtol=1e-13)
    m.update(x[-1])
    fresh = LstmCopula(np.array([0.5, 0.3, 0.2]), artifact, **KW).fit(x)
    np.testing.assert_array_equal(m.simple_scenarios(), fresh.simple_scenarios())
    assert not np.array_equal(m.simple_scenarios(), first)
    restored = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(restored.simple_scenarios(), m.simple_scenarios())
    np.testing.assert_array_equal(restored.predict().es, m.predict().es)


# -- the copula's nu refit, spread over several updates ----------------------------------------
BOUNDS = (2.05, 100.0)


@pytest.fixture(scope="module")
def flat_artifact() -> LstmArtifact:
    """All weights zero: every marginal a Student-t at the EWMA volatility, so the PITs are
    sensible and the copula's nu lands inside its bounds (random weights pin it to 2.05)."""
    net = LstmMarginals(TINY)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    return LstmArtifact(TINY, net.numpy_weights(), "lstm_copula-flat", {})


def _t_copula_pits(rng: np.random.Generator, n: int, d: int, nu: float) -> np.ndarray:
    corr = 0.6 * np.eye(d) + 0.4
    z = rng.standard_normal((n, d)) @ np.linalg.cholesky(corr).T
    x = z / np.sqrt(rng.chisquare(nu, size=(n, 1)) / nu)
    return special.stdtr(nu, x)


def _scipy_nu(u: np.ndarray, chol: np.ndarray) -> float:
    """The refit as one call (what the model did in a single update before)."""
    used = clip_uniform(u)

    def neg_loglik(log_nu: float) -> float:
        nu = math.exp(log_nu)
        return -float(np.sum(t_copula_loglik(special.stdtrit(nu, used), chol, nu)))

    res = optimize.minimize_scalar(
        neg_loglik, bounds=tuple(map(math.log, BOUNDS)), method="bounded", options={"xatol": 1e-3}
    )
    return math.exp(float(res.x))


def test_quantile_table_built_in_pieces_equals_the_whole_and_survives_pickling():
    whole = QuantileTable(4.3, 2.5, 60.0)
    part = QuantileTable(4.3, 2.5, 60.0, build=False)
    with pytest.raises(RuntimeError, match="0 of 48 rows"):
        part.score_map(np.array([5.0]))
    assert not part.build_rows(20)
    part = pickle.loads(pickle.dumps(part))  # rows re-tabulated, count kept
    assert part.rows_done == 20
    assert not part.build_rows(27)
    assert part.build_rows(5) and part.rows_done == 48
    np.testing.assert_array_equal(part.log_q, whole.log_q)
    nu = np.array([2.6, 5.0, 40.0])
    np.testing.assert_array_equal(part.score_map(nu).z, whole.score_map(nu).z)


def test_refit_in_pieces_finds_the_same_nu_as_one_scipy_search(rng):
    u = _t_copula_pits(rng, 250, 6, nu=5.0)
    chol = StudentTCopula(BOUNDS).fit(u).chol_
    refit = CopulaNuRefit(u, chol, BOUNDS, 2.5, 60.0)
    updates = 0
    while not refit.advance(2, 8):
        updates += 1
    assert refit.nu == _scipy_nu(u, chol)
    assert 2.0 < refit.nu < 15.0  # near the true 5 (250 observations)
    # spread: ceil(evals / 2) updates for the search, the last of them starting the table
    assert updates + 1 == -(-refit.search.n_evals_ // 2) + 48 // 8 - 1
    assert refit.done and refit.table is not None and refit.table.nu_copula == refit.nu
    np.testing.assert_array_equal(refit.table.log_q, QuantileTable(refit.nu, 2.5, 60.0).log_q)


def test_no_update_pays_for_more_than_its_share_of_a_refit(rng, flat_artifact, monkeypatch):
    calls: list[int] = []
    real = CopulaNuRefit.neg_loglik

    def counted(self, log_nu):
        calls[-1] += 1
        return real(self, log_nu)

    monkeypatch.setattr(CopulaNuRefit, "neg_loglik", counted)
    kw = {**KW, "refit_every": 30}
    m = LstmCopula(np.full(4, 0.25), flat_artifact, refit_evals=2, refit_rows=8, **kw)
    x = returns(rng, 150, 4)
    nus, refits = [], []
    for row in x:
        calls.append(0)
        m.update(row)
        nus.append(m.nu_copula_)
        refits.append(m.n_refits_)
    first = refits.index(1)  # the first fit (StudentTCopula.fit), once, in the warm-up
    assert max(calls) == 2 and sum(calls) > 16
    # a refit's nu takes over when its search and its 48-row table are done, days after it began
    starts = [t for t in range(first + 1, len(calls)) if calls[t] and not calls[t - 1]]
    ends = [t for t in range(first + 1, len(refits)) if refits[t] > refits[t - 1]]
    assert len(starts) == 3 and len(ends) == 3
    assert all(e - s >= 48 // 8 for s, e in zip(starts, ends, strict=True))
    assert all(nus[e] != nus[e - 1] for e in ends)  # with these data each refit moves nu


def test_the_refit_uses_the_pits_and_correlation_of_the_day_it_is_due(rng, flat_artifact):
    kw = {**KW, "refit_every": 30}
    m = LstmCopula(np.full(3, 1 / 3), flat_artifact, **kw)
    x = returns(rng, 120, 3)
    seen = None
    for row in x:
        had = m.refit_
        m.update(row)
        if had is None and m.refit_ is not None and seen is None:
            # started in this update: its PITs are the ring of this day
            n = min(m.n_pit_, m.copula_window)
            expected = _scipy_nu(m.u_ring_[:n], m.chol_)
            seen = m.refit_
        if seen is not None and m.refit_ is None:
            assert m.nu_copula_ == expected
            n = min(m.n_pit_, m.copula_window)
            assert _scipy_nu(m.u_ring_[:n], m.chol_) != expected  # the ring has moved on
            break
    else:
        pytest.fail("no refit finished")


def test_a_refit_due_while_the_last_still_runs_finishes_the_last_first(rng, flat_artifact):
    # 48 rows at one per update: a refit cannot finish within 7 days, so each is finished
    # when the next is due, with the nu of its own start
    m = LstmCopula(np.full(3, 1 / 3), flat_artifact, refit_evals=1, refit_rows=1, **KW)
    x = returns(rng, 110, 3)
    pending: list[float] = []
    applied: list[float] = []
    for row in x:
        before = m.refit_
        m.update(row)
        if m.refit_ is not before and m.refit_ is not None:
            n = min(m.n_pit_, m.copula_window)
            pending.append(_scipy_nu(m.u_ring_[:n], m.chol_))
            if before is not None:
                applied.append(m.nu_copula_)
    assert len(applied) >= 3 and len(set(applied)) == len(applied)
    assert applied == pending[: len(applied)]


def test_a_refit_survives_pickling_and_ends_on_the_same_day(rng, flat_artifact):
    kw = {**KW, "refit_every": 30}
    x = returns(rng, 150, 4)
    a = LstmCopula(np.full(4, 0.25), flat_artifact, **kw)
    b = None
    for t, row in enumerate(x):
        a.update(row)
        if b is None and a.refit_ is not None and a.refit_.search.n_evals_ >= 3:
            b = pickle.loads(pickle.dumps(a))
            continue
        if b is not None:
            b.update(row)
            assert (b.nu_copula_, b.n_refits_) == (a.nu_copula_, a.n_refits_), t
            if t > 60:
                np.testing.assert_array_equal(a.predict().var, b.predict().var)
    assert b is not None and a.n_refits_ >= 3


def test_bad_refit_pace_is_refused(artifact):
    with pytest.raises(ValueError, match="refit_evals and refit_rows"):
        LstmCopula(np.ones(2) / 2, artifact, refit_evals=0)
