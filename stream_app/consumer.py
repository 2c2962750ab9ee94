"""The worker's Kafka consumer: faust-streaming's, with a configurable fetch wait.

``fetch_max_wait_ms``: Faust hard-codes 1500 ms for worker consumers; the
  embedded broker does not end a waiting fetch early when data arrives, so
  that wait is added to latency (DESIGN.md). aiokafka reads the value when
the consumer starts. See the note in :class:`Consumer` on the delivery loop.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as _faust_aiokafka

from stream_app.endoffsets import true_end_offsets


class ConsumerThread(_faust_aiokafka.AIOKafkaConsumerThread):
    """Creates the worker's aiokafka consumer with the app's ``fetch_max_wait_ms``."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = int(wait_ms)
        return consumer

    async def _highwaters(self, partitions: Any) -> Any:
        """Log end offsets (what table recovery reads up to): ListOffsets checked
        against a fetch's high watermark, see :mod:`stream_app.endoffsets`."""
        if self.consumer.in_transaction:
            return await super()._highwaters(partitions)
        return await true_end_offsets(self._ensure_consumer(), partitions)


class Consumer(_faust_aiokafka.Consumer):
    """faust-streaming's aiokafka consumer with :class:`ConsumerThread`.

    When the app has an :class:`~stream_app.offsets.OffsetMonitor` (``riskmon_offsets``)
    it sees every fetched batch before delivery: a partition log that restarted (an
    in-memory broker restarted empty) is reported, and Faust's stale read offset of
    it forgotten (see :mod:`stream_app.offsets`).
    """

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
        records = await super()._getmany(active_partitions, timeout)
        monitor = getattr(self.app, "riskmon_offsets", None)
        if records and monitor is not None:
            monitor.on_fetched(self, records)
        return records

    # Faust's delivery loop (``_drain_messages``) is kept as it is. A lighter loop that
    # awaited each delivery directly when nothing could block it (4,600 -> 10,800
    # ticks/s with one tick per message) lost every message after a broker restart in
    # about one run in three (test_worker_carries_on_after_a_broker_restart): a
    # delivery finishing after the rebalance's seek recorded a stale read offset.
    # Until that is understood, correctness wins; ticks bundled per message reach the
    # throughput target instead (bench/bench_ingest.py).


class Transport(_faust_aiokafka.Transport):
    """The aiokafka transport with :class:`Consumer`."""

    Consumer = Consumer
