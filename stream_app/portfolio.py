"""Portfolio definitions: weights from the command line or a YAML file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from models.exceptions import RiskmonError


class PortfolioError(RiskmonError, ValueError):
    """A portfolio definition that cannot be used."""


@dataclass(frozen=True)
class Portfolio:
    """A named constant-mix portfolio with optional risk limits (fractions of NAV)."""

    name: str
    assets: tuple[str, ...]
    weights: tuple[float, ...]
    limits: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.assets) != len(self.weights):
            raise PortfolioError(
                f"portfolio {self.name!r}: {len(self.assets)} assets but {len(self.weights)} weights"
            )
        if len(set(self.assets)) != len(self.assets):
            raise PortfolioError(f"portfolio {self.name!r}: an asset is listed twice")
        w = np.asarray(self.weights, dtype=float)
        if w.size == 0 or not np.all(np.isfinite(w)) or np.all(w == 0):
            raise PortfolioError(f"portfolio {self.name!r}: weights must be finite and not all 0")

    @property
    def weight_array(self) -> np.ndarray:
        return np.asarray(self.weights, dtype=float)

    def check_against(self, available: tuple[str, ...] | list[str]) -> None:
        """Raise if an asset of the portfolio is not in ``available``."""
        missing = [a for a in self.assets if a not in available]
        if missing:
            raise PortfolioError(
                f"portfolio {self.name!r}: assets {missing} are not in the data "
                f"(available: {', '.join(available)})"
            )


def equal_weights(assets: list[str] | tuple[str, ...], name: str = "equal") -> Portfolio:
    """An equally weighted portfolio of ``assets``."""
    n = len(assets)
    if n == 0:
        raise PortfolioError("no assets to weight")
    return Portfolio(name, tuple(assets), tuple([1.0 / n] * n))


def _from_mapping(name: str, mapping: dict, limits: dict | None = None) -> Portfolio:
    try:
        weights = {str(k): float(v) for k, v in mapping.items()}
    except (TypeError, ValueError) as exc:
        raise PortfolioError(f"portfolio {name!r}: weights must be numbers ({exc})") from None
    return Portfolio(name, tuple(weights), tuple(weights.values()), dict(limits or {}))


def load_portfolios(path: str | Path) -> list[Portfolio]:
    """Read portfolios from YAML.

    Accepted shapes: a plain mapping ``{SPY: 0.5, TLT: 0.5}``; ``{weights: {...}}``;
    or ``{portfolios: [{name, weights: {...} | assets + weights: [...], limits: {...}}]}``.
    """
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PortfolioError(f"cannot read portfolio file {p}: {exc}") from None
    if not isinstance(doc, dict):
        raise PortfolioError(f"{p}: expected a mapping at the top level")
    if "portfolios" in doc:
        out = []
        for i, item in enumerate(doc["portfolios"] or []):
            if not isinstance(item, dict) or "weights" not in item:
                raise PortfolioError(f"{p}: portfolio #{i + 1} needs 'weights'")
            name = str(item.get("name", f"portfolio{i + 1}"))
            w = item["weights"]
            if isinstance(w, list):
                assets = item.get("assets")
                if not isinstance(assets, list):
                    raise PortfolioError(f"{p}: portfolio {name!r} lists weights without assets")
                w = dict(zip(assets, w, strict=False))
                if len(assets) != len(item["weights"]):
                    raise PortfolioError(
                        f"{p}: portfolio {name!r} has {len(assets)} assets "
                        f"and {len(item['weights'])} weights"
                    )
            out.append(_from_mapping(name, w, item.get("limits")))
        if not out:
            raise PortfolioError(f"{p}: 'portfolios' is empty")
        return out
    if "weights" in doc:
        return [_from_mapping(str(doc.get("name", p.stem)), doc["weights"], doc.get("limits"))]
    return [_from_mapping(p.stem, doc)]


def parse_weights(spec: str | None, available: list[str] | tuple[str, ...] | None) -> Portfolio:
    """A portfolio from ``--weights``: None/"equal", ``"SPY=0.6,TLT=0.4"`` or a YAML path.

    The assets are checked against ``available`` unless it is None.
    """
    if spec is None or spec.strip().lower() == "equal":
        if available is None:
            raise PortfolioError("equal weights need the list of available assets")
        return equal_weights(list(available))
    if spec.endswith((".yaml", ".yml")) or Path(spec).is_file():
        portfolio = load_portfolios(spec)[0]
    else:
        mapping = {}
        for part in spec.split(","):
            asset, sep, value = part.partition("=")
            if not sep:
                raise PortfolioError(f"bad weight {part!r}: expected ASSET=WEIGHT, e.g. SPY=0.6")
            mapping[asset.strip()] = value.strip()
        portfolio = _from_mapping("cli", mapping)
    if available is not None:
        portfolio.check_against(available)
    return portfolio
