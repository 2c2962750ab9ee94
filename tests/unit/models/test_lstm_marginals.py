"""LSTM marginals: features (batch == stream), numpy forward == torch, training."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import stats

from models.lstm_marginals import (
    LstmArtifact,
    LstmMarginals,
    MarginalConfig,
    MarginalState,
    NumpyMarginals,
    decay,
    ewma_sigmas,
    fit_marginals,
    make_windows,
    split_t_cdf,
    split_t_logpdf,
    split_t_ppf,
    standardise_static,
    student_t_logpdf,
    student_t_logpdf_torch,
)

TINY = MarginalConfig(window=12, hidden_size=6, head_size=6, burn_in=5)


def _t_returns(rng: np.random.Generator, n: int, d: int, scale: float = 0.01, nu: float = 5.0):
    return scale * rng.standard_t(nu, size=(n, d))


def _random_net(config: MarginalConfig, seed: int = 0) -> LstmMarginals:
    torch.manual_seed(seed)
    net = LstmMarginals(config)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.4)
    return net


def _split(w, frac=0.8):
    cut = int(np.quantile(w.t_index, frac))
    return w.subset(w.t_index <= cut), w.subset(w.t_index > cut)


def test_config_validation_and_round_trip() -> None:
    with pytest.raises(ValueError, match="window must be >= 2, got 1"):
        MarginalConfig(window=1)
    with pytest.raises(ValueError, match="nu_min"):
        MarginalConfig(nu_min=2.0)
    with pytest.raises(ValueError, match="fast_half_life"):
        MarginalConfig(fast_half_life=-1.0)
    cfg = dataclasses.replace(TINY, static_mean=(0.1, -0.2), static_std=(1.5, 0.5))
    assert MarginalConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        MarginalConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_ewma_sigmas_equal_weighted_mean_oracle(rng: np.random.Generator) -> None:
    r = _t_returns(rng, 50, 2)
    sig = ewma_sigmas(r, TINY)
    lam = decay(TINY.fast_half_life)
    t = 37
    w = lam ** np.arange(t, -1, -1)  # weight of day k is lam^(t - k)
    oracle = np.sqrt((w[:, None] * r[: t + 1] ** 2).sum(axis=0) / w.sum())
    np.testing.assert_allclose(sig[0, t], oracle, rtol=1e-12)


def test_make_windows_contents(rng: np.random.Generator) -> None:
    r = _t_returns(rng, 80, 3)
    w = make_windows(r, TINY)
    n_t = 80 - 1 - (TINY.min_obs - 1)
    assert w.n_windows == 3 * n_t
    sig = ewma_sigmas(r, TINY)[0]
    i = 7
    t, a = w.t_index[i], w.asset[i]
    expected = np.clip(r[t - TINY.window + 1 : t + 1, a] / sig[t, a], -TINY.clip, TINY.clip)
    np.testing.assert_allclose(w.seq[i, :, 0], expected, rtol=1e-6)
    assert w.target[i] == pytest.approx(r[t + 1, a] / sig[t, a])
    valid = np.ones_like(r, dtype=bool)
    valid[60, 1] = False
    w2 = make_windows(r, TINY, valid_target=valid)
    assert w2.n_windows == w.n_windows - 1
    assert not np.any((w2.t_index == 59) & (w2.asset == 1))


def test_stream_features_equal_batch_windows(rng: np.random.Generator) -> None:
    r = _t_returns(rng, 60, 4)
    w = make_windows(r, TINY)
    state = MarginalState(TINY, 4)
    for t in range(45):
        state.update(r[t])
    seq, static_raw, sigma = state.features()
    rows = w.t_index == 44
    np.testing.assert_allclose(seq[:, :, 0], w.seq[rows][:, :, 0], rtol=1e-6)
    np.testing.assert_allclose(static_raw, w.static[rows], rtol=1e-12)
    np.testing.assert_allclose(sigma, w.sigma[rows], rtol=1e-12)


def test_numpy_forward_matches_torch(rng: np.random.Generator) -> None:
    cfg = dataclasses.replace(TINY, static_mean=(0.3, -0.1), static_std=(0.7, 0.2))
    net = _random_net(cfg)
    w = make_windows(_t_returns(rng, 90, 3), cfg)
    static = standardise_static(w.static, cfg)
    with torch.no_grad():
        raw = net(torch.from_numpy(w.seq), torch.from_numpy(static.astype(np.float32)))
        law_t = [a.numpy() for a in net.law(raw)]
    nm = NumpyMarginals(cfg, net.numpy_weights())
    law = nm.predict(w.seq.astype(float), w.static)
    np.testing.assert_allclose(law[0], law_t[0], atol=2e-5)
    for a, b in zip(law[1:], law_t[1:], strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5)
    nu = law[3]
    assert np.all((nu >= cfg.nu_min) & (nu <= cfg.nu_max))
    assert not np.allclose(law[1], law[2])  # the two half-scales differ


def test_numpy_marginals_reject_mismatched_weights() -> None:
    weights = LstmMarginals(TINY).numpy_weights()
    with pytest.raises(ValueError, match="hidden_size"):
        NumpyMarginals(dataclasses.replace(TINY, hidden_size=7), weights)
    with pytest.raises(ValueError, match="lack"):
        LstmArtifact(TINY, {k: v for k, v in weights.items() if "head" not in k}, "x")


def test_student_t_logpdf_matches_scipy(rng: np.random.Generator) -> None:
    y = rng.standard_normal(20)
    mu, sc, nu = rng.normal(size=20), rng.uniform(0.5, 2, 20), rng.uniform(2.1, 30, 20)
    np.testing.assert_allclose(
        student_t_logpdf(y, mu, sc, nu), stats.t.logpdf(y, nu, loc=mu, scale=sc), rtol=1e-10
    )
    t = student_t_logpdf_torch(*(torch.tensor(a) for a in (y, mu, sc, nu))).numpy()
    np.testing.assert_allclose(t, stats.t.logpdf(y, nu, loc=mu, scale=sc), rtol=1e-10)


def test_split_t_law_against_scipy_halves(rng: np.random.Generator) -> None:
    mu, sl, sr, nu = 0.2, 2.0, 0.5, 4.0
    y = np.array([-3.0, -0.5, 0.1, 0.3, 2.0])
    below = y < mu
    # each side is half of a scipy t with that side's scale: density 2 * f / 2
    expected = np.where(
        below,
        stats.t.logpdf(y, nu, loc=mu, scale=sl),
        stats.t.logpdf(y, nu, loc=mu, scale=sr),
    )
    np.testing.assert_allclose(split_t_logpdf(y, mu, sl, sr, nu), expected, rtol=1e-12)
    np.testing.assert_allclose(
        split_t_cdf(y, mu, sl, sr, nu),
        np.where(below, stats.t.cdf(y, nu, mu, sl), stats.t.cdf(y, nu, mu, sr)),
        rtol=1e-12,
    )
    u = rng.uniform(0.001, 0.999, 50)
    np.testing.assert_allclose(split_t_cdf(split_t_ppf(u, mu, sl, sr, nu), mu, sl, sr, nu), u)
    # sampling through the ppf gives the split law: the lower half has scale sl
    draws = split_t_ppf(rng.uniform(size=20000), mu, sl, sr, nu)
    assert np.mean(draws < mu) == pytest.approx(0.5, abs=0.015)
    assert np.median(mu - draws[draws < mu]) == pytest.approx(sl * stats.t.ppf(0.75, nu), rel=0.05)


def test_training_lowers_nll_and_is_deterministic(rng: np.random.Generator) -> None:
    # volatility clustering the LSTM can learn: a two-regime scale
    n = 1000
    regime = np.repeat(rng.integers(0, 2, size=n // 50), 50)
    r = np.where(regime[:, None] == 1, 0.03, 0.006) * rng.standard_t(6, size=(n, 2))
    w = make_windows(r, TINY)
    tr, va = _split(w)
    kw = dict(seed=3, max_epochs=3, batch_size=256, learning_rate=1e-2, num_threads=1)
    res = fit_marginals(tr, va, TINY, **kw)
    assert min(res.val_nll) < res.baseline_val_nll
    assert res.train_nll[-1] < res.train_nll[0]
    again = fit_marginals(tr, va, TINY, **kw)
    for k, v in res.weights.items():
        np.testing.assert_array_equal(v, again.weights[k])
    # the global torch settings are restored
    assert not torch.are_deterministic_algorithms_enabled()


def test_fit_recovers_student_t_scale(rng: np.random.Generator) -> None:
    """i.i.d. t(4) with scale 0.01: predicted sigma_t * scale near 0.01, nu near 4 (loose)."""
    r = _t_returns(rng, 2500, 2, scale=0.01, nu=4.0)
    w = make_windows(r, TINY)
    tr, va = _split(w)
    res = fit_marginals(
        tr, va, TINY, seed=0, max_epochs=6, batch_size=256, learning_rate=1e-2, num_threads=1
    )
    nm = NumpyMarginals(res.config, res.weights)
    mu, s_left, s_right, nu = nm.predict(va.seq.astype(float), va.static)
    for sc in (s_left, s_right):
        assert np.median(va.sigma * sc) == pytest.approx(0.01, rel=0.15)
    assert 2.5 < np.median(nu) < 8.0
    assert np.abs(np.median(mu * va.sigma)) < 0.002


def test_fit_validates_arguments(rng: np.random.Generator) -> None:
    w = make_windows(_t_returns(rng, 60, 1), TINY)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        fit_marginals(w, w, TINY, batch_size=0)
    with pytest.raises(ValueError, match="validation windows"):
        fit_marginals(w, w.subset(np.zeros(w.n_windows, dtype=bool)), TINY)
