"""Prometheus metrics of the ingest and risk stages, registered in a registry passed in.

The risk names follow the dashboards' contract (``/work/notes/metrics.md``); see
:class:`RiskMetrics`. Ingest:

Names (all with the ``riskmon_`` prefix):

* ``riskmon_ticks_in_total`` - messages read from topic ``ticks``
* ``riskmon_ticks_ok_total`` - ticks accepted
* ``riskmon_dlq_total{reason}`` - messages sent to ``ticks.dlq``, by reason
* ``riskmon_bars_out_total{closed_by}`` - closed daily bars sent to ``bars``
* ``riskmon_last_prices_out_total`` - throttled last-price snapshots sent to ``bars``
* ``riskmon_ingest_batch_size`` - histogram of messages per batch
* ``riskmon_ingest_batch_seconds`` - histogram of processing time per batch
* ``riskmon_ingest_state_keys`` - assets held in the worker's bar table
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream_app.validate import Reason

__all__ = ["IngestMetrics", "RiskMetrics"]

_CLOSED_BY = ("next_day", "eod", "evicted")


class IngestMetrics:
    """Counters and histograms of the ingest agent.

    Parameters
    ----------
    registry : prometheus_client.CollectorRegistry
        Where to register (never the global default registry unless passed).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        ns = "riskmon"
        self.ticks_in = Counter(
            "ticks_in", "Messages read from the ticks topic.", namespace=ns, registry=registry
        )
        self.ticks_ok = Counter(
            "ticks_ok", "Ticks accepted by validation.", namespace=ns, registry=registry
        )
        self.dlq = Counter(
            "dlq",
            "Messages sent to the dead-letter topic, by reason.",
            ["reason"],
            namespace=ns,
            registry=registry,
        )
        self.bars_out = Counter(
            "bars_out",
            "Closed daily bars sent to the bars topic, by what closed them.",
            ["closed_by"],
            namespace=ns,
            registry=registry,
        )
        self.lasts_out = Counter(
            "last_prices_out",
            "Throttled last-price snapshots sent to the bars topic.",
            namespace=ns,
            registry=registry,
        )
        self.batch_size = Histogram(
            "ingest_batch_size",
            "Messages per ingest batch.",
            namespace=ns,
            registry=registry,
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000),
        )
        self.batch_seconds = Histogram(
            "ingest_batch_seconds",
            "Processing time of one ingest batch (validation, state, publishing).",
            namespace=ns,
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.publish_retries = Counter(
            "ingest_publish_retries",
            "Ingest batches whose bars/dead letters had to be sent again (broker unavailable).",
            namespace=ns,
            registry=registry,
        )
        self.loop_lag = Histogram(
            "event_loop_lag_seconds",
            "How late a 10 ms sleep on the worker's event loop wakes up (a stalled loop "
            "delays every message).",
            namespace=ns,
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.state_keys = Gauge(
            "ingest_state_keys",
            "Assets held in this worker's bar table.",
            namespace=ns,
            registry=registry,
        )
        for reason in Reason:  # export zeros so rate() works from the start
            self.dlq.labels(reason=reason.value)
        for closed_by in _CLOSED_BY:
            self.bars_out.labels(closed_by=closed_by)


# -- the risk stage (names in /work/notes/metrics.md, the dashboards' contract) -------------


#: Traffic-light zone -> gauge value.
ZONES = {"green": 0, "yellow": 1, "red": 2}


def _run_label(run_id: str) -> str:
    return run_id or "live"


class RiskMetrics:
    """Gauges, counters and histograms of the risk agent.

    Label ``run`` is ``live`` for live data, else the replay run id; ratios are
    fractions of NAV; ``level`` is ``"0.95" | "0.975" | "0.99"``.

    Per portfolio: ``riskmon_portfolio_var_ratio``, ``_es_ratio``
    ``{portfolio,run,model,level}``; ``_pnl_ratio``, ``_realized_return_ratio``
    ``{portfolio,run}``; ``_exceptions_total{portfolio,run,model,level}``;
    ``_days_total{portfolio,run,model}``; ``_exception_rate_250d``, ``_kupiec_pvalue``
    ``{portfolio,run,model,level}``; ``_traffic_light{portfolio,run,model}`` (0 green,
    1 yellow, 2 red); ``_predicted_vol_ratio{portfolio,run,horizon}``;
    ``_cnn_risk_score``, ``_avg_correlation``, ``_event_time_seconds{portfolio,run}``;
    ``_risk_contribution_ratio{portfolio,run,asset,level}`` (Euler contribution to ES);
    ``riskmon_snapshots_total{portfolio,run}``. Per asset: ``riskmon_asset_price``,
    ``riskmon_asset_volatility_ratio{asset,run}``. Pipeline:
    ``riskmon_tick_to_snapshot_seconds``, ``riskmon_consumer_lag{topic,partition}``,
    ``riskmon_model_update_seconds{model}``; and ``riskmon_risk_late_bars_total``,
    ``riskmon_sink_errors_total{sink}``, ``riskmon_day_close_seconds``.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        ns = "riskmon"
        pml = ["portfolio", "run", "model", "level"]
        pr = ["portfolio", "run"]

        def g(name: str, doc: str, labels: list[str]) -> Gauge:
            return Gauge(name, doc, labels, namespace=ns, registry=registry)

        def c(name: str, doc: str, labels: list[str]) -> Counter:
            return Counter(name, doc, labels, namespace=ns, registry=registry)

        self.var = g("portfolio_var_ratio", "Next-day VaR, fraction of NAV.", pml)
        self.es = g("portfolio_es_ratio", "Next-day ES, fraction of NAV.", pml)
        self.pnl = g("portfolio_pnl_ratio", "Running P&L of the trading day.", pr)
        self.realized = g(
            "portfolio_realized_return_ratio", "Return of the last closed trading day.", pr
        )
        self.exceptions = c("portfolio_exceptions", "VaR exceptions.", pml)
        self.days = c(
            "portfolio_days",
            "Scored days (a forecast was in force).",
            ["portfolio", "run", "model"],
        )
        self.exc_rate = g(
            "portfolio_exception_rate_250d", "Exception rate over the last 250 scored days.", pml
        )
        self.kupiec = g("portfolio_kupiec_pvalue", "Kupiec POF p over the last 250 days.", pml)
        self.traffic = g(
            "portfolio_traffic_light",
            "Basel traffic light (99 %, 250 d): 0 green, 1 yellow, 2 red.",
            ["portfolio", "run", "model"],
        )
        self.pred_vol = g(
            "portfolio_predicted_vol_ratio",
            "CNN predicted portfolio volatility (daily units).",
            ["portfolio", "run", "horizon"],
        )
        self.cnn_score = g("portfolio_cnn_risk_score", "CNN risk score in [0, 1].", pr)
        self.contribution = g(
            "portfolio_risk_contribution_ratio",
            "Euler contribution of an asset to the champion's ES.",
            ["portfolio", "run", "asset", "level"],
        )
        self.avg_corr = g(
            "portfolio_avg_correlation", "Average pairwise correlation of the assets.", pr
        )
        self.event_time = g(
            "portfolio_event_time_seconds", "Event time (unix s) of the last snapshot.", pr
        )
        self.snapshots = c("snapshots", "Risk snapshots published.", pr)
        self.asset_price = g("asset_price", "Last price of an asset.", ["asset", "run"])
        self.asset_vol = g(
            "asset_volatility_ratio", "EWMA daily volatility of an asset.", ["asset", "run"]
        )
        self.latency = Histogram(
            "tick_to_snapshot_seconds",
            "Wall time from the arrival of the tick that triggered a snapshot to its publication.",
            namespace=ns,
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.lag = g("consumer_lag", "Messages behind the high watermark.", ["topic", "partition"])
        self.model_seconds = Histogram(
            "model_update_seconds",
            "Wall time of one model's daily update + forecast.",
            ["model"],
            namespace=ns,
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.day_close_seconds = Histogram(
            "day_close_seconds",
            "Wall time of one portfolio day close (all models, contributions, heatmap).",
            namespace=ns,
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.late_bars = Counter(
            "risk_late_bars",
            "Bars of days already closed (late or delivered twice), ignored.",
            namespace=ns,
            registry=registry,
        )
        self.sink_errors = c("sink_errors", "Failed writes to a sink.", ["sink"])
        for sink in ("redis", "file", "kafka"):
            self.sink_errors.labels(sink=sink)

    def observe(self, snap: Any, update_seconds: dict[str, float] | None = None) -> None:
        """Export one snapshot (a :class:`~stream_app.records.RiskSnapshot`)."""
        p, run = snap.portfolio, _run_label(snap.run_id)
        self.snapshots.labels(p, run).inc()
        self.event_time.labels(p, run).set(snap.ts / 1e9)
        if snap.pnl is not None:
            self.pnl.labels(p, run).set(snap.pnl)
        for asset, info in snap.assets.items():
            if info.price is not None:
                self.asset_price.labels(asset, run).set(info.price)
            if info.vol is not None:
                self.asset_vol.labels(asset, run).set(info.vol)
        self._model(p, run, snap.model, snap.var, snap.es)
        if snap.kind != "daily":
            return
        for model, seconds in (update_seconds or {}).items():
            self.model_seconds.labels(model).observe(seconds)
        self.day_close_seconds.observe(snap.model_seconds)
        if snap.realized_return is not None:
            self.realized.labels(p, run).set(snap.realized_return)
        self._score(p, run, snap.model, snap.exception, snap.days_250d, snap.exceptions_250d)
        self._tests(p, run, snap.model, snap.kupiec_p, snap.traffic_light)
        for ch in snap.challengers.values():
            self._model(p, run, ch.model, ch.var, ch.es)
            self._score(p, run, ch.model, ch.exception, ch.days_250d, ch.exceptions_250d)
            self._tests(p, run, ch.model, ch.kupiec_p, ch.traffic_light)
        for horizon, vol in (snap.predicted_vol or {}).items():
            self.pred_vol.labels(p, run, horizon).set(vol)
        if snap.cnn_score is not None:
            self.cnn_score.labels(p, run).set(snap.cnn_score)
        if snap.avg_correlation is not None:
            self.avg_corr.labels(p, run).set(snap.avg_correlation)
        for level, per_asset in (snap.contributions or {}).items():
            for asset, value in per_asset.items():
                self.contribution.labels(p, run, asset, level).set(value)

    def _model(self, p: str, run: str, model: str, var: Any, es: Any) -> None:
        for level, value in (var or {}).items():
            self.var.labels(p, run, model, level).set(value)
        for level, value in (es or {}).items():
            self.es.labels(p, run, model, level).set(value)

    def _score(
        self, p: str, run: str, model: str, flags: Any, days_250d: int, exc_250d: Any
    ) -> None:
        days = self.days.labels(p, run, model)
        for level, n in (exc_250d or {}).items():
            self.exceptions.labels(p, run, model, level)  # export zeros
            if days_250d:
                self.exc_rate.labels(p, run, model, level).set(n / days_250d)
        if flags is None:
            return
        days.inc()
        for level, hit in flags.items():
            if hit:
                self.exceptions.labels(p, run, model, level).inc()

    def _tests(self, p: str, run: str, model: str, kupiec: Any, zone: str | None) -> None:
        for level, pvalue in (kupiec or {}).items():
            if pvalue is not None:
                self.kupiec.labels(p, run, model, level).set(pvalue)
        if zone is not None:
            self.traffic.labels(p, run, model).set(ZONES[zone])
