"""Errors and warnings of the risk engine."""


class RiskmonError(Exception):
    """Root of every error riskmon raises on purpose."""


class NotEnoughObservations(RiskmonError):
    """A model was asked for a forecast before it has seen enough data (warm-up)."""

    def __init__(self, needed: int, seen: int, what: str = "model") -> None:
        super().__init__(f"{what} needs {needed} observations before it can forecast, has {seen}")
        self.needed = needed
        self.seen = seen


class DataError(RiskmonError, ValueError):
    """Input data that cannot be used: malformed, misaligned or non-finite."""


class ConvergenceWarning(RuntimeWarning):
    """Non-fatal numerical trouble (an optimiser that did not converge, a repaired matrix)."""
