"""The streaming contract, checked over every model in the registry (river's `checks/` style)."""

import pickle

import numpy as np
import pytest

from models import NotEnoughObservations
from models.registry import BASELINES, make_model

# Small windows keep the suite fast; the contract does not depend on them.
PARAMS = {
    "hs": {"window": 60},
    "fhs": {"window": 60, "garch_window": 200, "refit_every": 40, "min_obs": 120},
    "ewma": {},
    "garch_t": {"window": 200, "refit_every": 40, "min_obs": 120},
    "gjr_skewt": {"window": 200, "refit_every": 40, "min_obs": 120},
    "copula_garch_t": {
        "window": 200,
        "refit_every": 40,
        "min_obs": 120,
        "copula_window": 120,
        "n_scenarios": 2000,
    },
}
WEIGHTS = np.array([0.5, 0.3, 0.2])


@pytest.fixture(scope="module")
def returns():
    rng = np.random.default_rng(42)
    n = 260
    vol = 0.01 * np.exp(np.cumsum(rng.normal(0, 0.05, n)))[:, None]
    return rng.standard_t(5, size=(n, 3)) * vol * np.array([1.0, 1.5, 0.7])


def _model(name):
    return make_model(name, WEIGHTS, seed=7, **PARAMS[name])


@pytest.mark.parametrize("name", BASELINES)
def test_contract(name, returns):
    model = _model(name)
    # warm-up is explicit
    with pytest.raises(NotEnoughObservations):
        model.predict()
    assert model.predict_or_none() is None
    x = returns.copy()
    half = 200
    for row in x[:half]:
        model.update(row)
    np.testing.assert_array_equal(x, returns)  # inputs unchanged
    first = model.predict()
    again = model.predict()
    np.testing.assert_array_equal(first.var, again.var)  # predict only reads
    assert np.all(first.es >= first.var - 1e-12)
    assert np.all(np.diff(first.var) > 0)  # VaR rises with the level
    # pickle round trip mid-stream: identical future
    clone = pickle.loads(pickle.dumps(model))
    for row in x[half:]:
        model.update(row)
        clone.update(row)
    np.testing.assert_array_equal(model.predict().var, clone.predict().var)
    np.testing.assert_array_equal(model.predict().es, clone.predict().es)
    # fit == reset + repeated update, and refitting the same data gives the same answer
    batch = _model(name).fit(x)
    np.testing.assert_array_equal(batch.predict().var, model.predict().var)
    model.fit(x)
    np.testing.assert_array_equal(batch.predict().es, model.predict().es)


@pytest.mark.parametrize("name", BASELINES)
def test_rejects_bad_input(name):
    model = _model(name)
    with pytest.raises(ValueError, match="shape"):
        model.update(np.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        model.update(np.array([0.0, np.nan, 0.0]))
