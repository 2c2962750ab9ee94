"""Errors of the stream application (adapters around the engine)."""

from models.exceptions import RiskmonError


class StreamAppError(RiskmonError):
    """Root of the errors raised on purpose by ``stream_app`` and ``producers``."""


class ServiceStartError(StreamAppError, RuntimeError):
    """An embedded service (broker, Valkey) did not start or did not answer in time."""


class MissingDependency(StreamAppError, ImportError):
    """An optional dependency of the streaming extra is not installed."""

    def __init__(self, package: str, what: str) -> None:
        super().__init__(
            f"{what} needs the package {package!r}; install the streaming dependencies "
            f"(pip install {package})"
        )
        self.package = package
