r"""A CNN on 32x32 feature heatmaps that forecasts realised volatility.

The network of the CNN paper (``papers/cnn-heatmap-risk.txt``): five 3x3
convolutions of 64 filters with ReLU, max pooling after each while the
feature map is at least as wide as the pool, dropout 0.5, fully connected
128 -> 64 -> outputs, Adam (lr 5e-4, the paper's tuned value) with L2 weight
decay. The pool is 3x3 by default, the paper's tuned value (32 -> 10 -> 3 ->
1, the last two convolutions then act on 1x1 maps); 2x2 (32 -> 16 -> 8 -> 4 ->
2 -> 1, the paper's first configuration) is an option, as are 5x5 kernels.
3x3 pooling is the default because it costs 2.5x fewer multiply-adds
(5.8 M against 14.3 M per image), which is what keeps training within a few
minutes on two CPU cores. It forecasts, for one *series* (an
asset or the portfolio), the realised volatility of the next ``h`` trading
days, ``RV_t(h) = sqrt(mean(r_{t+1}^2 .. r_{t+h}^2))``, for every ``h`` of
``horizons`` at once.

How a window becomes the input (asset-agnostic)
-----------------------------------------------
A book of ``n_assets`` assets is tracked as ``n_assets + 1`` series: the
assets and the constant-mix portfolio (its value index, a close-only bar).
Each series runs :class:`~models.features.FeatureState` (the 8 features of
:data:`~models.features.FEATURE_NAMES`) into a 10-day
:class:`~models.windows.RollingWindow`. One sample is *(day t, series s)*:

1. **Standardise.** Every feature but ``volume_z`` is divided by the
   series' long-run scale ``scale_t`` (a bias-corrected EWMA of ``r^2`` with
   a 120-day half-life, known at the close of ``t``), so a quiet FX rate and
   a volatile stock give comparable pictures; the target is expressed in the
   same unit, ``RV_t(h)^2 / scale_t^2``.
2. **Render.** Channel ``self``: the series' standardised window
   (8 features x 10 days) through a :class:`~models.heatmap.HeatmapSpec`
   (one spec for all series, fitted on the training windows) -> 32x32 in
   [0, 1], each feature a 4-pixel band, each day a 3-4 pixel column.
   Channel ``portfolio``: the portfolio's window, same spec (market context;
   equals ``self`` for the portfolio series). Channel ``cross``: the
   cross-section of all assets (``layout="cross_section"``: per feature and
   day the min, 1/3, 2/3 quantiles and max across assets) -> 32x32. No
   channel depends on the number or order of assets, so one network serves
   2 or 200 assets.
3. **HAR inputs** (``har_inputs=True``): ``log(RV_k / scale_t)`` over the
   last 1, 5 and 22 days enter the first fully connected layer beside the
   convolutional features with ``log(long_scale_t / scale_t)`` (a 750-day
   half-life EWMA: the long-run level), and a HAR path is added to the output
   (``skip="har_var"``: the log of a pooled HAR-RV in variance form,
   ``c_0 + sum_k c_k (RV_k / scale_t)^2 + c_L (long_scale_t / scale_t)^2``,
   ``c >= 0``, started at its NNLS fit
   with the dense head at zero), so the CNN learns a multiplicative correction
   of a HAR forecast. The variance form matters in crises: a log-linear
   (geometric) combination of the daily, weekly and monthly components lags
   a sudden jump that the arithmetic one follows (measured: QLIKE in 2008
   and 2020 of a log-HAR is 10-30 % worse than of HAR-RV).
   ``har_inputs=False, skip="none"`` is the paper's pure CNN.

The output ``o_h`` is the log of the forecast relative variance; the
forecast volatility is ``scale_t * exp(o_h / 2)``. Training minimises the
QLIKE loss ``o_h + y_h exp(-o_h)`` with ``y_h = RV_t(h)^2 / scale_t^2``
(Patton 2011: consistent for the conditional variance under noisy proxies,
and defined on days without movement, unlike a log-RV target).

No look-ahead: the inputs of row ``t`` use bars ``<= t`` only, the target
bars ``t + 1 .. t + h`` only; :func:`build_inputs` and :func:`vol_targets`
record both spans and the tests perturb the other side to prove it.

Everything here is pure (numpy + torch, no I/O); saving and loading the
artifact is :mod:`stream_app.train_cnn`'s job.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy import optimize
from torch import nn

from models.base import check_weights
from models.exceptions import DataError, NotEnoughObservations
from models.features import FEATURE_NAMES, FeatureState, positive_prices
from models.heatmap import HeatmapSpec, block_index
from models.vol_baselines import realized_vol_target
from models.windows import RollingWindow

__all__ = [
    "ARTIFACT_FORMAT",
    "CHANNELS",
    "HAR_INPUT_LAGS",
    "HAR_INPUT_NAMES",
    "CnnConfig",
    "HeatmapSpecs",
    "SampleSet",
    "TrainResult",
    "VolCNN",
    "VolForecaster",
    "VolInputState",
    "VolInputs",
    "build_inputs",
    "fit_specs",
    "make_artifact",
    "make_images",
    "pairs_of",
    "predict_log_var",
    "qlike_objective",
    "source_rows",
    "train_network",
    "vol_targets",
]

#: Channels the input image may have, in this order when chosen.
CHANNELS: tuple[str, ...] = ("self", "portfolio", "cross")
#: Lags (trading days) of the HAR inputs.
HAR_INPUT_LAGS: tuple[int, ...] = (1, 5, 22)
#: Names of the scalar inputs: the three HAR lags, then the long-run level.
HAR_INPUT_NAMES: tuple[str, ...] = ("rv1", "rv5", "rv22", "long")
#: Version of the artifact dictionary layout.
ARTIFACT_FORMAT = 1

_SKIPS = ("har_var", "har_log", "none")
_SCALE_FREE = ("volume_z",)
_SCALED = np.array([name not in _SCALE_FREE for name in FEATURE_NAMES])
_SCALE_FLOOR = 1e-6  # daily vol below this (a frozen price) is treated as this
_HAR_FLOOR = 0.02  # RV_k / scale below this is clipped before the log
_EPOCH0 = np.datetime64("1970-01-01", "D")


# ----------------------------------------------------------------- configuration


@dataclass(frozen=True)
class CnnConfig:
    """Hyperparameters of the inputs, the network and its training.

    Parameters
    ----------
    window_size : int, default=10
        Days per heatmap window (the paper's 10).
    horizons : tuple of int, default=(1, 5, 10)
        Forecast horizons ``h`` in trading days, one output each.
    channels : tuple of str, default=("self", "portfolio", "cross")
        Image channels, a non-empty subset of :data:`CHANNELS`.
    har_inputs : bool, default=True
        Feed ``log(RV_k / scale)``, ``k`` in :data:`HAR_INPUT_LAGS`, and
        ``log(long_scale / scale)`` to the dense head (:data:`HAR_INPUT_NAMES`).
    skip : {"har_var", "har_log", "none"}, default="har_var"
        A HAR path added to the network's log output: ``"har_var"`` the log
        of a pooled HAR-RV in variance form, ``log(c_0 + sum_k c_k (RV_k /
        scale)^2 + c_L (long_scale / scale)^2)`` with ``c >= 0``; ``"har_log"`` a linear map of the log
        inputs (a log-HAR); ``"none"`` the paper's pure CNN.
    bars : {"close", "ohlcv"}, default="close"
        ``"close"`` builds the features from closes only (open = high = low =
        close, no volume): what :class:`~models.cnn_var.CnnVaR` sees through
        ``update(log_returns)`` and what close-only histories hold.
        ``"ohlcv"`` uses the full bars (gap, Garman-Klass, volume z-score).
    scale_halflife : float, default=120.0
        Half-life (days) of the EWMA that standardises each series.
    long_halflife : float, default=750.0
        Half-life (days) of a slower EWMA, the long-run level that volatility
        reverts to; it enters as ``log(long_scale / scale)``, so the network
        (and the HAR path) can tell a scale inflated by a recent crisis.
    warmup : int, default=60
        Returns seen before the first sample (>= 22 and >= window_size).
    image_size : int, default=32
    n_filters, n_conv, kernel_size, pool_size : int
        64, 5, 3 (or 5), 3 (or 2).
    dropout : float, default=0.5
    fc_sizes : tuple of int, default=(128, 64)
    learning_rate : float, default=5e-4
    weight_decay : float, default=1e-4
        L2 penalty (Adam's ``weight_decay``).
    batch_size : int, default=128
    max_epochs : int, default=12
    patience : int, default=3
        Epochs without a better validation loss before stopping.
    samples_per_epoch : int, default=6000
        Training samples drawn (seeded, without replacement) per epoch; the
        windows of neighbouring days overlap 9/10, so an epoch over a seeded
        subset costs far less than a full pass and loses little.
    val_samples : int, default=3000
        Validation samples (a fixed, seeded subset) scored after each epoch.
    """

    window_size: int = 10
    horizons: tuple[int, ...] = (1, 5, 10)
    channels: tuple[str, ...] = CHANNELS
    har_inputs: bool = True
    skip: str = "har_var"
    bars: str = "close"
    scale_halflife: float = 120.0
    long_halflife: float = 750.0
    warmup: int = 60
    image_size: int = 32
    n_filters: int = 64
    n_conv: int = 5
    kernel_size: int = 3
    pool_size: int = 3
    dropout: float = 0.5
    fc_sizes: tuple[int, ...] = (128, 64)
    learning_rate: float = 5e-4
    weight_decay: float = 1e-4
    batch_size: int = 128
    max_epochs: int = 12
    patience: int = 3
    samples_per_epoch: int = 6000
    val_samples: int = 3000

    def __post_init__(self) -> None:
        hs = tuple(int(h) for h in self.horizons)
        if not hs or any(h < 1 for h in hs) or len(set(hs)) != len(hs):
            raise ValueError(f"horizons must be distinct integers >= 1, got {self.horizons!r}")
        object.__setattr__(self, "horizons", hs)
        ch = tuple(self.channels)
        if not ch or any(c not in CHANNELS for c in ch) or len(set(ch)) != len(ch):
            raise ValueError(f"channels must be a non-empty subset of {CHANNELS}, got {ch!r}")
        object.__setattr__(self, "channels", tuple(c for c in CHANNELS if c in ch))
        object.__setattr__(self, "fc_sizes", tuple(int(v) for v in self.fc_sizes))
        if self.skip not in _SKIPS:
            raise ValueError(f"skip must be one of {_SKIPS}, got {self.skip!r}")
        if self.skip != "none" and not self.har_inputs:
            raise ValueError(f"skip={self.skip!r} needs har_inputs=True")
        if self.bars not in ("close", "ohlcv"):
            raise ValueError(f"bars must be 'close' or 'ohlcv', got {self.bars!r}")
        if not 1 <= self.window_size <= self.image_size:
            raise ValueError(
                f"window_size must be in [1, image_size={self.image_size}], got {self.window_size}"
            )
        if self.warmup < max(max(HAR_INPUT_LAGS), self.window_size):
            raise ValueError(
                f"warmup must be >= {max(max(HAR_INPUT_LAGS), self.window_size)}, got {self.warmup}"
            )
        if not (self.scale_halflife > 0 and self.long_halflife > 0):
            raise ValueError(
                f"half-lives must be > 0, got {self.scale_halflife}, {self.long_halflife}"
            )
        if self.kernel_size not in (3, 5):
            raise ValueError(f"kernel_size must be 3 or 5, got {self.kernel_size}")
        if self.pool_size not in (2, 3):
            raise ValueError(f"pool_size must be 2 or 3, got {self.pool_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("n_filters", "n_conv", "batch_size", "max_epochs", "samples_per_epoch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.patience < 1 or self.val_samples < 1:
            raise ValueError("patience and val_samples must be >= 1")
        if not self.learning_rate > 0 or self.weight_decay < 0:
            raise ValueError(
                f"need learning_rate > 0 and weight_decay >= 0, got {self.learning_rate}, "
                f"{self.weight_decay}"
            )

    @property
    def n_extra(self) -> int:
        """Scalar inputs beside the image."""
        return len(HAR_INPUT_NAMES) if self.har_inputs else 0

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists for tuples), for the artifact."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CnnConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown CnnConfig keys {sorted(unknown)}")
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kwargs)


# ----------------------------------------------------------------- streaming inputs


class VolInputState:
    """Streaming inputs of the CNN for a book of assets and its portfolio.

    Parameters
    ----------
    weights : array-like of shape (n_assets,)
        Portfolio weights (constant mix) of the extra portfolio series.
    config : CnnConfig

    Attributes
    ----------
    n_bars_ : int
        Bars fed (the first bar has no return).
    last_returns_ : ndarray of shape (n_series,)
        Log returns of the last bar (0 on the first), assets then portfolio.

    Notes
    -----
    Series ``0 .. n_assets - 1`` are the assets, series ``n_assets`` the
    portfolio, whose value index moves by ``sum_i w_i (exp(r_i) - 1)`` a day
    (floored at -99.9999 %) and is a close-only bar. With ``bars="close"``
    the assets are close-only bars too. The state is numpy arrays, floats and
    two engine objects made of numpy arrays, so it pickles.
    """

    def __init__(self, weights: ArrayLike, config: CnnConfig) -> None:
        self.weights = check_weights(weights)
        self.config = config
        self.reset()

    @property
    def n_assets(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_series(self) -> int:
        return self.n_assets + 1

    def reset(self) -> None:
        n = self.n_series
        c = self.config
        self._features = FeatureState(n)
        self._window = RollingWindow(c.window_size, n_assets=n, n_features=len(FEATURE_NAMES))
        self._lam = 0.5 ** (1.0 / c.scale_halflife)
        self._scale_num = np.zeros(n)
        self._scale_den = 0.0
        self._lam_long = 0.5 ** (1.0 / c.long_halflife)
        self._long_num = np.zeros(n)
        self._long_den = 0.0
        self._har_len = max(HAR_INPUT_LAGS)
        self._sq = np.zeros((self._har_len, n))  # ring of r^2
        self._close = np.ones(n)  # last close of every series (assets, portfolio)
        self.n_bars_ = 0
        self.last_returns_ = np.zeros(n)

    @property
    def last_close_(self) -> NDArray[np.float64]:
        """Last close of every asset (1.0 before the first bar), shape (n_assets,)."""
        return self._close[: self.n_assets].copy()

    @property
    def n_returns(self) -> int:
        return max(self.n_bars_ - 1, 0)

    @property
    def is_ready(self) -> bool:
        """True once ``warmup`` returns were seen: :meth:`inputs` answers."""
        return self.n_returns >= self.config.warmup

    def update_returns(self, log_returns: ArrayLike) -> None:
        """Feed one day of asset log returns (close-only bars built from them).

        The first call also feeds a bar at price 1 for the day before, so a
        history of ``n`` returns is ``n + 1`` bars, as with a price panel.
        """
        r = np.asarray(log_returns, dtype=np.float64)
        if r.shape != (self.n_assets,) or not np.all(np.isfinite(r)):
            raise DataError(f"expected {self.n_assets} finite log returns, got {r!r}")
        if self.n_bars_ == 0:
            ones = np.ones(self.n_assets)
            self._feed(ones, ones, ones, ones, None)
        close = self._close[: self.n_assets] * np.exp(r)
        self._feed(close, close, close, close, None)

    def update_bar(
        self,
        open: ArrayLike,
        high: ArrayLike,
        low: ArrayLike,
        close: ArrayLike,
        volume: ArrayLike | None = None,
    ) -> None:
        """Feed one day of asset bars, each of shape (n_assets,).

        With ``config.bars == "close"`` only ``close`` is used.
        """
        c = np.asarray(close, dtype=np.float64)
        if self.config.bars == "close":
            self._feed(c, c, c, c, None)
        else:
            self._feed(
                np.asarray(open, dtype=np.float64),
                np.asarray(high, dtype=np.float64),
                np.asarray(low, dtype=np.float64),
                c,
                None if volume is None else np.asarray(volume, dtype=np.float64),
            )

    def _feed(
        self,
        o: NDArray[np.float64],
        h: NDArray[np.float64],
        lo: NDArray[np.float64],
        c: NDArray[np.float64],
        v: NDArray[np.float64] | None,
    ) -> None:
        n = self.n_assets
        positive_prices(c, n)
        port = self._close[n]
        if self.n_bars_ > 0:
            gross = float(self.weights @ np.expm1(np.log(c / self._close[:n])))
            port = port * max(1.0 + gross, 1e-6)
        vol = np.zeros(n + 1)
        if v is not None:
            vol[:n] = v
        self._features.update(
            np.append(o, port), np.append(h, port), np.append(lo, port), np.append(c, port), vol
        )
        row = self._features.get()
        r = row[:, 0]
        if self.n_bars_ > 0:
            lam = self._lam
            self._scale_num = lam * self._scale_num + r * r
            self._scale_den = lam * self._scale_den + 1.0
            lam = self._lam_long
            self._long_num = lam * self._long_num + r * r
            self._long_den = lam * self._long_den + 1.0
            self._sq[(self.n_bars_ - 1) % self._har_len] = r * r
        self._window.update(_EPOCH0 + np.timedelta64(self.n_bars_, "D"), row)
        self._close[:n] = c
        self._close[n] = port
        self.last_returns_ = r.copy()
        self.n_bars_ += 1

    def scale(self) -> NDArray[np.float64]:
        """Long-run daily volatility of every series, shape (n_series,)."""
        if self._scale_den == 0.0:
            return np.full(self.n_series, _SCALE_FLOOR)
        return np.maximum(np.sqrt(self._scale_num / self._scale_den), _SCALE_FLOOR)

    def inputs(
        self,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """The standardised window, HAR inputs and scale of every series.

        Returns
        -------
        windows : ndarray of shape (n_series, n_features, window_size)
            Features over the last ``window_size`` bars, oldest first, every
            feature but ``volume_z`` divided by the series' scale.
        har : ndarray of shape (n_series, 4)
            ``log(max(RV_k / scale, 0.02))``, ``RV_k = sqrt(mean r^2)`` of
            the last ``k`` in :data:`HAR_INPUT_LAGS` returns, then
            ``log(max(long_scale / scale, 0.02))``.
        scale : ndarray of shape (n_series,)

        Raises
        ------
        NotEnoughObservations
            Before ``warmup`` returns were seen.
        """
        if not self.is_ready:
            raise NotEnoughObservations(self.config.warmup + 1, self.n_bars_, "CNN inputs (bars)")
        scale = self.scale()
        w = self._window.get()
        w[:, _SCALED, :] /= scale[:, None, None]
        last = (self.n_bars_ - 2) % self._har_len  # slot of the newest r^2
        har = np.empty((self.n_series, len(HAR_INPUT_NAMES)))
        for j, k in enumerate(HAR_INPUT_LAGS):
            slots = (last - np.arange(k)) % self._har_len
            rv = np.sqrt(self._sq[slots].mean(axis=0))
            har[:, j] = np.log(np.maximum(rv / scale, _HAR_FLOOR))
        long = np.sqrt(self._long_num / self._long_den)
        har[:, -1] = np.log(np.maximum(long / scale, _HAR_FLOOR))
        return w, har, scale


@dataclass(frozen=True)
class VolInputs:
    """Inputs of every ready day of a history (the batch twin of :class:`VolInputState`).

    Parameters
    ----------
    bar_index : ndarray of int of shape (n_rows,)
        Bar ``t`` of each row; its inputs use bars ``<= t`` only.
    windows : ndarray of shape (n_rows, n_series, n_features, window_size)
    har : ndarray of shape (n_rows, n_series, 4)
    scale : ndarray of shape (n_rows, n_series)
    returns : ndarray of shape (n_bars, n_series)
        Log return of every bar (row 0: 0), assets then portfolio.
    """

    bar_index: NDArray[np.intp]
    windows: NDArray[np.float64]
    har: NDArray[np.float64]
    scale: NDArray[np.float64]
    returns: NDArray[np.float64]

    @property
    def n_rows(self) -> int:
        return int(self.bar_index.shape[0])

    @property
    def n_series(self) -> int:
        return int(self.returns.shape[1])


def build_inputs(
    weights: ArrayLike,
    config: CnnConfig,
    *,
    panel: Any = None,
    log_returns: ArrayLike | None = None,
) -> VolInputs:
    """Run a :class:`VolInputState` over a history and keep every ready day.

    Parameters
    ----------
    weights : array-like of shape (n_assets,)
    config : CnnConfig
    panel : Panel, optional
        Bars (``open, high, low, close, volume`` of shape (n_bars, n_assets)),
        fed with ``update_bar``.
    log_returns : array-like of shape (n_bars - 1, n_assets), optional
        Or returns, fed with ``update_returns`` (exactly one of the two).

    Returns
    -------
    VolInputs
        Row ``i`` equals ``state.inputs()`` after bar ``bar_index[i]`` (same code).
    """
    if (panel is None) == (log_returns is None):
        raise ValueError("pass exactly one of panel= and log_returns=")
    state = VolInputState(weights, config)
    if panel is not None:
        arrays = [np.asarray(getattr(panel, f), dtype=np.float64) for f in ("open", "high", "low")]
        close = np.asarray(panel.close, dtype=np.float64)
        volume = np.asarray(panel.volume, dtype=np.float64)
        n_bars = close.shape[0]

        def feed(t: int) -> None:
            state.update_bar(arrays[0][t], arrays[1][t], arrays[2][t], close[t], volume[t])

    else:
        r = np.asarray(log_returns, dtype=np.float64)
        if r.ndim != 2:
            raise ValueError(f"log_returns must have shape (n_days, n_assets), got {r.shape}")
        n_bars = r.shape[0] + 1

        def feed(t: int) -> None:
            if t > 0:
                state.update_returns(r[t - 1])

    n_series = state.n_series
    n_rows = max(n_bars - config.warmup, 0)
    nf = len(FEATURE_NAMES)
    windows = np.empty((n_rows, n_series, nf, config.window_size))
    har = np.empty((n_rows, n_series, len(HAR_INPUT_NAMES)))
    scale = np.empty((n_rows, n_series))
    returns = np.zeros((n_bars, n_series))
    i = 0
    for t in range(n_bars):
        feed(t)
        if t > 0 or panel is not None:
            returns[t] = state.last_returns_
        if state.is_ready:
            windows[i], har[i], scale[i] = state.inputs()
            i += 1
    first = n_bars - n_rows
    return VolInputs(
        bar_index=np.arange(first, n_bars), windows=windows, har=har, scale=scale, returns=returns
    )


def vol_targets(
    returns: ArrayLike, bar_index: ArrayLike, horizons: Sequence[int]
) -> NDArray[np.float64]:
    """Realised volatility of bars ``t + 1 .. t + h`` for every row and horizon.

    Parameters
    ----------
    returns : array-like of shape (n_bars, n_series)
    bar_index : array-like of int of shape (n_rows,)
    horizons : sequence of int

    Returns
    -------
    ndarray of shape (n_rows, n_series, n_horizons)
        NaN where the target runs past the last bar.
    """
    r = np.asarray(returns, dtype=np.float64)
    idx = np.asarray(bar_index, dtype=np.intp)
    return np.stack([realized_vol_target(r, h)[idx] for h in horizons], axis=-1)


# ----------------------------------------------------------------- heatmaps


@dataclass
class HeatmapSpecs:
    """The fitted renderers of the channels: one per-series spec, one cross-section spec."""

    series: HeatmapSpec
    cross: HeatmapSpec | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "series": self.series.to_dict(),
            "cross": None if self.cross is None else self.cross.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HeatmapSpecs:
        cross = d.get("cross")
        return cls(
            HeatmapSpec.from_dict(dict(d["series"])),
            None if cross is None else HeatmapSpec.from_dict(dict(cross)),
        )


def _spread(n: int, k: int) -> NDArray[np.intp]:
    """At most ``k`` indices spread evenly over ``range(n)`` (deterministic)."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.intp))


def fit_specs(
    windows: ArrayLike, n_assets: int, config: CnnConfig, *, max_windows: int = 4000
) -> HeatmapSpecs:
    """Fit the heatmap specs on standardised training windows.

    Parameters
    ----------
    windows : array-like of shape (n_rows, n_series, n_features, window_size)
        Training rows only (:attr:`VolInputs.windows`); at most
        ``max_windows`` evenly spread rows are used.
    n_assets : int
        Assets among the series (the rest is the portfolio).
    config : CnnConfig
    """
    w = np.asarray(windows, dtype=np.float64)
    w = w[_spread(w.shape[0], max_windows)]
    n, s, f, d = w.shape
    series = HeatmapSpec(config.image_size).fit(w.reshape(n * s, 1, f, d))
    cross = None
    if "cross" in config.channels:
        cross = HeatmapSpec(config.image_size, layout="cross_section").fit(w[:, :n_assets])
    return HeatmapSpecs(series, cross)


def source_rows(
    specs: HeatmapSpecs, windows: ArrayLike, n_assets: int
) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
    """Scaled source rows of every series and of the cross-section.

    Parameters
    ----------
    windows : array-like of shape (n_rows, n_series, n_features, window_size)

    Returns
    -------
    series_rows : ndarray of float32 of shape (n_rows, n_series, n_features, window_size)
    cross_rows : ndarray of float32 of shape (n_rows, n_quantiles * n_features, window_size) or None
    """
    w = np.asarray(windows, dtype=np.float64)
    n, s, f, d = w.shape
    series = specs.series.source_rows(w.reshape(n * s, 1, f, d)).reshape(n, s, -1, d)
    cross = None
    if specs.cross is not None:
        cross = specs.cross.source_rows(w[:, :n_assets]).astype(np.float32)
    return series.astype(np.float32), cross


def make_images(
    series_rows: NDArray[np.float32],
    cross_rows: NDArray[np.float32] | None,
    rows: NDArray[np.intp],
    series: NDArray[np.intp],
    portfolio: int | NDArray[np.intp],
    config: CnnConfig,
) -> NDArray[np.float32]:
    """Upsample source rows into the network's images.

    Parameters
    ----------
    series_rows, cross_rows : see :func:`source_rows`
    rows, series : ndarray of int of shape (n_samples,)
        Row (day) and series of each sample.
    portfolio : int or ndarray of int of shape (n_rows_total,)
        Index of the portfolio series (per row of ``series_rows`` when the rows
        come from several panels, :func:`stack_samples`).
    config : CnnConfig

    Returns
    -------
    ndarray of float32 of shape (n_samples, n_channels, size, size)
        Exactly ``HeatmapSpec.transform`` of the same windows (nearest-neighbour
        blocks, :func:`~models.heatmap.block_index`).
    """
    size = config.image_size
    cols = block_index(config.window_size, size)
    planes = []
    for ch in config.channels:
        if ch == "self":
            src = series_rows[rows, series]
        elif ch == "portfolio":
            which = np.asarray(portfolio, dtype=np.intp)
            src = series_rows[rows, which if which.ndim == 0 else which[rows]]
        else:
            assert cross_rows is not None
            src = cross_rows[rows]
        idx = block_index(src.shape[1], size)
        planes.append(src[:, idx][:, :, cols])
    return np.ascontiguousarray(np.stack(planes, axis=1), dtype=np.float32)


# ----------------------------------------------------------------- network


class VolCNN(nn.Module):
    """Five conv layers + dense head; outputs the log relative variance per horizon.

    Parameters
    ----------
    in_channels : int
    n_extra : int
        Scalar inputs concatenated to the flattened conv features (and fed to
        a linear skip to the outputs when > 0).
    n_outputs : int
    config : CnnConfig
        ``image_size``, ``n_filters``, ``n_conv``, ``kernel_size``,
        ``pool_size``, ``dropout``, ``fc_sizes``.

    Notes
    -----
    Each conv is ``Conv2d(k, padding=k // 2) -> ReLU``, followed by
    ``MaxPool2d(pool_size)`` while the feature map is at least ``pool_size``
    wide (32 -> 16 -> 8 -> 4 -> 2 -> 1 with 2x2 pooling; 32 -> 10 -> 3 -> 1
    with 3x3). The head is ``Dropout -> Linear(flat + n_extra, 128) -> ReLU ->
    Dropout -> Linear(128, 64) -> ReLU -> Linear(64, n_outputs)``; the HAR
    path of ``config.skip`` (:meth:`har_path`) is added to its output, so the
    convolutional part learns a multiplicative correction of a pooled HAR.
    """

    def __init__(self, in_channels: int, n_extra: int, n_outputs: int, config: CnnConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = config.image_size
        c_in = in_channels
        for _ in range(config.n_conv):
            layers += [
                nn.Conv2d(
                    c_in, config.n_filters, config.kernel_size, padding=config.kernel_size // 2
                ),
                nn.ReLU(),
            ]
            if width >= config.pool_size:
                layers.append(nn.MaxPool2d(config.pool_size))
                width //= config.pool_size
            c_in = config.n_filters
        self.features = nn.Sequential(*layers, nn.Flatten())
        flat = config.n_filters * width * width
        head: list[nn.Module] = []
        size = flat + n_extra
        for hidden in config.fc_sizes:
            head += [nn.Dropout(config.dropout), nn.Linear(size, hidden), nn.ReLU()]
            size = hidden
        head.append(nn.Linear(size, n_outputs))
        self.head = nn.Sequential(*head)
        self.n_extra = int(n_extra)
        self.skip_kind = config.skip if n_extra > 0 else "none"
        self.skip: nn.Linear | None = None
        self.har_var: nn.Parameter | None = None
        if self.skip_kind == "har_log":
            self.skip = nn.Linear(n_extra, n_outputs, bias=False)
            nn.init.zeros_(self.skip.weight)
        elif self.skip_kind == "har_var":
            # raw coefficients; c = softplus(raw) >= 0, column 0 the constant
            self.har_var = nn.Parameter(torch.full((n_outputs, 1 + n_extra), -3.0))

    def har_path(self, extra: torch.Tensor) -> torch.Tensor:
        """The HAR skip's log relative variance, shape (batch, n_outputs)."""
        if self.har_var is not None:
            c = nn.functional.softplus(self.har_var)
            v = torch.exp(2.0 * extra)  # (RV_k / scale)^2
            return torch.log(c[:, 0] + v @ c[:, 1:].T)
        assert self.skip is not None
        return self.skip(extra)

    def forward(self, images: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        z = self.features(images)
        if self.n_extra:
            assert extra is not None
            z = torch.cat([z, extra], dim=1)
        out = self.head(z)
        if self.skip_kind != "none":
            assert extra is not None
            out = out + self.har_path(extra)
        return out


def qlike_objective(log_var: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of ``o + y exp(-o)`` (QLIKE up to a constant; minimised at ``exp(o) = E[y]``)."""
    o = log_var.clamp(-15.0, 15.0)
    return (o + target * torch.exp(-o)).mean()


# ----------------------------------------------------------------- training


@dataclass
class SampleSet:
    """Everything training and prediction read, indexed by (row, series).

    Parameters
    ----------
    series_rows, cross_rows : see :func:`source_rows`
    har : ndarray of float32 of shape (n_rows, n_series, 4)
    target : ndarray of shape (n_rows, n_series, n_horizons)
        Relative variance ``RV^2 / scale^2`` (NaN where unknown).
    portfolio : int or ndarray of int of shape (n_rows,)
        Index of the portfolio series (per row for a :func:`stack_samples` set).
    """

    series_rows: NDArray[np.float32]
    cross_rows: NDArray[np.float32] | None
    har: NDArray[np.float32]
    target: NDArray[np.float64]
    portfolio: int | NDArray[np.intp]

    def batch(
        self, pairs: NDArray[np.intp], config: CnnConfig
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows, series = pairs[:, 0], pairs[:, 1]
        img = make_images(self.series_rows, self.cross_rows, rows, series, self.portfolio, config)
        extra = torch.from_numpy(self.har[rows, series]) if config.har_inputs else None
        # channels-last runs the CPU convolutions ~1.3-2x faster (oneDNN)
        return torch.from_numpy(img).contiguous(memory_format=torch.channels_last), extra


def stack_samples(sets: Sequence[SampleSet]) -> tuple[SampleSet, list[int]]:
    """The rows of several panels' sample sets as one set, to train one network on all.

    Panels may hold different numbers of series: the series axis is padded to
    the widest with NaN targets (so no training pair ever selects a pad) and
    the portfolio index is kept per row. The sets must come from the same
    heatmap specs and configuration.

    Returns
    -------
    data : SampleSet
    offsets : list of int
        The row offset of each set: its row ``r`` is row ``offsets[i] + r`` of ``data``.

    Examples
    --------
    >>> a = SampleSet(np.zeros((3, 2, 1, 4), np.float32), None,
    ...               np.zeros((3, 2, 4), np.float32), np.ones((3, 2, 1)), portfolio=1)
    >>> b = SampleSet(np.zeros((2, 4, 1, 4), np.float32), None,
    ...               np.zeros((2, 4, 4), np.float32), np.ones((2, 4, 1)), portfolio=3)
    >>> data, offsets = stack_samples([a, b])
    >>> data.series_rows.shape, offsets, data.portfolio.tolist()
    ((5, 4, 1, 4), [0, 3], [1, 1, 1, 3, 3])
    >>> int(np.isnan(data.target[:3, 2:]).sum())
    6
    """
    if not sets:
        raise ValueError("no sample sets to stack")
    if len({s.cross_rows is None for s in sets}) > 1:
        raise ValueError("sample sets differ in their cross-section channel")
    width = max(s.series_rows.shape[1] for s in sets)

    def pad(a: NDArray[Any], fill: float) -> NDArray[Any]:
        extra = width - a.shape[1]
        if extra == 0:
            return a
        shape = (a.shape[0], extra, *a.shape[2:])
        return np.concatenate([a, np.full(shape, fill, dtype=a.dtype)], axis=1)

    offsets = np.cumsum([0] + [s.series_rows.shape[0] for s in sets]).tolist()
    portfolio = np.concatenate(
        [
            np.broadcast_to(np.asarray(s.portfolio, dtype=np.intp), (s.series_rows.shape[0],))
            for s in sets
        ]
    )
    cross = None
    if sets[0].cross_rows is not None:
        cross = np.concatenate([s.cross_rows for s in sets])  # type: ignore[misc]
    data = SampleSet(
        np.concatenate([pad(s.series_rows, 0.0) for s in sets]),
        cross,
        np.concatenate([pad(s.har, 0.0) for s in sets]),
        np.concatenate([pad(s.target, np.nan) for s in sets]),
        portfolio=portfolio,
    )
    return data, offsets[:-1]


@dataclass
class TrainResult:
    """A trained network and its training record."""

    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    n_train: int = 0
    n_val: int = 0
    seconds: float = 0.0


def pairs_of(rows: NDArray[np.intp], n_series: int) -> NDArray[np.intp]:
    """All (row, series) pairs of ``rows``, row-major, shape (len(rows) * n_series, 2)."""
    r = np.repeat(np.asarray(rows, dtype=np.intp), n_series)
    s = np.tile(np.arange(n_series, dtype=np.intp), len(rows))
    return np.column_stack([r, s])


def predict_log_var(
    net: VolCNN,
    data: SampleSet,
    pairs: NDArray[np.intp],
    config: CnnConfig,
    *,
    batch_size: int = 512,
) -> NDArray[np.float64]:
    """Network outputs (log relative variance) for ``pairs``, shape (n_pairs, n_horizons)."""
    was_training = net.training
    if was_training:  # toggling walks every submodule: skip it when already in eval mode
        net.eval()
    out = np.empty((pairs.shape[0], len(config.horizons)))
    with torch.inference_mode():
        for start in range(0, pairs.shape[0], batch_size):
            chunk = pairs[start : start + batch_size]
            img, extra = data.batch(chunk, config)
            out[start : start + chunk.shape[0]] = net(img, extra).double().numpy()
    if was_training:
        net.train()
    return out


def _valid_pairs(data: SampleSet, pairs: NDArray[np.intp]) -> NDArray[np.intp]:
    ok = np.all(np.isfinite(data.target[pairs[:, 0], pairs[:, 1]]), axis=1)
    return pairs[ok]


def _init_output(net: VolCNN, data: SampleSet, pairs: NDArray[np.intp], config: CnnConfig) -> None:
    """Start the network at a pooled HAR fitted on the training pairs.

    ``"har_var"``: non-negative least squares of the relative variance target
    ``y`` on ``[1, (RV_k / scale)^2]`` per horizon gives ``c``; ``"har_log"``:
    OLS of ``log(max(y, 1e-4))`` on the log inputs gives the skip's slopes.
    The last dense layer starts at zero weights with the bias that makes the
    mean forecast equal the mean target (the QLIKE-optimal constant), so the
    network starts exactly at the HAR and the conv path learns a correction.
    ``"none"``: only the bias is set (at ``log mean y``).
    """
    y = data.target[pairs[:, 0], pairs[:, 1]]  # (n, n_h)
    last = net.head[-1]
    assert isinstance(last, nn.Linear)
    mean_y = np.maximum(y.mean(axis=0), 1e-6)
    with torch.no_grad():
        if net.skip_kind == "none":
            last.bias.copy_(torch.from_numpy(np.log(mean_y).astype(np.float32)))
            return
        x = data.har[pairs[:, 0], pairs[:, 1]].astype(np.float64)
        if net.har_var is not None:
            design = np.column_stack([np.ones(x.shape[0]), np.exp(2.0 * x)])
            coefs = np.stack([optimize.nnls(design, y[:, j])[0] for j in range(y.shape[1])])
            coefs = np.maximum(coefs, 1e-6)
            net.har_var.copy_(torch.from_numpy(np.log(np.expm1(coefs)).astype(np.float32)))
            base = design @ coefs.T  # (n, n_h) HAR relative variance
        else:
            assert net.skip is not None
            design = np.column_stack([np.ones(x.shape[0]), x])
            coef, *_ = np.linalg.lstsq(design, np.log(np.maximum(y, 1e-4)), rcond=None)
            slopes = coef[1:].T  # (n_h, n_extra)
            net.skip.weight.copy_(torch.from_numpy(slopes.astype(np.float32)))
            base = np.exp(x @ slopes.T)
        last.weight.zero_()
        bias = np.log(mean_y) - np.log(np.maximum(base.mean(axis=0), 1e-12))
        last.bias.copy_(torch.from_numpy(bias.astype(np.float32)))


def _param_groups(net: VolCNN, weight_decay: float) -> list[dict[str, Any]]:
    """L2 on the conv and dense weights only (not on biases nor the HAR path)."""
    decay, plain = [], []
    for name, p in net.named_parameters():
        if name.endswith("weight") and not name.startswith("skip"):
            decay.append(p)
        else:
            plain.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def train_network(
    data: SampleSet,
    train_pairs: NDArray[np.intp],
    val_pairs: NDArray[np.intp],
    config: CnnConfig,
    *,
    seed: int = 0,
    init_state: Mapping[str, torch.Tensor] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a :class:`VolCNN` with Adam on QLIKE, early stopping on validation.

    Parameters
    ----------
    data : SampleSet
    train_pairs, val_pairs : ndarray of int of shape (n, 2)
        (row, series) samples; pairs with a missing target are dropped.
    config : CnnConfig
    seed : int
        Seeds the weights, dropout and the per-epoch sample draws (inside a
        forked torch RNG, so the caller's global RNG is untouched). The same
        seed on the same thread count gives bit-identical weights.
    init_state : mapping, optional
        Start from these weights (warm start) instead of a fresh init.
    progress : callable, optional
        Called after every batch with ``{"epoch", "batch", "n_batches",
        "loss"}`` and after every epoch with ``{"epoch", "train_loss",
        "val_loss", "best"}``.

    Returns
    -------
    TrainResult
        ``state_dict`` holds the weights of the best validation epoch.
    """
    t0 = time.perf_counter()
    train_pairs = _valid_pairs(data, np.asarray(train_pairs, dtype=np.intp))
    val_pairs = _valid_pairs(data, np.asarray(val_pairs, dtype=np.intp))
    if train_pairs.shape[0] < 2 or val_pairs.shape[0] < 1:
        raise ValueError(
            f"need >= 2 training and >= 1 validation samples with targets, got "
            f"{train_pairs.shape[0]} and {val_pairs.shape[0]}"
        )
    rng = np.random.default_rng(seed)
    val_pick = val_pairs[np.sort(rng.permutation(val_pairs.shape[0])[: config.val_samples])]
    y_val = torch.from_numpy(data.target[val_pick[:, 0], val_pick[:, 1]].astype(np.float32))
    n_out = len(config.horizons)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = VolCNN(len(config.channels), config.n_extra, n_out, config)
        if init_state is not None:
            net.load_state_dict(dict(init_state))
        else:
            _init_output(net, data, train_pairs, config)
        opt = torch.optim.Adam(_param_groups(net, config.weight_decay), lr=config.learning_rate)
        result = TrainResult(state_dict={}, n_train=int(train_pairs.shape[0]))
        result.n_val = int(val_pick.shape[0])
        best_state = copy.deepcopy(net.state_dict())
        best = math.inf
        stale = 0
        per_epoch = min(config.samples_per_epoch, train_pairs.shape[0])
        n_batches = max(per_epoch // config.batch_size, 1)
        for epoch in range(1, config.max_epochs + 1):
            net.train()
            pick = train_pairs[rng.permutation(train_pairs.shape[0])[:per_epoch]]
            total = 0.0
            for b in range(n_batches):
                chunk = pick[b * config.batch_size : (b + 1) * config.batch_size]
                img, extra = data.batch(chunk, config)
                y = torch.from_numpy(data.target[chunk[:, 0], chunk[:, 1]].astype(np.float32))
                opt.zero_grad()
                loss = qlike_objective(net(img, extra), y)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                if progress is not None:
                    progress(
                        {
                            "epoch": epoch,
                            "batch": b + 1,
                            "n_batches": n_batches,
                            "loss": float(loss),
                        }
                    )
            out = torch.from_numpy(predict_log_var(net, data, val_pick, config).astype(np.float32))
            val_loss = float(qlike_objective(out, y_val))
            improved = val_loss < best - 1e-6
            if improved:
                best, stale = val_loss, 0
                best_state = copy.deepcopy(net.state_dict())
                result.best_epoch = epoch
            else:
                stale += 1
            record = {"epoch": epoch, "train_loss": total / n_batches, "val_loss": val_loss}
            result.history.append(record)
            if progress is not None:
                progress({**record, "best": improved})
            if stale >= config.patience:
                break
    result.state_dict = best_state
    result.best_val_loss = best
    result.seconds = time.perf_counter() - t0
    return result


# ----------------------------------------------------------------- fitted forecaster


class VolForecaster:
    """A trained network with its specs: windows in, volatility forecasts out.

    Parameters
    ----------
    config : CnnConfig
    specs : HeatmapSpecs
    state_dict : mapping of str to Tensor

    Examples
    --------
    See :mod:`stream_app.train_cnn` for training; ``VolForecaster.from_artifact``
    rebuilds one from the artifact dictionary.
    """

    def __init__(
        self, config: CnnConfig, specs: HeatmapSpecs, state_dict: Mapping[str, torch.Tensor]
    ) -> None:
        self.config = config
        self.specs = specs
        self.net = VolCNN(len(config.channels), config.n_extra, len(config.horizons), config)
        self.net.load_state_dict(dict(state_dict))
        self.net.eval()

    @classmethod
    def from_artifact(cls, artifact: Mapping[str, Any]) -> VolForecaster:
        """Rebuild from the dictionary of :func:`make_artifact`."""
        if artifact.get("format") != ARTIFACT_FORMAT:
            raise ValueError(
                f"unsupported CNN artifact format {artifact.get('format')!r}, "
                f"expected {ARTIFACT_FORMAT}"
            )
        return cls(
            CnnConfig.from_dict(artifact["config"]),
            HeatmapSpecs.from_dict(artifact["specs"]),
            artifact["state_dict"],
        )

    def samples(self, inputs: VolInputs, n_assets: int) -> SampleSet:
        """The :class:`SampleSet` of ``inputs`` (targets left NaN)."""
        series_rows, cross_rows = source_rows(self.specs, inputs.windows, n_assets)
        n, s = inputs.scale.shape
        return SampleSet(
            series_rows,
            cross_rows,
            inputs.har.astype(np.float32),
            np.full((n, s, len(self.config.horizons)), np.nan),
            portfolio=n_assets,
        )

    def predict_vol(
        self,
        windows: ArrayLike,
        har: ArrayLike,
        scale: ArrayLike,
        *,
        series: Sequence[int] | None = None,
    ) -> NDArray[np.float64]:
        """Volatility forecasts for one or more days.

        Parameters
        ----------
        windows : array-like of shape (n_rows, n_series, n_features, window_size)
            Standardised windows (:meth:`VolInputState.inputs` stacked).
        har : array-like of shape (n_rows, n_series, 4)
        scale : array-like of shape (n_rows, n_series)
        series : sequence of int, optional
            Which series to forecast (default all; the portfolio is the last).

        Returns
        -------
        ndarray of shape (n_rows, n_selected, n_horizons)
            Daily-unit volatility of the next ``h`` days, ``scale * exp(o / 2)``.
        """
        w = np.asarray(windows, dtype=np.float64)
        sc = np.asarray(scale, dtype=np.float64)
        hr = np.asarray(har, dtype=np.float32)
        n, s = sc.shape
        port = s - 1
        sel = np.arange(s) if series is None else np.asarray(series, dtype=np.intp).ravel()
        if sel.size == 0 or sel.min() < 0 or sel.max() >= s:
            raise ValueError(f"series must lie in [0, {s - 1}], got {series!r}")
        # render only the series asked for and the portfolio (the context channel)
        keep = np.append(sel, port)
        series_rows = self.specs.series.source_rows(
            w[:, keep].reshape(n * keep.size, 1, *w.shape[2:])
        ).reshape(n, keep.size, *w.shape[2:])
        cross_rows = None
        if self.specs.cross is not None:
            cross_rows = self.specs.cross.source_rows(w[:, :port]).astype(np.float32)
        data = SampleSet(
            series_rows.astype(np.float32),
            cross_rows,
            hr[:, keep],
            np.empty((0, 0, 0)),
            portfolio=sel.size,
        )
        pairs = np.column_stack(
            [np.repeat(np.arange(n), sel.size), np.tile(np.arange(sel.size), n)]
        )
        o = predict_log_var(self.net, data, pairs, self.config)
        scale_sel = sc[:, sel].reshape(-1)
        return (scale_sel[:, None] * np.exp(0.5 * o)).reshape(n, sel.size, -1)


def make_artifact(
    config: CnnConfig,
    specs: HeatmapSpecs,
    state_dict: Mapping[str, torch.Tensor],
    **meta: Any,
) -> dict[str, Any]:
    """The artifact dictionary: tensors and plain types only (``weights_only`` loadable).

    ``meta`` holds plain values (version, training period, metrics, ...).
    """
    art: dict[str, Any] = {
        "format": ARTIFACT_FORMAT,
        "config": config.to_dict(),
        "specs": specs.to_dict(),
        "state_dict": {k: v.detach().clone().contiguous() for k, v in state_dict.items()},
    }
    art.update({k: _plain(v) for k, v in meta.items()})
    return art


def _plain(v: Any) -> Any:
    """``v`` with numpy scalars, str subclasses and tuples made plain (``weights_only`` safe)."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, int | np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        return float(v)
    if isinstance(v, str):
        return str(v)
    if v is None or isinstance(v, torch.Tensor):
        return v
    raise TypeError(f"artifact metadata must be plain (str, int, float, list, dict), got {type(v)}")
