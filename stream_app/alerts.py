"""The alert rule engine: risk snapshots in, alerts out (pure: no I/O, no clock).

:class:`AlertEngine` reads one :class:`~stream_app.records.RiskSnapshot` at a time
and a plain, picklable, JSON-able state dict per (portfolio, run) that the caller
owns (in the worker, an entry of a Faust table), and returns the :class:`Alert`
events that the snapshot raises. The same snapshots give the same alerts, ids
included, whoever evaluates them and however often (a replayed snapshot is ignored).

Rules (``Alert.rule``; ``asset`` is ``""`` for portfolio-level rules):

``var_exception``
    (daily) The day's realised return fell below ``-VaR`` of the forecast in force
    for that day, at a level >= ``exception_min_level``: ``warning`` at 95 / 97.5 %,
    ``critical`` at 99 %. One alert per exception day; it resolves at the next
    daily snapshot.
``intraday_loss``
    (intraday) Early warning: the running loss of the day as a share of the
    day's VaR at ``loss_var_level``: ``warning`` past ``loss_warning_share`` (50 %),
    ``critical`` past ``loss_critical_share`` (80 %), ``breach`` past
    ``loss_breach_share`` (100 %). Resolves below ``hysteresis`` x the warning
    share, or when the day closes (the daily snapshot).
``predicted_vol``
    (daily) CNN predicted portfolio volatility (horizon ``predicted_vol_horizon``
    days, daily units) over ``max_predicted_vol`` (``critical`` over
    ``max_predicted_vol_critical``).
``cnn_score``
    (daily) CNN risk score over ``max_cnn_score`` (``critical`` over
    ``max_cnn_score_critical``).
``correlation_shift``
    (daily) Average pairwise correlation above its recent level (an EWMA with
    half-life ``corr_halflife_days`` of the previous daily values) by more than
    ``corr_jump`` (``critical`` by ``corr_jump_critical``); active after
    ``corr_min_days`` daily values.
``traffic_light``
    (daily) Basel traffic light of the champion: ``warning`` yellow, ``critical``
    red; resolves when green again.
``stale_feed``
    (per asset) No tick of the asset for ``stale_minutes`` of event time while the
    freshest asset of the portfolio ticked (``critical`` after
    ``stale_critical_minutes``). Checked on daily snapshots, and on intraday ones for
    live data only: a replay runs much faster than real time and the partitions of
    different assets drift apart by hours or days, which intraday would look like
    stale feeds (a day closes only once every asset's bar is in, so daily snapshots
    are free of that drift).
``var_limit`` / ``es_limit``
    (daily; only where the portfolio sets a limit ``var95``, ``var975``, ``var99``,
    ``es95``, ``es975`` or ``es99``) the forecast over ``limit_warning_share`` of the
    limit (``warning``) or over the limit (``critical``).

Hysteresis: a rule fires when its value reaches the threshold of a tier (after
``min_duration_s`` of event time where the rule has one), may escalate to a higher
tier while firing (each severity reached is one ``firing`` event), and resolves only
when its value drops below a lower threshold (by default ``hysteresis`` x the lowest
tier's threshold). A missing or non-finite value never changes a rule's state.
De-duplication: within an episode each ``(state, severity)`` is emitted once; after a
resolution the same rule and asset may fire again only after ``refire_cooldown_s``
of event time.

Alert id: a fingerprint of ``(rule, portfolio, asset, day)`` where ``day`` is the
trading day the episode began; a second episode of the same rule and asset that
begins on the same day adds its occurrence number. Firing and resolved events of one
episode share the id; :attr:`Alert.event_key` (``id:state:severity``) is unique per
event and is what delivery de-duplicates on.

Limits come from, in increasing priority: :data:`DEFAULT_LIMITS`, the engine's
per-portfolio ``limits``, and the snapshot's ``limits`` (the portfolio YAML). A
limit that is not a finite number in its valid range is ignored (the default
applies) and reported by :func:`check_limits`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from models.exceptions import DataError
from stream_app.records import LEVEL_KEYS, NS_PER_SECOND, RiskSnapshot, dumps, loads, ns_to_iso

__all__ = [
    "DEFAULT_LIMITS",
    "RULES",
    "SEVERITIES",
    "Alert",
    "AlertEngine",
    "check_limits",
    "fingerprint",
    "new_state",
]

#: Severities in increasing order (``breach``: a limit is passed, not only approached).
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical", "breach")
_SEV_RANK = {s: i for i, s in enumerate(SEVERITIES)}

#: Rule names (metric label ``rule`` of ``riskmon_alerts_total``).
RULES: tuple[str, ...] = (
    "var_exception",
    "intraday_loss",
    "predicted_vol",
    "cnn_score",
    "correlation_shift",
    "traffic_light",
    "stale_feed",
    "var_limit",
    "es_limit",
)

STATES: tuple[str, ...] = ("firing", "resolved")

#: Default limits; a portfolio's ``limits`` override them key by key. Fractions of
#: NAV for losses and volatilities, shares for ``*_share``, seconds for ``*_s``.
DEFAULT_LIMITS: dict[str, float] = {
    # var_exception
    "exception_min_level": 0.975,
    # intraday_loss (early warning against the day's VaR)
    "loss_var_level": 0.99,
    "loss_warning_share": 0.5,
    "loss_critical_share": 0.8,
    "loss_breach_share": 1.0,
    "loss_min_duration_s": 0.0,
    # predicted_vol / cnn_score
    "predicted_vol_horizon": 5.0,
    "max_predicted_vol": 0.02,
    "max_predicted_vol_critical": 0.03,
    "max_cnn_score": 0.8,
    "max_cnn_score_critical": 0.95,
    # correlation_shift
    "corr_jump": 0.15,
    "corr_jump_critical": 0.30,
    "corr_halflife_days": 20.0,
    "corr_min_days": 10.0,
    # stale_feed
    "stale_minutes": 60.0,
    "stale_critical_minutes": 240.0,
    # var_limit / es_limit: warning at this share of a var*/es* limit
    "limit_warning_share": 0.9,
    # hysteresis and de-duplication
    "hysteresis": 0.8,
    "refire_cooldown_s": 3600.0,
}

#: Valid ranges (inclusive) of the limits.
_RANGES: dict[str, tuple[float, float]] = {
    "exception_min_level": (0.95, 0.99),
    "loss_var_level": (0.95, 0.99),
    "loss_warning_share": (1e-6, 100.0),
    "loss_critical_share": (1e-6, 100.0),
    "loss_breach_share": (1e-6, 100.0),
    "loss_min_duration_s": (0.0, 86_400.0),
    "predicted_vol_horizon": (1.0, 1000.0),
    "max_predicted_vol": (1e-9, 10.0),
    "max_predicted_vol_critical": (1e-9, 10.0),
    "max_cnn_score": (0.0, 1.0),
    "max_cnn_score_critical": (0.0, 1.0),
    "corr_jump": (1e-6, 2.0),
    "corr_jump_critical": (1e-6, 2.0),
    "corr_halflife_days": (0.5, 10_000.0),
    "corr_min_days": (1.0, 10_000.0),
    "stale_minutes": (1e-3, 1e6),
    "stale_critical_minutes": (1e-3, 1e6),
    "limit_warning_share": (1e-6, 1.0),
    "hysteresis": (0.0, 1.0),
    "refire_cooldown_s": (0.0, 1e9),
}
#: Optional absolute limits on the champion forecast (no default: rule off).
_FORECAST_LIMITS: dict[str, tuple[str, str]] = {
    f"{measure}{level.replace('0.', '').ljust(2, '0')}": (measure, level)
    for measure in ("var", "es")
    for level in LEVEL_KEYS
}  # var95, var975, var99, es95, es975, es99
for _key in _FORECAST_LIMITS:
    _RANGES[_key] = (1e-9, 10.0)

_TRAFFIC = {"green": 0.0, "yellow": 1.0, "red": 2.0}


def check_limits(limits: Mapping[str, Any]) -> list[str]:
    """Problems of a portfolio's ``limits`` mapping (empty when all are usable).

    Unknown keys, non-numbers, non-finite values and values out of range are
    reported; the engine ignores such entries (the default applies).

    Examples
    --------
    >>> check_limits({"var99": 0.05, "loss_warning_share": 0.4})
    []
    >>> check_limits({"hysteresis": 1.5, "colour": 1})
    ['hysteresis=1.5 not in [0.0, 1.0]', "unknown limit 'colour'"]
    """
    problems = []
    for key, value in limits.items():
        if key not in _RANGES:
            problems.append(f"unknown limit {key!r}")
            continue
        lo, hi = _RANGES[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{key}={value!r} is not a number")
        elif not (math.isfinite(value) and lo <= value <= hi):
            problems.append(f"{key}={value!r} not in [{lo}, {hi}]")
    return problems


def _usable(key: str, value: Any) -> bool:
    rng = _RANGES.get(key)
    return (
        rng is not None
        and not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and rng[0] <= value <= rng[1]
    )


def fingerprint(rule: str, portfolio: str, asset: str, day: str, occurrence: int = 0) -> str:
    """Deterministic alert id: 20 hex digits of SHA-256 over the fields.

    Examples
    --------
    >>> fingerprint("var_exception", "book", "", "2008-10-15")
    'c1718a0ab9c7fcf48158'
    >>> fingerprint("a", "p", "", "2008-01-02") == fingerprint("a", "p", "", "2008-01-02")
    True
    >>> fingerprint("a", "p", "", "2008-01-02") != fingerprint("a", "p", "", "2008-01-02", 1)
    True
    """
    parts = [rule, portfolio, asset, day]
    if occurrence:
        parts.append(str(occurrence))
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert event.

    Parameters
    ----------
    id : str
        Fingerprint of ``(rule, portfolio, asset, day)`` (see the module notes);
        shared by the firing and resolved events of one episode.
    rule, severity, state : str
        ``state`` is ``"firing"`` or ``"resolved"``; a resolved event carries the
        highest severity of its episode.
    portfolio, asset : str
        ``asset`` is ``""`` for portfolio-level rules.
    value, threshold : float or None
        The rule's value and the threshold it passed (firing) or fell below (resolved).
    ts : int
        Event time (ns) of the snapshot that raised it.
    day : str
        Trading day (ISO) on which the episode began.
    run_id : str
        Replay run id; ``""`` for live.
    model, model_version : str
        The champion model of the snapshot.
    heatmap : str
        Reference of the heatmap behind the snapshot (Redis key or file), or ``""``.
    message : str
        One human-readable line.
    seq : int
        Sequence number of the snapshot that raised it.
    order : int
        Position among the alerts of that snapshot.
    """

    id: str
    rule: str
    severity: str
    state: str
    portfolio: str
    asset: str
    value: float | None
    threshold: float | None
    ts: int
    day: str
    run_id: str = ""
    model: str = ""
    model_version: str = ""
    heatmap: str = ""
    message: str = ""
    seq: int = 0
    order: int = 0

    @property
    def event_key(self) -> str:
        """Unique key of this event: ``id:state:severity`` (what delivery de-duplicates)."""
        return f"{self.id}:{self.state}:{self.severity}"

    @property
    def run_label(self) -> str:
        """``run_id``, or ``"live"`` for live data (Redis keys)."""
        return self.run_id or "live"

    @property
    def event_time(self) -> str:
        """ISO-8601 UTC of :attr:`ts`."""
        return ns_to_iso(self.ts)

    @property
    def sort_key(self) -> tuple[int, int, int]:
        """Oldest first: event time, snapshot sequence, position."""
        return (self.ts, self.seq, self.order)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def encode(self) -> bytes:
        """Compact JSON (the pub/sub message); ``event_time`` added for readers."""
        return dumps({**self.to_dict(), "event_time": self.event_time})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            raise DataError(f"not an alert: {exc}") from exc

    @classmethod
    def decode(cls, raw: bytes | str) -> Alert:
        try:
            data = loads(raw)
        except ValueError as exc:
            raise DataError(f"alert is not JSON: {raw[:200]!r}") from exc
        if not isinstance(data, dict):
            raise DataError(f"alert is not a JSON object: {raw[:200]!r}")
        return cls.from_dict(data)

    def to_fields(self) -> dict[str, str]:
        """Flat string fields of a Redis Stream entry (``None`` as ``""``)."""
        out = {}
        for key, value in self.to_dict().items():
            out[key] = (
                "" if value is None else (repr(value) if isinstance(value, float) else str(value))
            )
        out["event_time"] = self.event_time
        return out

    @classmethod
    def from_fields(cls, data: Mapping[str | bytes, str | bytes]) -> Alert:
        """Inverse of :meth:`to_fields` (accepts the bytes a Redis client returns)."""
        d = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in data.items()
        }
        out: dict[str, Any] = {}
        try:
            for f in fields(cls):
                raw = d.get(f.name, "")
                if f.name in ("value", "threshold"):
                    out[f.name] = float(raw) if raw != "" else None
                elif f.name in ("ts", "seq", "order"):
                    out[f.name] = int(raw or 0)
                else:
                    out[f.name] = raw
        except ValueError as exc:
            raise DataError(f"not an alert: {exc}") from exc
        return cls(**out)


def new_state() -> dict[str, Any]:
    """Empty engine state of one (portfolio, run): plain JSON-able data."""
    return {
        "last": None,  # [ts, seq] of the last snapshot evaluated
        "episodes": {},  # "rule|asset" -> episode
        "occurrences": {},  # "rule|asset|day" -> episodes begun that day
        "corr": {"ref": None, "n": 0, "day": None},
    }


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True, slots=True)
class _Obs:
    """One rule's reading of one snapshot (internal)."""

    rule: str
    asset: str
    value: float
    tiers: tuple[tuple[float, str], ...]  # ascending (threshold, severity)
    resolve_below: float
    min_duration_ns: int = 0
    per_day: bool = False
    unit: str = ""
    what: str = ""
    #: var_exception: the confidence level and VaR of each tier (the value is a tier)
    levels: tuple[tuple[str, float | None], ...] = ()


def _tier(value: float, tiers: tuple[tuple[float, str], ...]) -> int:
    level = -1
    for k, (threshold, _) in enumerate(tiers):
        if value >= threshold:
            level = k
    return level


class AlertEngine:
    """Evaluate the alert rules on risk snapshots, with hysteresis and de-duplication.

    Parameters
    ----------
    limits : mapping of str to mapping, or None
        Per-portfolio limit overrides ``{portfolio: {key: value}}`` (for example
        ``Portfolio.limits``); the snapshot's own ``limits`` take precedence.
    rules : iterable of str or None
        Rules to evaluate (default: all of :data:`RULES`).

    Examples
    --------
    >>> from stream_app.records import RiskSnapshot
    >>> eng, st = AlertEngine(), new_state()
    >>> snap = RiskSnapshot("book", "", "daily", "2008-10-15", 10**18, seq=1,
    ...                     prev_var={"0.95": 0.02, "0.975": 0.025, "0.99": 0.03},
    ...                     realized_return=-0.035,
    ...                     exception={"0.95": True, "0.975": True, "0.99": True})
    >>> [(a.rule, a.severity, a.state) for a in eng.evaluate(st, snap)]
    [('var_exception', 'critical', 'firing')]
    >>> eng.evaluate(st, snap)  # the same snapshot again: ignored
    []
    """

    def __init__(
        self,
        limits: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        rules: Iterable[str] | None = None,
    ) -> None:
        self.limits = {str(k): dict(v) for k, v in (limits or {}).items()}
        chosen = tuple(RULES if rules is None else rules)
        unknown = [r for r in chosen if r not in RULES]
        if unknown:
            raise ValueError(f"unknown rules {unknown}; valid: {', '.join(RULES)}")
        self.rules = frozenset(chosen)

    # -- limits ---------------------------------------------------------------------
    def limits_for(self, snap: RiskSnapshot) -> dict[str, float]:
        """Effective limits: defaults < engine's per-portfolio < snapshot's (usable only)."""
        out: dict[str, float] = dict(DEFAULT_LIMITS)
        for source in (self.limits.get(snap.portfolio, {}), snap.limits or {}):
            if not isinstance(source, Mapping):
                continue
            for key, value in source.items():
                if _usable(key, value):
                    out[key] = float(value)
        return out

    # -- evaluation -------------------------------------------------------------------
    def evaluate(self, state: dict[str, Any], snap: RiskSnapshot) -> list[Alert]:
        """Update ``state`` with ``snap`` and return the alerts it raises, in order.

        A snapshot not newer than the last one evaluated (by event time, then
        sequence number) is ignored, so redelivered snapshots raise nothing twice.
        Never raises on odd values: missing or non-finite inputs leave a rule as it is.
        """
        for key, empty in new_state().items():
            state.setdefault(key, empty)
        ts = int(snap.ts)
        mark = [ts, int(snap.seq)]
        if state.get("last") is not None and mark <= list(state["last"]):
            return []
        state["last"] = mark
        lim = self.limits_for(snap)
        out: list[Alert] = []
        if snap.kind == "daily":
            # the day's P&L is settled: intraday early warnings of the day end here
            for key in [k for k in state["episodes"] if k.startswith("intraday_loss|")]:
                ep = state["episodes"][key]
                if ep.get("firing"):
                    out.append(
                        self._resolved(state, snap, key, ep, None, None, "the trading day closed")
                    )
                del state["episodes"][key]
        for obs in self._observations(state, snap, lim):
            if obs.rule in self.rules:
                out.extend(self._step(state, snap, lim, obs))
        return [replace(a, order=k) for k, a in enumerate(out)]

    def _observations(
        self, state: dict[str, Any], snap: RiskSnapshot, lim: Mapping[str, float]
    ) -> list[_Obs]:
        obs: list[_Obs] = []
        hyst = lim["hysteresis"]
        daily = snap.kind == "daily"

        if daily and isinstance(snap.exception, Mapping):
            obs.extend(self._exception_obs(snap, lim))
        if not daily:
            o = self._intraday_obs(snap, lim)
            if o is not None:
                obs.append(o)
        if daily:
            horizon = str(int(lim["predicted_vol_horizon"]))
            pv = (
                snap.predicted_vol.get(horizon) if isinstance(snap.predicted_vol, Mapping) else None
            )
            value = _finite(pv)
            if value is not None:
                obs.append(
                    _Obs(
                        "predicted_vol",
                        "",
                        value,
                        self._tiers(
                            (lim["max_predicted_vol"], "warning"),
                            (lim["max_predicted_vol_critical"], "critical"),
                        ),
                        lim["max_predicted_vol"] * hyst,
                        unit="%",
                        what=f"CNN predicted {horizon}-day vol",
                    )
                )
            value = _finite(snap.cnn_score)
            if value is not None:
                obs.append(
                    _Obs(
                        "cnn_score",
                        "",
                        value,
                        self._tiers(
                            (lim["max_cnn_score"], "warning"),
                            (lim["max_cnn_score_critical"], "critical"),
                        ),
                        lim["max_cnn_score"] * hyst,
                        what="CNN risk score",
                    )
                )
            o = self._corr_obs(state, snap, lim)
            if o is not None:
                obs.append(o)
            light = (
                _TRAFFIC.get(snap.traffic_light) if isinstance(snap.traffic_light, str) else None
            )
            if light is not None:
                obs.append(
                    _Obs(
                        "traffic_light",
                        "",
                        light,
                        ((1.0, "warning"), (2.0, "critical")),
                        1.0,
                        what="traffic light (99 %, 250 days)",
                    )
                )
            obs.extend(self._forecast_limit_obs(snap, lim))
        if daily or not snap.run_id:
            obs.extend(self._stale_obs(snap, lim))
        return obs

    @staticmethod
    def _tiers(*tiers: tuple[float, str]) -> tuple[tuple[float, str], ...]:
        """Tiers sorted by threshold (a misordered pair of limits still works)."""
        return tuple(sorted(tiers, key=lambda t: (t[0], _SEV_RANK[t[1]])))

    def _exception_obs(self, snap: RiskSnapshot, lim: Mapping[str, float]) -> list[_Obs]:
        exc = snap.exception
        if not isinstance(exc, Mapping):
            return []
        loss = _finite(snap.realized_return)
        prev = snap.prev_var if isinstance(snap.prev_var, Mapping) else {}
        levels = [lv for lv in LEVEL_KEYS if float(lv) >= lim["exception_min_level"] - 1e-12]
        if not levels:
            return []
        # the value is the highest tier whose flag is set (the flags are the risk
        # agent's exact test: realised return < -VaR of the forecast in force)
        hit = max((k for k, lv in enumerate(levels) if exc.get(lv) is True), default=-1)
        sev = {"0.95": "warning", "0.975": "warning", "0.99": "critical"}
        return [
            _Obs(
                "var_exception",
                "",
                float(hit),
                tuple((float(k), sev[lv]) for k, lv in enumerate(levels)),
                0.0,
                per_day=True,
                what=f"VaR exception on {snap.day}: return "
                + ("n/a" if loss is None else f"{100 * loss:.2f} %"),
                levels=tuple((lv, _finite(prev.get(lv))) for lv in levels),
            )
        ]

    def _intraday_obs(self, snap: RiskSnapshot, lim: Mapping[str, float]) -> _Obs | None:
        pnl = _finite(snap.pnl)
        level = _level_key(lim["loss_var_level"])
        var = _finite(snap.var.get(level)) if isinstance(snap.var, Mapping) else None
        if pnl is None or var is None or var <= 0:
            return None
        share = -pnl / var
        if not math.isfinite(share):
            return None
        tiers = self._tiers(
            (lim["loss_warning_share"], "warning"),
            (lim["loss_critical_share"], "critical"),
            (lim["loss_breach_share"], "breach"),
        )
        return _Obs(
            "intraday_loss",
            "",
            share,
            tiers,
            tiers[0][0] * lim["hysteresis"],
            min_duration_ns=int(lim["loss_min_duration_s"] * NS_PER_SECOND),
            per_day=True,
            unit="share",
            what=f"intraday loss {_pct(-pnl)} vs VaR{level[2:]} {_pct(var)}",
        )

    def _corr_obs(
        self, state: dict[str, Any], snap: RiskSnapshot, lim: Mapping[str, float]
    ) -> _Obs | None:
        corr = _finite(snap.avg_correlation)
        cs = state.setdefault("corr", {"ref": None, "n": 0, "day": None})
        if corr is None or cs.get("day") == snap.day:
            return None
        ref, n = cs.get("ref"), int(cs.get("n") or 0)
        alpha = 1.0 - 0.5 ** (1.0 / lim["corr_halflife_days"])
        cs["ref"] = corr if ref is None else (1 - alpha) * ref + alpha * corr
        cs["n"] = n + 1
        cs["day"] = snap.day
        if ref is None or n < lim["corr_min_days"]:
            return None
        return _Obs(
            "correlation_shift",
            "",
            corr - ref,
            self._tiers((lim["corr_jump"], "warning"), (lim["corr_jump_critical"], "critical")),
            lim["corr_jump"] * lim["hysteresis"],
            what=f"average correlation {corr:.2f} vs recent {ref:.2f}",
        )

    def _forecast_limit_obs(self, snap: RiskSnapshot, lim: Mapping[str, float]) -> list[_Obs]:
        out = []
        for key, (measure, level) in _FORECAST_LIMITS.items():
            limit = lim.get(key)
            if limit is None:
                continue
            forecast = getattr(snap, measure)
            value = _finite(forecast.get(level)) if isinstance(forecast, Mapping) else None
            if value is None:
                continue
            warn = limit * lim["limit_warning_share"]
            out.append(
                _Obs(
                    f"{measure}_limit",
                    "",
                    value,
                    self._tiers((warn, "warning"), (limit, "critical")),
                    warn * lim["hysteresis"],
                    unit="%",
                    what=f"{measure.upper()}{level[2:]} forecast vs limit {_pct(limit)}",
                )
            )
        return out

    def _stale_obs(self, snap: RiskSnapshot, lim: Mapping[str, float]) -> list[_Obs]:
        last: dict[str, int] = {}
        for asset, risk in (snap.assets or {}).items():
            ts = getattr(risk, "last_ts", None)
            if isinstance(ts, int) and not isinstance(ts, bool):
                last[asset] = ts
        if len(last) < 2:
            return []
        freshest = max(last.values())
        warn = lim["stale_minutes"]
        tiers = self._tiers((warn, "warning"), (lim["stale_critical_minutes"], "critical"))
        return [
            _Obs(
                "stale_feed",
                asset,
                (freshest - ts) / (60 * NS_PER_SECOND),
                tiers,
                warn * lim["hysteresis"],
                unit="min",
                what=f"no tick of {asset} since {ns_to_iso(ts)[:16]} while others tick",
            )
            for asset, ts in sorted(last.items())
        ]

    # -- hysteresis -------------------------------------------------------------------
    def _step(
        self, state: dict[str, Any], snap: RiskSnapshot, lim: Mapping[str, float], obs: _Obs
    ) -> list[Alert]:
        out: list[Alert] = []
        key = f"{obs.rule}|{obs.asset}"
        episodes = state["episodes"]
        ts = int(snap.ts)
        ep = episodes.get(key)
        if ep is not None and obs.per_day and ep.get("firing") and ep["day"] != snap.day:
            out.append(self._resolved(state, snap, key, ep, obs.value, None, "a new day began"))
            ep = None  # a new day is a new alert: no cooldown
            del episodes[key]
        level = _tier(obs.value, obs.tiers)
        if ep is None or not ep.get("firing"):
            if level < 0:
                if ep is not None:
                    ep.pop("since", None)
                    if "resolved_ts" not in ep:
                        del episodes[key]
                return out
            ep = episodes.setdefault(key, {"firing": False})
            since = ep.setdefault("since", ts)
            resolved_ts = ep.get("resolved_ts")
            if ts - since < obs.min_duration_ns or (
                resolved_ts is not None
                and ts - resolved_ts < lim["refire_cooldown_s"] * NS_PER_SECOND
            ):
                return out
            day = snap.day
            occ_key = f"{key}|{day}"
            occ = int(state["occurrences"].get(occ_key, 0))
            state["occurrences"] = {
                k: v for k, v in state["occurrences"].items() if k.endswith(f"|{day}")
            }  # keep the current day only (bounded state)
            state["occurrences"][occ_key] = occ + 1
            ep.clear()
            ep.update(
                firing=True,
                id=fingerprint(obs.rule, snap.portfolio, obs.asset, day, occ),
                day=day,
                level=level,
                severity=obs.tiers[level][1],
                since=since,
            )
            out.append(self._alert(snap, obs, ep, "firing", obs.value, obs.tiers[level][0]))
            return out
        # firing
        if obs.value < obs.resolve_below:
            out.append(self._resolved(state, snap, key, ep, obs.value, obs.resolve_below, ""))
            episodes[key] = {"firing": False, "resolved_ts": ts}
        elif level > ep["level"]:
            severity = obs.tiers[level][1]
            ep["level"] = level
            if _SEV_RANK[severity] > _SEV_RANK[ep["severity"]]:
                ep["severity"] = severity
                out.append(self._alert(snap, obs, ep, "firing", obs.value, obs.tiers[level][0]))
        return out

    def _alert(
        self,
        snap: RiskSnapshot,
        obs: _Obs,
        ep: Mapping[str, Any],
        state: str,
        value: float | None,
        threshold: float | None,
    ) -> Alert:
        if obs.levels:  # var_exception: report the loss and the VaR it passed
            loss = _finite(snap.realized_return)
            value = -loss if loss is not None else None
            level, threshold = obs.levels[ep["level"]]
            text = f"{obs.what} below -VaR{level[2:]} " + _pct(threshold)
            return self._make(snap, obs.rule, obs.asset, ep, state, value, threshold, text)
        text = obs.what
        if value is not None and obs.unit in ("share",):
            text += f" = {value:.0%} of VaR"
        elif value is not None and obs.unit == "%":
            text += f": {_pct(value)}"
        elif value is not None and obs.unit == "min":
            text += f" ({value:.0f} min)"
        elif value is not None and obs.rule == "correlation_shift":
            text += f" (+{value:.2f})"
        elif value is not None and obs.rule == "traffic_light":
            text += f": {next(k for k, v in _TRAFFIC.items() if v == value)}"
        return self._make(snap, obs.rule, obs.asset, ep, state, value, threshold, text)

    def _resolved(
        self,
        state: dict[str, Any],
        snap: RiskSnapshot,
        key: str,
        ep: Mapping[str, Any],
        value: float | None,
        threshold: float | None,
        why: str,
    ) -> Alert:
        rule, _, asset = key.partition("|")
        if rule == "var_exception":
            value, threshold = None, None
        text = f"{rule} resolved" + (f": {why}" if why else "")
        return self._make(snap, rule, asset, ep, "resolved", value, threshold, text)

    @staticmethod
    def _make(
        snap: RiskSnapshot,
        rule: str,
        asset: str,
        ep: Mapping[str, Any],
        state: str,
        value: float | None,
        threshold: float | None,
        message: str,
    ) -> Alert:
        return Alert(
            id=ep["id"],
            rule=rule,
            severity=ep["severity"],
            state=state,
            portfolio=snap.portfolio,
            asset=asset,
            value=_finite(value),
            threshold=_finite(threshold),
            ts=int(snap.ts),
            day=ep["day"],
            run_id=snap.run_id,
            model=snap.model,
            model_version=snap.model_version,
            heatmap=snap.heatmap_key or snap.heatmap_path or "",
            message=message,
            seq=int(snap.seq),
        )


def _level_key(level: float) -> str:
    """Nearest of :data:`LEVEL_KEYS` to a confidence level."""
    return min(LEVEL_KEYS, key=lambda k: abs(float(k) - level))


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.2f} %"
