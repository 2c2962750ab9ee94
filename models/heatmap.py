"""Render a rolling window of multi-asset features as a fixed-size heatmap.

The CNN paper turns "every 10 days of data such as price volatility and
trading volume" into a 32x32 heat map after MinMax normalisation to [0, 1]
and a PCA reduction. :class:`HeatmapSpec` is that renderer, with the
normalisation statistics (and PCA) learnt once at training time and frozen
afterwards: new data is clipped into the fitted range, never re-scaled.

Layout
------
A window is an ndarray of shape (n_assets, n_features, window_size). Every
feature is first scaled with its own fitted robust range (pooled over all
assets, so cross-asset differences stay visible) and clipped into [0, 1].
The scaled window becomes a matrix of *source rows* x days, and the matrix is
stretched to ``size x size`` by nearest-neighbour block repetition (source
row ``floor(i * n_rows / size)`` feeds image row ``i``; same for columns), so
each source cell is a block of ``floor`` or ``ceil(size / n)`` pixels::

    layout="assets", n_assets * n_features <= size    (e.g. 4 assets x 8 features)
    source rows = (asset, feature), asset-major:

                  day0 (oldest) ........ day9 (newest)
      asset0 f0 | ###|###|###|...                     |  each cell -> 3-4 px wide,
      asset0 f1 |                                     |  1 px high (32 / 32 rows)
         ...    |                                     |
      asset3 f7 |                                     |

    layout="assets", n_assets * n_features > size     (e.g. 10 or 200 assets)
    per feature f, PCA across assets (fitted on the training windows) keeps
    k = floor(size / n_features) components; scores are min-max scaled with
    fitted robust ranges. Source rows = (component, feature), component-major:
    component c plays the role of a "factor asset" in the diagram above.

    layout="cross_section"                             (any asset set)
    per feature f and day, k = floor(size / n_features) quantiles of the
    scaled values across assets (levels 0, 1/(k-1), ..., 1: min .. max).
    Source rows = (quantile, feature), quantile-major.

``"assets"`` (the default) follows the paper and the project brief; its
fitted spec only accepts the asset set (count and order) it was fitted on.
``"cross_section"`` is asset-count-invariant *and* asset-identity-free: a spec
fitted on 10 assets renders windows of 2 or 200 other assets with the same
meaning per row (the distribution of each feature across the book), at the
cost of not showing which asset is where. It is offered as an alternative for
models that must generalise to books not seen in training.

Determinism: the pipeline is pure numpy with fixed operation order (no
randomness, no BLAS reductions whose order depends on the batch); the same
window gives identical bytes, alone or inside a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["HeatmapSpec", "block_index"]

_LAYOUTS = ("assets", "cross_section")
_FORMAT = 1


def block_index(n_source: int, size: int) -> NDArray[np.intp]:
    """Nearest-neighbour map from ``size`` pixels to ``n_source`` source cells.

    Parameters
    ----------
    n_source : int
        Source cells (rows or days), 1 .. size.
    size : int
        Pixels.

    Returns
    -------
    ndarray of int of shape (size,)
        ``floor(i * n_source / size)``: non-decreasing, every source cell
        appears, as a block of ``floor`` or ``ceil(size / n_source)`` pixels.

    Examples
    --------
    >>> block_index(10, 32).tolist()  # doctest: +NORMALIZE_WHITESPACE
    [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 7, 7, 7,
     8, 8, 8, 9, 9, 9]
    """
    if not 1 <= n_source <= size:
        raise ValueError(f"n_source must be in [1, {size}], got {n_source}")
    return (np.arange(size) * n_source) // size


def _scale(x: NDArray[np.float64], lo: NDArray[np.float64], hi: NDArray[np.float64]) -> Any:
    """Clip ``x`` into ``[lo, hi]`` and map it linearly onto [0, 1] (0 where hi == lo).

    Halving before subtracting keeps every intermediate finite for any finite
    inputs, even ``lo = -1.7e308, hi = 1.7e308``.
    """
    x = np.clip(x, lo, hi)
    width = hi / 2 - lo / 2
    safe = np.where(width > 0, width, 1.0)
    return np.where(width > 0, (x / 2 - lo / 2) / safe, 0.0).clip(0.0, 1.0)


def _robust_range(
    values: NDArray[np.float64], quantiles: tuple[float, float], axis: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Lower and upper quantile along ``axis``; no interpolation (no overflow)."""
    lo = np.quantile(values, quantiles[0], axis=axis, method="inverted_cdf")
    hi = np.quantile(values, quantiles[1], axis=axis, method="inverted_cdf")
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


class HeatmapSpec:
    """Fitted renderer of feature windows into ``size x size`` images in [0, 1].

    Parameters
    ----------
    size : int, default=32
        Side of the square image (>= 2).
    clip_quantiles : tuple of float, default=(0.005, 0.995)
        Lower and upper quantiles of the training values that map to 0 and 1
        (robust min-max); ``0 <= low < high <= 1``. ``(0, 1)`` is the plain
        MinMaxScaler of the paper.
    layout : {"assets", "cross_section"}, default="assets"
        Row layout, see the module docstring.

    Attributes
    ----------
    n_assets_in_ : int
        Assets of the training windows (enforced at transform for
        ``layout="assets"`` only).
    n_features_in_ : int
    window_size_ : int
        Days per window (1 .. size).
    feature_min_, feature_max_ : ndarray of shape (n_features,)
        Fitted robust range of each feature, pooled over assets and days.
    reduction_ : {"none", "pca", "quantiles"}
    n_components_ : int
        Source rows per feature: n_assets (``"none"``), PCA components or
        quantile levels.
    pca_mean_ : ndarray of shape (n_features, n_assets) or None
        Mean of the scaled training values per feature and asset.
    pca_components_ : ndarray of shape (n_features, n_components, n_assets) or None
        Unit loadings, by decreasing explained variance; the largest
        absolute loading of each component is positive.
    pca_explained_variance_ratio_ : ndarray of shape (n_features, n_components) or None
    score_min_, score_max_ : ndarray of shape (n_features, n_components) or None
        Fitted robust range of the PCA scores.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(42)
    >>> train = rng.normal(size=(50, 10, 8, 10))  # windows, assets, features, days
    >>> spec = HeatmapSpec().fit(train)
    >>> spec.reduction_, spec.n_components_
    ('pca', 4)
    >>> img = spec.transform(train[0])
    >>> img.shape, img.dtype, bool(img.min() >= 0 and img.max() <= 1)
    ((32, 32), dtype('float32'), True)
    """

    def __init__(
        self,
        size: int = 32,
        clip_quantiles: tuple[float, float] = (0.005, 0.995),
        *,
        layout: str = "assets",
    ) -> None:
        if int(size) != size or size < 2:
            raise ValueError(f"size must be an integer >= 2, got {size!r}")
        q = tuple(float(v) for v in clip_quantiles)
        if len(q) != 2 or not 0.0 <= q[0] < q[1] <= 1.0:
            raise ValueError(
                "clip_quantiles must be (low, high) with 0 <= low < high <= 1, "
                f"got {clip_quantiles!r}"
            )
        if layout not in _LAYOUTS:
            raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
        self.size = int(size)
        self.clip_quantiles: tuple[float, float] = (q[0], q[1])
        self.layout = layout

    # -- fitting ---------------------------------------------------------------

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "feature_min_")

    def fit(self, windows: ArrayLike) -> HeatmapSpec:
        """Learn the scaling (and PCA) statistics from training windows.

        Parameters
        ----------
        windows : array-like of shape (n_windows, n_assets, n_features, window_size)
            Finite values; typically :func:`models.windows.sliding_windows`
            of the training period only.

        Returns
        -------
        self
        """
        w = np.asarray(windows, dtype=np.float64)
        if w.ndim != 4 or w.shape[0] < 1:
            raise ValueError(
                "windows must have shape (n_windows >= 1, n_assets, n_features, window_size), "
                f"got {w.shape}"
            )
        if not np.all(np.isfinite(w)):
            raise ValueError("windows must be finite")
        _, n_assets, n_features, window_size = w.shape
        if not 1 <= window_size <= self.size:
            raise ValueError(f"window_size must be in [1, {self.size}], got {window_size}")
        if not 1 <= n_features <= self.size:
            raise ValueError(f"n_features must be in [1, {self.size}], got {n_features}")
        if n_assets < 1:
            raise ValueError(f"n_assets must be >= 1, got {n_assets}")

        # per-feature robust range over windows, assets and days
        per_feature = np.moveaxis(w, 2, 0).reshape(n_features, -1)
        lo, hi = _robust_range(per_feature, self.clip_quantiles, axis=1)
        self.n_assets_in_ = n_assets
        self.n_features_in_ = n_features
        self.window_size_ = window_size
        self.feature_min_ = lo
        self.feature_max_ = hi
        self.pca_mean_: NDArray[np.float64] | None = None
        self.pca_components_: NDArray[np.float64] | None = None
        self.pca_explained_variance_ratio_: NDArray[np.float64] | None = None
        self.score_min_: NDArray[np.float64] | None = None
        self.score_max_: NDArray[np.float64] | None = None

        k = self.size // n_features
        if self.layout == "cross_section":
            self.reduction_ = "quantiles"
            self.n_components_ = k
        elif n_assets * n_features <= self.size:
            self.reduction_ = "none"
            self.n_components_ = n_assets
        else:
            self.reduction_ = "pca"
            self.n_components_ = k
            self._fit_pca(self._scaled(w), k)
        return self

    def _fit_pca(self, z: NDArray[np.float64], k: int) -> None:
        _, n_assets, n_features, _ = z.shape
        # samples = (window, day) pairs, variables = assets, one PCA per feature
        data = np.moveaxis(z, 2, 0).transpose(0, 1, 3, 2).reshape(n_features, -1, n_assets)
        mean = data.mean(axis=1)
        centred = data - mean[:, None, :]
        comps = np.empty((n_features, k, n_assets))
        ratio = np.empty((n_features, k))
        for f in range(n_features):
            cov = centred[f].T @ centred[f] / centred.shape[1]
            eigval, eigvec = np.linalg.eigh(cov)
            order = np.argsort(-eigval, kind="stable")[:k]
            vec = eigvec[:, order].T  # (k, n_assets)
            top = np.argmax(np.abs(vec), axis=1)
            sign = np.where(vec[np.arange(k), top] < 0, -1.0, 1.0)
            comps[f] = vec * sign[:, None]
            total = float(np.clip(eigval, 0.0, None).sum())
            ratio[f] = np.clip(eigval[order], 0.0, None) / total if total > 0 else 0.0
        self.pca_mean_ = mean
        self.pca_components_ = comps
        self.pca_explained_variance_ratio_ = ratio
        scores = self._pca_scores(z)  # (n, k, F, W)
        per = np.moveaxis(scores, (2, 1), (0, 1)).reshape(n_features, k, -1)
        self.score_min_, self.score_max_ = _robust_range(per, self.clip_quantiles, axis=2)

    # -- transforming ----------------------------------------------------------

    def _scaled(self, w: NDArray[np.float64]) -> Any:
        """Per-feature clip + min-max of windows (n, A, F, W) into [0, 1]."""
        lo = self.feature_min_[None, None, :, None]
        hi = self.feature_max_[None, None, :, None]
        return _scale(w, lo, hi)

    def _pca_scores(self, z: NDArray[np.float64]) -> Any:
        """Scores of scaled windows (n, A, F, W) -> (n, k, F, W)."""
        assert self.pca_mean_ is not None and self.pca_components_ is not None
        centred = z - self.pca_mean_.T[None, :, :, None]
        # explicit einsum (no BLAS): per-element reduction order independent of n
        return np.einsum("fka,nafw->nkfw", self.pca_components_, centred, optimize=False)

    def _check(self, w: NDArray[np.float64]) -> None:
        if not self.is_fitted:
            raise RuntimeError("HeatmapSpec is not fitted: call fit(windows) first")
        if w.ndim != 4:
            raise ValueError(
                "windows must have shape (n_windows, n_assets, n_features, window_size), "
                f"got {w.shape}"
            )
        _, n_assets, n_features, window_size = w.shape
        if (n_features, window_size) != (self.n_features_in_, self.window_size_):
            raise ValueError(
                f"expected {self.n_features_in_} features x {self.window_size_} days, "
                f"got {n_features} x {window_size}"
            )
        if self.layout == "assets" and n_assets != self.n_assets_in_:
            raise ValueError(
                f"layout='assets' was fitted on {self.n_assets_in_} assets, got {n_assets}"
            )
        if n_assets < 1:
            raise ValueError("windows must hold at least one asset")
        if not np.all(np.isfinite(w)):
            raise ValueError("windows must be finite")

    def source_rows(self, windows: ArrayLike) -> NDArray[np.float64]:
        """The scaled matrices before upsampling.

        Parameters
        ----------
        windows : array-like of shape (n_windows, n_assets, n_features, window_size)

        Returns
        -------
        ndarray of shape (n_windows, n_components_ * n_features, window_size)
            Values in [0, 1]; row ``c * n_features + f`` is component / asset /
            quantile ``c`` of feature ``f``.
        """
        w = np.asarray(windows, dtype=np.float64)
        self._check(w)
        n, window_size = w.shape[0], w.shape[3]
        z = self._scaled(w)
        if self.reduction_ == "none":
            rows = z
        elif self.reduction_ == "pca":
            assert self.score_min_ is not None and self.score_max_ is not None
            scores = self._pca_scores(z)
            rows = _scale(
                scores, self.score_min_.T[None, :, :, None], self.score_max_.T[None, :, :, None]
            )
        else:
            k = self.n_components_
            levels = np.array([0.5]) if k == 1 else np.linspace(0.0, 1.0, k)
            rows = np.moveaxis(np.quantile(z, levels, axis=1), 0, 1)  # (n, k, F, W)
        return np.asarray(rows, dtype=np.float64).reshape(n, -1, window_size)

    def transform_many(self, windows: ArrayLike) -> NDArray[np.float32]:
        """Render a batch of windows.

        Parameters
        ----------
        windows : array-like of shape (n_windows, n_assets, n_features, window_size)
            Finite values (anything finite: out-of-range values are clipped).

        Returns
        -------
        ndarray of float32 of shape (n_windows, size, size)
            Values in [0, 1]; rows as in :meth:`source_rows`, columns are days,
            oldest on the left.
        """
        rows = self.source_rows(windows)
        r_idx = block_index(rows.shape[1], self.size)
        c_idx = block_index(rows.shape[2], self.size)
        img = rows[:, r_idx][:, :, c_idx]
        return np.ascontiguousarray(img, dtype=np.float32).clip(0.0, 1.0)

    def transform(self, window: ArrayLike) -> NDArray[np.float32]:
        """Render one window (n_assets, n_features, window_size) as a (size, size) float32."""
        w = np.asarray(window, dtype=np.float64)
        if w.ndim != 3:
            raise ValueError(
                f"window must have shape (n_assets, n_features, window_size), got {w.shape}"
            )
        return self.transform_many(w[None])[0]

    def row_labels(self, asset_names: Sequence[str], feature_names: Sequence[str]) -> list[str]:
        """Labels of the source rows (see :meth:`source_rows`), for people."""
        if len(feature_names) != self.n_features_in_:
            raise ValueError(
                f"expected {self.n_features_in_} feature names, got {len(feature_names)}"
            )
        if self.reduction_ == "none":
            heads = [str(a) for a in asset_names]
            if len(heads) != self.n_components_:
                raise ValueError(f"expected {self.n_components_} asset names, got {len(heads)}")
        elif self.reduction_ == "pca":
            heads = [f"PC{c + 1}" for c in range(self.n_components_)]
        else:
            k = self.n_components_
            levels = [0.5] if k == 1 else np.linspace(0.0, 1.0, k).tolist()
            heads = [f"q{q:.2f}" for q in levels]
        return [f"{h} {f}" for h in heads for f in feature_names]

    # -- artifact --------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Hyperparameters and fitted statistics as plain lists, floats and strings."""

        def plain(a: NDArray[np.float64] | None) -> Any:
            return None if a is None else a.tolist()

        d: dict[str, Any] = {
            "format": _FORMAT,
            "size": self.size,
            "clip_quantiles": list(self.clip_quantiles),
            "layout": self.layout,
        }
        if self.is_fitted:
            d["fitted"] = {
                "n_assets_in": self.n_assets_in_,
                "n_features_in": self.n_features_in_,
                "window_size": self.window_size_,
                "reduction": self.reduction_,
                "n_components": self.n_components_,
                "feature_min": plain(self.feature_min_),
                "feature_max": plain(self.feature_max_),
                "pca_mean": plain(self.pca_mean_),
                "pca_components": plain(self.pca_components_),
                "pca_explained_variance_ratio": plain(self.pca_explained_variance_ratio_),
                "score_min": plain(self.score_min_),
                "score_max": plain(self.score_max_),
            }
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeatmapSpec:
        """Rebuild a spec written by :meth:`to_dict` (bit-identical statistics)."""
        if d.get("format") != _FORMAT:
            raise ValueError(
                f"unsupported heatmap spec format {d.get('format')!r}, expected {_FORMAT}"
            )
        low, high = (float(q) for q in d["clip_quantiles"])
        spec = cls(int(d["size"]), (low, high), layout=str(d["layout"]))
        fitted = d.get("fitted")
        if fitted is None:
            return spec

        def arr(v: Any) -> NDArray[np.float64] | None:
            return None if v is None else np.asarray(v, dtype=np.float64)

        spec.n_assets_in_ = int(fitted["n_assets_in"])
        spec.n_features_in_ = int(fitted["n_features_in"])
        spec.window_size_ = int(fitted["window_size"])
        spec.reduction_ = str(fitted["reduction"])
        spec.n_components_ = int(fitted["n_components"])
        spec.feature_min_ = np.asarray(fitted["feature_min"], dtype=np.float64)
        spec.feature_max_ = np.asarray(fitted["feature_max"], dtype=np.float64)
        spec.pca_mean_ = arr(fitted["pca_mean"])
        spec.pca_components_ = arr(fitted["pca_components"])
        spec.pca_explained_variance_ratio_ = arr(fitted["pca_explained_variance_ratio"])
        spec.score_min_ = arr(fitted["score_min"])
        spec.score_max_ = arr(fitted["score_max"])
        return spec

    def __repr__(self) -> str:
        return (
            f"HeatmapSpec(size={self.size}, clip_quantiles={self.clip_quantiles}, "
            f"layout={self.layout!r})"
        )
