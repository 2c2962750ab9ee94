"""HAR-RV, EWMA, GARCH and regression baselines against loops, lstsq and arch."""

import numpy as np
import pytest
from arch import arch_model

from models.vol_baselines import (
    GarchVol,
    HarRV,
    RegressionVol,
    ewma_vol,
    har_regressors,
    realized_vol_target,
)


@pytest.fixture
def returns(rng):
    """Two series with GARCH-like clustering, 600 days."""
    n = 600
    out = np.empty((n, 2))
    s2 = np.array([1e-4, 4e-4])
    for t in range(n):
        out[t] = rng.standard_normal(2) * np.sqrt(s2)
        s2 = np.array([1e-6, 4e-6]) + 0.08 * out[t] ** 2 + 0.9 * s2
    return out


def test_realized_vol_target_by_loop(returns):
    h = 5
    got = realized_vol_target(returns, h)
    n = returns.shape[0]
    for t in (0, 17, n - h - 1):
        expect = np.sqrt(np.mean(returns[t + 1 : t + 1 + h] ** 2, axis=0))
        np.testing.assert_allclose(got[t], expect, rtol=1e-12)
    assert np.all(np.isnan(got[n - h :]))
    assert np.all(np.isfinite(got[: n - h]))


def test_har_regressors_by_loop(returns):
    x = har_regressors(returns)
    assert x.shape == (600, 2, 3)
    t = 40
    for j, k in enumerate((1, 5, 22)):
        np.testing.assert_allclose(x[t, :, j], np.mean(returns[t - k + 1 : t + 1] ** 2, axis=0))
    assert np.isnan(x[20, 0, 2]) and np.isfinite(x[21, 0, 2])


def test_har_rv_equals_lstsq_on_loop_built_design(returns):
    h, until = 10, 450
    model = HarRV(h).fit(returns, until=until)
    for s in range(2):
        rows, ys = [], []
        for t in range(21, until - h):  # whole target before `until`
            r = returns[: t + 1, s]
            rows.append([1.0, r[-1] ** 2, np.mean(r[-5:] ** 2), np.mean(r[-22:] ** 2)])
            ys.append(np.mean(returns[t + 1 : t + 1 + h, s] ** 2))
        coef, *_ = np.linalg.lstsq(np.array(rows), np.array(ys), rcond=None)
        np.testing.assert_allclose(model.coef_[s], coef, rtol=1e-8, atol=1e-12)
    pred = model.predict(returns)
    t = 500
    design = np.array([1.0, *har_regressors(returns)[t, 1]])
    assert pred[t, 1] == pytest.approx(np.sqrt(max(design @ model.coef_[1], model.floor_[1])))


def test_har_rv_never_reads_past_until(returns):
    until = 400
    a = HarRV(5).fit(returns, until=until)
    changed = returns.copy()
    changed[until:] *= 7.0
    b = HarRV(5).fit(changed, until=until)
    np.testing.assert_array_equal(a.coef_, b.coef_)


def test_har_log_variant_runs(returns):
    pred = HarRV(10, log=True).fit(returns, until=500).predict(returns)
    assert np.all(np.isfinite(pred[21:])) and np.all(pred[21:] > 0)


def test_ewma_by_loop(returns):
    got = ewma_vol(returns, lam=0.94)
    s2 = returns[0] ** 2
    for t in range(1, 50):
        s2 = 0.94 * s2 + 0.06 * returns[t] ** 2
    np.testing.assert_allclose(got[49], np.sqrt(s2), rtol=1e-12)
    with pytest.raises(ValueError, match="lam"):
        ewma_vol(returns, lam=1.0)


def test_garch_params_match_arch_and_multi_step_formula(returns):
    h, until = 10, 500
    g = GarchVol(h).fit(returns, until=until)
    res = arch_model(
        100 * returns[:until, 0], mean="Zero", vol="GARCH", p=1, q=1, dist="normal", rescale=False
    ).fit(disp="off")
    np.testing.assert_allclose(
        g.params_[0],
        [res.params["omega"] / 1e4, res.params["alpha[1]"], res.params["beta[1]"]],
        rtol=1e-10,
    )
    s2 = g.one_step_variance(returns)
    omega, alpha, beta = g.params_[1]
    v = g.init_var_[1]
    for t in range(300):
        v = omega + alpha * returns[t, 1] ** 2 + beta * v
    assert s2[299, 1] == pytest.approx(v, rel=1e-12)
    # h-day forecast = mean of the iterated expected variances
    path, cur = [], s2[299, 1]
    for _ in range(h):
        path.append(cur)
        cur = omega + (alpha + beta) * cur
    assert g.predict(returns)[299, 1] == pytest.approx(np.sqrt(np.mean(path)), rel=1e-10)


def test_regression_vol_linear_recovers_loglinear_relation(rng):
    x = rng.normal(size=(500, 3))
    y = 0.5 * x[:, 0] - 0.2 * x[:, 2] - 4.0
    m = RegressionVol("linear").fit(x, y)
    assert m.smear_ == pytest.approx(1.0)
    np.testing.assert_allclose(m.predict(x), np.exp(y), rtol=1e-8)


@pytest.mark.parametrize("kind", ["svr", "tree"])
def test_regression_vol_other_kinds_fit_and_subsample(rng, kind):
    x = rng.normal(size=(300, 4))
    y = x[:, 0] + rng.normal(0, 0.1, size=300)
    m = RegressionVol(kind, max_train=200, seed=1).fit(x, y)
    pred = m.predict_log(x)
    assert np.corrcoef(pred, y)[0, 1] > 0.8
    again = RegressionVol(kind, max_train=200, seed=1).fit(x, y).predict_log(x)
    np.testing.assert_array_equal(pred, again)


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="horizon"):
        HarRV(0)
    with pytest.raises(ValueError, match="kind"):
        RegressionVol("forest")
    with pytest.raises(ValueError, match="until"):
        HarRV(5).fit(np.zeros((30, 1)) + 0.01, until=40)


def test_garch_one_fit_serves_every_horizon(returns):
    g1 = GarchVol(1).fit(returns, until=500)
    g10 = GarchVol(10).fit(returns, until=500)
    np.testing.assert_array_equal(g1.predict(returns, 10), g10.predict(returns))
