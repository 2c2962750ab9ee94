"""`compare_fz0`: Diebold-Mariano comparison of FZ0 losses against the best classical model."""

import numpy as np
import pytest
from scipy import stats

from models import backtest as bt
from models.base import LEVELS
from models.walkforward import WalkForwardResult
from stream_app.backtest_cmd import compare_fz0

N_DAYS = 2000
SIGMA = 0.01


@pytest.fixture(scope="module")
def days():
    rng = np.random.default_rng(7)
    dates = np.busday_offset("2010-01-01", np.arange(N_DAYS), roll="forward")
    return dates, rng.normal(0.0, SIGMA, N_DAYS)


def normal_forecast(name, dates, realized, scale, warmup=0):
    """VaR/ES of N(0, (scale * SIGMA)^2) every day; NaN for the first ``warmup`` days."""
    a = 1.0 - np.array(LEVELS)
    z = stats.norm.ppf(a)
    var = np.tile(-scale * SIGMA * z, (dates.size, 1))
    es = np.tile(scale * SIGMA * stats.norm.pdf(z) / a, (dates.size, 1))
    var[:warmup] = np.nan
    es[:warmup] = np.nan
    return WalkForwardResult(name, dates, realized, var, es, LEVELS, np.zeros(dates.size))


def test_the_true_law_beats_the_best_classical_model_significantly(days):
    dates, y = days
    results = [
        normal_forecast("narrow", dates, y, 0.6),
        normal_forecast("wide", dates, y, 1.8),
        normal_forecast("true", dates, y, 1.0),
    ]
    rows = compare_fz0(results, classical=("narrow", "wide"))
    losses = {r.model: bt.fz0_loss(y, r.var[:, 1], r.es[:, 1], 0.975) for r in results}
    best = min(("narrow", "wide"), key=losses.get)
    assert [r.model for r in rows] == [m for m in ("narrow", "wide", "true") if m != best]
    assert {r.reference for r in rows} == {best}
    true = next(r for r in rows if r.model == "true")
    assert true.n_days == N_DAYS
    assert true.model_fz0 == pytest.approx(losses["true"])
    assert true.reference_fz0 == pytest.approx(losses[best])
    assert true.mean_diff == pytest.approx(losses["true"] - losses[best])
    assert true.mean_diff < 0 and true.statistic < 0
    assert true.pvalue_less < 0.01 and true.pvalue == pytest.approx(2 * true.pvalue_less)


def test_models_are_compared_on_the_days_all_of_them_forecast(days):
    dates, y = days
    late = normal_forecast("late", dates, y, 1.0, warmup=300)
    ref = normal_forecast("ref", dates, y, 1.3)
    [row] = compare_fz0([ref, late], reference="ref")
    assert row.model == "late" and row.n_days == N_DAYS - 300
    assert row.reference_fz0 == pytest.approx(
        bt.fz0_loss(y[300:], ref.var[300:, 1], ref.es[300:, 1], 0.975)
    )


def test_a_model_equal_to_the_reference_is_no_different(days):
    dates, y = days
    a = normal_forecast("a", dates, y, 1.2)
    b = normal_forecast("b", dates, y, 1.2)
    [row] = compare_fz0([a, b], classical=("a",))
    assert (row.model, row.reference) == ("b", "a")
    assert row.mean_diff == 0.0 and row.statistic == 0.0 and row.pvalue == 1.0


def test_no_reference_no_rows_and_an_unknown_reference_is_an_error(days):
    dates, y = days
    results = [normal_forecast("x", dates, y, 1.0), normal_forecast("y", dates, y, 1.1)]
    assert compare_fz0(results, classical=("hs",)) == []
    with pytest.raises(ValueError, match="reference model 'hs'"):
        compare_fz0(results, reference="hs")
