"""CnnVaR: the streaming contract, FHS / Student-t oracles, warm-up, any book size."""

import pickle

import numpy as np
import pytest
import torch
from scipy import stats

from models.base import LEVELS
from models.cnn import (
    CnnConfig,
    SampleSet,
    build_inputs,
    fit_specs,
    make_artifact,
    pairs_of,
    source_rows,
    train_network,
    vol_targets,
)
from models.cnn_var import CnnVaR
from models.exceptions import DataError, NotEnoughObservations
from models.measures import var_es_from_samples, var_es_student_t
from models.walkforward import walk_forward

CFG = CnnConfig(
    warmup=30, max_epochs=1, samples_per_epoch=64, val_samples=32, batch_size=32, patience=1
)
MIN_Z = 20


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _returns(rng, n_days, n_assets):
    s2 = np.full(n_assets, 1e-4)
    out = np.empty((n_days, n_assets))
    for t in range(n_days):
        out[t] = rng.standard_t(5, n_assets) * np.sqrt(s2 * 3 / 5)
        s2 = 5e-6 + 0.1 * out[t] ** 2 + 0.85 * s2
    return out


@pytest.fixture(scope="module")
def artifact():
    rng = np.random.default_rng(42)
    r = _returns(rng, 160, 3)
    w = np.full(3, 1 / 3)
    inp = build_inputs(w, CFG, log_returns=r)
    specs = fit_specs(inp.windows, 3, CFG)
    y = vol_targets(inp.returns, inp.bar_index, CFG.horizons)
    data = SampleSet(
        *source_rows(specs, inp.windows, 3),
        inp.har.astype(np.float32),
        y**2 / inp.scale[:, :, None] ** 2,
        portfolio=3,
    )
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    res = train_network(data, pairs_of(np.arange(80), 4), pairs_of(np.arange(90, 110), 4), CFG)
    torch.set_num_threads(old)
    return make_artifact(CFG, specs, res.state_dict, version="test")


@pytest.fixture
def data(rng):
    return _returns(rng, 80, 2)


def _model(artifact, n_assets=2, **kw):
    return CnnVaR(
        np.full(n_assets, 1.0 / n_assets), artifact, min_standardized=MIN_Z, window=40, **kw
    )


def test_warm_up_raises_not_enough_observations(artifact, data):
    m = _model(artifact)
    assert m.min_obs == CFG.warmup + MIN_Z
    for t in range(m.min_obs):
        with pytest.raises(NotEnoughObservations):
            m.predict()
        assert m.predict_or_none() is None
        m.update(data[t])
    assert np.isfinite(m.sigma_next_) and m.n_standardized_ == MIN_Z
    f = m.predict()
    assert f.var.shape == (3,) and np.all(f.var > 0) and np.all(f.es >= f.var)
    assert np.all(np.diff(f.var) >= 0)  # 20 scenarios: the tail quantiles may coincide


def test_fhs_equals_empirical_law_of_own_standardised_returns(artifact, data):
    m = _model(artifact)
    w = m.weights
    sigmas, z = [], []
    for x in data:
        if sigmas and np.isfinite(sigmas[-1]):
            z.append(float(w @ np.expm1(x)) / sigmas[-1])
        m.update(x)
        sigmas.append(m.sigma_next_)
    np.testing.assert_allclose(m.standardized_returns(), np.array(z)[-40:], rtol=1e-12)
    var, es = var_es_from_samples(m.sigma_next_ * np.array(z)[-40:], LEVELS)
    f = m.predict()
    np.testing.assert_allclose(f.var, var, rtol=1e-12)
    np.testing.assert_allclose(f.es, es, rtol=1e-12)


def test_student_t_method_matches_a_scipy_fit(artifact, data):
    m = _model(artifact, method="t", refit_every=5)
    m.fit(data)
    assert 2.0 < m.nu_ <= 200.0 and m.t_scale_ > 0
    f = m.predict()
    var, es = var_es_student_t(0.0, m.sigma_next_ * m.t_scale_, m.nu_, LEVELS, standardized=False)
    np.testing.assert_allclose(f.var, var, rtol=1e-12)
    np.testing.assert_allclose(f.es, es, rtol=1e-12)
    # the fit the model holds is scipy's on the z held at the last refit
    m2 = _model(artifact, method="t", refit_every=1)
    m2.fit(data)
    nu, _, scale = stats.t.fit(m2.standardized_returns(), floc=0.0)
    assert m2.nu_ == pytest.approx(min(max(nu, 2.1), 200.0))
    assert m2.t_scale_ == pytest.approx(scale)


def test_fit_equals_repeated_update_and_predict_only_reads(artifact, data):
    a = _model(artifact).fit(data)
    b = _model(artifact)
    for x in data:
        b.update(x)
    fa, fb = a.predict(), b.predict()
    np.testing.assert_array_equal(fa.var, fb.var)
    np.testing.assert_array_equal(fa.es, fb.es)
    again = a.predict()
    np.testing.assert_array_equal(fa.var, again.var)
    # refit after more data = the same as streaming it
    a.fit(data[:60])
    c = _model(artifact).fit(data[:60])
    np.testing.assert_array_equal(a.predict().var, c.predict().var)


def test_pickle_mid_stream_continues_identically(artifact, data):
    m = _model(artifact)
    for x in data[:55]:
        m.update(x)
    blob = pickle.dumps(m)
    clone = pickle.loads(blob)
    assert clone._forecaster is None  # rebuilt from the artifact on demand
    for x in data[55:]:
        m.update(x)
        clone.update(x)
    np.testing.assert_array_equal(m.predict().var, clone.predict().var)
    np.testing.assert_array_equal(m.predict().es, clone.predict().es)


def test_inputs_left_unchanged(artifact, data):
    copy = data.copy()
    _model(artifact).fit(data)
    np.testing.assert_array_equal(data, copy)


def test_update_bar_matches_update_on_close_only_artifact(artifact, data):
    closes = 100.0 * np.exp(np.vstack([np.zeros((1, 2)), np.cumsum(data, axis=0)]))
    a = _model(artifact)
    for c in closes:
        a.update_bar(c * 1.01, c * 1.02, c * 0.98, c, np.full(2, 1e6))  # o/h/l/v ignored ("close")
    b = _model(artifact).fit(np.diff(np.log(closes), axis=0))
    assert a.n_seen_ == b.n_seen_ == data.shape[0]
    np.testing.assert_allclose(a.predict().var, b.predict().var, rtol=1e-6)


@pytest.mark.parametrize(
    ("close", "message"),
    [
        ([100.0, 0.0], r"close prices must be finite and > 0"),
        ([100.0, np.nan], r"close prices must be finite and > 0"),
        ([100.0, 50.0, 1.0], r"close has shape \(3,\), expected \(2,\)"),
    ],
)
def test_update_bar_rejects_a_bad_close_and_keeps_its_state(artifact, data, close, message):
    m = _model(artifact)
    ok = np.array([100.0, 50.0])
    m.update_bar(ok, ok, ok, ok)
    m.update_bar(ok * 1.01, ok * 1.01, ok * 1.01, ok * 1.01)
    before = pickle.dumps(m)
    with pytest.raises(DataError, match=message):
        m.update_bar(ok, ok, ok, close)
    assert pickle.dumps(m) == before


@pytest.mark.parametrize("n_assets", [2, 10, 200])
def test_one_artifact_serves_any_book_size(artifact, rng, n_assets):
    r = _returns(rng, CFG.warmup + MIN_Z + 2, n_assets)
    m = _model(artifact, n_assets=n_assets).fit(r)
    f = m.predict()
    assert np.all(np.isfinite(f.var)) and np.all(f.es >= f.var)


def test_walk_forward_gives_forecasts_after_warm_up(artifact, data):
    d = np.datetime64("2020-01-01") + np.arange(data.shape[0])
    res = walk_forward(_model(artifact), data, d, d[0])
    assert res.model == "cnn"
    first = CnnVaR(np.full(2, 0.5), artifact, min_standardized=MIN_Z, window=40).min_obs
    assert np.all(np.isnan(res.var[:first])) and np.all(np.isfinite(res.var[first:]))


def test_bad_parameters(artifact):
    with pytest.raises(ValueError, match="method"):
        _model(artifact, method="mc")
    with pytest.raises(ValueError, match="horizon"):
        _model(artifact, horizon=3)
    with pytest.raises(ValueError, match="artifact"):
        CnnVaR([0.5, 0.5], {"config": {}})
    with pytest.raises(ValueError, match="window"):
        CnnVaR([0.5, 0.5], artifact, window=10, min_standardized=20)
    with pytest.raises(ValueError, match="shape"):
        _model(artifact).update(np.zeros(3))
