"""The Faust application: topics, the bar table and the ``ingest`` agent.

``create_app(settings)`` builds everything (no module-level app, no globals): it is
safe to import this module without a broker. ``run_worker(settings)`` starts the
embedded broker when ``settings.kafka_bootstrap`` is None, serves the Prometheus
metrics and runs a Faust worker until SIGINT/SIGTERM.

Topics (names from :class:`~stream_app.settings.Settings`; all ``settings.partitions``
partitions, raw bytes in and out):

``ticks``      key = asset, value = a JSON tick (:class:`~stream_app.records.Tick`) or
               a bundle: a JSON array of ticks of that asset, in order. The ``ingest``
               agent gets the messages one fetch brought from a partition as one
               event (a record run, :mod:`stream_app.consumer`).
``ticks.dlq``  key and value = the rejected message exactly as it arrived (for a bad
               item of a bundle: that item, re-encoded); headers ``reason`` (a
               :class:`~stream_app.validate.Reason` string), ``source_topic``,
               ``source_partition``, ``source_offset`` and, for a bundle item,
               ``bundle_index``.
``bars``       key = portfolio (``settings.portfolio``), value = a JSON array of
               :class:`~stream_app.records.Bar` (one message per portfolio and ingest
               batch, in order; :meth:`~stream_app.records.Bar.decode_many` also takes a
               single bar object): ``kind="bar"`` for a closed daily bar,
               ``kind="last"`` for a throttled snapshot of the open bar. Keying by
               portfolio puts all assets of one portfolio, in order, on one partition
               for the risk agent; the ``run_id`` field keeps replays apart.

``risk``       key = portfolio, value = a JSON :class:`~stream_app.records.RiskSnapshot`
               (daily snapshots as each trading day closes, throttled intraday ones).

With portfolios configured (:class:`StreamSettings`: ``portfolios_file``, default the
shipped ``stream_app/portfolios/demo.yaml``), ingest sends each bar once per portfolio
that holds its asset, keyed by that portfolio; bars of assets outside every portfolio
go under ``settings.portfolio``.

The table ``ingest-state`` (changelogged, plain not windowed) holds per asset
``{run_id: cursor and open bar}``. Its changelog partition is chosen by the producer's
partitioner from the key (``use_partitioner=True``, raw UTF-8 asset keys), the same
murmur2 choice the tick producers make for the asset key, so the state of an asset
lives on the partition number of its ticks. Ticks whose Kafka key is not their asset
are dead-lettered (``key_mismatch``) to keep it so.

The ``risk`` agent (concurrency 1) reads ``bars`` in batches and runs
:class:`~stream_app.risk.RiskProcessor`; its table ``risk-state`` (changelogged, plain)
holds per portfolio ``{run: PortfolioRunState}`` - models, windows, backtest counters,
written when a day closes - and ``risk-live`` the small part that changes with every
bar (``{run: LiveState}``: the open day's bars, last prices, counters), written every
batch (key = portfolio, raw
UTF-8; values pickled with artifact references and read back by a restricted unpickler;
partitioned like the ``bars`` key so that the state lives on the partition of its
bars). A batch that may close a day runs in a one-thread executor so that model updates
never stall the event loop (heartbeats, fetches). Snapshots go to topic ``risk``, to
Redis (:class:`~stream_app.sinks.RedisRiskSink`, when ``redis_url`` is set), to heatmap
files (when ``output_dir`` is set) and to the Prometheus metrics of
:class:`~stream_app.metrics.RiskMetrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faust
from faust.serializers import codecs as faust_codecs
from prometheus_client import CollectorRegistry
from pydantic import Field

from models.exceptions import DataError
from stream_app.consumer import RecordRuns, RecordRunSchema, Transport, event_records
from stream_app.faust_tables import raw_keyed_table
from stream_app.ingest import BatchResult, IngestProcessor
from stream_app.metrics import IngestMetrics, RiskMetrics
from stream_app.offsets import OffsetLossMetrics, OffsetMonitor
from stream_app.records import Bar, RiskSnapshot
from stream_app.risk import (
    DayOutput,
    PortfolioConfig,
    PortfolioRunState,
    RiskProcessor,
    dumps_state,
    evict_runs,
    load_portfolio_configs,
    loads_state,
)
from stream_app.settings import Settings
from stream_app.stalls import FetchStallWatch, StallMetrics

__all__ = [
    "DEMO_PORTFOLIOS",
    "IngestRuntime",
    "RiskRuntime",
    "RiskmonApp",
    "StreamSettings",
    "create_app",
    "load_portfolios_for",
    "run_worker",
]

log = logging.getLogger(__name__)

STATE_TABLE = "ingest-state"
RISK_TABLE = "risk-state"
RISK_LIVE_TABLE = "risk-live"
#: The portfolio file shipped with the package (used when none is configured).
DEMO_PORTFOLIOS = Path(__file__).resolve().parent / "portfolios" / "demo.yaml"


class _StateCodec(faust_codecs.Codec):
    """Table values of ``risk-state``: :func:`stream_app.risk.dumps_state` (pickle with
    artifact references) read back by a restricted unpickler."""

    def _dumps(self, obj: Any) -> bytes:
        return dumps_state(obj)

    def _loads(self, s: bytes) -> Any:
        return loads_state(s)


STATE_CODEC = "riskmon_state"
faust_codecs.register(STATE_CODEC, _StateCodec())


class StreamSettings(Settings):
    """:class:`~stream_app.settings.Settings` plus the risk stage's own (``RISKMON_`` env).

    ``create_app`` accepts plain ``Settings`` too (these fields then take their
    environment values or defaults).
    """

    portfolios_file: Path | None = Field(
        None, description="Portfolio YAML; None = the shipped stream_app/portfolios/demo.yaml."
    )
    champion: str | None = Field(None, description="Champion model for every portfolio.")
    challengers: tuple[str, ...] | None = Field(
        None, description="Challenger models for every portfolio (JSON list)."
    )
    lstm_artifact: Path | None = Field(None, description="lstm_copula artifact; None = shipped.")
    cnn_artifact: Path | None = Field(None, description="CNN artifact; None = shipped.")
    output_dir: Path | None = Field(None, description="Heatmap PNG files go under it.")
    intraday_interval_s: float = Field(
        1800.0, description="Event-time seconds between intraday snapshots (0 = every price)."
    )
    risk_batch_max: int = Field(500, ge=1, description="Max bars per risk batch.")
    risk_batch_within: float = Field(
        0.005, gt=0, description="Max seconds to fill a risk batch (adds to latency)."
    )
    risk_executor: bool = Field(True, description="Run day closes in a worker thread.")
    publish_ack_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Ingest resends a batch whose bars the broker has not acked in this time.",
    )
    redis_history_len: int = Field(5000, ge=1, description="MAXLEN ~ of snapshot histories.")
    heatmap_ttl_s: float = Field(0.0, ge=0, description="Expiry of heatmap keys; 0 = none.")
    max_runs_per_portfolio: int = Field(
        8, ge=1, description="Replay runs kept per portfolio (least recently active dropped)."
    )
    lag_interval_s: float = Field(5.0, gt=0, description="Seconds between consumer-lag updates.")


def _stream_settings(settings: Settings) -> StreamSettings:
    if isinstance(settings, StreamSettings):
        return settings
    fields = {k: getattr(settings, k) for k in Settings.model_fields}
    return StreamSettings(**fields)


def load_portfolios_for(settings: Settings) -> list[PortfolioConfig]:
    """The portfolios a worker runs: ``portfolios_file`` (or the shipped demo file) with
    the ``champion``/``challengers`` overrides of the settings applied."""
    s = _stream_settings(settings)
    configs = load_portfolio_configs(s.portfolios_file or DEMO_PORTFOLIOS)
    changes: dict[str, Any] = {}
    if s.champion:
        changes["champion"] = s.champion
    if s.challengers is not None:
        changes["challengers"] = tuple(s.challengers)
    if changes:
        configs = [PortfolioConfig(**{**dataclasses.asdict(c), **changes}) for c in configs]
    return configs


class RiskmonApp(faust.App):
    """A ``faust.App`` whose worker consumer is :class:`stream_app.consumer.Consumer`.

    Attributes
    ----------
    riskmon : IngestRuntime
        Settings, processor, metrics, topics and table of the ingest stage.
    riskmon_risk : RiskRuntime
        The same for the risk stage.
    fetch_max_wait_ms : int or None
    """

    fetch_max_wait_ms: int | None = None
    riskmon: IngestRuntime
    riskmon_risk: RiskRuntime

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)


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


Record = tuple[bytes | None, Any, int, int]


def _chunks_by_bytes(records: Iterable[Record], max_bytes: int) -> Iterator[list[Record]]:
    """Split a batch of ``(key, value, partition, offset)`` records so that no chunk
    holds much more than ``max_bytes`` of values (a batch holds runs of records, and
    bundles make one record worth many ticks; a chunk bounds the loop's stall)."""
    chunk: list[Record] = []
    size = 0
    for record in records:
        chunk.append(record)
        value = record[1]
        size += len(value) if isinstance(value, bytes | bytearray) else 0
        if size >= max_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


async def await_acks(sent: list[Any], timeout: float) -> None:
    """Wait for the broker's acks of Faust sends (each returns a future of its ack,
    acks=-1: all replicas); raise the first delivery error, or TimeoutError for sends
    not acked within ``timeout`` seconds."""
    acks = [asyncio.ensure_future(f) for f in sent if inspect.isawaitable(f)]
    if not acks:
        return
    # asyncio.wait, not wait_for: a timeout must not cancel the producer's futures
    done, pending = await asyncio.wait(acks, timeout=timeout)
    if pending:
        raise TimeoutError(f"{len(pending)} of {len(acks)} sends not acked within {timeout} s")
    for f in done:
        f.result()  # raises the delivery error, if any


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
        # a partition consumed behind another must not look idle (see IngestProcessor)
        self.processor.evict_idle_wall_s = 60.0
        partitions = settings.partitions
        # a fetch's records of a partition arrive as one event (stream_app.consumer)
        self.runs = RecordRuns(frozenset({settings.topic_ticks}), settings.ingest_run_max)
        self.ticks_topic = app.topic(
            settings.topic_ticks,
            schema=RecordRunSchema(),
            partitions=partitions,
            maxsize=settings.ingest_batch_max,  # events buffered ahead of the agent
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
        # raw keys: an asset's state lives on the partition number of its ticks
        self.table = raw_keyed_table(
            app,
            STATE_TABLE,
            partitions=partitions,
            help="Per asset: {run_id: ingest cursor and open daily bar}.",
        )
        self._last_sweep = time.monotonic()
        #: asset -> portfolios whose risk stream gets its bars (others: settings.portfolio)
        self.routes: dict[str, tuple[str, ...]] = {}

    def handle_batch(self, messages: list[Record]) -> tuple[BatchResult, _BatchStore]:
        """Validate and aggregate one batch of ``(key, value, partition, offset)``
        records (synchronous, no I/O).

        The state changes stay in the returned store: the agent writes them to the
        table (:meth:`_BatchStore.flush`) only once :meth:`publish` has the batch's
        bars on the broker, so a crash in between replays the ticks and sends the
        bars again (at least once; the risk stage ignores a day it has counted)
        instead of restoring a state that says they were sent when they were not.
        """
        store = _BatchStore(self.table)
        result = self.processor.process(messages, store)
        now = time.monotonic()
        if now - self._last_sweep >= self.settings.evict_every_s:
            self._last_sweep = now
            self.processor.evict(store, result)
        return result, store

    async def publish(self, result: BatchResult) -> None:
        """Send dead letters, closed bars and last prices of one batch; return once acked.

        A failed delivery (the broker away longer than the producer's own retries) is
        retried with backoff, the whole batch again, until it succeeds: the batch's
        state is written and its ticks acknowledged only after that, so nothing is
        lost and a copy sent twice is harmless downstream (at least once).
        """
        delay = 0.5
        while True:
            try:
                await self._send_all(result)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.publish_retries.inc()
                log.warning(
                    "publishing an ingest batch failed (%r); retrying in %.1f s", exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(2 * delay, 5.0)

    #: Bars per message on topic ``bars`` (a batch's bars of one portfolio go as one
    #: JSON array, split at this size to stay far below the broker's message limit).
    bars_per_message = 256

    def _bars_by_portfolio(self, result: BatchResult) -> dict[str, list[Bar]]:
        """The batch's closed bars and last prices per portfolio, in the order its ticks
        made them (:attr:`BatchResult.emitted`): each portfolio's risk stream sees its
        assets' prices as they moved in event time, whatever the batch boundaries."""
        out: dict[str, list[Bar]] = {}
        for bar in result.emitted:
            routes = self.routes.get(bar.asset)
            if not routes:
                out.setdefault(bar.portfolio, []).append(bar)
                continue
            for portfolio in routes:
                out.setdefault(portfolio, []).append(bar.for_portfolio(portfolio))
        return out

    async def _send_all(self, result: BatchResult) -> None:
        topic_name = self.settings.topic_ticks.encode()
        sent: list[Any] = []
        for dead in result.dead:
            headers = [
                ("reason", dead.reason.value.encode()),
                ("source_topic", topic_name),
                ("source_partition", str(dead.partition).encode()),
                ("source_offset", str(dead.offset).encode()),
            ]
            if dead.bundle_index is not None:
                headers.append(("bundle_index", str(dead.bundle_index).encode()))
            sent.append(await self.dlq_topic.send(key=dead.key, value=dead.value, headers=headers))
        for portfolio, bars in self._bars_by_portfolio(result).items():
            for i in range(0, len(bars), self.bars_per_message):
                value = Bar.encode_many(bars[i : i + self.bars_per_message])
                sent.append(await self.bars_topic.send(key=portfolio.encode(), value=value))
        await await_acks(sent, self.settings.publish_ack_timeout_s)

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


def _live_marks(st: PortfolioRunState) -> tuple[Any, ...]:
    """What of a :class:`~stream_app.risk.LiveState` must survive a crash."""
    return (st.open_day, len(st.pending), st.seq, st.last_intraday_ts, st.n_late)


SnapshotListener = Callable[[list[RiskSnapshot]], Awaitable[None]]


class RiskRuntime:
    """What the ``risk`` agent needs, in one object.

    Attributes
    ----------
    processor : RiskProcessor
    table : faust.Table
        ``risk-state``: portfolio -> ``{run label: PortfolioRunState}``.
    risk_topic : faust topic
    sink : RedisRiskSink or None
        Created when the agent starts (``redis_url`` set).
    listeners : list of async callables
        Called with each batch's snapshots after they are published (in-process
        consumers such as the alert engine may register here).
    """

    def __init__(
        self,
        app: RiskmonApp,
        settings: StreamSettings,
        metrics: RiskMetrics,
        processor: RiskProcessor,
        bars_topic: Any,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.processor = processor
        self.bars_topic = bars_topic
        self.risk_topic = app.topic(
            settings.topic_risk,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
        )
        # raw keys: partitioned like the bars key; values: models and numpy arrays
        self.table = raw_keyed_table(
            app,
            RISK_TABLE,
            partitions=settings.partitions,
            help="Per portfolio: {run: risk state (models, window, backtest counters)}.",
            value_serializer=STATE_CODEC,
        )
        self.live_table = raw_keyed_table(
            app,
            RISK_LIVE_TABLE,
            partitions=settings.partitions,
            help="Per portfolio: {run: open day, last prices, snapshot counter}.",
            value_serializer=STATE_CODEC,
        )
        self.executor: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(1, thread_name_prefix="riskmon-risk")
            if settings.risk_executor
            else None
        )
        self.sink: Any = None
        self.listeners: list[SnapshotListener] = []
        self.n_snapshots = 0
        self.n_bad = 0
        #: (topic, partition) label sets of riskmon_consumer_lag shown now
        self._lag_labels: set[tuple[str, str]] = set()

    async def start_sinks(self) -> None:
        """Create the Redis client (at start-up, in the worker's loop)."""
        if self.sink is not None or not self.settings.redis_url:
            return
        import redis.asyncio as aioredis

        from stream_app.sinks import RedisRiskSink

        pw = self.settings.redis_password
        client = aioredis.from_url(
            self.settings.redis_url,
            password=pw.get_secret_value() if pw is not None else None,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
        )
        self.sink = RedisRiskSink(
            client,
            history_len=self.settings.redis_history_len,
            heatmap_ttl_s=self.settings.heatmap_ttl_s,
            errors=self.metrics.sink_errors,
        )

    def decode(self, events: list[Any]) -> dict[tuple[str, str], list[Bar]]:
        """Bars of a batch grouped by (portfolio, run), in order; bad ones counted."""
        groups: dict[tuple[str, str], list[Bar]] = {}
        known = self.processor.portfolios
        for event in events:
            try:
                bars = Bar.decode_many(event.value)
            except DataError:
                self.n_bad += 1
                continue
            for bar in bars:
                if bar.portfolio in known:
                    groups.setdefault((bar.portfolio, bar.run_id), []).append(bar)
        return groups

    async def handle(self, events: list[Any]) -> list[DayOutput]:
        """Run one batch of ``bars`` events through the processor, publish, then write
        the state.

        The snapshots are on the broker (acked) before the tables get the state that
        says their days are closed: a crash in between replays the bars and publishes
        those days again (an identical copy), where the other order could restore a
        closed day whose snapshot was never sent, and that day would be lost.
        """
        wall = time.time_ns()
        outputs: list[DayOutput] = []
        loop = asyncio.get_running_loop()
        runs_of: dict[str, dict[str, Any]] = {}
        lives_of: dict[str, dict[str, Any]] = {}
        write_runs: set[str] = set()
        write_lives: set[str] = set()
        for (portfolio, run_id), bars in self.decode(events).items():
            label = run_id or "live"
            if portfolio not in runs_of:  # several runs of one portfolio share its entry
                runs_of[portfolio] = dict(self.table.get(portfolio) or {})
                lives_of[portfolio] = dict(self.live_table.get(portfolio) or {})
            runs, lives = runs_of[portfolio], lives_of[portfolio]
            st = self.processor.state_for(runs, portfolio, run_id)
            fresh = runs.get(label) is not st
            if fresh or st.live is None:
                st.attach_live(lives.get(label))  # restored from the changelogs
            late, closed = st.n_late, st.last_closed_day
            marks = _live_marks(st)
            if self.executor is not None and self.processor.needs_models(bars):
                outs = await loop.run_in_executor(self.executor, self._process, st, bars, wall)
            else:
                outs = self._process(st, bars, wall)
            if st.n_late > late:
                self.metrics.late_bars.inc(st.n_late - late)
            if fresh or st.last_closed_day != closed:  # the heavy part: at day closes only
                runs[label] = st
                for run in evict_runs(runs, label, self.settings.max_runs_per_portfolio):
                    lives.pop(run, None)
                    log.info("risk state of run %s evicted (over %d runs)", run, len(runs))
                write_runs.add(portfolio)
            if fresh or _live_marks(st) != marks:
                # the open day's bars, the snapshot counter or the throttle moved; last
                # prices alone are not written (the next tick refreshes them)
                lives[label] = st.live
                write_lives.add(portfolio)
            outputs.extend(outs)
        if outputs:
            # only a batch that closes a day waits for the acks: an intraday snapshot lost
            # in a crash is not replayed, a day is
            await self.publish(outputs, wait_acks=bool(write_runs))
        for portfolio in write_runs:
            self.table[portfolio] = runs_of[portfolio]
        for portfolio in write_lives:
            self.live_table[portfolio] = lives_of[portfolio]
        return outputs

    async def _send_snapshots(
        self, outputs: list[DayOutput], raws: list[bytes], wait_acks: bool = True
    ) -> None:
        """Send the snapshots to topic ``risk``; with ``wait_acks``, wait for the broker's
        acks, and retry a failed delivery, all of them again, with backoff until it
        succeeds (an identical copy sent twice is harmless: at least once)."""
        delay = 0.5
        while True:
            try:
                sent = [
                    await self.risk_topic.send(key=out.snapshot.portfolio.encode(), value=raw)
                    for out, raw in zip(outputs, raws, strict=True)
                ]
                if not wait_acks:
                    return
                await await_acks(sent, self.settings.publish_ack_timeout_s)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.sink_errors.labels(sink="kafka").inc()
                log.warning("publishing risk snapshots failed (%r); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 5.0)

    def _process(self, st: PortfolioRunState, bars: list[Bar], wall: int) -> list[DayOutput]:
        return self.processor.process(st, bars, wall_ns=wall)

    async def publish(self, outputs: list[DayOutput], wait_acks: bool = True) -> None:
        """Snapshots to topic ``risk``, heatmap files, Redis, metrics and listeners."""
        from stream_app.sinks import heatmap_png_fast, write_heatmap_file

        raws = [out.snapshot.encode() for out in outputs]
        await self._send_snapshots(outputs, raws, wait_acks)
        pngs: list[bytes | None] = []
        for out in outputs:
            snap = out.snapshot
            png = None
            if out.heatmap is not None and (snap.heatmap_key or snap.heatmap_path):
                png = heatmap_png_fast(out.heatmap)
                if snap.heatmap_path:
                    try:
                        write_heatmap_file(snap.heatmap_path, png)
                    except OSError as exc:
                        self.metrics.sink_errors.labels(sink="file").inc()
                        log.warning("cannot write heatmap %s: %s", snap.heatmap_path, exc)
            pngs.append(png)
        snaps = [o.snapshot for o in outputs]
        if self.sink is not None:
            await self.sink.write(snaps, pngs, raws)
        now = time.time_ns()
        for out in outputs:
            self.metrics.observe(out.snapshot, out.update_seconds)
            if out.snapshot.source_wall_ns:
                self.metrics.latency.observe(max(now - out.snapshot.source_wall_ns, 0) / 1e9)
        self.n_snapshots += len(outputs)
        for listener in self.listeners:
            try:
                await listener(snaps)
            except Exception:  # a listener never stops the risk stream
                log.exception("snapshot listener %r failed", listener)

    def update_lag(self, app: RiskmonApp) -> None:
        """``riskmon_consumer_lag{topic,partition}`` of the assigned partitions; the
        series of a partition this worker no longer holds (a rebalance gave it to
        another worker) is removed, not left at its last value."""
        consumer = app.consumer
        read = consumer._read_offset
        shown: set[tuple[str, str]] = set()
        for tp in consumer.assignment():
            try:
                hw = consumer.highwater(tp)
            except Exception:
                continue
            if hw is None:
                continue
            pos = read.get(tp)
            lag = hw - (pos + 1 if pos is not None else 0)
            labels = (tp.topic, str(tp.partition))
            self.metrics.lag.labels(*labels).set(max(lag, 0))
            shown.add(labels)
        for labels in self._lag_labels - shown:
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(*labels)
        self._lag_labels = shown


def _attach_alerts(app: RiskmonApp, settings: StreamSettings, registry: CollectorRegistry) -> None:
    """Let the alerts stage (``stream_app.alerts_sink.attach_alerts``) join the app, when
    that module exists."""
    for module in ("stream_app.alerts_sink", "stream_app.alerts"):
        try:
            mod = __import__(module, fromlist=["attach_alerts"])
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        attach = getattr(mod, "attach_alerts", None)
        if attach is not None:
            attach(app, settings, registry)
            return


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
    settings = _stream_settings(settings if settings is not None else StreamSettings())
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
    registry = registry if registry is not None else CollectorRegistry()
    metrics = IngestMetrics(registry)
    app.riskmon_offsets = OffsetMonitor(OffsetLossMetrics(registry))  # broker restarts
    app.riskmon_stalls = FetchStallWatch(  # partitions the broker no longer serves
        StallMetrics(registry),
        base_wait_ms=settings.consumer_fetch_max_wait_ms,
        max_wait_cap_ms=max(2000, settings.consumer_fetch_max_wait_ms),
    )
    rt = app.riskmon = IngestRuntime(app, settings, metrics)
    app.riskmon_runs = rt.runs
    processor = RiskProcessor(
        load_portfolios_for(settings),
        intraday_interval_s=settings.intraday_interval_s,
        heatmap_dir=settings.output_dir,
        heatmap_redis=bool(settings.redis_url),
        model_factory=_factory(settings),
    )
    rt.routes = processor.routes
    rr = app.riskmon_risk = RiskRuntime(
        app, settings, RiskMetrics(registry), processor, rt.bars_topic
    )

    @app.agent(rt.ticks_topic, name="ingest", concurrency=1)
    async def ingest(stream: faust.StreamT) -> Any:
        """Validate ticks, build daily bars, dead-letter the rest (one batch at a time)."""
        async for events in stream.take_events(
            settings.ingest_batch_max, within=settings.ingest_batch_within
        ):
            summary = dict.fromkeys(("n_in", "n_ok", "n_dead", "n_bars", "n_lasts"), 0)
            for chunk in _chunks_by_bytes(event_records(events), settings.ingest_chunk_bytes):
                t0 = time.perf_counter()
                result, store = rt.handle_batch(chunk)
                await rt.publish(result)  # on the broker before the state says so
                store.flush(result)
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

    @app.agent(rr.bars_topic, name="risk", concurrency=1)
    async def risk(stream: faust.StreamT) -> Any:
        """Close trading days, run the models, publish risk snapshots (one batch at a time)."""
        await rr.start_sinks()
        async for events in stream.take_events(
            settings.risk_batch_max, within=settings.risk_batch_within
        ):
            outputs = await rr.handle(events)
            yield len(outputs)

    rr.agent = risk

    @app.task
    async def loop_lag() -> None:
        """Measure event-loop stalls: how late a 10 ms sleep wakes up."""
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(0.01)
            metrics.loop_lag.observe(max(0.0, loop.time() - t0 - 0.01))

    @app.timer(interval=settings.lag_interval_s)
    async def consumer_lag() -> None:
        with contextlib.suppress(Exception):
            rr.update_lag(app)

    _attach_alerts(app, settings, registry)
    return app


def _factory(settings: StreamSettings) -> Callable[[str, Any, int], Any]:
    from stream_app.risk import build_model

    artifacts = {
        "lstm_copula": str(settings.lstm_artifact) if settings.lstm_artifact else None,
        "cnn": str(settings.cnn_artifact) if settings.cnn_artifact else None,
    }

    def factory(name: str, weights: Any, seed: int) -> Any:
        return build_model(name, weights, seed=seed, artifacts=artifacts)

    return factory


def run_worker(
    settings: Settings | None = None,
    *,
    registry: CollectorRegistry | None = None,
    loglevel: str = "info",
) -> None:
    """Run one worker (agents ``ingest`` and ``risk``) until SIGINT/SIGTERM (blocking).

    Starts the embedded broker when ``settings.kafka_bootstrap`` is None (it stops with
    the worker); otherwise fails with
    :class:`~producers.kafka_out.BrokerUnavailable` when no broker answers there within
    5 s. Creates the stream's topics the broker lacks (:func:`ensure_stream_topics`).
    Serves Prometheus metrics on ``metrics_host:metrics_port``. Several
    workers with the same ``app_id`` and topics share the partitions.
    """
    from stream_app.embedded import EmbeddedKafka
    from stream_app.heap import keep_heap

    keep_heap()
    settings = _stream_settings(settings if settings is not None else StreamSettings())
    if not settings.redis_url:
        log.warning("RISKMON_REDIS_URL is not set: risk snapshots go to Kafka and metrics only")
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
        created = ensure_stream_topics(settings)
        if created:
            log.info("created topics %s (%d partitions)", created, settings.partitions)
        serve_worker(create_app(settings, registry=registry), settings, registry, loglevel)


def ensure_stream_topics(settings: Settings) -> list[str]:
    """Create the stream's topics (ticks, DLQ, bars, risk) that the broker lacks, with
    ``settings.partitions`` partitions; return those created.

    Faust declares only its internal topics (changelogs, assignor): a send to a topic
    the broker does not know (one that does not create topics on demand, like the
    embedded broker) fails, and the agent crash-loops on its first batch. Fails with
    :class:`~producers.kafka_out.BrokerUnavailable`, naming the address, when no broker
    answers at ``settings.kafka_bootstrap`` within 5 s (Faust would log the connection
    error and exit 0).
    """
    from producers.kafka_out import ensure_topics

    if settings.kafka_bootstrap is None:
        raise ValueError("settings.kafka_bootstrap is None")
    return ensure_topics(settings.kafka_bootstrap, settings.stream_topics, settings.partitions)


def serve_worker(
    app: RiskmonApp, settings: Settings, registry: CollectorRegistry, loglevel: str = "info"
) -> None:
    """Serve ``registry`` on ``metrics_host:metrics_port`` and run ``app`` as a Faust worker
    until SIGINT/SIGTERM (blocking), its start-up objects frozen out of the cycle collector
    (:func:`~stream_app.heap.freeze_startup_objects`). The metrics server stops with it."""
    from prometheus_client import start_http_server

    from stream_app.heap import freeze_startup_objects

    server, _thread = start_http_server(
        settings.metrics_port, addr=settings.metrics_host, registry=registry
    )
    log.info(
        "%s: metrics on http://%s:%s/metrics; settings %s",
        app.conf.id,
        settings.metrics_host,
        server.server_port,
        settings.safe_dict(),
    )
    try:
        worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False)
        log.info("froze %d start-up objects out of the cycle collector", freeze_startup_objects())
        with contextlib.suppress(SystemExit):
            worker.execute_from_commandline()
    finally:
        server.shutdown()


def _main() -> None:  # pragma: no cover - `python -m stream_app.app`
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        run_worker()


if __name__ == "__main__":  # pragma: no cover
    _main()
