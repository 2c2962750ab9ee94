"""The full path through the real broker, worker and Valkey: ticks -> bars -> risk
snapshots in Redis (latest, history, heatmaps), on topic ``risk`` and in the metrics;
and a replay run never touches live keys."""

from __future__ import annotations

import time

import pytest

from producers.kafka_out import ensure_topics, replay_panel
from producers.synthetic import Crash, synthetic_panel
from stream_app.records import RiskSnapshot
from stream_app.sinks import history_key, latest_key

pytestmark = pytest.mark.integration

TOPICS = {
    "topic_ticks": "rs-ticks",
    "topic_dlq": "rs-ticks.dlq",
    "topic_bars": "rs-bars",
    "topic_risk": "rs-risk",
}
PNG = b"\x89PNG\r\n\x1a\n"


def test_ticks_to_risk_snapshots_in_redis_and_metrics(
    kafka_broker, valkey_server, worker, tmp_path
):
    import redis

    bootstrap = kafka_broker.bootstrap
    ensure_topics(bootstrap, TOPICS.values(), 2)
    book = tmp_path / "book.yaml"
    book.write_text(
        "portfolios:\n  - name: book\n    weights: {SPY: 0.5, TLT: 0.3, GLD: 0.2}\n"
        "    champion: ewma\n    challengers: [hs]\n    limits: {var99: 0.05}\n"
    )
    w = worker(
        app_id="it-risk",
        partitions=2,
        redis_url=valkey_server.url,
        redis_password="it-secret",
        portfolios_file=str(book),
        output_dir=str(tmp_path / "out"),
        intraday_interval_s=7200,
        **TOPICS,
    )
    w.wait_ready(60)
    panel = synthetic_panel(45, ("SPY", "TLT", "GLD"), seed=42, crash=Crash(day=40, size=-0.1))
    stats = replay_panel(
        panel, bootstrap, topic=TOPICS["topic_ticks"], run_id="it-risk", ticks_per_day=20, bundle=5
    )
    assert stats.days == 45 and not stats.interrupted

    r = redis.Redis.from_url(valkey_server.url, password="it-secret")
    last_day = str(panel.dates[-1])
    deadline = time.monotonic() + 60
    snap = None
    while time.monotonic() < deadline:
        raw = r.get(latest_key("book", "it-risk", "daily"))
        if raw and (snap := RiskSnapshot.decode(raw)).day == last_day:
            break
        time.sleep(0.2)
    assert snap is not None and snap.day == last_day, w.log()[-3000:]

    # the snapshot: champion forecast, backtest counters, challengers, assets, heatmap
    assert snap.run_id == "it-risk" and snap.kind == "daily" and snap.model == "ewma"
    assert 0 < snap.var["0.95"] < snap.var["0.99"] <= snap.es["0.99"]
    assert snap.n_days == 44 - 30  # ewma warms up on 30 returns
    assert snap.challengers["hs"].var is None  # hs needs 250 days
    assert set(snap.assets) == {"SPY", "TLT", "GLD"} and snap.limits == {"var99": 0.05}
    assert snap.assets["SPY"].price == panel.close[-1, 0]
    png = r.get(snap.heatmap_key)
    assert png.startswith(PNG) and r.get("riskmon:heatmap:it-risk:book:latest") == png
    assert (tmp_path / "out" / "it-risk" / "book" / f"{last_day}.png").read_bytes() == png

    # the bounded history holds every daily snapshot once, in order
    daily = [
        RiskSnapshot.decode(f[b"snapshot"])
        for _, f in r.xrange(history_key("book", "it-risk"))
        if f[b"kind"] == b"daily"
    ]
    assert [s.day for s in daily] == [str(d) for d in panel.dates[1:]]
    assert r.sismember("riskmon:risk:it-risk:portfolios", "book")
    assert r.zscore("riskmon:runs", "it-risk") is not None

    # a replay never writes live keys
    assert r.get(latest_key("book", "")) is None
    assert not r.keys("riskmon:*:live:*")

    # the same snapshot on topic risk, keyed by portfolio
    from kafka import KafkaConsumer

    c = KafkaConsumer(
        TOPICS["topic_risk"], bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        consumer_timeout_ms=2000,
    )  # fmt: skip
    msgs = list(c)
    c.close()
    assert all(m.key == b"book" for m in msgs)
    on_topic = [RiskSnapshot.decode(m.value) for m in msgs]
    assert on_topic[-1] == snap or snap in on_topic

    # metrics (the dashboards' contract)
    labels = {"portfolio": "book", "run": "it-risk"}
    assert w.metric("riskmon_portfolio_var_ratio", model="ewma", level="0.99", **labels) == (
        pytest.approx(snap.var["0.99"])
    )
    assert w.metric("riskmon_portfolio_days_total", model="ewma", **labels) == snap.n_days
    assert (
        w.metric("riskmon_portfolio_exceptions_total", model="ewma", level="0.95", **labels)
        == (snap.exceptions_total["0.95"])
    )
    assert w.metric("riskmon_snapshots_total", **labels) == len(on_topic)
    assert w.metric("riskmon_portfolio_realized_return_ratio", **labels) == pytest.approx(
        snap.realized_return
    )
    assert w.metric("riskmon_asset_price", asset="GLD", run="it-risk") == panel.close[-1, 2]
    assert w.metric("riskmon_tick_to_snapshot_seconds_count") == len(on_topic)
    assert w.metric("riskmon_model_update_seconds_count", model="ewma") == 44
    assert w.stop() == 0
