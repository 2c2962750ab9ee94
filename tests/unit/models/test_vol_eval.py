"""Scores of volatility forecasts against numpy / statsmodels oracles and hand cases."""

import numpy as np
import pytest
import statsmodels.api as sm

from models.vol_eval import (
    daily_mean_losses,
    dm_test,
    finite_rows,
    mincer_zarnowitz,
    qlike,
    qlike_losses,
    rmse,
    rmse_scaled,
    score_vol,
    squared_error_losses,
)


@pytest.fixture
def pair(rng):
    f = np.exp(rng.normal(-4.0, 0.4, size=300))
    y = f * np.exp(rng.normal(0.0, 0.3, size=300))
    return y, f


def test_mincer_zarnowitz_matches_statsmodels_ols(pair):
    y, f = pair
    mz = mincer_zarnowitz(y, f)
    ols = sm.OLS(y, sm.add_constant(f)).fit()
    assert mz.alpha == pytest.approx(ols.params[0], rel=1e-10, abs=1e-14)
    assert mz.beta == pytest.approx(ols.params[1], rel=1e-10)
    assert mz.r2 == pytest.approx(ols.rsquared, rel=1e-10)
    assert mz.r2 == pytest.approx(np.corrcoef(y, f)[0, 1] ** 2, rel=1e-10)


def test_mincer_zarnowitz_hand_cases():
    mz = mincer_zarnowitz([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    assert (mz.alpha, mz.beta, mz.r2) == pytest.approx((0.0, 0.5, 1.0))
    flat = mincer_zarnowitz([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])
    assert flat.r2 == 0.0 and flat.beta == 0.0 and flat.alpha == pytest.approx(2.0)
    # y = 1 + f + e with e orthogonal to f: R² = var(f) / (var(f) + var(e))
    f = np.array([-1.0, 1.0, -1.0, 1.0])
    e = np.array([1.0, 1.0, -1.0, -1.0])
    mz = mincer_zarnowitz(1.0 + f + e, f)
    assert (mz.alpha, mz.beta, mz.r2) == pytest.approx((1.0, 1.0, 0.5))


def test_rmse_and_scaled_rmse_by_hand():
    y, f = [1.0, 2.0, 3.0], [1.0, 4.0, 3.0]
    assert rmse(y, f) == pytest.approx(np.sqrt(4.0 / 3.0))
    assert rmse_scaled(y, f, 1.0, 3.0) == pytest.approx(np.sqrt(4.0 / 3.0) / 2.0)
    # the same figure as scaling both series first
    ys = (np.array(y) - 1.0) / 2.0
    fs = (np.array(f) - 1.0) / 2.0
    assert rmse_scaled(y, f, 1.0, 3.0) == pytest.approx(np.sqrt(np.mean((ys - fs) ** 2)))
    assert squared_error_losses(y, f).tolist() == [0.0, 4.0, 0.0]
    with pytest.raises(ValueError, match="low < high"):
        rmse_scaled(y, f, 2.0, 2.0)


def test_qlike_formula_and_properties(pair):
    y, f = pair
    r = y**2 / f**2
    assert qlike(y, f) == pytest.approx(np.mean(r - np.log(r) - 1.0), rel=1e-12)
    assert qlike(f, f) == 0.0
    assert np.all(qlike_losses(y, f) >= 0)
    # asymmetric: under-prediction by a factor 2 costs more than over-prediction by 2
    assert qlike([2.0], [1.0]) > qlike([1.0], [2.0])
    assert qlike([2.0], [1.0]) == pytest.approx(4.0 - np.log(4.0) - 1.0)
    with pytest.raises(ValueError, match="> 0"):
        qlike([0.0], [1.0])


def test_inputs_validated():
    with pytest.raises(ValueError, match="same length"):
        rmse([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        rmse([np.nan], [1.0])
    assert finite_rows([1.0, np.nan, 3.0], [1.0, 2.0, np.inf]).tolist() == [True, False, False]


def test_score_vol_bundles_the_scores(pair):
    y, f = pair
    s = score_vol(y, f, 0.0, 0.1)
    assert s.n_obs == y.size
    assert s.mz == mincer_zarnowitz(y, f)
    assert s.rmse01 == pytest.approx(rmse(y, f) / 0.1)
    assert s.qlike == pytest.approx(qlike(y, f))
    assert set(s.to_dict()) >= {"mz_r2", "rmse01", "qlike", "n_obs"}


def test_dm_test_sign_and_identity(rng):
    a = rng.exponential(size=400)
    b = a + 0.5 + rng.normal(0, 0.1, size=400)
    res = dm_test(a, b, h=10)
    assert res.statistic < -5 and res.pvalue < 1e-6 and res.pvalue_less < 1e-6
    same = dm_test(a, a, h=1)
    assert same.statistic == 0.0 and same.pvalue == 1.0


def test_daily_mean_losses():
    assert daily_mean_losses([1.0, 3.0, 5.0], [7, 7, 9]).tolist() == [2.0, 5.0]
    assert daily_mean_losses([1.0, 3.0, 5.0], [7, 7, 9], days=[9, 7]).tolist() == [5.0, 2.0]
