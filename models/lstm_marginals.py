"""LSTM marginals: next-day Student-t law of each asset from its recent returns.

One small LSTM, its weights shared by every asset, reads the last ``window``
daily log returns of an asset *standardised by the asset's own trailing
volatility* and outputs the location, scale and degrees of freedom of the
next day's return. Because every input is scale-free, the same weights apply
to assets never seen in training (and to any number of them).

Features at day ``t`` (everything known at the close of ``t``):

- ``sigma_t``: bias-corrected EWMA volatility of the log returns (half-life
  ``fast_half_life``, about RiskMetrics' lambda = 0.94), floored at
  ``sigma_floor``;
- sequence, shape (window, 1): ``clip(r_k / sigma_t, +-clip)`` for
  ``k = t - window + 1 .. t``;
- static, shape (2,): ``log(sigma_slow_t / sigma_t)`` (slow half-life
  ``slow_half_life``: where volatility tends to revert) and
  ``log(sigma_short_t / sigma_t)`` (half-life ``short_half_life``: the last
  few days' shock), each standardised by training mean and std.

Predicted law of the next return: a *split* Student-t,
``r_{t+1} = sigma_t (mu + s_left T)`` when ``T < 0`` and
``sigma_t (mu + s_right T)`` when ``T >= 0``, with ``T`` a standard Student-t of
``nu`` degrees of freedom: losses and gains get their own scale, each side
carries probability 1/2 (density ``f_t(z / s_side) / s_side``). Raw outputs
``(a, b, c, k)`` map to ``mu = mu_bound tanh(a)``, ``s_left = exp(b + kappa)``,
``s_right = exp(b - kappa)`` with ``kappa = skew_bound tanh(k)``, and
``nu = 2 + softplus(c)`` clipped to ``[nu_min, nu_max]``. With
``skew_bound = 0`` it is the plain Student-t.

The module holds both the torch network used for training
(:class:`LstmMarginals`) and a plain-numpy forward (:class:`NumpyMarginals`)
used when streaming: the same arithmetic on the same weights, picklable, with
no autograd and no thread pool.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy import special
from torch import nn

#: Names and shapes of the network's parameters, as in ``LstmMarginals.state_dict()``.
PARAM_NAMES: tuple[str, ...] = (
    "lstm.weight_ih_l0",
    "lstm.weight_hh_l0",
    "lstm.bias_ih_l0",
    "lstm.bias_hh_l0",
    "head.0.weight",
    "head.0.bias",
    "head.2.weight",
    "head.2.bias",
)
N_STATIC = 2
#: Raw outputs of the network: location, log scale, degrees of freedom, skew.
N_OUT = 4


@dataclass(frozen=True)
class MarginalConfig:
    """Hyperparameters of the LSTM marginals (and of their input features).

    Parameters
    ----------
    window : int
        Days of returns the LSTM reads, >= 2.
    hidden_size : int
        LSTM hidden units, >= 1.
    head_size : int
        Units of the head's hidden layer, >= 1.
    fast_half_life, short_half_life, slow_half_life : float
        Half-lives in days of the EWMA volatilities: the input scale
        ``sigma_t`` and the two ratio features; all > 0.
    burn_in : int
        Days of EWMA history required before the first window is used, >= 0.
    clip : float
        Standardised returns are clipped to ``[-clip, clip]`` on input, > 0.
    mu_bound : float
        Bound of the location in units of ``sigma_t``, >= 0.
    skew_bound : float
        Bound of the log ratio ``kappa`` of the two half-scales, >= 0 (0: symmetric).
    nu_min, nu_max : float
        Bounds of the degrees of freedom, ``2 < nu_min < nu_max``.
    sigma_floor : float
        Smallest input scale (a daily log-return volatility), > 0.
    static_mean, static_std : tuple of float
        Standardisation of the static features (set by training).
    """

    window: int = 60
    hidden_size: int = 16
    head_size: int = 16
    fast_half_life: float = 11.0
    short_half_life: float = 3.0
    slow_half_life: float = 126.0
    burn_in: int = 20
    clip: float = 10.0
    mu_bound: float = 0.2
    skew_bound: float = 0.5
    nu_min: float = 2.2
    nu_max: float = 100.0
    sigma_floor: float = 1e-5
    static_mean: tuple[float, ...] = (0.0, 0.0)
    static_std: tuple[float, ...] = (1.0, 1.0)

    def __post_init__(self) -> None:
        if int(self.window) < 2:
            raise ValueError(f"window must be >= 2, got {self.window}")
        for name in ("hidden_size", "head_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("fast_half_life", "short_half_life", "slow_half_life", "clip", "sigma_floor"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v}")
        if int(self.burn_in) < 0:
            raise ValueError(f"burn_in must be >= 0, got {self.burn_in}")
        for name in ("mu_bound", "skew_bound"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 2.0 < float(self.nu_min) < float(self.nu_max):
            raise ValueError(
                f"need 2 < nu_min < nu_max, got nu_min={self.nu_min}, nu_max={self.nu_max}"
            )
        if len(self.static_mean) != N_STATIC or len(self.static_std) != N_STATIC:
            raise ValueError(f"static_mean and static_std must have {N_STATIC} entries")
        if not all(s > 0 for s in self.static_std):
            raise ValueError(f"static_std must be > 0, got {self.static_std}")

    @property
    def min_obs(self) -> int:
        """Returns needed before the first forecast: ``window + burn_in``."""
        return int(self.window) + int(self.burn_in)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict (ints, floats, lists), for an artifact."""
        d = asdict(self)
        d["static_mean"] = [float(v) for v in self.static_mean]
        d["static_std"] = [float(v) for v in self.static_std]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MarginalConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown MarginalConfig keys {sorted(unknown)}")
        kw = dict(d)
        for key in ("static_mean", "static_std"):
            if key in kw:
                kw[key] = tuple(float(v) for v in kw[key])
        return cls(**kw)


def decay(half_life: float) -> float:
    """EWMA weight of yesterday for a half-life in days: ``2 ** (-1 / half_life)``."""
    return 0.5 ** (1.0 / half_life)


# ----------------------------------------------------------------------------------------------
# EWMA volatilities: batch (training) and streaming (one day), the same arithmetic
# ----------------------------------------------------------------------------------------------


@dataclass
class EwmaVolState:
    """Streaming state of the three bias-corrected EWMA variances of ``n`` assets.

    ``S_t = lam S_{t-1} + (1 - lam) r_t^2`` and ``c_t = lam c_{t-1} + (1 - lam)``,
    variance ``S_t / c_t`` (an exactly weighted mean from the first day).
    Rows of ``s`` and ``c``: fast, short, slow.
    """

    s: NDArray[np.float64]  # shape (3, n_assets)
    c: NDArray[np.float64]  # shape (3,)

    @classmethod
    def zeros(cls, n_assets: int) -> EwmaVolState:
        return cls(np.zeros((3, n_assets)), np.zeros(3))

    def update(self, r: NDArray[np.float64], lams: NDArray[np.float64]) -> None:
        """Absorb one day of log returns ``r`` of shape (n_assets,)."""
        lam = lams[:, None]
        self.s = lam * self.s + (1.0 - lam) * (r * r)[None, :]
        self.c = lams * self.c + (1.0 - lams)

    def sigmas(self, floor: float) -> NDArray[np.float64]:
        """Volatilities, shape (3, n_assets), floored."""
        return np.maximum(np.sqrt(self.s / self.c[:, None]), floor)


def _lams(config: MarginalConfig) -> NDArray[np.float64]:
    return np.array(
        [
            decay(config.fast_half_life),
            decay(config.short_half_life),
            decay(config.slow_half_life),
        ]
    )


def ewma_sigmas(log_returns: ArrayLike, config: MarginalConfig) -> NDArray[np.float64]:
    """EWMA volatilities of each day, known at its close.

    Parameters
    ----------
    log_returns : array-like of shape (n_obs, n_assets)
    config : MarginalConfig

    Returns
    -------
    ndarray of shape (3, n_obs, n_assets)
        Fast, short and slow volatility after absorbing day ``t``; the same
        numbers as :class:`EwmaVolState` fed day by day.
    """
    r = np.asarray(log_returns, dtype=float)
    if r.ndim != 2:
        raise ValueError(f"log_returns must be 2-d, got shape {r.shape}")
    state = EwmaVolState.zeros(r.shape[1])
    lams = _lams(config)
    out = np.empty((3, *r.shape))
    for t in range(r.shape[0]):
        state.update(r[t], lams)
        out[:, t] = state.sigmas(config.sigma_floor)
    return out


def static_features(sigmas: NDArray[np.float64], config: MarginalConfig) -> NDArray[np.float64]:
    """Raw (unstandardised) static features from ``(fast, short, slow)`` volatilities.

    Parameters
    ----------
    sigmas : ndarray of shape (3, ...)

    Returns
    -------
    ndarray of shape (..., 2)
        ``log(slow / fast)`` and ``log(short / fast)``.
    """
    fast, short, slow = sigmas[0], sigmas[1], sigmas[2]
    return np.stack([np.log(slow / fast), np.log(short / fast)], axis=-1)


def standardise_static(raw: NDArray[np.float64], config: MarginalConfig) -> NDArray[np.float64]:
    """``(raw - static_mean) / static_std``."""
    return (raw - np.asarray(config.static_mean)) / np.asarray(config.static_std)


@dataclass(frozen=True)
class WindowData:
    """Training windows of a panel of returns.

    Attributes
    ----------
    seq : ndarray of shape (n_windows, window, 1), float32
        Standardised return sequences.
    static : ndarray of shape (n_windows, 2)
        Raw static features (standardise with the config before use).
    target : ndarray of shape (n_windows,)
        Next-day return over ``sigma_t``.
    sigma : ndarray of shape (n_windows,)
        ``sigma_t``.
    t_index : ndarray of int of shape (n_windows,)
        Row ``t`` of the window's last day in the panel (the target is ``t + 1``).
    asset : ndarray of int of shape (n_windows,)
        Column of the asset.
    """

    seq: NDArray[np.float32]
    static: NDArray[np.float64]
    target: NDArray[np.float64]
    sigma: NDArray[np.float64]
    t_index: NDArray[np.intp]
    asset: NDArray[np.intp]

    @property
    def n_windows(self) -> int:
        return int(self.target.shape[0])

    def subset(self, mask: NDArray[np.bool_]) -> WindowData:
        return WindowData(*(getattr(self, f.name)[mask] for f in fields(self)))

    @staticmethod
    def concatenate(parts: list[WindowData]) -> WindowData:
        return WindowData(
            *(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(WindowData))
        )


def make_windows(
    log_returns: ArrayLike,
    config: MarginalConfig,
    valid_target: ArrayLike | None = None,
) -> WindowData:
    """Cut a panel of returns into (input window, next-day target) pairs.

    Parameters
    ----------
    log_returns : array-like of shape (n_obs, n_assets)
        Finite daily log returns.
    config : MarginalConfig
    valid_target : array-like of bool of shape (n_obs, n_assets), optional
        False where a day's return is not a real observation (a carried-forward
        price); such days are not used as targets (they still enter inputs).

    Returns
    -------
    WindowData
        One window per asset and per day ``t`` with
        ``window + burn_in - 1 <= t <= n_obs - 2``.
    """
    r = np.asarray(log_returns, dtype=float)
    if r.ndim != 2 or not np.all(np.isfinite(r)):
        raise ValueError(f"log_returns must be finite and 2-d, got shape {r.shape}")
    n_obs, n_assets = r.shape
    L = int(config.window)
    t0 = config.min_obs - 1
    ts = np.arange(t0, n_obs - 1)
    if ts.size == 0:
        raise ValueError(f"need more than {config.min_obs} observations, got {n_obs}")
    sig = ewma_sigmas(r, config)
    fast = sig[0]
    # windows r[t-L+1 .. t] for every t in ts, asset-major below
    win = np.lib.stride_tricks.sliding_window_view(r, L, axis=0)  # (n_obs-L+1, n_assets, L)
    win = win[ts - L + 1]  # (n_t, n_assets, L)
    seq = np.clip(win / fast[ts][:, :, None], -config.clip, config.clip)
    static = static_features(sig[:, ts], config)  # (n_t, n_assets, 2)
    target = r[ts + 1] / fast[ts]
    mask = np.ones((ts.size, n_assets), dtype=bool)
    if valid_target is not None:
        v = np.asarray(valid_target, dtype=bool)
        if v.shape != r.shape:
            raise ValueError(f"valid_target has shape {v.shape}, expected {r.shape}")
        mask &= v[ts + 1]
    t_idx = np.broadcast_to(ts[:, None], mask.shape)
    a_idx = np.broadcast_to(np.arange(n_assets)[None, :], mask.shape)
    return WindowData(
        seq=seq[mask][:, :, None].astype(np.float32),
        static=static[mask],
        target=target[mask],
        sigma=fast[ts][mask],
        t_index=t_idx[mask].astype(np.intp),
        asset=a_idx[mask].astype(np.intp),
    )


# ----------------------------------------------------------------------------------------------
# The torch network (training)
# ----------------------------------------------------------------------------------------------


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class LstmMarginals(nn.Module):
    """Shared-weight LSTM mapping a standardised return window to a split Student-t law.

    Parameters
    ----------
    config : MarginalConfig

    Notes
    -----
    ``forward(seq, static)`` with ``seq`` of shape (batch, window, 1) and
    ``static`` of shape (batch, 2) (standardised) returns raw outputs of shape
    (batch, 4); :meth:`law` maps them to ``(mu, s_left, s_right, nu)``. The
    head's last layer starts near zero weights with biases giving ``mu = 0``,
    both scales = the scale of a unit-variance t with 6 degrees of freedom,
    ``nu = 6``.
    """

    def __init__(self, config: MarginalConfig) -> None:
        super().__init__()
        self.config = config
        h = int(config.hidden_size)
        self.lstm = nn.LSTM(1, h, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(h + N_STATIC, int(config.head_size)),
            nn.Tanh(),
            nn.Linear(int(config.head_size), N_OUT),
        )
        with torch.no_grad():
            last = self.head[2]
            assert isinstance(last, nn.Linear)
            last.weight.mul_(0.1)
            nu0 = 6.0
            last.bias.copy_(
                torch.tensor(
                    [0.0, 0.5 * math.log((nu0 - 2.0) / nu0), _softplus_inverse(nu0 - 2.0), 0.0]
                )
            )

    def forward(self, seq: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(seq)
        return self.head(torch.cat([out[:, -1, :], static], dim=1))

    def law(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(mu, s_left, s_right, nu)`` from raw outputs, each of shape (batch,)."""
        c = self.config
        mu = c.mu_bound * torch.tanh(raw[:, 0])
        log_s = torch.clamp(raw[:, 1], -6.0, 4.0)
        kappa = c.skew_bound * torch.tanh(raw[:, 3])
        nu = torch.clamp(2.0 + nn.functional.softplus(raw[:, 2]), c.nu_min, c.nu_max)
        return mu, torch.exp(log_s + kappa), torch.exp(log_s - kappa), nu

    def nll(self, seq: torch.Tensor, static: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of standardised targets (batch,)."""
        mu, s_left, s_right, nu = self.law(self(seq, static))
        scale = torch.where(target < mu, s_left, s_right)
        return -student_t_logpdf_torch(target, mu, scale, nu).mean()

    def numpy_weights(self) -> dict[str, NDArray[np.float32]]:
        """The parameters as float32 numpy arrays, keyed as in ``state_dict``."""
        sd = self.state_dict()
        return {k: sd[k].detach().cpu().numpy().astype(np.float32).copy() for k in PARAM_NAMES}


def student_t_logpdf_torch(
    y: torch.Tensor, mu: torch.Tensor, scale: torch.Tensor, nu: torch.Tensor
) -> torch.Tensor:
    """Log-density of ``mu + scale T_nu`` at ``y`` (elementwise)."""
    z = (y - mu) / scale
    return (
        torch.lgamma(0.5 * (nu + 1.0))
        - torch.lgamma(0.5 * nu)
        - 0.5 * torch.log(nu * math.pi)
        - torch.log(scale)
        - 0.5 * (nu + 1.0) * torch.log1p(z * z / nu)
    )


def student_t_logpdf(
    y: ArrayLike, mu: ArrayLike, scale: ArrayLike, nu: ArrayLike
) -> NDArray[np.float64]:
    """Numpy log-density of ``mu + scale T_nu`` at ``y`` (elementwise).

    Examples
    --------
    >>> from scipy import stats
    >>> round(float(student_t_logpdf(0.3, 0.1, 2.0, 5.0)), 10) == round(
    ...     float(stats.t.logpdf(0.3, 5.0, loc=0.1, scale=2.0)), 10)
    True
    """
    y, mu, scale, nu = (np.asarray(a, dtype=float) for a in (y, mu, scale, nu))
    z = (y - mu) / scale
    return (
        special.gammaln(0.5 * (nu + 1.0))
        - special.gammaln(0.5 * nu)
        - 0.5 * np.log(nu * np.pi)
        - np.log(scale)
        - 0.5 * (nu + 1.0) * np.log1p(z * z / nu)
    )


def split_t_logpdf(
    y: ArrayLike, mu: ArrayLike, s_left: ArrayLike, s_right: ArrayLike, nu: ArrayLike
) -> NDArray[np.float64]:
    """Log-density of the split Student-t (scale ``s_left`` below ``mu``, ``s_right`` above).

    Examples
    --------
    >>> from scipy import integrate
    >>> f = lambda y: float(np.exp(split_t_logpdf(y, 0.1, 1.0, 2.0, 5.0)))
    >>> round(integrate.quad(f, -np.inf, 0.1)[0], 8), round(integrate.quad(f, 0.1, np.inf)[0], 8)
    (0.5, 0.5)
    """
    y = np.asarray(y, dtype=float)
    scale = np.where(y < np.asarray(mu), s_left, s_right)
    return student_t_logpdf(y, mu, scale, nu)


def split_t_cdf(
    y: ArrayLike, mu: ArrayLike, s_left: ArrayLike, s_right: ArrayLike, nu: ArrayLike
) -> NDArray[np.float64]:
    """CDF of the split Student-t: ``F_nu((y - mu) / s_side)``.

    Examples
    --------
    >>> float(split_t_cdf(0.1, 0.1, 1.0, 2.0, 5.0))
    0.5
    """
    y = np.asarray(y, dtype=float)
    scale = np.where(y < np.asarray(mu), s_left, s_right)
    return special.stdtr(nu, (y - mu) / scale)


def split_t_ppf(
    u: ArrayLike, mu: ArrayLike, s_left: ArrayLike, s_right: ArrayLike, nu: ArrayLike
) -> NDArray[np.float64]:
    """Quantile function of the split Student-t (inverse of :func:`split_t_cdf`).

    Examples
    --------
    >>> y = split_t_ppf(0.01, 0.0, 2.0, 1.0, 4.0)
    >>> round(float(split_t_cdf(y, 0.0, 2.0, 1.0, 4.0)), 12)
    0.01
    """
    q = special.stdtrit(nu, np.asarray(u, dtype=float))
    return mu + np.where(q < 0, s_left, s_right) * q


# ----------------------------------------------------------------------------------------------
# The numpy forward (streaming)
# ----------------------------------------------------------------------------------------------


@dataclass
class NumpyMarginals:
    """Plain-numpy forward of a trained :class:`LstmMarginals` (picklable, no torch state).

    Parameters
    ----------
    config : MarginalConfig
    weights : mapping of str to ndarray
        The network's parameters, keyed as :data:`PARAM_NAMES` (float32).

    Notes
    -----
    The LSTM gates are reordered to (input, forget, output, cell) and the
    sigmoid rows pre-scaled by 1/2, so one ``tanh`` over all gates gives
    ``sigmoid(x) = (1 + tanh(x / 2)) / 2`` for three of them: about eight
    numpy calls per time step for every asset at once. Computed in float64;
    agrees with the torch forward to ~1e-6.
    """

    config: MarginalConfig
    weights: Mapping[str, NDArray[np.float32]]
    _w_ih: NDArray[np.float64] = field(init=False, repr=False)
    _w_hh: NDArray[np.float64] = field(init=False, repr=False)
    _b: NDArray[np.float64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        missing = [k for k in PARAM_NAMES if k not in self.weights]
        if missing:
            raise ValueError(f"weights lack {missing}")
        w = {k: np.asarray(self.weights[k], dtype=np.float32).copy() for k in PARAM_NAMES}
        self.weights = w
        h = int(self.config.hidden_size)
        if w["lstm.weight_hh_l0"].shape != (4 * h, h):
            raise ValueError(
                f"weights do not match hidden_size={h}: "
                f"weight_hh has shape {w['lstm.weight_hh_l0'].shape}"
            )
        head = w["head.2.weight"].shape
        if head != (N_OUT, int(self.config.head_size)):
            raise ValueError(
                f"weights do not match this network: head.2.weight has shape {head}, "
                f"expected ({N_OUT}, {self.config.head_size})"
            )
        # torch order i, f, g, o -> i, f, o, g ; sigmoid rows halved
        perm = np.concatenate(
            [np.arange(0, h), np.arange(h, 2 * h), np.arange(3 * h, 4 * h), np.arange(2 * h, 3 * h)]
        )
        scale = np.concatenate([np.full(3 * h, 0.5), np.ones(h)])
        w_ih = w["lstm.weight_ih_l0"].astype(np.float64)[perm] * scale[:, None]
        w_hh = w["lstm.weight_hh_l0"].astype(np.float64)[perm] * scale[:, None]
        b = (w["lstm.bias_ih_l0"].astype(np.float64) + w["lstm.bias_hh_l0"])[perm] * scale
        self._w_ih = np.ascontiguousarray(w_ih.T)  # (1, 4h)
        self._w_hh = np.ascontiguousarray(w_hh.T)  # (h, 4h)
        self._b = b

    def raw(self, seq: NDArray[np.float64], static: NDArray[np.float64]) -> NDArray[np.float64]:
        """Raw outputs, shape (batch, 4), from ``seq`` (batch, window, 1) and ``static`` (batch, 2)."""
        h_size = int(self.config.hidden_size)
        n, L, _ = seq.shape
        xp = seq[:, :, 0].T[:, :, None] * self._w_ih[0] + self._b  # (L, n, 4h)
        h = np.zeros((n, h_size))
        c = np.zeros((n, h_size))
        h3 = 3 * h_size
        for k in range(L):
            g = h @ self._w_hh
            g += xp[k]
            np.tanh(g, out=g)
            s = g[:, :h3]
            s *= 0.5
            s += 0.5
            c *= s[:, h_size : 2 * h_size]
            c += s[:, :h_size] * g[:, h3:]
            h = s[:, 2 * h_size : h3] * np.tanh(c)
        w = self.weights
        z = np.tanh(
            np.concatenate([h, static], axis=1) @ w["head.0.weight"].T.astype(np.float64)
            + w["head.0.bias"]
        )
        return z @ w["head.2.weight"].T.astype(np.float64) + w["head.2.bias"]

    def law(self, raw: NDArray[np.float64]) -> tuple[NDArray[np.float64], ...]:
        """``(mu, s_left, s_right, nu)`` in units of ``sigma_t``, each of shape (batch,)."""
        c = self.config
        mu = c.mu_bound * np.tanh(raw[:, 0])
        log_s = np.clip(raw[:, 1], -6.0, 4.0)
        kappa = c.skew_bound * np.tanh(raw[:, 3])
        nu = np.clip(2.0 + np.logaddexp(0.0, raw[:, 2]), c.nu_min, c.nu_max)
        return mu, np.exp(log_s + kappa), np.exp(log_s - kappa), nu

    def predict(
        self, seq: NDArray[np.float64], static_raw: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], ...]:
        """``(mu, s_left, s_right, nu)`` from a sequence and *raw* static features."""
        return self.law(self.raw(seq, standardise_static(static_raw, self.config)))


@dataclass
class MarginalState:
    """Streaming inputs of the marginals for ``n`` assets: O(window) memory, O(1) per day.

    A ring buffer of the last ``window`` returns per asset plus the EWMA
    volatility state. :meth:`forecast` builds the same features as
    :func:`make_windows` does for the last day.
    """

    config: MarginalConfig
    n_assets: int
    ring: NDArray[np.float64] = field(init=False)
    pos: int = field(init=False, default=0)
    n_seen: int = field(init=False, default=0)
    vol: EwmaVolState = field(init=False)

    def __post_init__(self) -> None:
        self.ring = np.zeros((int(self.config.window), self.n_assets))
        self.vol = EwmaVolState.zeros(self.n_assets)

    def update(self, r: NDArray[np.float64]) -> None:
        """Absorb one day of log returns, shape (n_assets,)."""
        self.ring[self.pos] = r
        self.pos = (self.pos + 1) % self.ring.shape[0]
        self.vol.update(r, _lams(self.config))
        self.n_seen += 1

    @property
    def ready(self) -> bool:
        return self.n_seen >= self.config.min_obs

    def features(self) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """``(seq, static_raw, sigma)`` of the last day: (n, window, 1), (n, 2), (n,)."""
        sig = self.vol.sigmas(self.config.sigma_floor)
        fast = sig[0]
        ordered = np.roll(self.ring, -self.pos, axis=0)  # oldest first, shape (window, n)
        seq = np.clip(ordered.T / fast[:, None], -self.config.clip, self.config.clip)
        return seq[:, :, None], static_features(sig, self.config), fast


# ----------------------------------------------------------------------------------------------
# Training (pure torch, no I/O): Adam on the NLL, chronological early stopping
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit_marginals`.

    Attributes
    ----------
    config : MarginalConfig
        The config with the static-feature standardisation used.
    weights : dict of str to ndarray
        Best parameters (lowest validation NLL), float32.
    train_nll, val_nll : tuple of float
        Mean NLL per epoch (standardised units; the train figure is the
        running mean over the epoch's batches).
    best_epoch : int
        1-based epoch of the kept weights (0: the initial weights were best).
    baseline_val_nll : float
        Validation NLL of the initial weights (before any step).
    """

    config: MarginalConfig
    weights: dict[str, NDArray[np.float32]]
    train_nll: tuple[float, ...]
    val_nll: tuple[float, ...]
    best_epoch: int
    baseline_val_nll: float


class _TorchDeterminism:
    """Seeded, deterministic, fixed-thread torch; restores the global settings on exit."""

    def __init__(self, seed: int, num_threads: int) -> None:
        self.seed = int(seed)
        self.num_threads = int(num_threads)

    def __enter__(self) -> torch.Generator:
        self._threads = torch.get_num_threads()
        self._det = torch.are_deterministic_algorithms_enabled()
        torch.set_num_threads(self.num_threads)
        torch.use_deterministic_algorithms(True)
        torch.manual_seed(self.seed)
        return torch.Generator().manual_seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self._threads)
        torch.use_deterministic_algorithms(self._det)


def _tensors(data: WindowData, config: MarginalConfig) -> tuple[torch.Tensor, ...]:
    return (
        torch.from_numpy(np.ascontiguousarray(data.seq, dtype=np.float32)),
        torch.from_numpy(standardise_static(data.static, config).astype(np.float32)),
        torch.from_numpy(data.target.astype(np.float32)),
    )


def _weighted_nll(net: LstmMarginals, tensors: tuple[torch.Tensor, ...], batch: int) -> float:
    seq, static, target = tensors
    n = int(target.shape[0])
    acc = 0.0
    with torch.no_grad():
        for i in range(0, n, batch):
            j = min(n, i + batch)
            acc += float(net.nll(seq[i:j], static[i:j], target[i:j])) * (j - i)
    return acc / n


def fit_marginals(
    train: WindowData,
    val: WindowData,
    config: MarginalConfig,
    *,
    seed: int = 0,
    max_epochs: int = 30,
    batch_size: int = 512,
    learning_rate: float = 2e-3,
    weight_decay: float = 0.0,
    patience: int = 4,
    grad_clip: float = 1.0,
    num_threads: int = 2,
    init_weights: Mapping[str, NDArray[np.float32]] | None = None,
    progress: Any = None,
) -> FitResult:
    """Train :class:`LstmMarginals` by maximum likelihood with early stopping.

    Parameters
    ----------
    train, val : WindowData
        Training windows and the chronologically later validation windows.
    config : MarginalConfig
        Architecture; its static standardisation is recomputed from ``train``
        unless ``init_weights`` are given (warm start keeps ``config``'s).
    seed : int
        Seeds the initial weights and the batch order.
    max_epochs, batch_size, patience : int
        Stop after ``patience`` epochs without a better validation NLL.
    learning_rate, weight_decay, grad_clip : float
        Adam step, L2 penalty, and gradient-norm clip.
    num_threads : int
        torch threads during training (restored afterwards).
    init_weights : mapping, optional
        Start from these parameters (warm start).
    progress : callable, optional
        Called as ``progress(epoch, max_epochs, train_nll, val_nll)`` after
        each epoch.

    Returns
    -------
    FitResult

    Notes
    -----
    Deterministic for a given seed and thread count:
    ``torch.use_deterministic_algorithms(True)`` is on while training.
    """
    for name, value, lo in (
        ("max_epochs", max_epochs, 0),
        ("batch_size", batch_size, 1),
        ("patience", patience, 1),
        ("num_threads", num_threads, 1),
    ):
        if int(value) < lo:
            raise ValueError(f"{name} must be >= {lo}, got {value}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if train.n_windows == 0 or val.n_windows == 0:
        raise ValueError(
            f"need training and validation windows, got {train.n_windows} and {val.n_windows}"
        )
    if init_weights is None:
        mean = train.static.mean(axis=0)
        std = np.maximum(train.static.std(axis=0), 1e-6)
        config = replace(
            config,
            static_mean=tuple(float(v) for v in mean),
            static_std=tuple(float(v) for v in std),
        )
    with _TorchDeterminism(seed, num_threads) as gen:
        net = LstmMarginals(config)
        if init_weights is not None:
            net.load_state_dict(
                {
                    k: torch.from_numpy(np.asarray(v, dtype=np.float32))
                    for k, v in init_weights.items()
                }
            )
        tr = _tensors(train, config)
        va = _tensors(val, config)
        opt = torch.optim.Adam(net.parameters(), lr=learning_rate, weight_decay=weight_decay)
        best: float = _weighted_nll(net, va, 4096)
        baseline = best
        best_w = net.numpy_weights()
        best_epoch = 0
        train_hist: list[float] = []
        val_hist: list[float] = []
        since = 0
        n = train.n_windows
        for epoch in range(1, int(max_epochs) + 1):
            net.train()
            order = torch.randperm(n, generator=gen)
            acc = 0.0
            for i in range(0, n, batch_size):
                idx = order[i : i + batch_size]
                loss = net.nll(tr[0][idx], tr[1][idx], tr[2][idx])
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
                opt.step()
                acc += float(loss.detach()) * int(idx.shape[0])
            net.eval()
            v = _weighted_nll(net, va, 4096)
            train_hist.append(acc / n)
            val_hist.append(v)
            if progress is not None:
                progress(epoch, int(max_epochs), acc / n, v)
            if v < best - 1e-5:
                best, best_w, best_epoch, since = v, net.numpy_weights(), epoch, 0
            else:
                since += 1
                if since >= patience:
                    break
    return FitResult(
        config=config,
        weights=best_w,
        train_nll=tuple(train_hist),
        val_nll=tuple(val_hist),
        best_epoch=best_epoch,
        baseline_val_nll=baseline,
    )


# ----------------------------------------------------------------------------------------------
# The frozen artifact as the engine sees it (reading and writing files is stream_app's job)
# ----------------------------------------------------------------------------------------------

#: Format tag of the artifact payload (bump on incompatible changes).
ARTIFACT_FORMAT = "riskmon.lstm_marginals/1"


@dataclass(frozen=True)
class LstmArtifact:
    """A trained, frozen LSTM-marginals network: what :class:`~models.lstm_copula.LstmCopula` needs.

    Parameters
    ----------
    config : MarginalConfig
        Architecture and feature settings (normalisation statistics included).
    weights : dict of str to ndarray
        Parameters keyed as :data:`PARAM_NAMES`, float32.
    model_version : str
        Version string carried into forecasts and alerts, e.g.
        ``"lstm_copula-v1+2022-12-28.s0"``.
    metadata : dict
        Plain-type facts about training (period, assets, validation metrics).
    """

    config: MarginalConfig
    weights: dict[str, NDArray[np.float32]]
    model_version: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        NumpyMarginals(self.config, self.weights)  # validates the weights against the config

    def marginals(self) -> NumpyMarginals:
        """The numpy forward of these weights."""
        return NumpyMarginals(self.config, self.weights)
