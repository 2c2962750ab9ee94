"""models.garch: the innovation laws, fit_garch against arch, RollingGarch against arch's fix()."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from arch import arch_model
from arch.univariate import Normal, SkewStudent, StudentsT
from scipy import integrate

import models.garch as garch_mod
from models.exceptions import ConvergenceWarning, NotEnoughObservations
from models.garch import GarchFit, GarchParams, RollingGarch, fit_garch
from models.measures import var_es_from_ppf, var_es_normal, var_es_student_t

LAWS = [
    GarchParams("garch", "normal", 0.03, 0.02, 0.08, 0.0, 0.9),
    GarchParams("garch", "t", 0.03, 0.02, 0.08, 0.0, 0.9, nu=5.0),
    GarchParams("gjr", "skewt", 0.03, 0.02, 0.03, 0.1, 0.9, nu=6.0, lam=-0.3),
    GarchParams("gjr", "skewt", 0.03, 0.02, 0.03, 0.1, 0.9, nu=4.0, lam=0.25),
    GarchParams("gjr", "skewt", 0.03, 0.02, 0.03, 0.1, 0.85, nu=8.0, lam=0.95),
]


def _arch_law(p: GarchParams):
    if p.dist == "normal":
        return Normal(), []
    if p.dist == "t":
        return StudentsT(), [p.nu]
    return SkewStudent(), [p.nu, p.lam]


def simulate(p: GarchParams, n: int, rng: np.random.Generator) -> np.ndarray:
    """Percent returns from the GARCH process ``p`` (innovations by inversion)."""
    z = p.std_ppf(rng.uniform(size=n))
    y = np.empty(n)
    s2 = p.omega / (1.0 - p.persistence)
    for t in range(n):
        e = np.sqrt(s2) * z[t]
        y[t] = p.mu + e
        s2 = p.omega + (p.alpha + p.gamma * (e < 0)) * e * e + p.beta * s2
    return y


@pytest.fixture(scope="module")
def y_gjr() -> np.ndarray:
    return simulate(LAWS[2], 700, np.random.default_rng(42))


# --- the laws ---------------------------------------------------------------------------------


@pytest.mark.parametrize("p", LAWS, ids=lambda p: f"{p.dist}-{p.lam}")
def test_laws_match_arch(p: GarchParams) -> None:
    law, shape = _arch_law(p)
    u = np.array([1e-4, 0.01, 0.025, 0.05, 0.3, 0.5, 0.77, 0.99, 1 - 1e-4])
    np.testing.assert_allclose(p.std_ppf(u), law.ppf(u, shape), rtol=1e-10, atol=1e-12)
    z = np.linspace(-6.0, 6.0, 25)
    np.testing.assert_allclose(p.std_cdf(z), law.cdf(z, shape), rtol=1e-10, atol=1e-14)
    ll = law.loglikelihood(shape, z, np.ones_like(z), individual=True)
    np.testing.assert_allclose(p.std_pdf(z), np.exp(ll), rtol=1e-10)
    np.testing.assert_allclose(p.std_cdf(p.std_ppf(u)), u, rtol=1e-9)


@pytest.mark.parametrize("p", LAWS, ids=lambda p: f"{p.dist}-{p.lam}")
def test_law_has_zero_mean_unit_variance(p: GarchParams) -> None:
    m1 = integrate.quad(lambda z: z * p.std_pdf(z), -np.inf, np.inf)[0]
    m2 = integrate.quad(lambda z: z * z * p.std_pdf(z), -np.inf, np.inf)[0]
    assert abs(m1) < 1e-7
    assert m2 == pytest.approx(1.0, abs=1e-7)


@pytest.mark.parametrize("p", LAWS, ids=lambda p: f"{p.dist}-{p.lam}")
@pytest.mark.parametrize("tail", [0.001, 0.01, 0.025, 0.05, 0.4])
def test_tail_mean_matches_arch_partial_moment(p: GarchParams, tail: float) -> None:
    law, shape = _arch_law(p)
    q = float(p.std_ppf(tail))
    expected = law.partial_moment(1, q, shape) / tail
    assert float(p.std_tail_mean(tail)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("p", LAWS, ids=lambda p: f"{p.dist}-{p.lam}")
def test_var_es_against_measures(p: GarchParams) -> None:
    levels = (0.95, 0.975, 0.99)
    var, es = p.var_es(0.1, 1.7, levels)
    var_num, es_num = var_es_from_ppf(0.1, 1.7, p.std_ppf, levels, n_grid=50_000)
    np.testing.assert_allclose(var, var_num, rtol=1e-12)
    np.testing.assert_allclose(es, es_num, rtol=5e-4)
    if p.dist == "t":
        var_t, es_t = var_es_student_t(0.1, 1.7, p.nu, levels, standardized=True)
        np.testing.assert_allclose(var, var_t, rtol=1e-10)
        np.testing.assert_allclose(es, es_t, rtol=1e-10)
    if p.dist == "normal":
        var_n, es_n = var_es_normal(0.1, 1.7, levels)
        np.testing.assert_allclose(var, var_n, rtol=1e-10)
        np.testing.assert_allclose(es, es_n, rtol=1e-10)
    assert np.all(es >= var) and np.all(np.diff(var) > 0) and np.all(np.diff(es) > 0)


# --- GarchParams --------------------------------------------------------------------------------


def test_next_variance_by_hand_and_vectorised() -> None:
    p = GarchParams("gjr", "t", 0.0, 0.1, 0.05, 0.1, 0.8, nu=6.0)
    assert float(p.next_variance(2.0, 1.0)) == pytest.approx(0.1 + 0.05 + 1.6)
    assert float(p.next_variance(2.0, -1.0)) == pytest.approx(0.1 + 0.15 + 1.6)
    s2 = np.array([1.0, 2.0, 3.0])
    e = np.array([-2.0, 0.0, 3.0])
    np.testing.assert_allclose(
        p.next_variance(s2, e), [0.1 + 0.15 * 4 + 0.8, 0.1 + 1.6, 0.1 + 0.05 * 9 + 2.4]
    )
    out = p.filter(np.array([1.0, -1.0]), 2.0)  # mu = 0
    np.testing.assert_allclose(out, [2.0, 1.75, 0.1 + 0.15 + 0.8 * 1.75])


def test_params_array_round_trip_and_validation() -> None:
    for p in LAWS:
        assert GarchParams.from_array(p.vol, p.dist, p.to_array()) == p
    with pytest.raises(ValueError, match="vol must be one of"):
        GarchParams("egarch", "t", 0, 1, 0, 0, 0, nu=5)
    with pytest.raises(ValueError, match="dist must be one of"):
        GarchParams("garch", "ged", 0, 1, 0, 0, 0)
    with pytest.raises(ValueError, match=r"gamma must be 0\.0"):
        GarchParams("garch", "normal", 0, 1, 0, 0.1, 0)
    with pytest.raises(ValueError, match="nu must be > 2"):
        GarchParams("garch", "t", 0, 1, 0, 0, 0, nu=2.0)
    with pytest.raises(ValueError, match="lam must lie in"):
        GarchParams("gjr", "skewt", 0, 1, 0, 0, 0, nu=5.0, lam=1.0)
    with pytest.raises(ValueError, match="expected 5 parameters"):
        GarchParams.from_array("garch", "t", [0, 1, 0.1, 0.8])
    assert pickle.loads(pickle.dumps(LAWS[2])) == LAWS[2]


def test_admissibility() -> None:
    ok = GarchParams("gjr", "skewt", 0.0, 0.02, 1e-15, -2e-14, 0.95, nu=150.0, lam=0.03)
    assert ok.is_admissible()  # SLSQP's rounding outside alpha + gamma >= 0 is tolerated
    assert GarchParams("garch", "normal", 0.0, 0.002, 0.0, 0.0, 1.0).is_admissible()  # IGARCH
    assert not GarchParams("garch", "normal", 0.0, 0.02, 0.2, 0.0, 0.9).is_admissible()
    assert not GarchParams("gjr", "normal", 0.0, 0.02, 0.05, -0.1, 0.9).is_admissible()
    assert not GarchParams("garch", "normal", 0.0, 0.0, 0.05, 0.0, 0.9).is_admissible()
    assert not GarchParams("garch", "normal", np.nan, 0.1, 0.05, 0.0, 0.9).is_admissible()
    p = GarchParams("gjr", "t", 0.0, 0.02, 0.05, 0.1, 0.8, nu=5.0)
    assert p.persistence == pytest.approx(0.9)
    assert p.unconditional_variance == pytest.approx(0.2)


# --- fit_garch ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("vol", "dist"), [("garch", "normal"), ("garch", "t"), ("gjr", "skewt")])
def test_fit_garch_matches_arch(y_gjr: np.ndarray, vol: str, dist: str) -> None:
    y = y_gjr[:500]
    y_before = y.copy()
    fit = fit_garch(y, vol, dist)
    np.testing.assert_array_equal(y, y_before)
    res = arch_model(
        y, mean="Constant", vol="GARCH", p=1, o=int(vol == "gjr"), q=1, dist=dist, rescale=False
    ).fit(disp="off")
    assert fit.converged
    np.testing.assert_allclose(fit.params.to_array(), res.params.to_numpy(), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fit.sigma2, res.conditional_volatility**2, rtol=1e-6)
    np.testing.assert_allclose(fit.std_resid, res.std_resid, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fit.std_resid, (y - fit.params.mu) / np.sqrt(fit.sigma2))
    fc = res.forecast(horizon=1, reindex=False).variance.to_numpy()[-1, 0]
    assert fit.next_sigma2 == pytest.approx(fc, rel=1e-6)


def test_fit_garch_warm_start_gives_same_optimum(y_gjr: np.ndarray) -> None:
    cold = fit_garch(y_gjr[:500], "gjr", "skewt")
    warm = fit_garch(y_gjr[:500], "gjr", "skewt", starting=cold.params)
    np.testing.assert_allclose(warm.params.to_array(), cold.params.to_array(), rtol=1e-4)
    assert warm.loglik >= cold.loglik - 1e-6


def test_fit_garch_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="vol must be one of"):
        fit_garch(np.ones(100), vol="egarch")
    with pytest.raises(ValueError, match="1-d"):
        fit_garch(np.ones((100, 2)))
    with pytest.raises(ValueError, match="finite"):
        fit_garch(np.r_[np.ones(99), np.nan])
    with pytest.raises(NotEnoughObservations):
        fit_garch(np.ones(5))


def test_fit_garch_turns_arch_warning_into_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(42)
    y = rng.standard_normal(300)
    real = garch_mod._fit_quiet

    def not_converged(*args, **kwargs) -> GarchFit:
        f = real(*args, **kwargs)
        return GarchFit(f.params, f.sigma2, f.std_resid, False, f.loglik, "Iteration limit")

    monkeypatch.setattr(garch_mod, "_fit_quiet", not_converged)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        fit = fit_garch(y, "garch", "normal")
    assert not fit.converged


# --- RollingGarch -------------------------------------------------------------------------------


def _arch_fixed_forecast(y: np.ndarray, p: GarchParams) -> float:
    model = arch_model(
        y, mean="Constant", vol="GARCH", p=1, o=int(p.vol == "gjr"), q=1, dist=p.dist, rescale=False
    )
    res = model.fix(p.to_array())
    return float(res.forecast(horizon=1, reindex=False).variance.to_numpy()[-1, 0])


@pytest.mark.parametrize(("vol", "dist"), [("garch", "t"), ("gjr", "skewt")])
def test_rolling_filter_matches_arch_fix(y_gjr: np.ndarray, vol: str, dist: str) -> None:
    # window 300, refits at 250 (y[0:250]), 290 (y[0:290]), 330 (y[30:330]); then 17 filtered
    g = RollingGarch(vol, dist, window=300, refit_every=40, min_obs=250)
    for v in y_gjr[:347]:
        g.update(v)
    assert g.n_refits_ == 3 and g.n_seen_ == 347
    mu, sigma2 = g.forecast()
    assert mu == g.params_.mu
    window = y_gjr[47:347]
    np.testing.assert_array_equal(g.y_, window)
    # the refit window started at obs 30: arch.fix on y[30:347] filters the same recursion
    assert sigma2 == pytest.approx(_arch_fixed_forecast(y_gjr[30:347], g.params_), rel=1e-8)
    # the refit itself is fit_garch on its window, warm started from the previous parameters
    ref = RollingGarch(vol, dist, window=300, refit_every=40, min_obs=250)
    for v in y_gjr[:329]:
        ref.update(v)
    previous = ref.params_
    ref.update(y_gjr[329])
    direct = fit_garch(y_gjr[30:330], vol, dist, starting=previous)
    np.testing.assert_allclose(ref.params_.to_array(), direct.params.to_array(), rtol=1e-12)
    assert ref.forecast()[1] == pytest.approx(direct.next_sigma2, rel=1e-12)
    # std residuals: the fit's for the refit window, then the filter's
    s2 = g.params_.filter(y_gjr[330:347], ref.forecast()[1])[:-1]
    z_tail = (y_gjr[330:347] - mu) / np.sqrt(s2)
    np.testing.assert_allclose(g.std_resid_[-17:], z_tail, rtol=1e-10)
    np.testing.assert_allclose(g.std_resid_[:-17], ref.std_resid_[17:], rtol=1e-12)
    np.testing.assert_allclose(g.recent_std_resid(5), z_tail[-5:], rtol=1e-10)


def test_rolling_warm_up_and_reset(y_gjr: np.ndarray) -> None:
    g = RollingGarch("garch", "normal", window=300, refit_every=1000, min_obs=100)
    for v in y_gjr[:99]:
        g.update(v)
    with pytest.raises(NotEnoughObservations, match="needs 100 observations"):
        g.forecast()
    assert g.std_resid_.size == 0 and g.params_ is None
    g.update(y_gjr[99])
    assert g.n_refits_ == 1 and g.std_resid_.shape == (100,)
    g.reset()
    assert g.n_seen_ == 0 and g.params_ is None and g.y_.size == 0


def test_rolling_validation() -> None:
    with pytest.raises(ValueError, match="min_obs must lie in"):
        RollingGarch(window=100, min_obs=200)
    with pytest.raises(ValueError, match="min_obs must lie in"):
        RollingGarch(window=100, min_obs=10)
    with pytest.raises(ValueError, match="refit_every must be >= 1"):
        RollingGarch(refit_every=0)
    with pytest.raises(ValueError, match="dist must be one of"):
        RollingGarch(dist="ged")
    g = RollingGarch(window=100, min_obs=50)
    with pytest.raises(ValueError, match="finite"):
        g.update(float("nan"))


def test_rolling_pickle_round_trip_mid_stream(y_gjr: np.ndarray) -> None:
    a = RollingGarch("gjr", "skewt", window=300, refit_every=30, min_obs=250)
    for v in y_gjr[:270]:
        a.update(v)
    b = pickle.loads(pickle.dumps(a))
    for v in y_gjr[270:320]:  # crosses refits at 280 and 310
        a.update(v)
        b.update(v)
        assert a.forecast() == b.forecast()
    np.testing.assert_array_equal(a.std_resid_, b.std_resid_)
    assert a.params_ == b.params_ and a.n_refits_ == b.n_refits_ == 3


def test_rolling_failed_refit_keeps_previous(
    y_gjr: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = RollingGarch("garch", "t", window=300, refit_every=20, min_obs=250)
    for v in y_gjr[:250]:
        g.update(v)
    good = g.params_

    def explode(y, vol, dist, starting):
        bad = GarchParams(vol, dist, 0.0, 1.0, 0.5, 0.0, 0.9, nu=5.0)  # persistence 1.4
        return GarchFit(bad, np.ones(y.size), np.ones(y.size), False, np.nan, "bad")

    monkeypatch.setattr(garch_mod, "_fit_quiet", explode)
    with pytest.warns(ConvergenceWarning, match="keeping the previous parameters"):
        for v in y_gjr[250:270]:
            g.update(v)
    assert g.params_ == good and g.n_failed_refits_ == 1 and g.n_refits_ == 2
    monkeypatch.undo()
    ref = RollingGarch("garch", "t", window=300, refit_every=10_000, min_obs=250)
    for v in y_gjr[:270]:
        ref.update(v)
    assert g.forecast() == ref.forecast()
    np.testing.assert_array_equal(g.std_resid_, ref.std_resid_)


def test_rolling_first_fit_failure_falls_back(
    y_gjr: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    def raise_(*args, **kwargs):
        raise ValueError("optimiser blew up")

    monkeypatch.setattr(garch_mod, "_fit_quiet", raise_)
    g = RollingGarch("garch", "t", window=300, refit_every=20, min_obs=250)
    with pytest.warns(ConvergenceWarning, match="fallback parameters"):
        for v in y_gjr[:250]:
            g.update(v)
    assert g.params_ is not None and g.params_.alpha == 0.05 and g.params_.beta == 0.9
    assert np.isfinite(g.forecast()[1]) and np.all(np.isfinite(g.std_resid_))


def test_stale_feed_falls_back_quietly_except_for_our_warning() -> None:
    g = RollingGarch("gjr", "skewt", window=100, refit_every=20, min_obs=30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(40):
            g.update(0.0)
        for v in np.random.default_rng(42).standard_normal(60):
            g.update(v)
    assert {w.category for w in caught} == {ConvergenceWarning}
    assert g.n_failed_refits_ >= 1 and g.n_refits_ == 4
    mu, sigma2 = g.forecast()
    assert np.isfinite(mu) and 0.0 < sigma2 < 10.0
    assert np.all(np.isfinite(g.std_resid_))


def test_no_warnings_on_clean_data(y_gjr: np.ndarray) -> None:
    g = RollingGarch("gjr", "skewt", window=300, refit_every=50, min_obs=250)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for v in y_gjr[:400]:
            g.update(v)
    assert g.n_refits_ == 4


@pytest.mark.slow
def test_fit_recovers_simulated_parameters() -> None:
    true = GarchParams("gjr", "skewt", 0.05, 0.02, 0.04, 0.08, 0.9, nu=6.0, lam=-0.2)
    y = simulate(true, 8000, np.random.default_rng(42))
    fit = fit_garch(y, "gjr", "skewt")
    np.testing.assert_allclose(fit.params.to_array(), true.to_array(), atol=0.05, rtol=0.3)
