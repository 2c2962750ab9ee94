"""Prometheus metrics of the ingest stage, registered in a registry passed in.

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

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream_app.validate import Reason

__all__ = ["IngestMetrics"]

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
