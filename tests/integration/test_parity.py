"""Parity: for the same ticks, the daily VaR/ES the stream publishes on topic ``risk``
equals what ``riskmon backtest`` computes offline (``stream_app.backtest_cmd.run_models``:
the walk-forward of the same models on the same closes) - champion and challengers,
every day, every level."""

from __future__ import annotations

import time

import numpy as np
import pytest

from models.base import LEVELS
from producers.kafka_out import ensure_topics, replay_panel
from producers.synthetic import Crash, synthetic_panel
from stream_app.backtest_cmd import BacktestPlan, run_models
from stream_app.portfolio import Portfolio
from stream_app.records import LEVEL_KEYS, RiskSnapshot

pytestmark = pytest.mark.integration

TOPICS = {
    "topic_ticks": "par-ticks",
    "topic_dlq": "par-ticks.dlq",
    "topic_bars": "par-bars",
    "topic_risk": "par-risk",
}
ASSETS = ("SPY", "TLT", "GLD")
WEIGHTS = (0.5, 0.3, 0.2)
MODELS = ("ewma", "hs", "garch_t")  # champion first


def collect_daily(bootstrap, n_days, timeout):
    from kafka import KafkaConsumer

    c = KafkaConsumer(
        TOPICS["topic_risk"],
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=500,
    )
    got: dict[str, RiskSnapshot] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(got) < n_days:
            for m in c:
                s = RiskSnapshot.decode(m.value)
                if s.kind == "daily":
                    got[s.day] = s
    finally:
        c.close()
    return got


def test_stream_forecasts_equal_the_offline_backtest(kafka_broker, worker, tmp_path):
    bootstrap = kafka_broker.bootstrap
    ensure_topics(bootstrap, TOPICS.values(), 2)
    book = tmp_path / "book.yaml"
    book.write_text(
        "portfolios:\n  - name: par\n    weights: {SPY: 0.5, TLT: 0.3, GLD: 0.2}\n"
        f"    champion: {MODELS[0]}\n    challengers: [{', '.join(MODELS[1:])}]\n"
    )
    w = worker(app_id="it-parity", partitions=2, portfolios_file=str(book), **TOPICS)
    w.wait_ready(60)
    panel = synthetic_panel(300, ASSETS, seed=7, crash=Crash(day=280, size=-0.08))
    replay_panel(
        panel, bootstrap, topic=TOPICS["topic_ticks"], run_id="parity", ticks_per_day=8, bundle=8
    )
    got = collect_daily(bootstrap, panel.n_days - 1, timeout=120)
    missing = sorted(set(str(d) for d in panel.dates[1:]) - set(got))
    assert not missing, (missing[:20], w.log()[-3000:])

    # offline: what `riskmon backtest` runs, on the panel the ticks came from
    plan = BacktestPlan(
        panel, Portfolio("par", ASSETS, WEIGHTS), MODELS, panel.dates[1], panel.dates[-1], seed=0
    )
    results = {r.model: r for r in run_models(plan, jobs=1, show_progress=False)}
    days = [str(d) for d in results["ewma"].dates]
    snaps = [got[d] for d in days]
    for name in MODELS:
        res = results[name]
        if name == MODELS[0]:  # the champion's forecast in force for each day
            var = [s.prev_var for s in snaps]
            es = [s.prev_es for s in snaps]
        else:  # a challenger's forecast made at each close is for the next day
            var = [None] + [s.challengers[name].var for s in snaps[:-1]]
            es = [None] + [s.challengers[name].es for s in snaps[:-1]]

        def table(rows):
            return np.array(
                [[np.nan] * len(LEVELS) if r is None else [r[k] for k in LEVEL_KEYS] for r in rows]
            )

        assert np.isfinite(res.var[:, 0]).sum() > 20, name  # the comparison is not empty
        np.testing.assert_allclose(table(var), res.var, rtol=0, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(table(es), res.es, rtol=0, atol=1e-12, err_msg=name)
    realized = np.array([s.realized_return for s in snaps])
    np.testing.assert_allclose(realized, results["ewma"].realized, rtol=0, atol=1e-12)
    flags = np.array([[s.exception[k] for k in LEVEL_KEYS] for s in snaps if s.exception])
    ok = np.isfinite(results["ewma"].var[:, 0])
    expected = results["ewma"].realized[ok, None] < -results["ewma"].var[ok]
    np.testing.assert_array_equal(flags, expected)
    assert w.stop() == 0
