"""Tests of models.copula: Kendall's tau, correlation repair, the Student-t copula, EWMA updates."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from scipy import special, stats

from models.copula import (
    U_CLIP,
    EwmaCopulaCorrelation,
    ScoreQuantileMap,
    StudentTCopula,
    kendall_tau_matrix,
    nearest_correlation,
    normal_scores,
    t_scores,
    tau_to_correlation,
)
from models.exceptions import ConvergenceWarning

R3 = np.array([[1.0, 0.6, 0.3], [0.6, 1.0, -0.2], [0.3, -0.2, 1.0]])


def multivariate_t(rng: np.random.Generator, corr: np.ndarray, nu: float, n: int) -> np.ndarray:
    """Draws of a multivariate t by the textbook construction (independent of models.copula)."""
    z = rng.multivariate_normal(np.zeros(corr.shape[0]), corr, size=n)
    w = rng.chisquare(nu, size=n)
    return z / np.sqrt(w / nu)[:, None]


# -- Kendall's tau ---------------------------------------------------------------------------------


def test_kendall_matches_scipy_with_ties(rng):
    x = np.round(rng.standard_normal((80, 5)), 1)  # many ties
    x[:, 4] = np.round(x[:, 0] + 0.3 * rng.standard_normal(80))
    got = kendall_tau_matrix(x)
    for i in range(5):
        for j in range(5):
            want = 1.0 if i == j else stats.kendalltau(x[:, i], x[:, j]).statistic
            assert got[i, j] == pytest.approx(want, abs=1e-12)


def test_kendall_rank_invariant_and_symmetric(rng):
    x = rng.standard_normal((200, 4))
    y = np.column_stack([np.exp(x[:, 0]), x[:, 1] ** 3, -x[:, 2], x[:, 3]])
    k1, k2 = kendall_tau_matrix(x), kendall_tau_matrix(y)
    np.testing.assert_allclose(k1, k1.T)
    np.testing.assert_allclose(k2[[0, 1, 3]][:, [0, 1, 3]], k1[[0, 1, 3]][:, [0, 1, 3]])
    np.testing.assert_allclose(k2[2, [0, 1, 3]], -k1[2, [0, 1, 3]])


def test_kendall_large_d_block_path(rng):
    """d = 100 goes through several blocks and still matches scipy on a few pairs."""
    x = rng.standard_normal((200, 100))
    got = kendall_tau_matrix(x)
    assert got.shape == (100, 100)
    for i, j in [(0, 1), (17, 93), (50, 99)]:
        assert got[i, j] == pytest.approx(stats.kendalltau(x[:, i], x[:, j]).statistic, abs=1e-12)


def test_kendall_constant_column_has_zero_tau(rng):
    x = rng.standard_normal((30, 2))
    x[:, 1] = 1.0
    np.testing.assert_array_equal(kendall_tau_matrix(x), np.eye(2))


@pytest.mark.parametrize("bad", [np.ones(5), np.ones((1, 3)), np.array([[0.0, np.nan], [1, 2]])])
def test_kendall_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        kendall_tau_matrix(bad)


# -- tau -> rho ------------------------------------------------------------------------------------


def test_tau_to_correlation_inverts_arcsin_formula():
    rho = np.linspace(-0.99, 0.99, 21)
    np.testing.assert_allclose(tau_to_correlation(2.0 / np.pi * np.arcsin(rho)), rho, atol=1e-14)


def test_tau_to_correlation_on_simulated_bivariate_t(rng):
    corr = np.array([[1.0, 0.6], [0.6, 1.0]])
    x = multivariate_t(rng, corr, 4.0, 3000)
    rho_hat = tau_to_correlation(kendall_tau_matrix(x))[0, 1]
    assert rho_hat == pytest.approx(0.6, abs=0.03)
    # Pearson's estimate is what heavy tails spoil; tau's is not the same number by chance
    assert abs(rho_hat - np.corrcoef(x.T)[0, 1]) < 0.1


# -- nearest correlation ---------------------------------------------------------------------------


def test_nearest_correlation_leaves_valid_matrix_unchanged():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = nearest_correlation(R3)
    np.testing.assert_array_equal(out, R3)
    assert out is not R3


def test_nearest_correlation_higham_example():
    """Higham (2002), section 4: the nearest correlation matrix to this A is known."""
    a = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    with pytest.warns(ConvergenceWarning, match="repaired"):
        out = nearest_correlation(a)
    want = np.array([[1.0, 0.7607, 0.1573], [0.7607, 1.0, 0.7607], [0.1573, 0.7607, 1.0]])
    np.testing.assert_allclose(out, want, atol=2e-4)
    np.testing.assert_array_equal(np.diag(out), 1.0)
    np.testing.assert_array_equal(out, out.T)
    assert np.linalg.eigvalsh(out)[0] > 0.0
    np.linalg.cholesky(out)


def test_nearest_correlation_repairs_random_indefinite(rng):
    d = 12
    a = rng.uniform(-1, 1, (d, d))
    a = 0.5 * (a + a.T)
    np.fill_diagonal(a, 1.0)
    assert np.linalg.eigvalsh(a)[0] < 0
    with pytest.warns(ConvergenceWarning):
        out = nearest_correlation(a, eps=1e-6)
    assert np.linalg.eigvalsh(out)[0] > 0.0
    np.testing.assert_allclose(np.diag(out), 1.0)
    # the repair is a projection: it moves a by less than the identity would
    assert np.linalg.norm(out - a) < np.linalg.norm(np.eye(d) - a)


def test_nearest_correlation_warn_false_is_silent():
    a = np.array([[1.0, 0.99, 0.0], [0.99, 1.0, 0.99], [0.0, 0.99, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = nearest_correlation(a, warn=False)
    assert np.linalg.eigvalsh(out)[0] > 0.0


def test_nearest_correlation_validation():
    with pytest.raises(ValueError, match="square"):
        nearest_correlation(np.ones((2, 3)))
    with pytest.raises(ValueError, match="symmetric"):
        nearest_correlation(np.array([[1.0, 0.5], [0.2, 1.0]]))
    with pytest.raises(ValueError, match="eps"):
        nearest_correlation(np.eye(2), eps=0.0)


# -- scores ------------------------------------------------------------------------------------------


def test_scores_clip_and_match_scipy():
    u = np.array([0.0, 0.3, 1.0])
    np.testing.assert_allclose(normal_scores(u), stats.norm.ppf([U_CLIP, 0.3, 1 - U_CLIP]))
    np.testing.assert_allclose(t_scores(u, 4.0), stats.t.ppf([U_CLIP, 0.3, 1 - U_CLIP], 4.0))
    assert np.all(np.isfinite(t_scores(u, 2.05)))


# -- StudentTCopula ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_pair():
    """Copulas fitted on 3000 draws with nu = 5 and nu = 30 (same correlation)."""
    rng = np.random.default_rng(42)
    out = {}
    for nu in (5.0, 30.0):
        x = multivariate_t(rng, R3, nu, 3000)
        u = stats.t.cdf(x, nu)
        out[nu] = StudentTCopula().fit(u)
    return out


def test_fit_recovers_correlation(fitted_pair):
    for cop in fitted_pair.values():
        np.testing.assert_allclose(cop.corr_, R3, atol=0.04)
        assert not cop.corr_repaired_
        assert cop.n_obs_ == 3000


def test_fit_recovers_and_distinguishes_nu(fitted_pair):
    nu5, nu30 = fitted_pair[5.0].nu_, fitted_pair[30.0].nu_
    assert 3.8 < nu5 < 6.5
    assert nu30 > 12.0
    assert nu30 > 2.0 * nu5


def test_fitted_nu_maximises_the_likelihood(fitted_pair):
    """The 1-d optimiser's answer beats a grid search over nu (corr fixed)."""
    cop = fitted_pair[5.0]
    rng = np.random.default_rng(0)
    u = cop.sample(2000, rng, antithetic=False)
    fit = StudentTCopula().fit(u)
    grid = np.linspace(2.5, 20.0, 60)
    probe = StudentTCopula()
    lls = [probe.set_params(fit.corr_, nu).logpdf(u).sum() for nu in grid]
    assert fit.loglik_ >= max(lls) - 1e-6
    assert fit.loglik_ == pytest.approx(fit.logpdf(u).sum())


def test_logpdf_matches_scipy_multivariate_t():
    corr = np.array([[1.0, 0.6], [0.6, 1.0]])
    nu = 4.5
    cop = StudentTCopula().set_params(corr, nu)
    u = np.array([[0.5, 0.5], [0.01, 0.02], [0.99, 0.03], [0.3, 0.8], [1e-6, 0.999999]])
    x = stats.t.ppf(u, nu)
    want = stats.multivariate_t(loc=[0.0, 0.0], shape=corr, df=nu).logpdf(x) - stats.t.logpdf(
        x, nu
    ).sum(axis=1)
    np.testing.assert_allclose(cop.logpdf(u), want, rtol=1e-10, atol=1e-10)
    assert np.ndim(cop.logpdf(u[1])) == 0
    assert float(cop.logpdf(u[1])) == pytest.approx(want[1])


def test_logpdf_integrates_to_one():
    cop = StudentTCopula().set_params(np.array([[1.0, 0.5], [0.5, 1.0]]), 5.0)
    g = (np.arange(200) + 0.5) / 200
    grid = np.stack(np.meshgrid(g, g), axis=-1).reshape(-1, 2)
    assert float(np.exp(cop.logpdf(grid)).mean()) == pytest.approx(1.0, abs=3e-3)


def test_logpdf_of_identity_correlation_and_huge_nu_is_near_zero():
    """The t copula tends to the independence copula as R -> I, nu -> inf."""
    cop = StudentTCopula(nu_bounds=(2.05, 1e7)).set_params(np.eye(3), 1e6)
    u = np.random.default_rng(1).uniform(size=(50, 3))
    np.testing.assert_allclose(cop.logpdf(u), 0.0, atol=1e-4)


def test_sample_marginals_uniform_and_dependence():
    cop = StudentTCopula().set_params(R3, 6.0)
    u = cop.sample(6000, np.random.default_rng(42), antithetic=False)
    assert u.shape == (6000, 3)
    for j in range(3):
        assert stats.kstest(u[:, j], "uniform").pvalue > 0.01
    rho = tau_to_correlation(kendall_tau_matrix(u))
    np.testing.assert_allclose(rho, R3, atol=0.04)


def test_sample_antithetic_halves_mirrored():
    cop = StudentTCopula().set_params(R3, 4.0)
    u = cop.sample(1000, np.random.default_rng(3))
    np.testing.assert_allclose(u[:500], 1.0 - u[500:], atol=1e-12)
    for j in range(3):
        assert stats.kstest(u[:, j], "uniform").pvalue > 0.01
    x = cop.sample_scores(7, np.random.default_rng(3))
    assert x.shape == (7, 3)
    np.testing.assert_array_equal(x[4:], -x[:3])


def test_sample_reproducible_and_pickles():
    cop = StudentTCopula().set_params(R3, 4.0)
    a = cop.sample(100, np.random.default_rng(7))
    b = pickle.loads(pickle.dumps(cop)).sample(100, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, cop.sample(100, np.random.default_rng(8)))


def test_tail_dependence_of_samples_grows_as_nu_falls():
    """Joint exceedances of the 1 % quantile: more with nu = 3 than with nu = 50."""
    corr = np.array([[1.0, 0.5], [0.5, 1.0]])
    joint = {}
    for nu in (3.0, 50.0):
        u = StudentTCopula().set_params(corr, nu).sample(40000, np.random.default_rng(1))
        joint[nu] = np.mean((u[:, 0] < 0.01) & (u[:, 1] < 0.01))
    assert joint[3.0] > 1.5 * joint[50.0]


def test_set_corr_keeps_nu_and_checks_shape():
    cop = StudentTCopula().set_params(R3, 7.0)
    cop.set_corr(np.eye(3))
    assert cop.nu_ == 7.0
    np.testing.assert_array_equal(cop.chol_, np.eye(3))
    with pytest.raises(ValueError, match="shape"):
        cop.set_corr(np.eye(2))


def test_copula_validation(rng):
    with pytest.raises(ValueError, match="nu_bounds"):
        StudentTCopula(nu_bounds=(1.5, 10.0))
    with pytest.raises(RuntimeError, match="not fitted"):
        StudentTCopula().sample(10, rng)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        StudentTCopula().fit(rng.normal(size=(50, 2)))
    with pytest.raises(ValueError, match="at least 3"):
        StudentTCopula().fit(np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="positive definite"):
        StudentTCopula().set_params(np.array([[1.0, 1.2], [1.2, 1.0]]), 5.0)
    with pytest.raises(ValueError, match="nu"):
        StudentTCopula().set_params(np.eye(2), 2.0)


def test_fit_warns_when_tau_matrix_needs_repair():
    """sin(pi tau / 2) of a sample tau matrix is indefinite when d is large for n."""
    u = np.random.default_rng(0).uniform(size=(25, 40))
    rho = tau_to_correlation(kendall_tau_matrix(u))
    assert np.linalg.eigvalsh(rho)[0] < 0
    with pytest.warns(ConvergenceWarning, match="repaired"):
        cop = StudentTCopula().fit(u)
    assert cop.corr_repaired_
    assert np.linalg.eigvalsh(cop.corr_)[0] > 0
    np.testing.assert_allclose(np.diag(cop.corr_), 1.0)


def test_fit_leaves_input_unchanged(rng):
    u = StudentTCopula().set_params(R3, 5.0).sample(300, rng)
    before = u.copy()
    StudentTCopula().fit(u)
    np.testing.assert_array_equal(u, before)


# -- ScoreQuantileMap --------------------------------------------------------------------------------


def test_score_quantile_map_matches_direct_transform(rng):
    nu = 5.0
    nus = (4.0, 12.0)
    ppfs = [lambda u, k=k: np.sqrt((k - 2) / k) * special.stdtrit(k, u) for k in nus]
    qmap = ScoreQuantileMap.build(nu, ppfs)
    x = StudentTCopula().set_params(np.eye(2), nu).sample_scores(20000, rng)
    got = qmap(x.copy())
    u = special.stdtr(nu, x)
    for j, f in enumerate(ppfs):
        want = f(u[:, j])
        np.testing.assert_allclose(got[:, j], want, rtol=1e-4, atol=1e-4)


def test_score_quantile_map_clamps_extremes():
    qmap = ScoreQuantileMap.build(4.0, [special.ndtri])
    out = qmap(np.array([[-1e12], [1e12]]))
    np.testing.assert_allclose(out[:, 0], special.ndtri([U_CLIP, 1 - U_CLIP]), rtol=1e-7)


# -- EwmaCopulaCorrelation ---------------------------------------------------------------------------


def test_ewma_matches_batch_formula(rng):
    d, n, h = 3, 40, 10.0
    u = rng.uniform(size=(n, d))
    ew = EwmaCopulaCorrelation(R3, half_life=h)
    for row in u:
        ew.update(row)
    lam = 0.5 ** (1 / h)
    x = stats.norm.ppf(u)
    wts = (1 - lam) * lam ** np.arange(n - 1, -1, -1)
    q = lam**n * R3 + np.einsum("t,ti,tj->ij", wts, x, x)
    want = q / np.sqrt(np.outer(np.diag(q), np.diag(q)))
    np.testing.assert_allclose(ew.corr, want, rtol=1e-12)
    assert ew.n_updates_ == n
    assert np.linalg.eigvalsh(ew.corr)[0] > 0


def test_ewma_t_scores_track_the_copula_correlation():
    corr = np.array([[1.0, 0.7], [0.7, 1.0]])
    u = StudentTCopula().set_params(corr, 8.0).sample(4000, np.random.default_rng(5), False)
    for scores in ("normal", "t"):
        ew = EwmaCopulaCorrelation(np.eye(2), half_life=500.0, scores=scores, nu=8.0)
        for row in u:
            ew.update(row)
        assert ew.corr[0, 1] == pytest.approx(0.7, abs=0.07)


def test_ewma_pickle_round_trip(rng):
    ew = EwmaCopulaCorrelation(np.eye(2), half_life=5.0)
    for row in rng.uniform(size=(5, 2)):
        ew.update(row)
    clone = pickle.loads(pickle.dumps(ew))
    nxt = rng.uniform(size=2)
    ew.update(nxt)
    clone.update(nxt)
    np.testing.assert_array_equal(ew.corr, clone.corr)
    ew.reset(R3[:2, :2], nu=6.0)
    np.testing.assert_array_equal(ew.corr, R3[:2, :2])
    assert ew.n_updates_ == 0


def test_ewma_feeds_a_copula():
    ew = EwmaCopulaCorrelation(R3, half_life=20.0)
    ew.update([0.9, 0.1, 0.5])
    cop = StudentTCopula().set_params(R3, 5.0).set_corr(ew.corr)
    assert cop.corr_[0, 1] < R3[0, 1]


def test_ewma_validation():
    with pytest.raises(ValueError, match="half_life"):
        EwmaCopulaCorrelation(np.eye(2), half_life=0.0)
    with pytest.raises(ValueError, match="scores"):
        EwmaCopulaCorrelation(np.eye(2), scores="ranks")
    with pytest.raises(ValueError, match="nu"):
        EwmaCopulaCorrelation(np.eye(2), scores="t")
    ew = EwmaCopulaCorrelation(np.eye(2))
    with pytest.raises(ValueError, match="shape"):
        ew.update([0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ew.update([0.5, 1.5])
