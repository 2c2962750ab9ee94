"""HeatmapSpec: fitted robust min-max, PCA, block layout, frozen stats, artifact round trip."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.heatmap import HeatmapSpec, block_index


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


def test_block_index_blocks() -> None:
    idx = block_index(10, 32)
    counts = np.bincount(idx)
    assert counts.tolist() == [4, 3, 3, 3, 3, 4, 3, 3, 3, 3]
    assert np.all(np.diff(idx) >= 0)
    assert block_index(32, 32).tolist() == list(range(32))
    assert np.bincount(block_index(4, 32)).tolist() == [8, 8, 8, 8]
    with pytest.raises(ValueError, match=r"n_source must be in \[1, 32\], got 33"):
        block_index(33, 32)


def test_hand_computed_small_image() -> None:
    """2 assets x 2 features x 2 days, plain min-max: four 8x16 blocks per row band."""
    train = np.array(
        [
            [[[0.0, 10.0], [-1.0, 1.0]], [[5.0, 5.0], [0.0, 0.0]]],
        ]
    )  # (1 window, 2 assets, 2 features, 2 days)
    spec = HeatmapSpec(clip_quantiles=(0.0, 1.0)).fit(train)
    np.testing.assert_array_equal(spec.feature_min_, [0.0, -1.0])
    np.testing.assert_array_equal(spec.feature_max_, [10.0, 1.0])
    assert spec.reduction_ == "none" and spec.n_components_ == 2
    window = np.array([[[2.5, 20.0], [0.0, -3.0]], [[10.0, 7.5], [0.5, 1.0]]])
    # rows asset-major: (a0 f0), (a0 f1), (a1 f0), (a1 f1); values clipped into range
    want_src = np.array([[0.25, 1.0], [0.5, 0.0], [1.0, 0.75], [0.75, 1.0]])
    np.testing.assert_array_equal(spec.source_rows(window[None])[0], want_src)
    want = np.repeat(np.repeat(want_src, 8, axis=0), 16, axis=1).astype(np.float32)
    img = spec.transform(window)
    assert img.dtype == np.float32
    np.testing.assert_array_equal(img, want)


def test_robust_range_is_pooled_quantile(rng: np.random.Generator) -> None:
    train = rng.standard_t(3, size=(40, 3, 5, 10)) * np.array([1, 10, 0.1, 5, 2])[:, None]
    spec = HeatmapSpec().fit(train)
    for f in range(5):
        pooled = train[:, :, f, :].ravel()
        assert spec.feature_min_[f] == np.quantile(pooled, 0.005, method="inverted_cdf")
        assert spec.feature_max_[f] == np.quantile(pooled, 0.995, method="inverted_cdf")
    # 0.5 % of the pooled values lie on or below the low end
    share_low = np.mean(train[:, :, 0, :] <= spec.feature_min_[0])
    assert 0.004 <= share_low <= 0.007


def test_statistics_frozen_and_new_data_clipped(rng: np.random.Generator) -> None:
    train = rng.normal(size=(30, 3, 4, 10))
    spec = HeatmapSpec().fit(train)
    before = json.dumps(spec.to_dict())
    wild = rng.normal(size=(3, 4, 10)) * 1e6  # far outside the fitted range
    img = spec.transform(wild)
    assert json.dumps(spec.to_dict()) == before
    src = spec.source_rows(wild[None])[0]
    assert set(np.unique(src)) <= {0.0, 1.0}
    np.testing.assert_array_equal(src == 1.0, (wild > 0).reshape(12, 10))
    assert img.min() == 0.0 and img.max() == 1.0


def test_pca_matches_svd_oracle(rng: np.random.Generator) -> None:
    n_assets, n_features = 12, 8
    factor = rng.normal(size=(60, 1, n_features, 10))
    train = factor * rng.uniform(0.5, 2, size=(1, n_assets, 1, 1)) + 0.3 * rng.normal(
        size=(60, n_assets, n_features, 10)
    )
    spec = HeatmapSpec(clip_quantiles=(0.01, 0.99)).fit(train)
    assert spec.reduction_ == "pca" and spec.n_components_ == 4
    assert spec.pca_components_ is not None and spec.pca_components_.shape == (8, 4, 12)
    assert spec.pca_explained_variance_ratio_ is not None
    lo, hi = spec.feature_min_, spec.feature_max_
    for f in range(n_features):
        z = np.clip((train[:, :, f, :] - lo[f]) / (hi[f] - lo[f]), 0, 1)
        data = z.transpose(0, 2, 1).reshape(-1, n_assets)
        centred = data - data.mean(axis=0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        top = vt[:4]
        top = top * np.sign(top[np.arange(4), np.argmax(np.abs(top), axis=1)])[:, None]
        np.testing.assert_allclose(spec.pca_components_[f], top, atol=1e-8)
        np.testing.assert_allclose(
            spec.pca_explained_variance_ratio_[f], s[:4] ** 2 / np.sum(s**2), rtol=1e-8
        )
    # the common factor dominates: PC1 loadings all positive (sign convention)
    assert np.all(spec.pca_components_[:, 0, :] > 0)
    assert np.all(spec.pca_explained_variance_ratio_[:, 0] > 0.5)
    # rows component-major: row c * 8 + f is the scaled score of component c, feature f
    window = train[7]
    z = np.clip((window - lo[None, :, None]) / (hi - lo)[None, :, None], 0, 1)
    score = np.einsum(
        "a,aw->w", spec.pca_components_[2, 1], z[:, 2, :] - spec.pca_mean_[2][:, None]
    )
    assert spec.score_min_ is not None and spec.score_max_ is not None
    s_lo, s_hi = spec.score_min_[2, 1], spec.score_max_[2, 1]
    want = np.clip((score - s_lo) / (s_hi - s_lo), 0, 1)
    np.testing.assert_allclose(spec.source_rows(window[None])[0, 1 * 8 + 2], want, atol=1e-12)


def test_cross_section_layout_generalises_to_other_assets(rng: np.random.Generator) -> None:
    spec = HeatmapSpec(layout="cross_section").fit(rng.normal(size=(20, 10, 8, 10)))
    assert spec.reduction_ == "quantiles" and spec.n_components_ == 4
    for n_assets in (2, 7, 200):
        w = rng.normal(size=(n_assets, 8, 10))
        img = spec.transform(w)
        assert img.shape == (32, 32)
        # identity-free: shuffling the assets changes nothing
        np.testing.assert_array_equal(spec.transform(w[rng.permutation(n_assets)]), img)
        src = spec.source_rows(w[None])[0]
        z = spec.source_rows(w[:, None, :, :])[:, :8]  # per-asset scaled rows (one asset each)
        np.testing.assert_array_equal(src[:8], z.min(axis=0))  # q0 = cross-sectional min
        np.testing.assert_array_equal(src[24:], z.max(axis=0))  # q1 = max
    labels = spec.row_labels([], [f"f{i}" for i in range(8)])
    assert labels[0] == "q0.00 f0" and labels[-1] == "q1.00 f7" and len(labels) == 32


def test_assets_layout_rejects_other_asset_count(rng: np.random.Generator) -> None:
    spec = HeatmapSpec().fit(rng.normal(size=(5, 10, 8, 10)))
    with pytest.raises(ValueError, match="fitted on 10 assets, got 9"):
        spec.transform(rng.normal(size=(9, 8, 10)))


@pytest.mark.parametrize(
    ("window", "match"),
    [
        (np.zeros((3, 4, 9)), "expected 4 features x 10 days, got 4 x 9"),
        (np.zeros((3, 5, 10)), "expected 4 features x 10 days, got 5 x 10"),
        (np.full((3, 4, 10), np.nan), "windows must be finite"),
        (np.zeros((4, 10)), "window must have shape"),
    ],
)
def test_transform_rejects_bad_windows(window: np.ndarray, match: str) -> None:
    spec = HeatmapSpec().fit(np.zeros((2, 3, 4, 10)))
    with pytest.raises(ValueError, match=match):
        spec.transform(window)


def test_fit_and_hyperparameter_errors() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        HeatmapSpec().transform(np.zeros((2, 2, 10)))
    with pytest.raises(ValueError, match="size must be an integer >= 2, got 1"):
        HeatmapSpec(size=1)
    with pytest.raises(ValueError, match=r"clip_quantiles .* got \(0.9, 0.1\)"):
        HeatmapSpec(clip_quantiles=(0.9, 0.1))
    with pytest.raises(ValueError, match="layout must be one of"):
        HeatmapSpec(layout="spiral")
    with pytest.raises(ValueError, match=r"window_size must be in \[1, 32\], got 40"):
        HeatmapSpec().fit(np.zeros((1, 2, 2, 40)))
    with pytest.raises(ValueError, match=r"n_features must be in \[1, 32\], got 33"):
        HeatmapSpec().fit(np.zeros((1, 2, 33, 10)))
    with pytest.raises(ValueError, match="windows must be finite"):
        HeatmapSpec().fit(np.full((1, 2, 2, 10), np.inf))
    with pytest.raises(ValueError, match="n_windows >= 1"):
        HeatmapSpec().fit(np.zeros((0, 2, 2, 10)))


def test_constant_feature_maps_to_zero(rng: np.random.Generator) -> None:
    train = rng.normal(size=(10, 2, 3, 10))
    train[:, :, 1, :] = 0.0  # e.g. volume_z of FX pairs
    spec = HeatmapSpec().fit(train)
    src = spec.source_rows(train[:1])[0]
    np.testing.assert_array_equal(src[[1, 4]], 0.0)


@pytest.mark.parametrize("layout", ["assets", "cross_section"])
@pytest.mark.parametrize("n_assets", [3, 30])
def test_to_dict_from_dict_round_trip(rng: np.random.Generator, layout: str, n_assets: int) -> None:
    train = rng.normal(size=(15, n_assets, 8, 10))
    spec = HeatmapSpec(clip_quantiles=(0.01, 0.98), layout=layout).fit(train)
    d = json.loads(json.dumps(spec.to_dict()))  # plain lists / floats only
    back = HeatmapSpec.from_dict(d)
    assert back.to_dict() == spec.to_dict()
    w = rng.normal(size=(4, n_assets, 8, 10)) * 3
    assert back.transform_many(w).tobytes() == spec.transform_many(w).tobytes()
    unfitted = HeatmapSpec.from_dict(HeatmapSpec(size=16).to_dict())
    assert unfitted.size == 16 and not unfitted.is_fitted
    with pytest.raises(ValueError, match="unsupported heatmap spec format 99"):
        HeatmapSpec.from_dict({**d, "format": 99})


def test_pickle_round_trip(rng: np.random.Generator) -> None:
    train = rng.normal(size=(8, 20, 8, 10))
    spec = HeatmapSpec().fit(train)
    clone = pickle.loads(pickle.dumps(spec))
    assert clone.transform(train[3]).tobytes() == spec.transform(train[3]).tobytes()


def test_row_labels() -> None:
    feats = ["ret", "vol"]
    spec = HeatmapSpec().fit(np.zeros((1, 3, 2, 10)))
    assert spec.row_labels(["SPY", "TLT", "GLD"], feats)[:3] == ["SPY ret", "SPY vol", "TLT ret"]
    spec = HeatmapSpec().fit(np.zeros((1, 17, 2, 10)))
    labels = spec.row_labels([f"A{i}" for i in range(17)], feats)
    assert labels[:3] == ["PC1 ret", "PC1 vol", "PC2 ret"] and len(labels) == 32


extreme = st.sampled_from([0.0, 1e-300, -1e-300, 1e300, -1e300, 1.7e308, -1.7e308, 5e-324])


@settings(max_examples=40, deadline=None)
@given(
    n_assets=st.integers(2, 200),
    n_features=st.integers(1, 8),
    window_size=st.integers(1, 32),
    layout=st.sampled_from(["assets", "cross_section"]),
    log_scale=st.integers(-300, 300),
    spikes=st.lists(st.tuples(st.integers(0, 10**9), extreme), max_size=6),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_always_32x32_finite_unit_interval_deterministic(
    n_assets: int,
    n_features: int,
    window_size: int,
    layout: str,
    log_scale: int,
    spikes: list,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    shape = (3, n_assets, n_features, window_size)
    train = rng.standard_t(2, size=shape) * 10.0**log_scale
    test = rng.standard_t(2, size=shape) * 10.0 ** (-log_scale)
    for pos, value in spikes:
        train.flat[pos % train.size] = value
        test.flat[(pos // 7) % test.size] = -value
    spec = HeatmapSpec(layout=layout).fit(train)
    imgs = spec.transform_many(test)
    assert imgs.shape == (3, 32, 32) and imgs.dtype == np.float32
    assert np.all(np.isfinite(imgs)) and imgs.min() >= 0.0 and imgs.max() <= 1.0
    for i in range(3):
        one = spec.transform(test[i])
        assert one.shape == (32, 32) and one.dtype == np.float32
        assert one.tobytes() == imgs[i].tobytes()  # alone == inside a batch
    assert spec.transform_many(test).tobytes() == imgs.tobytes()  # same input, same bytes
