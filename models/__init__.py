"""riskmon's risk engine: pure numpy/scipy/torch, no I/O.

Every model follows one streaming API: ``update(x)`` changes state and returns
``None``; ``predict()`` only reads; ``fit(X)`` is ``reset()`` followed by one
``update`` per row, so the offline backtest and the stream run the same code.
"""

from models.base import LEVELS, RiskForecast, VaRModel
from models.exceptions import (
    ConvergenceWarning,
    NotEnoughObservations,
    RiskmonError,
)

__all__ = [
    "LEVELS",
    "ConvergenceWarning",
    "NotEnoughObservations",
    "RiskForecast",
    "RiskmonError",
    "VaRModel",
]
