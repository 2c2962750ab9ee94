"""The Faust application: topics, the bar table and the ``ingest`` agent.

``create_app(settings)`` builds everything (no module-level app, no globals): it is
safe to import this module without a broker. ``run_worker(settings)`` starts the
embedded broker when ``settings.kafka_bootstrap`` is None, serves the Prometheus
metrics and runs a Faust worker until SIGINT/SIGTERM.

Topics (names from :class:`~stream_app.settings.Settings`; all ``settings.partitions``
partitions, raw bytes in and out):

``ticks``      key = asset, value = a JSON tick (:class:`~stream_app.records.Tick`) or
               a bundle: a JSON array of ticks of that asset, in order.
``ticks.dlq``  key and value = the rejected message exactly as it arrived (for a bad
               item of a bundle: that item, re-encoded); headers ``reason`` (a
               :class:`~stream_app.validate.Reason` string), ``source_topic``,
               ``source_partition``, ``source_offset`` and, for a bundle item,
               ``bundle_index``.
``bars``       key = portfolio (``settings.portfolio``), value = a JSON
               :class:`~stream_app.records.Bar`: ``kind="bar"`` for a closed daily bar,
               ``kind="last"`` for a throttled snapshot of the open bar. Keying by
               portfolio puts all assets of one portfolio, in order, on one partition
               for the risk agent; the ``run_id`` field keeps replays apart.

The table ``ingest-state`` (changelogged, plain not windowed) holds per asset
``{run_id: cursor and open bar}``. Its changelog partition is chosen by the producer's
partitioner from the key (``use_partitioner=True``, raw UTF-8 asset keys), the same
murmur2 choice the tick producers make for the asset key, so the state of an asset
lives on the partition number of its ticks. Ticks whose Kafka key is not their asset
are dead-lettered (``key_mismatch``) to keep it so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import faust
from faust.transport.drivers import aiokafka as _faust_aiokafka
from prometheus_client import CollectorRegistry

from stream_app.ingest import BatchResult, IngestProcessor
from stream_app.metrics import IngestMetrics
from stream_app.settings import Settings

__all__ = ["IngestRuntime", "RiskmonApp", "create_app", "run_worker"]

log = logging.getLogger(__name__)

STATE_TABLE = "ingest-state"


# -- a consumer with a configurable fetch wait -----------------------------------------
# faust-streaming hard-codes fetch_max_wait_ms=1500 for worker consumers; the embedded
# broker does not end a waiting fetch early when data arrives, so that wait is added to
# latency (DESIGN.md). aiokafka reads the value when the consumer starts.
class _ConsumerThread(_faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = int(wait_ms)
        return consumer


class _Consumer(_faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(_faust_aiokafka.Transport):
    Consumer = _Consumer


class RiskmonApp(faust.App):
    """A ``faust.App`` whose worker consumer uses ``fetch_max_wait_ms``.

    Attributes
    ----------
    riskmon : IngestRuntime
        Settings, processor, metrics, topics and table of the ingest stage.
    fetch_max_wait_ms : int or None
    """

    fetch_max_wait_ms: int | None = None
    riskmon: IngestRuntime

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


# -- batch-local view of the table --------------------------------------------------
class _BatchStore(MutableMapping[str, dict[str, Any]]):
    """Reads through to the table; writes stay local until :meth:`flush`.

    One changelog message per touched asset per batch instead of one per tick.
    """

    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self.table = table
        self.local: dict[str, dict[str, Any]] = {}
        self.removed: set[str] = set()

    def __getitem__(self, key: str) -> dict[str, Any]:
        if key in self.local:
            return self.local[key]
        if key in self.removed:
            raise KeyError(key)
        value = self.table[key]
        if value is None:
            raise KeyError(key)
        self.local[key] = value
        return value

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key: str, value: dict[str, Any]) -> None:
        self.removed.discard(key)
        self.local[key] = value

    def __delitem__(self, key: str) -> None:
        self.local.pop(key, None)
        self.removed.add(key)

    def __iter__(self) -> Iterator[str]:
        seen = set()
        for key in self.local:
            seen.add(key)
            yield key
        for key in list(self.table.keys()):
            if key not in seen and key not in self.removed:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def flush(self, result: BatchResult) -> None:
        for key in result.touched:
            if key in self.local:
                self.table[key] = self.local[key]
        for key in result.deleted:
            if key in self.table:
                del self.table[key]


def _chunks_by_bytes(events: Any, max_bytes: int) -> Iterator[list[Any]]:
    """Split a batch so that no chunk holds much more than ``max_bytes`` of values
    (bundles make one message worth many ticks; a chunk bounds the loop's stall)."""
    chunk: list[Any] = []
    size = 0
    for event in events:
        chunk.append(event)
        size += len(event.value) if isinstance(event.value, bytes | bytearray) else 0
        if size >= max_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


class IngestRuntime:
    """What the ``ingest`` agent needs, in one object (tests replace :meth:`publish`)."""

    def __init__(
        self,
        app: RiskmonApp,
        settings: Settings,
        metrics: IngestMetrics,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.processor = IngestProcessor.from_settings(settings)
        partitions = settings.partitions
        self.ticks_topic = app.topic(
            settings.topic_ticks,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
        )
        self.dlq_topic = app.topic(
            settings.topic_dlq,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
        )
        self.bars_topic = app.topic(
            settings.topic_bars,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
        )
        self.table = app.Table(
            STATE_TABLE,
            default=None,
            partitions=partitions,
            key_type=str,
            use_partitioner=True,
            help="Per asset: {run_id: ingest cursor and open daily bar}.",
        )
        # Raw UTF-8 keys (Faust derives JSON from key_type=str), so that the producer's
        # partitioner puts an asset's state on the partition number of its ticks.
        self.table.key_serializer = "raw"
        self.table.changelog_topic = self.table._new_changelog_topic()
        self._last_sweep = time.monotonic()

    def handle_batch(self, events: list[Any]) -> BatchResult:
        """Validate and aggregate one batch of Faust events (synchronous, no I/O)."""
        store = _BatchStore(self.table)
        messages = [(e.message.key, e.value, e.message.partition, e.message.offset) for e in events]
        result = self.processor.process(messages, store)
        now = time.monotonic()
        if now - self._last_sweep >= self.settings.evict_every_s:
            self._last_sweep = now
            self.processor.evict(store, result)
        store.flush(result)
        return result

    async def publish(self, result: BatchResult) -> None:
        """Send dead letters, closed bars and last prices of one batch."""
        topic_name = self.settings.topic_ticks.encode()
        for dead in result.dead:
            headers = [
                ("reason", dead.reason.value.encode()),
                ("source_topic", topic_name),
                ("source_partition", str(dead.partition).encode()),
                ("source_offset", str(dead.offset).encode()),
            ]
            if dead.bundle_index is not None:
                headers.append(("bundle_index", str(dead.bundle_index).encode()))
            await self.dlq_topic.send(key=dead.key, value=dead.value, headers=headers)
        for bar in result.bars:
            await self.bars_topic.send(key=bar.portfolio.encode(), value=bar.encode())
        for bar in result.lasts:
            await self.bars_topic.send(key=bar.portfolio.encode(), value=bar.encode())

    def count(self, result: BatchResult, seconds: float) -> None:
        m = self.metrics
        m.ticks_in.inc(result.n_in)
        m.ticks_ok.inc(result.n_ok)
        for dead in result.dead:
            m.dlq.labels(reason=dead.reason.value).inc()
        for bar in result.bars:
            m.bars_out.labels(closed_by=bar.closed_by).inc()
        m.lasts_out.inc(len(result.lasts))
        m.batch_size.observe(result.n_in)
        m.batch_seconds.observe(seconds)
        with contextlib.suppress(Exception):
            m.state_keys.set(len(self.table))

    def log_dead(self, result: BatchResult) -> None:
        """Log each reason once per batch with one example's context (not every tick)."""
        seen: dict[str, int] = {}
        for dead in result.dead:
            seen[dead.reason.value] = seen.get(dead.reason.value, 0) + 1
        for reason, n in seen.items():
            first = next(d for d in result.dead if d.reason.value == reason)
            log.warning(
                "dead-lettered %d tick(s) as %s; first at partition %s offset %s: %r",
                n,
                reason,
                first.partition,
                first.offset,
                first.value[:200],
            )


def create_app(
    settings: Settings | None = None,
    *,
    registry: CollectorRegistry | None = None,
) -> RiskmonApp:
    """Build the Faust app with its topics, table and ``ingest`` agent.

    Parameters
    ----------
    settings : Settings or None
        ``None`` reads the environment. ``kafka_bootstrap`` must be set (the
        embedded broker is started by :func:`run_worker`, not here).
    registry : CollectorRegistry or None
        Where the metrics go; ``None`` creates a private one (``app.riskmon.metrics``).
    """
    settings = settings if settings is not None else Settings()
    if settings.kafka_bootstrap is None:
        raise ValueError(
            "settings.kafka_bootstrap is None: start the embedded broker first "
            "(run_worker does) or set RISKMON_KAFKA_BOOTSTRAP=host:port"
        )
    data_dir = settings.data_dir or tempfile.mkdtemp(prefix="riskmon-faust-")
    app = RiskmonApp(
        settings.app_id,
        broker=[f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",")],
        store="memory://",
        datadir=str(data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.broker_session_timeout,
        broker_heartbeat_interval=settings.broker_heartbeat_interval,
        broker_rebalance_timeout=settings.broker_rebalance_timeout,
        broker_request_timeout=settings.broker_request_timeout,
        web_enabled=False,
        autodiscover=False,
        # Faust's own producer: key-hash partitioning (aiokafka's default murmur2).
        producer_acks=-1,
        producer_linger_ms=1,
    )
    app.fetch_max_wait_ms = settings.consumer_fetch_max_wait_ms
    metrics = IngestMetrics(registry if registry is not None else CollectorRegistry())
    rt = app.riskmon = IngestRuntime(app, settings, metrics)

    @app.agent(rt.ticks_topic, name="ingest", concurrency=1)
    async def ingest(stream: faust.StreamT) -> Any:
        """Validate ticks, build daily bars, dead-letter the rest (one batch at a time)."""
        async for events in stream.take_events(
            settings.ingest_batch_max, within=settings.ingest_batch_within
        ):
            summary = dict.fromkeys(("n_in", "n_ok", "n_dead", "n_bars", "n_lasts"), 0)
            for chunk in _chunks_by_bytes(events, settings.ingest_chunk_bytes):
                t0 = time.perf_counter()
                result = rt.handle_batch(chunk)
                await rt.publish(result)
                rt.count(result, time.perf_counter() - t0)
                if result.dead:
                    rt.log_dead(result)
                summary["n_in"] += result.n_in
                summary["n_ok"] += result.n_ok
                summary["n_dead"] += len(result.dead)
                summary["n_bars"] += len(result.bars)
                summary["n_lasts"] += len(result.lasts)
                await asyncio.sleep(0)  # let heartbeats and fetches run between chunks
            yield summary

    rt.agent = ingest
    return app


def run_worker(
    settings: Settings | None = None,
    *,
    registry: CollectorRegistry | None = None,
    loglevel: str = "info",
) -> None:
    """Run one ingest worker until SIGINT/SIGTERM (blocking; exits the process).

    Starts the embedded broker when ``settings.kafka_bootstrap`` is None (it stops with
    the worker) and serves Prometheus metrics on ``metrics_host:metrics_port``.
    """
    from prometheus_client import start_http_server

    from stream_app.embedded import EmbeddedKafka

    settings = settings if settings is not None else Settings()
    registry = registry if registry is not None else CollectorRegistry()
    with contextlib.ExitStack() as stack:
        if settings.kafka_bootstrap is None:
            kafka = EmbeddedKafka(
                settings.embedded_host,
                log_dir=settings.log_dir,
                start_timeout=settings.embedded_start_timeout,
            )
            stack.enter_context(kafka)
            settings = settings.model_copy(update={"kafka_bootstrap": kafka.bootstrap})
            log.info("embedded broker on %s (log %s)", kafka.bootstrap, kafka.log_path)
        app = create_app(settings, registry=registry)
        server, _thread = start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=registry
        )
        stack.callback(server.shutdown)
        log.info(
            "metrics on http://%s:%s/metrics; settings %s",
            settings.metrics_host,
            server.server_port,
            settings.safe_dict(),
        )
        worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False)
        with contextlib.suppress(SystemExit):
            worker.execute_from_commandline()


def _main() -> None:  # pragma: no cover - `python -m stream_app.app`
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        run_worker()


if __name__ == "__main__":  # pragma: no cover
    _main()
