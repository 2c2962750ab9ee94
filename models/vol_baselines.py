"""Classical forecasts of realised volatility over the next ``h`` days.

The comparison set of the CNN (:mod:`models.cnn`): HAR-RV (Corsi 2009), the
RiskMetrics EWMA, GARCH(1,1), and the paper's linear regression, SVR and
decision tree (scikit-learn, imported when used).

Conventions shared by every function here:

- ``log_returns`` is an ndarray of shape (n_days, n_series); row ``t`` is the
  return *of* day ``t`` (close ``t - 1`` to close ``t``).
- A forecast in row ``t`` is made at the close of day ``t`` and is about the
  realised volatility of days ``t + 1 .. t + h``:
  ``RV_t(h) = sqrt(mean(r_{t+1}^2, ..., r_{t+h}^2))`` (zero mean, daily units).
- Fitting takes ``until``: only ``log_returns[:until]`` are used, and a
  regression only uses origins ``t`` whose whole target lies before
  ``until`` (``t + h < until``). Nothing at or after ``until`` is seen.
- Rows whose inputs are not available yet (warm-up) are NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "HAR_LAGS",
    "SKLEARN_KINDS",
    "GarchVol",
    "HarRV",
    "RegressionVol",
    "ewma_vol",
    "har_regressors",
    "realized_vol_target",
]

#: Daily, weekly and monthly components of HAR-RV, in trading days.
HAR_LAGS: tuple[int, ...] = (1, 5, 22)

#: The paper's comparison regressors.
SKLEARN_KINDS: tuple[str, ...] = ("linear", "svr", "tree")


def _returns(log_returns: ArrayLike) -> NDArray[np.float64]:
    r = np.asarray(log_returns, dtype=float)
    if r.ndim == 1:
        r = r[:, None]
    if r.ndim != 2:
        raise ValueError(f"log_returns must have shape (n_days, n_series), got {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("log_returns must be finite")
    return r


def _check_horizon(horizon: int) -> int:
    if int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    return int(horizon)


def _check_until(until: int | None, n: int) -> int:
    u = n if until is None else int(until)
    if not 1 <= u <= n:
        raise ValueError(f"until must lie in [1, {n}], got {until}")
    return u


def _trailing_mean(x: NDArray[np.float64], k: int) -> NDArray[np.float64]:
    """Mean of rows ``t - k + 1 .. t`` (NaN for ``t < k - 1``), by cumulative sums."""
    c = np.cumsum(np.vstack([np.zeros((1, x.shape[1])), x]), axis=0)
    out = np.full(x.shape, np.nan)
    out[k - 1 :] = (c[k:] - c[:-k]) / k
    return out


def realized_vol_target(log_returns: ArrayLike, horizon: int) -> NDArray[np.float64]:
    """Realised volatility of the next ``horizon`` days, for each origin ``t``.

    Parameters
    ----------
    log_returns : array-like of shape (n_days, n_series)
    horizon : int

    Returns
    -------
    ndarray of shape (n_days, n_series)
        ``sqrt(mean(r[t+1 : t+1+h]**2))``; NaN for the last ``h`` rows.

    Examples
    --------
    >>> realized_vol_target(np.array([0.0, 3.0, 4.0, 1.0]), 2)[:, 0].round(4).tolist()
    [3.5355, 2.9155, nan, nan]
    """
    r = _returns(log_returns)
    h = _check_horizon(horizon)
    future = _trailing_mean(r * r, h)  # row j: mean of r[j-h+1 .. j]
    out = np.full(r.shape, np.nan)
    out[: r.shape[0] - h] = np.sqrt(future[h:])
    return out


def har_regressors(log_returns: ArrayLike, lags: tuple[int, ...] = HAR_LAGS) -> NDArray:
    """Trailing mean squared returns over each lag, known at the close of ``t``.

    Returns
    -------
    ndarray of shape (n_days, n_series, len(lags))
        ``[..., j] = mean(r[t - lags[j] + 1 .. t]**2)``; NaN while fewer than
        ``lags[j]`` returns are available.
    """
    r = _returns(log_returns)
    return np.stack([_trailing_mean(r * r, int(k)) for k in lags], axis=-1)


class HarRV:
    """HAR-RV forecasts, one OLS regression per series.

    ``mean(r_{t+1..t+h}^2) = b0 + b_d RV_d + b_w RV_w + b_m RV_m + e`` with the
    daily, weekly and monthly mean squared returns of :func:`har_regressors`
    (variance form, as in Corsi 2009 with daily returns as the RV proxy). The
    volatility forecast is ``sqrt(max(prediction, floor))`` with ``floor`` a
    ``floor_fraction`` of the series' mean training target. ``log=True``
    regresses ``log`` target on ``log`` regressors (HAR-log-RV) and returns
    ``sqrt(exp(pred + s²/2))`` with ``s²`` the residual variance.

    Parameters
    ----------
    horizon : int
    lags : tuple of int, default=(1, 5, 22)
    log : bool, default=False
    floor_fraction : float, default=0.05

    Attributes
    ----------
    coef_ : ndarray of shape (n_series, 1 + len(lags))
        ``[b0, b_d, b_w, b_m]`` per series.
    floor_ : ndarray of shape (n_series,)
    resid_var_ : ndarray of shape (n_series,)
        Residual variance of the fit (used by ``log=True``).
    """

    def __init__(
        self,
        horizon: int,
        lags: tuple[int, ...] = HAR_LAGS,
        *,
        log: bool = False,
        floor_fraction: float = 0.05,
    ) -> None:
        self.horizon = _check_horizon(horizon)
        if not lags or any(int(k) != k or k < 1 for k in lags):
            raise ValueError(f"lags must be positive integers, got {lags!r}")
        if not 0.0 < floor_fraction < 1.0:
            raise ValueError(f"floor_fraction must be in (0, 1), got {floor_fraction!r}")
        self.lags = tuple(int(k) for k in lags)
        self.log = bool(log)
        self.floor_fraction = float(floor_fraction)

    def _design(self, r: NDArray[np.float64]) -> NDArray[np.float64]:
        x = har_regressors(r, self.lags)
        if self.log:
            with np.errstate(divide="ignore"):
                x = np.log(np.maximum(x, 1e-12))
        return x

    def fit(self, log_returns: ArrayLike, until: int | None = None) -> HarRV:
        """OLS per series on the origins ``t`` with ``t + horizon < until``."""
        r = _returns(log_returns)
        u = _check_until(until, r.shape[0])
        r = r[:u]
        x = self._design(r)
        y = realized_vol_target(r, self.horizon) ** 2
        if self.log:
            y = np.log(np.maximum(y, 1e-12))
        n_series = r.shape[1]
        k = len(self.lags) + 1
        self.coef_ = np.zeros((n_series, k))
        self.floor_ = np.zeros(n_series)
        self.resid_var_ = np.zeros(n_series)
        for s in range(n_series):
            ok = np.all(np.isfinite(x[:, s]), axis=1) & np.isfinite(y[:, s])
            if ok.sum() < k + 1:
                raise ValueError(
                    f"series {s}: {int(ok.sum())} usable origins before until={u}, need >= {k + 1}"
                )
            design = np.column_stack([np.ones(int(ok.sum())), x[ok, s]])
            coef, *_ = np.linalg.lstsq(design, y[ok, s], rcond=None)
            self.coef_[s] = coef
            resid = y[ok, s] - design @ coef
            self.resid_var_[s] = float(resid @ resid) / max(resid.size - k, 1)
            level = np.exp(y[ok, s]).mean() if self.log else y[ok, s].mean()
            self.floor_[s] = self.floor_fraction * level
        return self

    def predict(self, log_returns: ArrayLike) -> NDArray[np.float64]:
        """Volatility forecasts, shape (n_days, n_series); NaN during warm-up."""
        r = _returns(log_returns)
        if r.shape[1] != self.coef_.shape[0]:
            raise ValueError(f"fitted on {self.coef_.shape[0]} series, got {r.shape[1]}")
        x = self._design(r)
        pred = self.coef_[:, 0] + np.einsum("tsk,sk->ts", x, self.coef_[:, 1:])
        if self.log:
            pred = np.exp(pred + 0.5 * self.resid_var_)
        return np.sqrt(np.maximum(pred, self.floor_))


def ewma_vol(log_returns: ArrayLike, lam: float = 0.94) -> NDArray[np.float64]:
    """RiskMetrics EWMA volatility, the same forecast for every horizon.

    ``s²_0 = r_0²``, ``s²_t = lam s²_{t-1} + (1 - lam) r_t²``; row ``t`` is the
    forecast made at the close of ``t``.

    Examples
    --------
    >>> ewma_vol(np.array([0.02, 0.0]), lam=0.5)[:, 0].tolist()
    [0.02, 0.01414213562373095]
    """
    r = _returns(log_returns)
    if not 0.0 < lam < 1.0:
        raise ValueError(f"lam must be in (0, 1), got {lam!r}")
    out = np.empty(r.shape)
    s2 = r[0] ** 2
    out[0] = s2
    for t in range(1, r.shape[0]):
        s2 = lam * s2 + (1.0 - lam) * r[t] ** 2
        out[t] = s2
    return np.sqrt(out)


class GarchVol:
    """GARCH(1,1) with zero mean and normal errors, one per series.

    Parameters are estimated by :mod:`arch` on ``log_returns[:until]`` (in
    percent, for the optimiser), then frozen; :meth:`predict` filters the
    whole sample with them:
    ``s²_{t+1} = omega + alpha r_t² + beta s²_t`` (started at the training
    sample variance) and forecasts ``mean_{k=1..h} s²_{t+k}`` with
    ``s²_{t+k} = v + (alpha + beta)^{k-1} (s²_{t+1} - v)``, ``v`` the
    unconditional variance (the last one-step value is used for all ``k``
    when ``alpha + beta >= 1``).

    Attributes
    ----------
    params_ : ndarray of shape (n_series, 3)
        ``omega`` (in squared return units), ``alpha``, ``beta``.
    init_var_ : ndarray of shape (n_series,)
    """

    def __init__(self, horizon: int) -> None:
        self.horizon = _check_horizon(horizon)

    def fit(self, log_returns: ArrayLike, until: int | None = None) -> GarchVol:
        from arch import arch_model

        r = _returns(log_returns)
        u = _check_until(until, r.shape[0])
        if u < 50:
            raise ValueError(f"GARCH needs at least 50 returns before until, got {u}")
        train = r[:u]
        self.params_ = np.zeros((r.shape[1], 3))
        self.init_var_ = np.mean(train**2, axis=0)
        for s in range(r.shape[1]):
            res = arch_model(
                100.0 * train[:, s],
                mean="Zero",
                vol="GARCH",
                p=1,
                q=1,
                dist="normal",
                rescale=False,
            ).fit(disp="off", show_warning=False)
            p = res.params
            self.params_[s] = (p["omega"] / 1e4, p["alpha[1]"], p["beta[1]"])
        return self

    def one_step_variance(self, log_returns: ArrayLike) -> NDArray[np.float64]:
        """``s²_{t+1}`` for every origin ``t``, shape (n_days, n_series)."""
        r = _returns(log_returns)
        omega, alpha, beta = self.params_.T
        out = np.empty(r.shape)
        s2 = self.init_var_.copy()
        for t in range(r.shape[0]):
            s2 = omega + alpha * r[t] ** 2 + beta * s2
            out[t] = s2
        return out

    def predict(self, log_returns: ArrayLike, horizon: int | None = None) -> NDArray[np.float64]:
        """Volatility forecasts of the next ``horizon`` days, shape (n_days, n_series).

        ``horizon`` defaults to the one given at construction (the parameters
        do not depend on it, so one fit serves every horizon).
        """
        h = self.horizon if horizon is None else _check_horizon(horizon)
        s2 = self.one_step_variance(log_returns)
        omega, alpha, beta = self.params_.T
        pers = alpha + beta
        stationary = pers < 1.0
        v = np.where(stationary, omega / np.where(stationary, 1.0 - pers, 1.0), 0.0)
        k = np.arange(h)[:, None]
        decay = np.where(stationary, pers, 1.0) ** k  # (h, n_series)
        mean_decay = decay.mean(axis=0)
        var = np.where(stationary, v + mean_decay * (s2 - v), s2)
        return np.sqrt(np.maximum(var, 1e-20))


class RegressionVol:
    """The paper's comparison regressors on flattened heatmap inputs.

    Fits ``kind`` on ``(X, y)`` where ``y`` is a log volatility target (the
    CNN driver uses ``log(RV / scale)``) and predicts ``exp(pred) * smear``
    with Duan's smearing factor ``smear = mean(exp(residuals))`` of the fit.

    Parameters
    ----------
    kind : {"linear", "svr", "tree"}
        ``LinearRegression``; ``SVR`` (RBF kernel, ``C=1``, ``epsilon=0.1``,
        on standardised inputs); ``DecisionTreeRegressor`` (``max_depth=8``,
        ``min_samples_leaf=50``).
    max_train : int, default=4000
        Training rows kept (a seeded random subset when there are more); SVR
        costs grow with the square of this number.
    seed : int, default=0

    Attributes
    ----------
    estimator_ : sklearn estimator
    smear_ : float
    """

    def __init__(self, kind: str, *, max_train: int = 4000, seed: int = 0) -> None:
        if kind not in SKLEARN_KINDS:
            raise ValueError(f"kind must be one of {SKLEARN_KINDS}, got {kind!r}")
        if int(max_train) != max_train or max_train < 10:
            raise ValueError(f"max_train must be an integer >= 10, got {max_train!r}")
        self.kind = kind
        self.max_train = int(max_train)
        self.seed = int(seed)

    def _make(self) -> Any:
        if self.kind == "linear":
            from sklearn.linear_model import LinearRegression

            return LinearRegression()
        if self.kind == "svr":
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler
            from sklearn.svm import SVR

            return make_pipeline(StandardScaler(), SVR(C=1.0, epsilon=0.1))
        from sklearn.tree import DecisionTreeRegressor

        return DecisionTreeRegressor(max_depth=8, min_samples_leaf=50, random_state=self.seed)

    def fit(self, X: ArrayLike, y: ArrayLike) -> RegressionVol:
        x = np.asarray(X, dtype=float)
        t = np.asarray(y, dtype=float).ravel()
        if x.ndim != 2 or x.shape[0] != t.size:
            raise ValueError(f"X {x.shape} and y {t.shape} do not align")
        if x.shape[0] > self.max_train:
            rng = np.random.default_rng(self.seed)
            keep = np.sort(rng.choice(x.shape[0], self.max_train, replace=False))
            x, t = x[keep], t[keep]
        self.estimator_ = self._make().fit(x, t)
        resid = t - self.estimator_.predict(x)
        self.smear_ = float(np.mean(np.exp(resid)))
        return self

    def predict_log(self, X: ArrayLike) -> NDArray[np.float64]:
        """The fitted log target, shape (n_rows,)."""
        return np.asarray(self.estimator_.predict(np.asarray(X, dtype=float)), dtype=float)

    def predict(self, X: ArrayLike) -> NDArray[np.float64]:
        """``exp(predict_log(X)) * smear_``, shape (n_rows,)."""
        return np.exp(self.predict_log(X)) * self.smear_
