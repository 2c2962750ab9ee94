"""Names of the engine's VaR models, for the CLI, the stream and the backtest.

Model classes are imported lazily so that a missing optional part (torch for
the deep models) only fails when that model is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from numpy.typing import ArrayLike

from models.base import VaRModel

#: name -> (module, class, short description)
MODELS: dict[str, tuple[str, str, str]] = {
    "hs": ("models.hs", "HistoricalSimulation", "historical simulation, 500 days"),
    "fhs": ("models.hs", "FilteredHistoricalSimulation", "filtered HS on GARCH(1,1) residuals"),
    "ewma": ("models.ewma", "RiskMetricsEWMA", "RiskMetrics EWMA covariance, lambda 0.94, normal"),
    "garch_t": ("models.garch_var", "GarchT", "GARCH(1,1)-t on the portfolio return"),
    "gjr_skewt": ("models.garch_var", "GjrSkewT", "GJR-GARCH(1,1) skew-t on the portfolio return"),
    "copula_garch_t": (
        "models.copula_garch",
        "CopulaGarchT",
        "per-asset GARCH-t marginals + Student-t copula, Monte Carlo",
    ),
    "lstm_copula": (
        "models.lstm_copula",
        "LstmCopula",
        "LSTM Student-t marginals + dynamic t copula, 20,000-scenario Monte Carlo (artifact)",
    ),
    "cnn": (
        "models.cnn_var",
        "CnnVaR",
        "CNN on 32x32 heatmaps: predicted volatility -> VaR/ES (artifact)",
    ),
}

#: Models that need a trained artifact (``make_model(..., artifact=...)``); the
#: adapters load it (``stream_app.risk.build_model``), never the engine.
ARTIFACT_MODELS: tuple[str, ...] = ("lstm_copula", "cnn")

#: The classical baselines, in report order.
BASELINES: tuple[str, ...] = ("hs", "fhs", "ewma", "garch_t", "gjr_skewt", "copula_garch_t")

#: Models that take a ``seed``.
_SEEDED = {"copula_garch_t", "lstm_copula"}


def model_key(name: str, what: str = "model") -> str:
    """The registry key of ``name`` (``-`` spelt as ``_``); ValueError naming it otherwise.

    Examples
    --------
    >>> model_key("gjr-skewt")
    'gjr_skewt'
    """
    key = name.strip().replace("-", "_")
    if key not in MODELS:
        raise ValueError(f"unknown {what} {name!r}; valid models: {', '.join(MODELS)}")
    return key


def parse_model_names(spec: str | Sequence[str]) -> list[str]:
    """Split ``"hs,ewma"`` (or ``"baselines"``, ``"deep"``, ``"all"``) into known model names.

    Examples
    --------
    >>> parse_model_names("hs, ewma")
    ['hs', 'ewma']
    """
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for name in names:
        if not name:
            continue
        if name in ("baselines", "all", "deep"):
            group = {
                "baselines": BASELINES,
                "deep": ARTIFACT_MODELS,
                "all": ARTIFACT_MODELS + BASELINES,
            }[name]
            out.extend(n for n in group if n not in out)
            continue
        key = model_key(name)
        if key not in out:
            out.append(key)
    if not out:
        raise ValueError("no model named")
    return out


def make_model(name: str, weights: ArrayLike, *, seed: int = 0, **params: Any) -> VaRModel:
    """Build the model called ``name`` for a portfolio with ``weights``."""
    key = parse_model_names(name)[0]
    module, cls_name, _ = MODELS[key]
    if key in ARTIFACT_MODELS and "artifact" not in params:
        raise ValueError(f"model {key!r} needs a trained artifact: make_model(..., artifact=...)")
    cls = getattr(importlib.import_module(module), cls_name)
    if key in _SEEDED:
        params.setdefault("seed", seed)
    return cls(weights, **params)
