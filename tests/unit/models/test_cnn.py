"""The heatmap CNN: inputs, no look-ahead, images, network shapes, deterministic training."""

import numpy as np
import pytest
import torch
from scipy import optimize
from torch import nn

from models.cnn import (
    CnnConfig,
    SampleSet,
    VolCNN,
    VolForecaster,
    VolInputState,
    build_inputs,
    fit_specs,
    make_artifact,
    pairs_of,
    qlike_objective,
    source_rows,
    train_network,
    vol_targets,
)
from models.exceptions import NotEnoughObservations
from models.features import FEATURE_NAMES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = CnnConfig(
    warmup=30, max_epochs=2, samples_per_epoch=96, val_samples=64, batch_size=32, patience=1
)


def _returns(rng, n_days, n_assets):
    """Clustered returns with different volatility levels per asset."""
    levels = np.geomspace(0.004, 0.03, n_assets)
    s2 = levels**2
    out = np.empty((n_days, n_assets))
    for t in range(n_days):
        out[t] = rng.standard_normal(n_assets) * np.sqrt(s2)
        s2 = 0.05 * levels**2 + 0.1 * out[t] ** 2 + 0.85 * s2
    return out


def _dataset(r, config=TINY):
    w = np.full(r.shape[1], 1.0 / r.shape[1])
    inp = build_inputs(w, config, log_returns=r)
    specs = fit_specs(inp.windows, r.shape[1], config)
    rows, cross = source_rows(specs, inp.windows, r.shape[1])
    y = vol_targets(inp.returns, inp.bar_index, config.horizons)
    data = SampleSet(
        rows, cross, inp.har.astype(np.float32), y**2 / inp.scale[:, :, None] ** 2, r.shape[1]
    )
    return inp, specs, data


# ----------------------------------------------------------------- inputs


@pytest.mark.parametrize("n_assets", [2, 10, 200])
def test_shapes_for_any_number_of_assets(rng, n_assets):
    r = _returns(rng, 45, n_assets)
    inp, specs, data = _dataset(r)
    s = n_assets + 1
    n_rows = 45 + 1 - TINY.warmup
    assert inp.windows.shape == (n_rows, s, len(FEATURE_NAMES), 10)
    assert inp.har.shape == (n_rows, s, 4) and inp.scale.shape == (n_rows, s)
    assert inp.bar_index[0] == TINY.warmup and inp.bar_index[-1] == 45
    pairs = pairs_of(np.arange(n_rows), s)
    img, extra = data.batch(pairs[:7], TINY)
    assert img.shape == (7, 3, 32, 32) and extra.shape == (7, 4)
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    net = VolCNN(3, 4, 3, TINY).eval()
    assert net(img, extra).shape == (7, 3)
    # the same network and specs serve any other book size
    state = net.state_dict()
    f = VolForecaster(TINY, specs, state)
    vol = f.predict_vol(inp.windows[-2:], inp.har[-2:], inp.scale[-2:])
    assert vol.shape == (2, s, 3) and np.all(vol > 0)
    other = _returns(rng, 45, 3)
    inp3 = build_inputs(np.full(3, 1 / 3), TINY, log_returns=other)
    assert f.predict_vol(inp3.windows[-1:], inp3.har[-1:], inp3.scale[-1:]).shape == (1, 4, 3)


def test_streaming_state_equals_batch_rows(rng):
    r = _returns(rng, 50, 3)
    w = np.array([0.5, 0.3, 0.2])
    inp = build_inputs(w, TINY, log_returns=r)
    state = VolInputState(w, TINY)
    for t in range(50):
        state.update_returns(r[t])
        if t + 1 < TINY.warmup:
            with pytest.raises(NotEnoughObservations):
                state.inputs()
        elif t + 1 in (TINY.warmup, 50):
            i = t + 1 - TINY.warmup
            windows, har, scale = state.inputs()
            np.testing.assert_array_equal(windows, inp.windows[i])
            np.testing.assert_array_equal(har, inp.har[i])
            np.testing.assert_array_equal(scale, inp.scale[i])


def test_portfolio_series_is_the_constant_mix(rng):
    r = _returns(rng, 40, 2)
    w = np.array([0.7, 0.3])
    inp = build_inputs(w, TINY, log_returns=r)
    expect = np.log1p(np.expm1(r) @ w)
    np.testing.assert_allclose(inp.returns[1:, 2], expect, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(inp.returns[1:, :2], r, rtol=1e-9, atol=1e-15)


def test_scale_and_har_inputs_by_hand(rng):
    r = _returns(rng, 40, 2)
    inp = build_inputs([0.5, 0.5], TINY, log_returns=r)
    t = inp.bar_index[-1]  # bar t has return r[t - 1]
    rr = inp.returns[1 : t + 1, 0]
    lam = 0.5 ** (1 / TINY.scale_halflife)
    wts = lam ** np.arange(rr.size)[::-1]
    scale = np.sqrt(np.sum(wts * rr**2) / wts.sum())
    assert inp.scale[-1, 0] == pytest.approx(scale, rel=1e-12)
    for j, k in enumerate((1, 5, 22)):
        rv = np.sqrt(np.mean(rr[-k:] ** 2))
        assert inp.har[-1, 0, j] == pytest.approx(np.log(max(rv / scale, 0.02)), rel=1e-12)
    lam_long = 0.5 ** (1 / TINY.long_halflife)
    wl = lam_long ** np.arange(rr.size)[::-1]
    long = np.sqrt(np.sum(wl * rr**2) / wl.sum())
    assert inp.har[-1, 0, 3] == pytest.approx(np.log(max(long / scale, 0.02)), rel=1e-10)
    # standardised window: scale-dependent features divided by the scale, volume_z kept
    state = VolInputState([0.5, 0.5], TINY)
    for x in r:
        state.update_returns(x)
    raw = state._window.get()
    vz = FEATURE_NAMES.index("volume_z")
    np.testing.assert_allclose(inp.windows[-1, :, 0], raw[:, 0] / inp.scale[-1][:, None])
    np.testing.assert_array_equal(inp.windows[-1, :, vz], raw[:, vz])


def test_inputs_and_targets_never_overlap(rng):
    """Row t sees bars <= t only; its target sees bars t+1 .. t+h only."""
    r = _returns(rng, 90, 3)
    w = np.full(3, 1 / 3)
    cfg = TINY
    base = build_inputs(w, cfg, log_returns=r)
    y = vol_targets(base.returns, base.bar_index, cfg.horizons)
    i = 20
    t = int(base.bar_index[i])
    # structural: target of row i is built from bars t+1..t+h
    for j, h in enumerate(cfg.horizons):
        expect = np.sqrt(np.mean(base.returns[t + 1 : t + 1 + h] ** 2, axis=0))
        np.testing.assert_allclose(y[i, :, j], expect)
    # perturb the future (returns of bars > t; bar b has return r[b - 1])
    future = r.copy()
    future[t:] *= -3.0
    moved = build_inputs(w, cfg, log_returns=future)
    np.testing.assert_array_equal(moved.windows[: i + 1], base.windows[: i + 1])
    np.testing.assert_array_equal(moved.har[: i + 1], base.har[: i + 1])
    np.testing.assert_array_equal(moved.scale[: i + 1], base.scale[: i + 1])
    assert not np.array_equal(moved.windows[i + 1], base.windows[i + 1])
    # perturb the past (bars <= t): the targets of row i do not move
    past = r.copy()
    past[:t] *= 5.0
    moved_past = build_inputs(w, cfg, log_returns=past)
    y_past = vol_targets(moved_past.returns, moved_past.bar_index, cfg.horizons)
    np.testing.assert_allclose(y_past[i], y[i], rtol=1e-12)
    assert np.all(np.isnan(y[-1]))  # the last row has no target yet


# ----------------------------------------------------------------- images


def test_images_equal_heatmap_spec_transform(rng):
    r = _returns(rng, 60, 4)
    inp, specs, data = _dataset(r)
    i, s = 10, 2
    img, _ = data.batch(np.array([[i, s]]), TINY)
    img = img.numpy()[0]
    w = inp.windows[i]
    np.testing.assert_array_equal(img[0], specs.series.transform(w[s : s + 1]))
    np.testing.assert_array_equal(img[1], specs.series.transform(w[4:5]))  # the portfolio
    np.testing.assert_array_equal(img[2], specs.cross.transform(w[:4]))


def test_channel_subset_and_no_har():
    cfg = CnnConfig(channels=("portfolio", "self"), har_inputs=False, skip="none")
    assert cfg.channels == ("self", "portfolio") and cfg.n_extra == 0
    net = VolCNN(2, 0, 2, cfg)
    assert net.skip is None and net.har_var is None
    assert net(torch.zeros(3, 2, 32, 32)).shape == (3, 2)


# ----------------------------------------------------------------- network


@pytest.mark.parametrize(
    ("kernel", "pool", "sizes"),
    [(3, 2, [16, 8, 4, 2, 1]), (3, 3, [10, 3, 1, 1, 1]), (5, 3, [10, 3, 1, 1, 1])],
)
def test_architecture_follows_the_paper(kernel, pool, sizes):
    cfg = CnnConfig(kernel_size=kernel, pool_size=pool)
    net = VolCNN(3, 3, 2, cfg)
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 5
    assert all(c.out_channels == 64 and c.kernel_size == (kernel, kernel) for c in convs)
    assert sum(isinstance(m, nn.ReLU) for m in net.features) == 5
    x = torch.zeros(1, 3, 32, 32)
    widths = []
    for m in net.features:
        x = m(x)
        if isinstance(m, nn.Conv2d):
            widths.append(x.shape[-1])  # "same" padding: the conv keeps the width
        if isinstance(m, nn.MaxPool2d):
            widths[-1] = x.shape[-1]
    assert widths == sizes
    linears = [m for m in net.head if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [128, 64, 2]
    assert linears[0].in_features == 64 + 3  # n_extra passed explicitly here
    drops = [m for m in net.head if isinstance(m, nn.Dropout)]
    assert drops and all(d.p == 0.5 for d in drops)


def test_qlike_objective_is_minimised_at_log_mean():
    y = torch.tensor([[0.5], [2.0], [1.5]])
    grid = torch.linspace(-2, 2, 4001)[:, None, None]
    losses = torch.stack([qlike_objective(g.expand(3, 1), y) for g in grid])
    best = float(grid[int(torch.argmin(losses))])
    assert best == pytest.approx(float(torch.log(y.mean())), abs=2e-3)


def test_config_validation_and_round_trip():
    cfg = CnnConfig(horizons=(5, 10), kernel_size=5)
    assert CnnConfig.from_dict(cfg.to_dict()) == cfg
    for bad, match in (
        ({"horizons": (0,)}, "horizons"),
        ({"channels": ("rgb",)}, "channels"),
        ({"bars": "tick"}, "bars"),
        ({"kernel_size": 4}, "kernel_size"),
        ({"pool_size": 4}, "pool_size"),
        ({"warmup": 5}, "warmup"),
        ({"dropout": 1.0}, "dropout"),
        ({"skip": "resnet"}, "skip"),
        ({"har_inputs": False}, "har_inputs"),
    ):
        with pytest.raises(ValueError, match=match):
            CnnConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        CnnConfig.from_dict({"colour": 1})


# ----------------------------------------------------------------- training


def test_training_is_deterministic_for_a_seed(rng):
    r = _returns(rng, 120, 2)
    _, _, data = _dataset(r)
    s = 3
    tr = pairs_of(np.arange(0, 60), s)
    va = pairs_of(np.arange(70, 80), s)
    a = train_network(data, tr, va, TINY, seed=7)
    b = train_network(data, tr, va, TINY, seed=7)
    c = train_network(data, tr, va, TINY, seed=8)
    assert a.state_dict.keys() == b.state_dict.keys()
    for k in a.state_dict:
        assert torch.equal(a.state_dict[k], b.state_dict[k]), k
    assert any(not torch.equal(a.state_dict[k], c.state_dict[k]) for k in a.state_dict)
    assert a.history == b.history and 1 <= len(a.history) <= 2
    assert a.best_val_loss == min(h["val_loss"] for h in a.history)


def test_training_leaves_global_rng_alone(rng):
    r = _returns(rng, 100, 2)
    _, _, data = _dataset(r)
    torch.manual_seed(123)
    expect = torch.rand(3)
    torch.manual_seed(123)
    train_network(data, pairs_of(np.arange(40), 3), pairs_of(np.arange(50, 60), 3), TINY, seed=1)
    assert torch.equal(torch.rand(3), expect)


def _frozen(skip):
    """TINY with a learning rate so small that one epoch leaves the initial weights."""
    return CnnConfig(**{**TINY.to_dict(), "max_epochs": 1, "learning_rate": 1e-12, "skip": skip})


def test_log_skip_starts_at_pooled_log_har_ols(rng):
    r = _returns(rng, 120, 3)
    _, _, data = _dataset(r)
    pairs = pairs_of(np.arange(60), 4)
    res = train_network(data, pairs, pairs_of(np.arange(70, 80), 4), _frozen("har_log"), seed=0)
    y = data.target[pairs[:, 0], pairs[:, 1]]
    ok = np.all(np.isfinite(y), axis=1)
    x = data.har[pairs[ok, 0], pairs[ok, 1]].astype(float)
    design = np.column_stack([np.ones(x.shape[0]), x])
    coef, *_ = np.linalg.lstsq(design, np.log(np.maximum(y[ok], 1e-4)), rcond=None)
    got = res.state_dict["skip.weight"].numpy()
    np.testing.assert_allclose(got, coef[1:].T, rtol=1e-4, atol=1e-5)


def test_variance_skip_starts_exactly_at_a_pooled_har_rv(rng):
    """NNLS HAR-RV coefficients; with the dense head at zero the net *is* that HAR."""
    r = _returns(rng, 120, 3)
    _, _, data = _dataset(r)
    pairs = pairs_of(np.arange(60), 4)
    cfg = _frozen("har_var")
    res = train_network(data, pairs, pairs_of(np.arange(70, 80), 4), cfg, seed=0)
    y = data.target[pairs[:, 0], pairs[:, 1]]
    ok = np.all(np.isfinite(y), axis=1)
    x = data.har[pairs[ok, 0], pairs[ok, 1]].astype(float)
    design = np.column_stack([np.ones(x.shape[0]), np.exp(2 * x)])
    c = np.stack([optimize.nnls(design, y[ok, j])[0] for j in range(3)])
    c = np.maximum(c, 1e-6)
    got = torch.nn.functional.softplus(res.state_dict["har_var"]).numpy()
    np.testing.assert_allclose(got, c, rtol=1e-4, atol=1e-6)
    net = VolCNN(3, 4, 3, cfg)
    net.load_state_dict(res.state_dict)
    net.eval()
    img, extra = data.batch(pairs[ok][:20], cfg)
    with torch.no_grad():
        out = net(img, extra).numpy()
    base = design[:20] @ c.T
    bias = np.log(y[ok].mean(axis=0)) - np.log((design @ c.T).mean(axis=0))
    np.testing.assert_allclose(out, np.log(base) + bias, rtol=1e-4, atol=1e-4)


def test_forecaster_from_artifact_matches_network(rng):
    r = _returns(rng, 100, 2)
    inp, specs, data = _dataset(r)
    res = train_network(
        data, pairs_of(np.arange(40), 3), pairs_of(np.arange(50, 60), 3), TINY, seed=0
    )
    art = make_artifact(TINY, specs, res.state_dict, version="test")
    f = VolForecaster.from_artifact(art)
    vol = f.predict_vol(inp.windows, inp.har, inp.scale)
    net = VolCNN(3, 4, 3, TINY)
    net.load_state_dict(res.state_dict)
    net.eval()
    img, extra = data.batch(pairs_of(np.arange(inp.n_rows), 3), TINY)
    with torch.no_grad():
        o = net(img, extra).double().numpy().reshape(inp.n_rows, 3, 3)
    np.testing.assert_allclose(vol, inp.scale[:, :, None] * np.exp(o / 2), rtol=1e-6)
    # one series alone (the CnnVaR path) gives the same numbers
    port = f.predict_vol(inp.windows[-3:], inp.har[-3:], inp.scale[-3:], series=[2])
    np.testing.assert_allclose(port[:, 0], vol[-3:, 2], rtol=1e-6)
    with pytest.raises(ValueError, match="format"):
        VolForecaster.from_artifact({**art, "format": 99})
