"""The alert rule engine on hand-made snapshot sequences: each rule fires, escalates and
resolves with hysteresis; de-duplication; deterministic ids; state round trips;
the engine never raises on odd values (hypothesis)."""

import itertools
import json
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.exceptions import DataError
from stream_app.alerts import (
    DEFAULT_LIMITS,
    RULES,
    SEVERITIES,
    STATES,
    Alert,
    AlertEngine,
    check_limits,
    fingerprint,
    new_state,
)
from stream_app.records import NS_PER_SECOND, AssetRisk, RiskSnapshot, iso_to_ns

MIN = 60 * NS_PER_SECOND
VAR = {"0.95": 0.02, "0.975": 0.025, "0.99": 0.03}


class Feed:
    """Builds snapshots with increasing sequence numbers and feeds one engine."""

    def __init__(self, engine=None, portfolio="book", run_id="r1"):
        self.engine = engine or AlertEngine()
        self.state = new_state()
        self.seq = itertools.count(1)
        self.portfolio, self.run_id = portfolio, run_id
        self.all = []

    def snap(self, kind, day, minute=16 * 60, **kw):
        ts = iso_to_ns(day) + int(minute * MIN)
        return RiskSnapshot(
            self.portfolio, self.run_id, kind, day, ts, seq=next(self.seq), model="m", **kw
        )

    def __call__(self, kind, day, minute=16 * 60, **kw):
        alerts = self.engine.evaluate(self.state, self.snap(kind, day, minute, **kw))
        self.all.extend(alerts)
        return [(a.rule, a.asset, a.severity, a.state) for a in alerts]

    def daily(self, day, **kw):
        return self(
            "daily",
            day,
            **{"var": VAR, "prev_var": VAR, "exception": dict.fromkeys(VAR, False)} | kw,
        )

    def intraday(self, day, minute, share, **kw):
        """An intraday snapshot whose loss is ``share`` of VaR99."""
        return self("intraday", day, minute, var=VAR, pnl=-share * VAR["0.99"], **kw)


def exc(*levels):
    return {lv: lv in levels for lv in VAR}


# -- var_exception ----------------------------------------------------------------------
def test_var_exception_fires_once_and_resolves_next_day():
    f = Feed()
    assert f.daily("2008-10-01") == []
    got = f.daily("2008-10-02", realized_return=-0.035, exception=exc("0.95", "0.975", "0.99"))
    assert got == [("var_exception", "", "critical", "firing")]
    a = f.all[-1]
    assert a.value == pytest.approx(0.035) and a.threshold == 0.03
    assert a.day == "2008-10-02" and a.id == fingerprint("var_exception", "book", "", "2008-10-02")
    assert a.run_id == "r1" and a.model == "m" and a.portfolio == "book"
    assert f.daily("2008-10-03", realized_return=0.001) == [
        ("var_exception", "", "critical", "resolved")
    ]
    assert f.all[-1].id == a.id
    assert f.daily("2008-10-06") == []


def test_var_exception_levels_and_min_level():
    f = Feed()
    assert f.daily("2008-10-01", realized_return=-0.021, exception=exc("0.95")) == []
    f = Feed()
    got = f.daily(
        "2008-10-01",
        realized_return=-0.021,
        exception=exc("0.95"),
        limits={"exception_min_level": 0.95},
    )
    assert got == [("var_exception", "", "warning", "firing")]
    assert f.all[-1].threshold == 0.02
    f = Feed()
    got = f.daily("2008-10-01", realized_return=-0.026, exception=exc("0.95", "0.975"))
    assert got == [("var_exception", "", "warning", "firing")]
    assert f.all[-1].threshold == 0.025


def test_consecutive_exceptions_are_two_alerts():
    f = Feed()
    e = {"realized_return": -0.04, "exception": exc("0.95", "0.975", "0.99")}
    assert f.daily("2008-10-01", **e) == [("var_exception", "", "critical", "firing")]
    assert f.daily("2008-10-02", **e) == [
        ("var_exception", "", "critical", "resolved"),
        ("var_exception", "", "critical", "firing"),
    ]
    first, resolved, second = f.all
    assert first.id == resolved.id != second.id
    assert second.id == fingerprint("var_exception", "book", "", "2008-10-02")


# -- intraday_loss ------------------------------------------------------------------------
def test_intraday_loss_tiers_hysteresis_and_day_close():
    f = Feed()
    day = "2008-10-01"
    steps = [
        (0.30, []),
        (0.55, [("intraday_loss", "", "warning", "firing")]),
        (0.60, []),
        (0.85, [("intraday_loss", "", "critical", "firing")]),
        (1.10, [("intraday_loss", "", "breach", "firing")]),
        (0.70, []),  # de-escalation is not an event
        (1.20, []),  # nor is a second breach of the same episode
        (0.45, []),  # inside the hysteresis band (0.4 .. 0.5)
        (0.39, [("intraday_loss", "", "breach", "resolved")]),
    ]
    for k, (share, expected) in enumerate(steps):
        assert f.intraday(day, 600 + k, share) == expected, (k, share)
    ids = {a.id for a in f.all}
    assert ids == {fingerprint("intraday_loss", "book", "", day)}
    warn = f.all[0]
    assert warn.value == pytest.approx(0.55) and warn.threshold == 0.5
    assert f.all[-1].threshold == pytest.approx(0.4)
    # an open episode is resolved when the day closes
    f.intraday(day, 800, 0.9)  # after the cooldown (800 - 608 min > 60)
    assert f.all[-1].state == "firing" and f.all[-1].severity == "critical"
    assert f.all[-1].id == fingerprint("intraday_loss", "book", "", day, 1)
    assert f.daily(day) == [("intraday_loss", "", "critical", "resolved")]


def test_intraday_loss_cooldown_stops_flapping():
    f = Feed()
    for k in range(120):  # a signal crossing both thresholds every minute for 2 hours
        f.intraday("2008-10-01", 600 + k, 0.6 if k % 2 == 0 else 0.2)
    states = [(a.state, a.ts) for a in f.all]
    # fired, resolved, then at most one new episode per cooldown hour
    assert [s for s, _ in states] == ["firing", "resolved", "firing", "resolved"]
    assert states[2][1] - states[1][1] >= 3600 * NS_PER_SECOND
    assert len({a.id for a in f.all}) == 2


def test_intraday_loss_min_duration():
    f = Feed()
    lim = {"loss_min_duration_s": 600}
    assert f.intraday("2008-10-01", 600, 0.6, limits=lim) == []
    assert f.intraday("2008-10-01", 605, 0.6, limits=lim) == []
    assert f.intraday("2008-10-01", 606, 0.1, limits=lim) == []  # dropped: clock resets
    assert f.intraday("2008-10-01", 607, 0.6, limits=lim) == []
    assert f.intraday("2008-10-01", 616, 0.6, limits=lim) == []
    assert f.intraday("2008-10-01", 617, 0.7, limits=lim) == [
        ("intraday_loss", "", "warning", "firing")
    ]


def test_intraday_loss_level_and_new_day():
    f = Feed()
    lim = {"loss_var_level": 0.95}  # 0.012 / 0.02 = 0.6 of VaR95
    assert f("intraday", "2008-10-01", 600, var=VAR, pnl=-0.012, limits=lim) == [
        ("intraday_loss", "", "warning", "firing")
    ]
    assert f.all[-1].threshold == 0.5
    # no daily snapshot came; the next day's first intraday snapshot ends the episode
    assert f("intraday", "2008-10-02", 600, var=VAR, pnl=-0.012, limits=lim) == [
        ("intraday_loss", "", "warning", "resolved"),
        ("intraday_loss", "", "warning", "firing"),
    ]
    assert f.all[-1].day == "2008-10-02"


# -- daily signal rules --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rule", "field", "values", "expected"),
    [
        (
            "predicted_vol",
            "predicted_vol",
            [{"5": 0.01}, {"5": 0.021, "10": 0.0}, {"5": 0.031}, {"5": 0.017}, {"5": 0.015}],
            [[], ["warning"], ["critical"], [], ["resolved"]],
        ),
        (
            "cnn_score",
            "cnn_score",
            [0.5, 0.81, 0.7, 0.96, 0.63],
            [[], ["warning"], [], ["critical"], ["resolved"]],
        ),
    ],
)
def test_daily_signal_rules(rule, field, values, expected):
    f = Feed()
    for k, (value, exp) in enumerate(zip(values, expected, strict=True)):
        got = f("daily", f"2008-10-{k + 1:02d}", **{field: value})
        assert [s if s == "resolved" else sev for (_, _, sev, s) in got] == exp, (k, value)
        assert all(r == rule for r, *_ in got)


def test_predicted_vol_horizon_limit():
    f = Feed()
    lim = {
        "predicted_vol_horizon": 10,
        "max_predicted_vol": 0.05,
        "max_predicted_vol_critical": 0.1,
    }
    assert f("daily", "2008-10-01", predicted_vol={"5": 0.5, "10": 0.04}, limits=lim) == []
    assert f("daily", "2008-10-02", predicted_vol={"5": 0.0, "10": 0.06}, limits=lim) == [
        ("predicted_vol", "", "warning", "firing")
    ]


def test_correlation_shift_against_ewma():
    f = Feed()
    hl = DEFAULT_LIMITS["corr_halflife_days"]
    alpha = 1 - 0.5 ** (1 / hl)
    series = [0.30] * 12 + [0.50, 0.66, 0.66] + [0.66] * 60
    ref, n, fired = None, 0, []
    for k, corr in enumerate(series):
        day = f"2008-{1 + k // 28:02d}-{1 + k % 28:02d}"
        got = f("daily", day, avg_correlation=corr)
        # oracle: jump vs the EWMA of the previous values, active after 10 values
        jump = None if ref is None or n < 10 else corr - ref
        ref = corr if ref is None else (1 - alpha) * ref + alpha * corr
        n += 1
        fired.append((k, jump, got))
    events = [(k, got) for k, _, got in fired if got]
    assert events[0] == (12, [("correlation_shift", "", "warning", "firing")])
    assert events[1] == (13, [("correlation_shift", "", "critical", "firing")])
    # it resolves once the EWMA has caught up with the new level: jump < 0.15 * 0.8
    (k_res, got) = events[2]
    assert got == [("correlation_shift", "", "critical", "resolved")]
    jumps = {k: j for k, j, _ in fired}
    assert jumps[k_res] < 0.12 <= jumps[k_res - 1]
    assert f.all[0].value == pytest.approx(jumps[12])
    assert len(events) == 3


def test_correlation_needs_history():
    f = Feed()
    for k in range(5):
        assert f("daily", f"2008-10-{k + 1:02d}", avg_correlation=0.1 + 0.2 * k) == []


def test_traffic_light_escalates_and_resolves_on_green():
    f = Feed()
    lights = ["green", "yellow", "yellow", "red", "yellow", "green", "yellow"]
    got = [f("daily", f"2008-10-{k + 1:02d}", traffic_light=c) for k, c in enumerate(lights)]
    assert got == [
        [],
        [("traffic_light", "", "warning", "firing")],
        [],
        [("traffic_light", "", "critical", "firing")],
        [],
        [("traffic_light", "", "critical", "resolved")],
        [("traffic_light", "", "warning", "firing")],
    ]
    assert f.all[0].id == f.all[2].id == fingerprint("traffic_light", "book", "", "2008-10-02")
    assert f.all[3].id == fingerprint("traffic_light", "book", "", "2008-10-07")


def test_forecast_limits_only_when_set():
    f = Feed()
    assert f("daily", "2008-10-01", var={**VAR, "0.99": 0.5}) == []
    lim = {"var99": 0.04, "es975": 0.05}
    steps = [
        ({"0.99": 0.03}, {"0.975": 0.04}, []),
        ({"0.99": 0.037}, {"0.975": 0.04}, [("var_limit", "", "warning", "firing")]),
        (
            {"0.99": 0.041},
            {"0.975": 0.046},
            [("var_limit", "", "critical", "firing"), ("es_limit", "", "warning", "firing")],
        ),
        # var 0.03 > 0.036 * 0.8 = 0.0288 and es 0.037 > 0.045 * 0.8 = 0.036: both hold
        ({"0.99": 0.03}, {"0.975": 0.037}, []),
        (
            {"0.99": 0.028},
            {"0.975": 0.03},
            [("var_limit", "", "critical", "resolved"), ("es_limit", "", "warning", "resolved")],
        ),
    ]
    for k, (var, es, expected) in enumerate(steps):
        assert f("daily", f"2008-11-{k + 1:02d}", var=var, es=es, limits=lim) == expected, k


def test_stale_feed_per_asset():
    f = Feed(run_id="")  # live data: checked on intraday snapshots too
    day = "2008-10-01"
    t0 = iso_to_ns(day) + 10 * 60 * MIN

    def assets(**lag_min):
        return {
            a: AssetRisk(weight=1 / 3, price=1.0, last_ts=t0 - int(lag * MIN))
            for a, lag in lag_min.items()
        }

    assert f("intraday", day, 600, assets=assets(A=0, B=5, C=59)) == []
    assert f("intraday", day, 601, assets=assets(A=0, B=5, C=61)) == [
        ("stale_feed", "C", "warning", "firing")
    ]
    assert f.all[-1].value == pytest.approx(61) and f.all[-1].asset == "C"
    assert f.all[-1].id == fingerprint("stale_feed", "book", "C", day)
    assert f("intraday", day, 602, assets=assets(A=0, B=250, C=241)) == [
        ("stale_feed", "B", "critical", "firing"),
        ("stale_feed", "C", "critical", "firing"),
    ]
    assert f("intraday", day, 603, assets=assets(A=0, B=1, C=50)) == [
        ("stale_feed", "B", "critical", "resolved")
    ]
    assert f("intraday", day, 604, assets=assets(A=0, B=1, C=47)) == [
        ("stale_feed", "C", "critical", "resolved")
    ]
    # one asset alone, or assets without ticks: nothing to compare
    assert f("intraday", day, 605, assets=assets(A=999)) == []
    none = {"A": AssetRisk(weight=0.5), "B": AssetRisk(weight=0.5, last_ts=t0)}
    assert f("intraday", day, 606, assets=none) == []


def test_stale_feed_of_a_replay_only_at_day_close():
    """In a replay the partitions drift apart: intraday gaps are not stale feeds; a day
    that closes with an asset hours behind is."""
    f = Feed(run_id="gfc")
    day = "2008-10-01"
    t0 = iso_to_ns(day) + 16 * 60 * MIN
    drift = {"A": AssetRisk(0.5, last_ts=t0), "B": AssetRisk(0.5, last_ts=t0 - 600 * MIN)}
    assert f("intraday", day, 600, assets=drift) == []
    assert f("daily", day, assets=drift) == [("stale_feed", "B", "critical", "firing")]


# -- de-duplication, determinism, state -------------------------------------------------------
def test_replayed_and_older_snapshots_are_ignored():
    eng, state = AlertEngine(), new_state()
    s1 = RiskSnapshot("p", "", "daily", "2008-10-01", 10, seq=5, traffic_light="red")
    s0 = RiskSnapshot("p", "", "daily", "2008-09-30", 9, seq=4, traffic_light="yellow")
    assert len(eng.evaluate(state, s1)) == 1
    assert eng.evaluate(state, s1) == []
    assert eng.evaluate(state, s0) == []


def _sequence():
    """A month of mixed snapshots exercising most rules (live data)."""
    f = Feed(run_id="")
    out = []
    for d in range(1, 25):
        day = f"2008-10-{d:02d}"
        for m in range(4):
            out.append(
                f.snap(
                    "intraday",
                    day,
                    600 + 30 * m,
                    var=VAR,
                    pnl=-0.03 * ((d * 7 + m * 3) % 11) / 10,
                    assets={
                        "A": AssetRisk(1.0, last_ts=iso_to_ns(day) + (600 + 30 * m) * MIN),
                        "B": AssetRisk(1.0, last_ts=iso_to_ns(day) + (540 + 10 * (d % 5)) * MIN),
                    },
                )
            )
        bad = d % 6 == 0
        out.append(
            f.snap(
                "daily",
                day,
                var=VAR,
                prev_var=VAR,
                realized_return=-0.04 if bad else 0.001,
                exception=exc(*VAR) if bad else exc(),
                traffic_light=["green", "yellow", "red"][(d // 8) % 3],
                cnn_score=(d % 10) / 10,
                predicted_vol={"5": 0.005 * (d % 7)},
                avg_correlation=0.2 + (0.4 if d > 15 else 0.0),
            )
        )
    return out


def test_same_snapshots_same_alerts_and_state_round_trip():
    snaps = _sequence()
    eng = AlertEngine()
    st1 = new_state()
    ref = [a for s in snaps for a in eng.evaluate(st1, s)]
    assert {a.rule for a in ref} >= {
        "var_exception",
        "intraday_loss",
        "predicted_vol",
        "cnn_score",
        "correlation_shift",
        "traffic_light",
        "stale_feed",
    }
    # a second engine, with the state serialised (JSON and pickle) every step: same alerts
    st2, got = new_state(), []
    for s in snaps:
        st2 = json.loads(json.dumps(st2, allow_nan=False))
        st2 = pickle.loads(pickle.dumps(st2))
        got.extend(AlertEngine().evaluate(st2, s))
    assert got == ref
    # every event key is unique and every resolved event closes an earlier firing one
    keys = [a.event_key for a in ref]
    assert len(keys) == len(set(keys))
    fired = set()
    for a in ref:
        if a.state == "firing":
            fired.add(a.id)
        else:
            assert a.id in fired
    # crash and replay: the state of step k evaluated again from k-3 gives no new events
    st3, again = new_state(), []
    for k, s in enumerate(snaps):
        again.extend(eng.evaluate(st3, s))
        if k == 40:
            for s_old in snaps[37:41]:
                assert eng.evaluate(st3, s_old) == []
    assert again == ref


def test_fingerprint_is_deterministic_and_distinct():
    a = fingerprint("stale_feed", "book", "SPY", "2008-10-01")
    assert a == fingerprint("stale_feed", "book", "SPY", "2008-10-01")
    assert len(a) == 20 and int(a, 16) >= 0
    others = {
        fingerprint("stale_feed", "book", "SPY", "2008-10-02"),
        fingerprint("stale_feed", "book", "TLT", "2008-10-01"),
        fingerprint("stale_feed", "book2", "SPY", "2008-10-01"),
        fingerprint("cnn_score", "book", "SPY", "2008-10-01"),
        fingerprint("stale_feed", "book", "SPY", "2008-10-01", 1),
        fingerprint("stale_feed", "boo", "kSPY", "2008-10-01"),  # no ambiguity at joins
    }
    assert a not in others and len(others) == 6


# -- limits ---------------------------------------------------------------------------------
def test_limits_precedence_and_bad_values():
    eng = AlertEngine({"book": {"max_cnn_score": 0.5, "corr_jump": 0.2}})
    snap = RiskSnapshot("book", "", "daily", "2008-10-01", 1, limits={"corr_jump": 0.3})
    lim = eng.limits_for(snap)
    assert lim["max_cnn_score"] == 0.5 and lim["corr_jump"] == 0.3
    assert lim["hysteresis"] == DEFAULT_LIMITS["hysteresis"]
    bad = {"hysteresis": float("nan"), "max_cnn_score": 2.0, "stale_minutes": True, "x": 1}
    snap = RiskSnapshot("other", "", "daily", "2008-10-01", 1, limits=bad)
    lim = eng.limits_for(snap)
    assert lim["hysteresis"] == DEFAULT_LIMITS["hysteresis"]
    assert lim["max_cnn_score"] == DEFAULT_LIMITS["max_cnn_score"]
    assert lim["stale_minutes"] == DEFAULT_LIMITS["stale_minutes"]
    assert "x" not in lim
    assert check_limits(bad) == [
        "hysteresis=nan not in [0.0, 1.0]",
        "max_cnn_score=2.0 not in [0.0, 1.0]",
        "stale_minutes=True is not a number",
        "unknown limit 'x'",
    ]
    assert check_limits(DEFAULT_LIMITS) == []
    assert check_limits({"var99": 0.05, "es975": 0.06}) == []


def test_rules_can_be_chosen():
    with pytest.raises(ValueError, match="unknown rules"):
        AlertEngine(rules=["nope"])
    eng, st = AlertEngine(rules=["cnn_score"]), new_state()
    snap = RiskSnapshot(
        "p", "", "daily", "2008-10-01", 1, cnn_score=0.99, traffic_light="red", seq=1
    )
    assert [a.rule for a in eng.evaluate(st, snap)] == ["cnn_score"]


# -- the Alert record -------------------------------------------------------------------------
def test_alert_round_trips():
    a = Alert(
        id="abc",
        rule="stale_feed",
        severity="warning",
        state="firing",
        portfolio="book",
        asset="SPY",
        value=61.5,
        threshold=None,
        ts=iso_to_ns("2008-10-01T14:00:00Z"),
        day="2008-10-01",
        run_id="",
        heatmap="riskmon:heatmap:live:book:2008-10-01",
        seq=3,
        order=1,
    )
    assert Alert.decode(a.encode()) == a
    fields = a.to_fields()
    assert all(isinstance(v, str) for v in fields.values())
    assert fields["threshold"] == "" and fields["event_time"].startswith("2008-10-01T14:00")
    assert Alert.from_fields({k.encode(): v.encode() for k, v in fields.items()}) == a
    assert a.event_key == "abc:firing:warning" and a.run_label == "live"
    with pytest.raises(DataError):
        Alert.decode(b"[1]")
    with pytest.raises(DataError):
        Alert.from_fields({"ts": "x"})


# -- never raises -----------------------------------------------------------------------------
_num = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**6), 10**6),
    st.booleans(),
)
_levels = st.one_of(st.none(), st.fixed_dictionaries({k: _num for k in VAR}))
_flags = st.one_of(
    st.none(), st.fixed_dictionaries({k: st.one_of(st.booleans(), st.none()) for k in VAR})
)
_asset = st.builds(
    AssetRisk,
    weight=st.floats(allow_nan=True),
    last_ts=st.one_of(st.none(), st.integers(0, 2**62)),
)
_snap = st.builds(
    RiskSnapshot,
    portfolio=st.just("p"),
    run_id=st.just(""),
    kind=st.sampled_from(["daily", "intraday"]),
    day=st.sampled_from(["2008-10-01", "2008-10-02", "2008-10-03"]),
    ts=st.integers(0, 2**62),
    seq=st.integers(0, 10**6),
    var=_levels,
    es=_levels,
    prev_var=_levels,
    realized_return=_num,
    exception=_flags,
    pnl=_num,
    traffic_light=st.one_of(st.none(), st.sampled_from(["green", "yellow", "red", "blue"])),
    predicted_vol=st.one_of(st.none(), st.fixed_dictionaries({"5": _num, "10": _num})),
    cnn_score=_num,
    avg_correlation=_num,
    assets=st.dictionaries(st.sampled_from(["A", "B", "C"]), _asset, max_size=3),
    limits=st.dictionaries(st.sampled_from([*sorted(DEFAULT_LIMITS), "var99", "zz"]), _num),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_snap, max_size=12))
def test_engine_never_raises(snaps):
    eng, state = AlertEngine(), new_state()
    for s in snaps:
        for a in eng.evaluate(state, s):
            assert a.rule in RULES and a.severity in SEVERITIES and a.state in STATES
            assert Alert.decode(a.encode()) == a
        json.dumps(state, allow_nan=False)  # the state stays JSON (a Faust table value)
