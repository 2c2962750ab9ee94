"""Portfolio definitions: weights from the command line or a YAML file."""

from __future__ import annotations

from collections.abc import Hashable
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


#: Keys of one portfolio in a YAML file (champion .. fallback are read by the stream,
#: :func:`stream_app.risk.load_portfolio_configs`); any other key is a typo.
PORTFOLIO_KEYS = (
    "name",
    "weights",
    "assets",
    "limits",
    "champion",
    "challengers",
    "seed",
    "fallback",
)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is repeated", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_portfolio_yaml(p: Path) -> object:
    """The YAML document of a portfolio file; one-line :class:`PortfolioError` when it is not."""
    try:
        return yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except OSError as exc:
        raise PortfolioError(f"cannot read portfolio file {p}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise PortfolioError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(p)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PortfolioError(f"{where}: not valid YAML: {problem}") from None


def _from_mapping(name: str, mapping: object, limits: object = None) -> Portfolio:
    if not isinstance(mapping, dict):
        raise PortfolioError(
            f"portfolio {name!r}: weights must be a mapping ASSET: WEIGHT, got {mapping!r}"
        )
    if limits is not None and not isinstance(limits, dict):
        raise PortfolioError(
            f"portfolio {name!r}: limits must be a mapping such as {{var99: 0.04}}, got {limits!r}"
        )
    bools = [str(k) for k, v in mapping.items() if isinstance(v, bool)]
    if bools:
        raise PortfolioError(
            f"portfolio {name!r}: weights of {bools} must be numbers, not true/false"
        )
    try:
        weights = {str(k): float(v) for k, v in mapping.items()}
    except (TypeError, ValueError) as exc:
        raise PortfolioError(f"portfolio {name!r}: weights must be numbers ({exc})") from None
    return Portfolio(name, tuple(weights), tuple(weights.values()), dict(limits or {}))


def _check_keys(p: Path, name: str, item: dict) -> None:
    unknown = [str(k) for k in item if k not in PORTFOLIO_KEYS]
    if unknown:
        raise PortfolioError(
            f"{p}: portfolio {name!r}: unknown key(s) {unknown}; valid: {', '.join(PORTFOLIO_KEYS)}"
        )


def load_portfolios(path: str | Path) -> list[Portfolio]:
    """Read portfolios from YAML.

    Accepted shapes: a plain mapping ``{SPY: 0.5, TLT: 0.5}``; ``{weights: {...}}``;
    or ``{portfolios: [{name, weights: {...} | assets + weights: [...], limits: {...}}]}``.
    """
    p = Path(path)
    doc = read_portfolio_yaml(p)
    if not isinstance(doc, dict):
        what = "the file is empty" if doc is None else f"got {type(doc).__name__}"
        raise PortfolioError(f"{p}: expected a mapping at the top level ({what})")
    if "portfolios" in doc:
        if len(doc) > 1:
            others = [str(k) for k in doc if k != "portfolios"]
            raise PortfolioError(f"{p}: unknown top-level key(s) {others} next to 'portfolios'")
        if not isinstance(doc["portfolios"], list | None):
            raise PortfolioError(f"{p}: 'portfolios' must be a list of portfolios")
        out = []
        for i, item in enumerate(doc["portfolios"] or []):
            if not isinstance(item, dict) or "weights" not in item:
                raise PortfolioError(f"{p}: portfolio #{i + 1} needs 'weights'")
            name = str(item.get("name", f"portfolio{i + 1}"))
            _check_keys(p, name, item)
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
        names = [x.name for x in out]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise PortfolioError(f"{p}: portfolio name(s) {twice} used more than once")
        return out
    if "weights" in doc:
        name = str(doc.get("name", p.stem))
        _check_keys(p, name, doc)
        return [_from_mapping(name, doc["weights"], doc.get("limits"))]
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
        portfolios = load_portfolios(spec)
        if len(portfolios) > 1:
            raise PortfolioError(
                f"{spec} holds {len(portfolios)} portfolios "
                f"({', '.join(x.name for x in portfolios)}); give a file with one"
            )
        portfolio = portfolios[0]
    else:
        mapping = {}
        for part in spec.split(","):
            asset, sep, value = part.partition("=")
            if not sep:
                raise PortfolioError(f"bad weight {part!r}: expected ASSET=WEIGHT, e.g. SPY=0.6")
            if asset.strip() in mapping:
                raise PortfolioError(f"bad weights {spec!r}: {asset.strip()} is given twice")
            mapping[asset.strip()] = value.strip()
        portfolio = _from_mapping("cli", mapping)
    if available is not None:
        portfolio.check_against(available)
    return portfolio
