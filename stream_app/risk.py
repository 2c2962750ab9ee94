"""Per-portfolio risk processing of the stream, without Faust.

:class:`RiskProcessor` turns the daily bars and throttled last prices of topic ``bars``
into :class:`~stream_app.records.RiskSnapshot` objects. Its state lives in a
:class:`PortfolioRunState` per (portfolio, run) that the caller owns (in the worker, a
plain changelogged Faust table); the state is plain picklable data: numpy arrays, the
engine's :class:`~models.base.VaRModel` objects and counters.

Day close
---------
Bars of the *open day* ``D`` are collected per asset. Day ``D`` closes when every asset
of the portfolio has its bar of ``D``, or when a closed bar of a later day arrives (an
asset without a bar of ``D`` then keeps its previous close: a zero return, as the
offline calendar's forward fill does). Closing ``D``:

1. asset log returns ``x = ln C_D - ln C_{D-1}`` and the portfolio simple return
   ``realized = sum_i w_i (exp(x_i) - 1)`` (:func:`models.base.portfolio_simple_return`);
2. per model (champion, then challengers): the exception flags of ``realized`` against
   the forecast that was in force for ``D``; the whole-run and rolling 250-day counters,
   Kupiec's p and the Basel traffic light (:mod:`models.backtest`); then
   ``model.update(x)`` and ``model.predict()`` - the forecast for the next day. This is
   the walk-forward loop of :func:`models.walkforward.walk_forward`, so the stream and
   ``riskmon backtest`` give the same numbers for the same closes;
3. the champion's Euler ES contributions (its ``contributions()`` when it has one, else
   the elliptical shares ``w_i (S w)_i / w'S w`` of the EWMA covariance ``S``);
4. features of the day (:class:`models.features.FeatureState`) into a window of the last
   ``heatmap_days`` closed days, rendered as a 32x32 heatmap (per-window min-max, as in
   the CNN paper); the CNN's predicted volatility and risk score when a CNN model runs.

Bars of a day ``<= `` the last closed day are late (ignored and counted), so a bar
delivered twice after a restart never counts twice.

Intraday, each last price updates the running P&L of the open day against the previous
closes, ``pnl = sum_i w_i (P_i / C_i - 1)``, and an intraday snapshot is emitted at most
every ``intraday_interval_s`` of event time (0: on every last price).

Nothing here does I/O except :func:`build_model`, which loads trained artifacts (once per
process) for the deep models.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import pickle
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models import backtest as bt
from models.base import LEVELS, VaRModel, check_weights, portfolio_simple_return
from models.exceptions import RiskmonError
from models.features import FeatureState
from models.registry import model_key
from stream_app.records import (
    LEVEL_KEYS,
    NS_PER_SECOND,
    AssetRisk,
    Bar,
    ChallengerRisk,
    RiskSnapshot,
    day_to_iso,
)

__all__ = [
    "BACKTEST_WINDOW",
    "DayOutput",
    "LiveState",
    "ModelTrack",
    "ModelUnavailable",
    "PortfolioConfig",
    "PortfolioRunState",
    "RiskProcessor",
    "build_model",
    "dumps_state",
    "evict_runs",
    "heatmap_ref",
    "load_portfolio_configs",
    "loads_state",
    "state_key",
]

log = logging.getLogger(__name__)

#: Trading days of the rolling backtest window (Basel: 250).
BACKTEST_WINDOW = 250
#: Days of the heatmap window (the CNN paper's 10).
HEATMAP_DAYS = 10
_I99 = LEVELS.index(0.99)
_DAY_EPOCH = np.datetime64("1970-01-01", "D")


class ModelUnavailable(RiskmonError):
    """A model that cannot be built here (a missing or unreadable artifact)."""


# -- configuration ------------------------------------------------------------------------
@dataclass(frozen=True)
class PortfolioConfig:
    """A portfolio as the risk stage runs it.

    Parameters
    ----------
    name : str
    assets : tuple of str
    weights : tuple of float
        Constant-mix weights (fractions of NAV).
    champion : str
        The primary model (``lstm_copula``, ``cnn`` or a baseline of
        :data:`models.registry.MODELS`).
    challengers : tuple of str
        Models run alongside (not the champion).
    limits : dict of str to float
        Risk limits passed through to the snapshots (alert rules read them).
    seed : int
        Seed of the Monte Carlo models.
    fallback : str
        Model used when the champion cannot be built (artifact missing).
    """

    name: str
    assets: tuple[str, ...]
    weights: tuple[float, ...]
    champion: str = "fhs"
    challengers: tuple[str, ...] = ()
    limits: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    fallback: str = "fhs"

    def __post_init__(self) -> None:
        if len(self.assets) != len(self.weights) or not self.assets:
            raise ValueError(
                f"portfolio {self.name!r}: {len(self.assets)} assets and "
                f"{len(self.weights)} weights (need the same number, >= 1)"
            )
        if len(set(self.assets)) != len(self.assets):
            raise ValueError(f"portfolio {self.name!r}: an asset is listed twice")
        check_weights(self.weights)
        try:
            champion = model_key(self.champion, "champion model")
            fallback = model_key(self.fallback, "fallback model")
            challengers = [model_key(c, "challenger model") for c in self.challengers if c]
        except ValueError as exc:
            raise ValueError(f"portfolio {self.name!r}: {exc}") from None
        object.__setattr__(self, "champion", champion)
        object.__setattr__(self, "fallback", fallback)
        object.__setattr__(self, "challengers", tuple(dict.fromkeys(challengers)))
        if self.champion in self.challengers:
            object.__setattr__(
                self, "challengers", tuple(c for c in self.challengers if c != self.champion)
            )

    @property
    def weight_array(self) -> NDArray[np.float64]:
        return np.asarray(self.weights, dtype=float)

    @property
    def fingerprint(self) -> tuple[Any, ...]:
        """What a running state depends on; a state built for another is rebuilt."""
        return (self.assets, self.weights, self.champion, self.challengers, self.seed)


def load_portfolio_configs(
    path: str | Path,
    *,
    default_champion: str = "fhs",
    default_challengers: Sequence[str] = ("hs", "ewma"),
) -> list[PortfolioConfig]:
    """Read portfolios from YAML (the format of :func:`stream_app.portfolio.load_portfolios`)
    plus, per portfolio, optional ``champion``, ``challengers`` (list), ``seed`` and
    ``fallback`` keys. Limits the alert rules cannot use (an unknown key, a value out of
    range: :func:`stream_app.alerts.check_limits`) are refused here, with the rest of
    the file's errors, rather than replaced by the defaults when the alerts apply them.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "book.yaml"
    >>> _ = p.write_text("portfolios:\\n - name: book\\n   weights: {SPY: 0.6, TLT: 0.4}\\n"
    ...                  "   champion: ewma\\n   challengers: [hs]\\n")
    >>> [(c.name, c.assets, c.champion, c.challengers) for c in load_portfolio_configs(p)]
    [('book', ('SPY', 'TLT'), 'ewma', ('hs',))]
    """
    from stream_app.alerts import check_limits
    from stream_app.portfolio import PortfolioError, load_portfolios, read_portfolio_yaml

    portfolios = load_portfolios(path)
    doc = read_portfolio_yaml(Path(path))  # the same reader: repeated keys refused alike
    items = doc.get("portfolios") if isinstance(doc, dict) and "portfolios" in doc else [doc]
    out = []
    for i, p in enumerate(portfolios):
        extra = items[i] if i < len(items) and isinstance(items[i], dict) else {}
        challengers = extra.get("challengers", list(default_challengers))
        if isinstance(challengers, str):
            challengers = [c.strip() for c in challengers.split(",")]
        if not isinstance(challengers, list):
            raise PortfolioError(f"{path}: portfolio {p.name!r}: challengers must be a list")
        problems = check_limits(p.limits or {})
        if problems:  # a limit the alert rules would ignore (a typo'd key, out of range)
            raise PortfolioError(f"{path}: portfolio {p.name!r}: limits: {'; '.join(problems)}")
        try:
            out.append(
                PortfolioConfig(
                    name=p.name,
                    assets=p.assets,
                    weights=tuple(float(w) for w in p.weights),
                    champion=str(extra.get("champion", default_champion)),
                    challengers=tuple(str(c) for c in challengers),
                    limits={str(k): float(v) for k, v in (p.limits or {}).items()},
                    seed=int(extra.get("seed", 0)),
                    fallback=str(extra.get("fallback", "fhs")),
                )
            )
        except (TypeError, ValueError) as exc:
            raise PortfolioError(f"{path}: portfolio {p.name!r}: {exc}") from None
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise PortfolioError(f"{path}: portfolio names must be unique, got {names}")
    return out


# -- models ---------------------------------------------------------------------------------
#: Loaded artifacts by (kind, path); their ids let states pickle a reference, not weights.
_ARTIFACTS: dict[tuple[str, str | None], Any] = {}
_ARTIFACT_KEYS: dict[int, tuple[str, str | None]] = {}


def _artifact(kind: str, path: str | None) -> Any:
    key = (kind, path)
    art = _ARTIFACTS.get(key)
    if art is None:
        if kind == "lstm_copula":
            from stream_app.train_lstm_copula import load
        else:
            from stream_app.train_cnn import load  # type: ignore[assignment]
        art = _ARTIFACTS[key] = load(path)
        _ARTIFACT_KEYS[id(art)] = key
    return art


def _lstm_artifact(path: str | None) -> Any:
    return _artifact("lstm_copula", path)


def _cnn_artifact(path: str | None) -> Any:
    return _artifact("cnn", path)


# -- state serialisation (the Faust table's changelog) ---------------------------------------
_SAFE_BUILTINS = frozenset(
    {"set", "frozenset", "dict", "list", "tuple", "complex", "slice", "range", "bytearray"}
    | {"float", "int", "str", "bytes", "bool", "object"}
)
_SAFE_GLOBALS = frozenset(
    {
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("copyreg", "_reconstructor"),
        ("collections", "OrderedDict"),
        ("collections", "deque"),
        ("collections", "defaultdict"),
    }
    | {
        (f"numpy.{core}.{mod}", name)
        for core in ("core", "_core")
        for mod, name in (
            ("numeric", "_frombuffer"),
            ("multiarray", "_reconstruct"),
            ("multiarray", "scalar"),
        )
    }
    | {
        ("numpy.random._pickle", name)
        for name in ("__generator_ctor", "__bit_generator_ctor", "__randomstate_ctor")
    }
)


class _StateUnpickler(pickle.Unpickler):
    """Unpickles only the engine's and the stream's classes, numpy arrays and plain types
    (no function of ours, no ``os``/``subprocess``/``eval``); artifacts come back from the
    process's own cache by reference."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        allowed_prefix = module.startswith(("models.", "stream_app.", "numpy.dtypes"))
        if allowed_prefix or module.startswith("numpy.random"):
            obj = super().find_class(module, name)
            if isinstance(obj, type):
                return obj
        raise pickle.UnpicklingError(f"risk state may not reference {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 3 and pid[0] == "artifact"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        _, kind, path = pid
        if kind not in ("lstm_copula", "cnn"):
            raise pickle.UnpicklingError(f"unknown artifact kind {kind!r}")
        return _artifact(kind, path)


class _StatePickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        key = _ARTIFACT_KEYS.get(id(obj))
        if key is not None and _ARTIFACTS.get(key) is obj:
            return ("artifact", *key)
        return None


def dumps_state(obj: Any) -> bytes:
    """Pickle a risk state; loaded artifacts are written as references (kind, path).

    Examples
    --------
    >>> loads_state(dumps_state({"x": np.arange(3)}))["x"].tolist()
    [0, 1, 2]
    """
    buf = io.BytesIO()
    _StatePickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


def loads_state(data: bytes) -> Any:
    """Inverse of :func:`dumps_state`; refuses anything but the allowed classes.

    Examples
    --------
    >>> import pickle, os
    >>> loads_state(pickle.dumps(os.system))
    Traceback (most recent call last):
    ...
    _pickle.UnpicklingError: risk state may not reference posix.system
    """
    return _StateUnpickler(io.BytesIO(data)).load()


def build_model(
    name: str,
    weights: Sequence[float] | NDArray[np.float64],
    *,
    seed: int = 0,
    artifacts: Mapping[str, str | None] | None = None,
) -> tuple[VaRModel, str]:
    """Build a model of the engine for a portfolio; returns ``(model, model_version)``.

    ``lstm_copula`` and ``cnn`` load their trained artifacts (the shipped ones, or the
    paths in ``artifacts``), once per process; the baselines come from
    :func:`models.registry.make_model` (version ``"builtin"``).

    Raises
    ------
    ModelUnavailable
        When a deep model's artifact is missing or unusable.
    ValueError
        For an unknown model name.
    """
    from models.registry import make_model

    key = model_key(name)
    paths = dict(artifacts or {})
    w = np.asarray(weights, dtype=float)
    if key == "lstm_copula":
        try:
            from models.lstm_copula import LstmCopula

            art = _lstm_artifact(paths.get("lstm_copula"))
            model: VaRModel = LstmCopula(w, art, seed=seed)
            model.update(np.zeros(w.size))  # a smoke test of the artifact against the code
            model.reset()
        except Exception as exc:
            raise ModelUnavailable(f"lstm_copula cannot run here: {exc}") from exc
        return model, str(getattr(art, "model_version", "lstm_copula"))
    if key == "cnn":
        try:
            art = _cnn_artifact(paths.get("cnn"))
            try:
                from stream_app.train_cnn import DefaultCnnVaR as _Cnn
            except ImportError:  # pragma: no cover - depends on the CNN helper's module
                from models.cnn_var import CnnVaR as _Cnn
            model = _Cnn(w, art)
        except Exception as exc:
            raise ModelUnavailable(f"cnn cannot run here: {exc}") from exc
        version = art.get("model_version") or art.get("version") or "cnn"
        return model, str(version)
    return make_model(key, w, seed=seed), "builtin"


ModelFactory = Callable[[str, NDArray[np.float64], int], tuple[VaRModel, str]]


def _default_factory(name: str, weights: NDArray[np.float64], seed: int) -> tuple[VaRModel, str]:
    return build_model(name, weights, seed=seed)


# -- state --------------------------------------------------------------------------------------
@dataclass
class ModelTrack:
    """One model of a portfolio run: the model, its forecast in force, its backtest.

    Attributes
    ----------
    var, es : ndarray of shape (n_levels,) or None
        The forecast for the next day to close (made at the last close).
    prev_var, prev_es : ndarray of shape (n_levels,) or None
        The forecast that was in force for the last closed day.
    exception : ndarray of bool of shape (n_levels,) or None
        The last closed day's exception flags (``None`` without a forecast).
    n_days : int
        Scored days (days with a forecast in force).
    exceptions_total : ndarray of int of shape (n_levels,)
    ring : ndarray of bool of shape (window, n_levels)
        Exception flags of the last ``min(n_days, window)`` scored days (ring buffer).
    """

    name: str
    version: str
    model: VaRModel
    window: int = BACKTEST_WINDOW
    var: NDArray[np.float64] | None = None
    es: NDArray[np.float64] | None = None
    prev_var: NDArray[np.float64] | None = None
    prev_es: NDArray[np.float64] | None = None
    exception: NDArray[np.bool_] | None = None
    n_days: int = 0
    exceptions_total: NDArray[np.int64] = field(
        default_factory=lambda: np.zeros(len(LEVELS), dtype=np.int64)
    )
    ring: NDArray[np.bool_] = field(default=None)  # type: ignore[assignment]
    ring_pos: int = 0
    update_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.ring is None:
            self.ring = np.zeros((self.window, len(LEVELS)), dtype=bool)

    @property
    def days_window(self) -> int:
        return min(self.n_days, self.window)

    def score(self, realized: float) -> None:
        """Flag the closing day's exceptions against the forecast in force."""
        self.prev_var, self.prev_es = self.var, self.es
        if self.var is None:
            self.exception = None
            return
        flags = realized < -self.var
        self.exception = flags
        self.n_days += 1
        self.exceptions_total += flags
        self.ring[self.ring_pos] = flags
        self.ring_pos = (self.ring_pos + 1) % self.window

    def advance(self, x: NDArray[np.float64]) -> None:
        """Feed the day's log returns, then forecast the next day."""
        t0 = time.perf_counter()
        self.model.update(x)
        forecast = self.model.predict_or_none()
        self.update_seconds = time.perf_counter() - t0
        if forecast is None:
            self.var = self.es = None
        else:
            self.var = np.asarray(forecast.var, dtype=float).copy()
            self.es = np.asarray(forecast.es, dtype=float).copy()

    def exceptions_window(self) -> NDArray[np.int64]:
        return self.ring[: self.days_window].sum(axis=0).astype(np.int64)

    def kupiec(self) -> dict[str, float | None]:
        n = self.days_window
        counts = self.exceptions_window()
        return {
            key: (bt.kupiec_pof(int(counts[i]), n, level).pvalue if n else None)
            for i, (key, level) in enumerate(zip(LEVEL_KEYS, LEVELS, strict=True))
        }

    def traffic_light(self) -> str | None:
        n = self.days_window
        if not n:
            return None
        return _zone(int(self.exceptions_window()[_I99]), n)

    def as_challenger(self) -> ChallengerRisk:
        return ChallengerRisk(
            model=self.name,
            var=_levels(self.var),
            es=_levels(self.es),
            exception=_flags(self.exception),
            n_days=self.n_days,
            exceptions_total=_counts(self.exceptions_total),
            days_250d=self.days_window,
            exceptions_250d=_counts(self.exceptions_window()),
            kupiec_p=self.kupiec(),
            traffic_light=self.traffic_light(),
        )


@functools.lru_cache(maxsize=1024)
def _thresholds(n_obs: int) -> tuple[int, int]:
    return bt.traffic_light_thresholds(n_obs, 0.99)


def _zone(n_exceptions: int, n_obs: int) -> str:
    """:func:`models.backtest.traffic_light` at 99 % with cached thresholds."""
    green_max, yellow_max = _thresholds(n_obs)
    if n_exceptions <= green_max:
        return "green"
    return "yellow" if n_exceptions <= yellow_max else "red"


def _levels(a: NDArray[np.float64] | None) -> dict[str, float] | None:
    return None if a is None else {k: float(v) for k, v in zip(LEVEL_KEYS, a, strict=True)}


def _flags(a: NDArray[np.bool_] | None) -> dict[str, bool] | None:
    return None if a is None else {k: bool(v) for k, v in zip(LEVEL_KEYS, a, strict=True)}


def _counts(a: NDArray[np.int64]) -> dict[str, int]:
    return {k: int(v) for k, v in zip(LEVEL_KEYS, a, strict=True)}


def evict_runs(runs: dict[str, PortfolioRunState], keep: str, max_runs: int) -> list[str]:
    """Keep at most ``max_runs`` runs of a portfolio: drop the least recently active
    replay runs (by :attr:`PortfolioRunState.touched_wall`), never ``live`` and never
    ``keep``. Returns the runs dropped.

    Examples
    --------
    >>> class S:
    ...     def __init__(self, t): self.touched_wall = t
    >>> runs = {"live": S(0), "a": S(1), "b": S(3), "c": S(2)}
    >>> evict_runs(runs, "c", 2), sorted(runs)
    (['a', 'b'], ['c', 'live'])
    """
    excess = len(runs) - max_runs
    if excess <= 0:
        return []
    old = sorted((st.touched_wall, run) for run, st in runs.items() if run not in (keep, "live"))
    dropped = [run for _, run in old[:excess]]
    for run in dropped:
        del runs[run]
    return dropped


def state_key(portfolio: str, run_id: str) -> str:
    """Table key of a (portfolio, run): ``"<portfolio>|<run or live>"``.

    Examples
    --------
    >>> state_key("book", ""), state_key("book", "replay-1")
    ('book|live', 'book|replay-1')
    """
    return f"{portfolio}|{run_id or 'live'}"


def heatmap_ref(portfolio: str, run_id: str, day: str) -> str:
    """Redis key of the heatmap PNG of a daily snapshot (the run id keeps replays apart).

    Examples
    --------
    >>> heatmap_ref("book", "", "2008-09-15")
    'riskmon:heatmap:live:book:2008-09-15'
    """
    return f"riskmon:heatmap:{run_id or 'live'}:{portfolio}:{day}"


@dataclass
class LiveState:
    """The part of a run's state that changes with every bar (small; written to its
    own table every batch, while :class:`PortfolioRunState` is written at day closes).

    Attributes
    ----------
    pending : dict of int to dict of int to tuple
        Days not closed yet (day index, days since 1970-01-01) -> asset column ->
        ``(open, high, low, close, volume, ts_last)`` of its bar of that day. Bars of
        later days wait here while an earlier day is incomplete (partitions deliver
        assets with some skew).
    last_price, last_ts : ndarray of shape (n_assets,)
        Latest price and its event time (ns, 0 = never) from bars and last prices.
    ts : int
        Latest event time seen.
    seq : int
        Snapshots made so far.
    last_intraday_ts : int or None
        Event time of the last intraday snapshot (throttle).
    n_late : int
        Bars ignored as late or repeated.
    touched_wall : float
        Wall clock of the last batch (for evicting idle replay runs).
    """

    n_assets: int
    pending: dict[int, dict[int, tuple[float, float, float, float, float, int]]] = field(
        default_factory=dict
    )
    last_price: NDArray[np.float64] = field(default=None)  # type: ignore[assignment]
    last_ts: NDArray[np.int64] = field(default=None)  # type: ignore[assignment]
    ts: int = 0
    seq: int = 0
    last_intraday_ts: int | None = None
    n_late: int = 0
    touched_wall: float = 0.0

    @property
    def open_day(self) -> int | None:
        """The earliest day not closed yet (``None``: nothing pending)."""
        return min(self.pending) if self.pending else None

    def __post_init__(self) -> None:
        if self.last_price is None:
            self.last_price = np.full(self.n_assets, np.nan)
        if self.last_ts is None:
            self.last_ts = np.zeros(self.n_assets, dtype=np.int64)


_LIVE_FIELDS = (
    "pending",
    "last_price",
    "last_ts",
    "ts",
    "seq",
    "last_intraday_ts",
    "n_late",
    "touched_wall",
)


@dataclass
class PortfolioRunState:
    """Everything the risk stage keeps per (portfolio, run); plain picklable data.

    The fields of :class:`LiveState` (``pending``, ``last_price``,
    ``last_ts``, ``ts``, ``seq``, ``last_intraday_ts``, ``n_late``, ``touched_wall``)
    are read and written through :attr:`live`; pickling leaves ``live`` out, so the
    worker stores it in a table of its own (see :meth:`attach_live`).

    Attributes
    ----------
    last_closed_day : int or None
    prev_close : ndarray of shape (n_assets,)
        Closes of ``last_closed_day`` (NaN where never seen).
    last_day : ndarray of int of shape (n_assets,)
        Day index of each asset's last closed bar (-1 = never).
    close_ts : ndarray of int of shape (n_assets,)
        Event time (ns) of the last tick of each asset's last closed bar (0 = never).
    window_days, window_rows : list
        The heatmap window: day indices and feature rows of the last closed days.
    seq_at_close : int
        ``seq`` when the state was last closed (restores ``seq`` after a crash).
    """

    portfolio: str
    run_id: str
    fingerprint: tuple[Any, ...]
    assets: tuple[str, ...]
    weights: NDArray[np.float64]
    champion: ModelTrack
    challengers: list[ModelTrack]
    features: FeatureState
    last_closed_day: int | None = None
    prev_close: NDArray[np.float64] = field(default=None)  # type: ignore[assignment]
    last_day: NDArray[np.int64] = field(default=None)  # type: ignore[assignment]
    close_ts: NDArray[np.int64] = field(default=None)  # type: ignore[assignment]
    ewma_cov: NDArray[np.float64] = field(default=None)  # type: ignore[assignment]
    n_returns: int = 0
    window_days: list[int] = field(default_factory=list)
    window_rows: list[NDArray[np.float64]] = field(default_factory=list)
    vol_history: list[float] = field(default_factory=list)
    last_daily: RiskSnapshot | None = None
    seq_at_close: int = 0
    live: LiveState | None = None

    def __post_init__(self) -> None:
        n = len(self.assets)
        if self.prev_close is None:
            self.prev_close = np.full(n, np.nan)
        if self.last_day is None:
            self.last_day = np.full(n, -1, dtype=np.int64)
        if self.close_ts is None:
            self.close_ts = np.zeros(n, dtype=np.int64)
        if self.ewma_cov is None:
            self.ewma_cov = np.zeros((n, n))
        if self.live is None:
            self.live = LiveState(n)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["live"] = None  # stored apart, every batch
        return state

    def attach_live(self, live: LiveState | None) -> None:
        """Join a restored state with its restored :class:`LiveState` (or a new one).

        An open day that this state already closed (the live part was written before a
        crash, the closed state after it) is dropped; ``seq`` never goes back.
        """
        if live is None or live.n_assets != len(self.assets):
            live = LiveState(len(self.assets))
        closed = self.last_closed_day
        if closed is not None:
            for day in [d for d in live.pending if d <= closed]:
                del live.pending[day]
        live.seq = max(live.seq, self.seq_at_close)
        self.live = live

    @property
    def tracks(self) -> list[ModelTrack]:
        return [self.champion, *self.challengers]

    @property
    def open_day(self) -> int | None:
        """The earliest day not closed yet."""
        pending = self.pending
        return min(pending) if pending else None


def _live_property(name: str) -> property:
    def get(self: PortfolioRunState) -> Any:
        if self.live is None:
            self.attach_live(None)
        return getattr(self.live, name)

    def put(self: PortfolioRunState, value: Any) -> None:
        if self.live is None:
            self.attach_live(None)
        setattr(self.live, name, value)

    return property(get, put, doc=f"``live.{name}``")


for _name in _LIVE_FIELDS:
    setattr(PortfolioRunState, _name, _live_property(_name))


@dataclass(frozen=True)
class DayOutput:
    """One snapshot and what goes with it.

    Attributes
    ----------
    snapshot : RiskSnapshot
    heatmap : ndarray of uint8 of shape (32, 32) or None
        The daily heatmap image (0..255), stored by the sink under the snapshot's
        ``heatmap_key`` / ``heatmap_path``.
    heatmap_dates : tuple of str
        Days of the heatmap's columns, oldest first.
    update_seconds : dict of str to float
        Wall time of each model's update + predict (daily snapshots).
    """

    snapshot: RiskSnapshot
    heatmap: NDArray[np.uint8] | None = None
    heatmap_dates: tuple[str, ...] = ()
    update_seconds: dict[str, float] = field(default_factory=dict)


# -- processing ---------------------------------------------------------------------------------
class RiskProcessor:
    """Bars in, risk snapshots out, for a set of portfolios (no I/O, no Faust).

    Parameters
    ----------
    portfolios : iterable of PortfolioConfig
    model_factory : callable, optional
        ``(name, weights, seed) -> (model, version)``; default :func:`build_model`.
    intraday_interval_s : float
        Event-time seconds between two intraday snapshots of a portfolio run; 0 emits
        one on every last price, a negative value turns them off.
    backtest_window : int
        Days of the rolling backtest (Kupiec, traffic light).
    heatmap_days : int
        Closed days in the heatmap window (2 .. 32).
    heatmap_dir : str or Path or None
        When set, snapshots reference ``<dir>/<run>/<portfolio>/<day>.png``.
    heatmap_redis : bool
        Whether snapshots reference the Redis key :func:`heatmap_ref`.
    ewma_lambda : float
        Decay of the EWMA covariance behind the average correlation and the
        fallback contributions.
    max_skew_days, stall_s : int, float
        A pending day that misses an asset closes without it (its close carried
        forward) once ``max_skew_days`` later days have bars waiting and the asset sent
        nothing for ``stall_s`` wall seconds. Partitions deliver assets with some skew
        (a replay at full speed: many days); a lagging asset keeps arriving, a stopped
        feed does not. The numbers never depend on the wall clock unless a feed stops.
    intraday_gate_s : float
        An intraday snapshot at event time ``t`` (its trigger's) is made only while every
        asset's latest price lies within ``t +- intraday_gate_s`` (an asset behind that
        may have stalled, as above), so that the skew of partitions in a fast replay
        neither looks like a stale feed nor puts snapshots out of event-time order.
    """

    def __init__(
        self,
        portfolios: Iterable[PortfolioConfig],
        *,
        model_factory: ModelFactory | None = None,
        intraday_interval_s: float = 1800.0,
        backtest_window: int = BACKTEST_WINDOW,
        heatmap_days: int = HEATMAP_DAYS,
        heatmap_dir: str | Path | None = None,
        heatmap_redis: bool = True,
        ewma_lambda: float = 0.94,
        max_skew_days: int = 5,
        stall_s: float = 60.0,
        intraday_gate_s: float = 1800.0,
    ) -> None:
        self.portfolios: dict[str, PortfolioConfig] = {}
        for p in portfolios:
            if p.name in self.portfolios:
                raise ValueError(f"portfolio {p.name!r} is defined twice")
            self.portfolios[p.name] = p
        if backtest_window < 1:
            raise ValueError(f"backtest_window={backtest_window} must be >= 1")
        if not 2 <= heatmap_days <= 32:
            raise ValueError(f"heatmap_days={heatmap_days} must lie in [2, 32]")
        if not 0.0 < ewma_lambda < 1.0:
            raise ValueError(f"ewma_lambda={ewma_lambda} must lie in (0, 1)")
        self.model_factory = model_factory or _default_factory
        self.intraday_ns = (
            None if intraday_interval_s < 0 else int(intraday_interval_s * NS_PER_SECOND)
        )
        self.backtest_window = int(backtest_window)
        self.heatmap_days = int(heatmap_days)
        self.heatmap_dir = Path(heatmap_dir) if heatmap_dir is not None else None
        self.heatmap_redis = bool(heatmap_redis)
        self.ewma_lambda = float(ewma_lambda)
        if max_skew_days < 1:
            raise ValueError(f"max_skew_days={max_skew_days} must be >= 1")
        self.max_skew_days = int(max_skew_days)
        self.stall_s = float(stall_s)
        self.intraday_gate_ns = int(intraday_gate_s * NS_PER_SECOND)
        #: (portfolio, run, column) -> wall clock (monotonic) of its last bar here; not
        #: state: after a restart every asset gets ``stall_s`` to show up again
        self._arrival: dict[tuple[str, str, int], float] = {}
        self._started = time.monotonic()
        self._col: dict[str, dict[str, int]] = {
            name: {a: i for i, a in enumerate(p.assets)} for name, p in self.portfolios.items()
        }
        #: asset -> names of the portfolios that hold it (for routing bars)
        self.routes: dict[str, tuple[str, ...]] = {}
        for name, p in self.portfolios.items():
            for a in p.assets:
                self.routes[a] = (*self.routes.get(a, ()), name)

    # -- state ------------------------------------------------------------------------------
    def _track(self, config: PortfolioConfig, name: str, *, champion: bool) -> ModelTrack:
        w = config.weight_array
        try:
            model, version = self.model_factory(name, w, config.seed)
        except ModelUnavailable as exc:
            if not champion:
                raise
            log.warning(
                "portfolio %s: champion %s unavailable (%s); using %s",
                config.name,
                name,
                exc,
                config.fallback,
            )
            model, version = self.model_factory(config.fallback, w, config.seed)
            name = config.fallback
        return ModelTrack(name, version, model, window=self.backtest_window)

    def new_state(self, portfolio: str, run_id: str) -> PortfolioRunState:
        """A fresh state for ``(portfolio, run_id)`` (models built, nothing seen)."""
        config = self.portfolios[portfolio]
        champion = self._track(config, config.champion, champion=True)
        challengers = []
        for name in config.challengers:
            if name == champion.name:
                continue
            try:
                challengers.append(self._track(config, name, champion=False))
            except ModelUnavailable as exc:
                log.warning("portfolio %s: challenger %s skipped (%s)", portfolio, name, exc)
        return PortfolioRunState(
            portfolio=portfolio,
            run_id=run_id,
            fingerprint=config.fingerprint,
            assets=config.assets,
            weights=config.weight_array,
            champion=champion,
            challengers=challengers,
            features=FeatureState(len(config.assets)),
        )

    def state_for(
        self, runs: Mapping[str, PortfolioRunState | None], portfolio: str, run_id: str
    ) -> PortfolioRunState:
        """The state of ``(portfolio, run_id)`` from ``runs`` (keyed by run id, ``"live"``
        for live data), or a new one when it is missing or was built for another
        definition of the portfolio."""
        st = runs.get(run_id or "live")
        if st is None or st.fingerprint != self.portfolios[portfolio].fingerprint:
            if st is not None:
                log.warning(
                    "portfolio %s changed: its state for run %r restarts", portfolio, run_id
                )
            st = self.new_state(portfolio, run_id)
        return st

    # -- input ------------------------------------------------------------------------------
    @staticmethod
    def needs_models(bars: Iterable[Bar]) -> bool:
        """Whether a batch may close a day (then run it off the event loop)."""
        return any(b.kind == "bar" for b in bars)

    def process(
        self, st: PortfolioRunState, bars: Iterable[Bar], *, wall_ns: int | None = None
    ) -> list[DayOutput]:
        """Apply bars of ``st``'s portfolio and run, in order; return the snapshots made.

        Bars of assets outside the portfolio are ignored.
        """
        out: list[DayOutput] = []
        cols = self._col[st.portfolio]
        for bar in bars:
            j = cols.get(bar.asset)
            if j is None:
                continue
            src_wall = bar.wall_ns or (wall_ns or 0)
            day = _day_index(bar.day)
            self._arrival[(st.portfolio, st.run_id, j)] = time.monotonic()
            if bar.kind == "bar":
                self._on_bar(st, j, day, bar, src_wall, out)
            elif bar.kind == "last":
                self._on_last(st, j, day, bar, src_wall, out)
        st.touched_wall = time.time()
        return out

    def _on_bar(
        self, st: PortfolioRunState, j: int, day: int, bar: Bar, src_wall: int, out: list[DayOutput]
    ) -> None:
        if st.last_closed_day is not None and day <= st.last_closed_day:
            st.n_late += 1  # late or delivered twice: that day is already counted
            return
        st.pending.setdefault(day, {})[j] = (
            bar.open,
            bar.high,
            bar.low,
            bar.close,
            bar.volume,
            bar.ts_last,
        )
        self._seen(st, j, bar.close, bar.ts_last)
        self._close_ready(st, src_wall, out)

    def _close_ready(self, st: PortfolioRunState, src_wall: int, out: list[DayOutput]) -> None:
        """Close pending days in order while the earliest one is complete: every asset
        has its bar of that day, or has a bar of a later day (it did not trade that day:
        its close carries forward), or ``max_skew_days`` later days have bars waiting and
        the missing assets delivered nothing for ``stall_s`` wall seconds (their feed
        stopped: event-time eviction of the open day)."""
        n = len(st.assets)
        while st.pending:
            day = min(st.pending)
            bars = st.pending[day]
            if len(bars) < n:
                passed = set(bars)
                for d, b in st.pending.items():
                    if d > day:
                        passed.update(b)
                missing = [j for j in range(n) if j not in passed]
                if missing and not (
                    len(st.pending) - 1 >= self.max_skew_days and self._stalled(st, missing)
                ):
                    return
            self._close_day(st, day, st.pending.pop(day), src_wall, out)

    def _stalled(self, st: PortfolioRunState, columns: Iterable[int]) -> bool:
        """Whether these assets delivered nothing for ``stall_s`` wall seconds (a feed
        that stopped, not a partition that lags: that one keeps delivering)."""
        now = time.monotonic()
        return all(
            now - self._arrival.get((st.portfolio, st.run_id, j), self._started) >= self.stall_s
            for j in columns
        )

    def _on_last(
        self, st: PortfolioRunState, j: int, day: int, bar: Bar, src_wall: int, out: list[DayOutput]
    ) -> None:
        if st.last_closed_day is not None and day <= st.last_closed_day:
            st.n_late += 1
            return
        self._seen(st, j, bar.close, bar.ts_last)
        open_day = st.open_day
        if self.intraday_ns is None or (open_day is not None and day > open_day):
            return  # an earlier day is still open: no base for today's P&L yet
        last = st.last_intraday_ts
        if last is not None and bar.ts_last - last < self.intraday_ns:
            return
        t = bar.ts_last
        if np.any(st.last_ts > t + self.intraday_gate_ns):
            return  # this asset's partition lags (a fast replay): wait for it to catch up
        behind = np.flatnonzero(st.last_ts < t - self.intraday_gate_ns)
        if behind.size and not self._stalled(st, behind.tolist()):
            return  # another partition lags: its prices are not current
        st.last_intraday_ts = t
        out.append(DayOutput(self._intraday(st, day, t, src_wall)))

    @staticmethod
    def _seen(st: PortfolioRunState, j: int, price: float, ts: int) -> None:
        if ts >= st.last_ts[j]:
            st.last_price[j] = price
            st.last_ts[j] = ts
        st.ts = max(st.ts, ts)

    # -- intraday -----------------------------------------------------------------------------
    def intraday_pnl(self, st: PortfolioRunState) -> float | None:
        """Running P&L of the open day from the last prices against the previous closes."""
        base = st.prev_close
        ok = np.isfinite(base) & np.isfinite(st.last_price)
        if st.last_closed_day is None or not ok.any():
            return None
        ret = np.where(ok, st.last_price / np.where(ok, base, 1.0) - 1.0, 0.0)
        return float(ret @ st.weights)

    def _intraday(self, st: PortfolioRunState, day: int, ts: int, src_wall: int) -> RiskSnapshot:
        st.seq += 1
        base = st.last_daily
        champ = st.champion
        snap = RiskSnapshot(
            portfolio=st.portfolio,
            run_id=st.run_id,
            kind="intraday",
            day=day_to_iso(day),
            ts=ts,
            seq=st.seq,
            model=champ.name,
            model_version=champ.version,
            var=_levels(champ.var),
            es=_levels(champ.es),
            pnl=self.intraday_pnl(st),
            n_seen=champ.model.n_seen_,
            n_days=champ.n_days,
            exceptions_total=_counts(champ.exceptions_total),
            days_250d=champ.days_window,
            exceptions_250d=_counts(champ.exceptions_window()),
            kupiec_p=base.kupiec_p if base is not None else {},
            traffic_light=base.traffic_light if base is not None else None,
            challengers=base.challengers if base is not None else {},
            predicted_vol=base.predicted_vol if base is not None else None,
            cnn_score=base.cnn_score if base is not None else None,
            avg_correlation=base.avg_correlation if base is not None else None,
            contributions=base.contributions if base is not None else None,
            assets=self._assets(st),
            heatmap_key=base.heatmap_key if base is not None else None,
            heatmap_path=base.heatmap_path if base is not None else None,
            limits=dict(self.portfolios[st.portfolio].limits),
            source_wall_ns=src_wall,
            wall_ns=time.time_ns(),
        )
        return snap

    # -- day close ------------------------------------------------------------------------------
    def flush(self, st: PortfolioRunState, *, wall_ns: int = 0) -> list[DayOutput]:
        """Close the open day with what it has (end of a replay, or eviction)."""
        out: list[DayOutput] = []
        while st.pending:
            day = min(st.pending)
            self._close_day(st, day, st.pending.pop(day), wall_ns, out)
        return out

    def _close_day(
        self,
        st: PortfolioRunState,
        day: int,
        bars: dict[int, tuple[float, float, float, float, float, int]],
        src_wall: int,
        out: list[DayOutput],
    ) -> None:
        n = len(st.assets)
        o = st.prev_close.copy()
        h, lo, c = o.copy(), o.copy(), o.copy()
        v = np.zeros(n)
        for j, (bo, bh, bl, bc, bv, ts) in bars.items():
            o[j], h[j], lo[j], c[j], v[j] = bo, bh, bl, bc, bv
            st.last_day[j] = day
            st.close_ts[j] = ts
        prev = st.prev_close
        st.last_closed_day = day
        st.last_intraday_ts = None
        complete = bool(np.all(np.isfinite(c)))
        if not complete:  # some asset never seen yet: this day is a partial base
            st.prev_close = c
            return
        t0 = time.perf_counter()
        if st.features.n_seen_ == 0 or np.all(np.isfinite(prev)):
            st.features.update(o, h, lo, c, v)
            st.window_days.append(day)
            st.window_rows.append(st.features.get())
            del st.window_days[: -self.heatmap_days]
            del st.window_rows[: -self.heatmap_days]
        if not np.all(np.isfinite(prev)):  # the run's first complete day: the base
            st.prev_close = c
            return
        x = np.log(c) - np.log(prev)
        st.prev_close = c
        realized = float(portfolio_simple_return(st.weights, x))
        seconds: dict[str, float] = {}
        for track in st.tracks:
            track.score(realized)
            track.advance(x)
            seconds[track.name] = track.update_seconds
        self._ewma(st, x)
        extras = self._extras(st)
        contributions = self._contributions(st)
        image, dates = self._heatmap(st)
        total = time.perf_counter() - t0
        snap = self._daily(st, day, realized, extras, contributions, image, total, src_wall)
        st.last_daily = snap
        st.seq_at_close = st.seq
        out.append(DayOutput(snap, image, dates, seconds))

    def _ewma(self, st: PortfolioRunState, x: NDArray[np.float64]) -> None:
        lam = self.ewma_lambda
        st.ewma_cov = lam * st.ewma_cov + (1.0 - lam) * np.outer(x, x)
        st.n_returns += 1

    def _cov(self, st: PortfolioRunState) -> NDArray[np.float64] | None:
        if st.n_returns < 2:
            return None
        return st.ewma_cov / (1.0 - self.ewma_lambda**st.n_returns)

    def avg_correlation(self, st: PortfolioRunState) -> float | None:
        """Average pairwise correlation: the champion's copula correlation when it has one,
        else the EWMA correlation of the log returns."""
        n = len(st.assets)
        if n < 2:
            return None
        corr = getattr(st.champion.model, "corr_", None)
        if corr is None:
            cov = self._cov(st)
            if cov is None:
                return None
            sd = np.sqrt(np.diag(cov))
            if not np.all(sd > 0):
                return None
            corr = cov / np.outer(sd, sd)
        corr = np.asarray(corr, dtype=float)
        off = corr[~np.eye(n, dtype=bool)]
        return float(off.mean())

    def _contributions(self, st: PortfolioRunState) -> dict[str, dict[str, float]] | None:
        champ = st.champion
        if champ.es is None:
            return None
        fn = getattr(champ.model, "contributions", None)
        if callable(fn):
            try:
                rc = fn()
                es = np.asarray(rc.es, dtype=float)
                return {
                    key: dict(zip(st.assets, map(float, es[i]), strict=True))
                    for i, key in enumerate(LEVEL_KEYS)
                }
            except Exception as exc:  # fall back to the elliptical shares
                log.debug("contributions of %s failed: %s", champ.name, exc)
        cov = self._cov(st)
        if cov is None:
            return None
        w = st.weights
        total = float(w @ cov @ w)
        if not total > 0:
            return None
        shares = w * (cov @ w) / total
        return {
            key: dict(zip(st.assets, map(float, shares * champ.es[i]), strict=True))
            for i, key in enumerate(LEVEL_KEYS)
        }

    def _extras(self, st: PortfolioRunState) -> tuple[dict[str, float] | None, float | None]:
        """Predicted vol by horizon and the CNN risk score, from a CNN model if one runs."""
        for track in st.tracks:
            if track.name != "cnn":
                continue
            model = track.model
            vols: dict[str, float] | None = None
            fn = getattr(model, "predicted_vols", None)
            try:
                if callable(fn):
                    raw = fn()
                    vols = {str(int(h)): float(s) for h, s in dict(raw).items()}
                elif math.isfinite(float(getattr(model, "sigma_next_", math.nan))):
                    vols = {"1": float(model.sigma_next_)}
            except Exception as exc:
                log.debug("predicted vols of cnn failed: %s", exc)
                vols = None
            if not vols:
                return None, None
            key = max(vols, key=int)
            v = vols[key]
            hist = st.vol_history
            score = None
            if hist:
                score = float(np.mean(np.asarray(hist) < v))
            hist.append(v)
            del hist[: -self.backtest_window]
            return vols, score
        return None, None

    def _heatmap(self, st: PortfolioRunState) -> tuple[NDArray[np.uint8] | None, tuple[str, ...]]:
        """The window of the last closed days as a 32x32 image, min-max scaled per window."""
        if len(st.window_rows) < 2:
            return None, ()
        from models.heatmap import HeatmapSpec

        window = np.stack(st.window_rows, axis=-1)  # (n_assets, n_features, n_days)
        spec = HeatmapSpec(32, (0.0, 1.0)).fit(window[None])
        img = spec.transform(window)
        dates = tuple(day_to_iso(d) for d in st.window_days)
        return (np.round(img * 255.0)).astype(np.uint8), dates

    def _assets(self, st: PortfolioRunState, *, at_close: bool = False) -> dict[str, AssetRisk]:
        """Per-asset view: the latest prices (intraday) or the closed day's (daily: as of
        the close, whatever later prices of other partitions were already seen)."""
        vol = st.features.get_or_none()
        price, ts = (st.prev_close, st.close_ts) if at_close else (st.last_price, st.last_ts)
        out = {}
        for j, a in enumerate(st.assets):
            out[a] = AssetRisk(
                weight=float(st.weights[j]),
                price=_finite(price[j]),
                prev_close=_finite(st.prev_close[j]),
                vol=_finite(vol[j, 6]) if vol is not None and st.features.n_seen_ > 1 else None,
                last_ts=int(ts[j]) or None,
                last_day=day_to_iso(int(st.last_day[j])) if st.last_day[j] >= 0 else None,
            )
        return out

    def _daily(
        self,
        st: PortfolioRunState,
        day: int,
        realized: float,
        extras: tuple[dict[str, float] | None, float | None],
        contributions: dict[str, dict[str, float]] | None,
        image: NDArray[np.uint8] | None,
        seconds: float,
        src_wall: int,
    ) -> RiskSnapshot:
        st.seq += 1
        champ = st.champion
        iso = day_to_iso(day)
        key = path = None
        if image is not None:
            if self.heatmap_redis:
                key = heatmap_ref(st.portfolio, st.run_id, iso)
            if self.heatmap_dir is not None:
                path = str(self.heatmap_dir / (st.run_id or "live") / st.portfolio / f"{iso}.png")
        return RiskSnapshot(
            portfolio=st.portfolio,
            run_id=st.run_id,
            kind="daily",
            day=iso,
            ts=int(st.close_ts.max()),
            seq=st.seq,
            model=champ.name,
            model_version=champ.version,
            var=_levels(champ.var),
            es=_levels(champ.es),
            prev_var=_levels(champ.prev_var),
            prev_es=_levels(champ.prev_es),
            realized_return=realized,
            exception=_flags(champ.exception),
            pnl=realized,
            n_seen=champ.model.n_seen_,
            n_days=champ.n_days,
            exceptions_total=_counts(champ.exceptions_total),
            days_250d=champ.days_window,
            exceptions_250d=_counts(champ.exceptions_window()),
            kupiec_p=champ.kupiec(),
            traffic_light=champ.traffic_light(),
            challengers={t.name: t.as_challenger() for t in st.challengers},
            predicted_vol=extras[0],
            cnn_score=extras[1],
            avg_correlation=self.avg_correlation(st),
            contributions=contributions,
            assets=self._assets(st, at_close=True),
            heatmap_key=key,
            heatmap_path=path,
            limits=dict(self.portfolios[st.portfolio].limits),
            model_seconds=seconds,
            source_wall_ns=src_wall,
            wall_ns=time.time_ns(),
        )


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(float(x)) else None


def _day_index(iso: str) -> int:
    return int((np.datetime64(iso, "D") - _DAY_EPOCH).astype(np.int64))
