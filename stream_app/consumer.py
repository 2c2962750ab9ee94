"""The worker's Kafka consumer: a configurable fetch wait and a lighter delivery loop.

Two changes to faust-streaming's aiokafka consumer, both measured with
``python bench/bench_ingest.py --bundle 1`` (one tick per message, one worker):

- ``fetch_max_wait_ms``: Faust hard-codes 1500 ms for worker consumers; the
  embedded broker does not end a waiting fetch early when data arrives, so
  that wait is added to latency (DESIGN.md). aiokafka reads the value when
  the consumer starts.
- the delivery loop (:meth:`Consumer._drain_messages`): Faust races every
  message's delivery against the consumer's ``suspend_flow`` event with
  ``wait_first``, which creates two tasks and an ``asyncio.wait`` per message
  (~100 us of a 200 us per-message budget here: 4,600 -> 9,000 ticks/s). The
  race only matters when delivery can block: when the flow is suspended (a
  rebalance), or when a subscriber's buffer is full. This loop awaits the
  delivery directly when neither holds, and keeps Faust's race otherwise.
  Everything else (read offsets, gaps for acks, periodic commits, yielding
  to the loop every 100 messages) is as in faust-streaming 0.11-0.15.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as _faust_aiokafka

YIELD_EVERY = 100


class ConsumerThread(_faust_aiokafka.AIOKafkaConsumerThread):
    """Creates the worker's aiokafka consumer with the app's ``fetch_max_wait_ms``."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = int(wait_ms)
        return consumer


class Consumer(_faust_aiokafka.Consumer):
    """faust-streaming's aiokafka consumer with :class:`ConsumerThread` and a lighter drain."""

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _may_block(self, topic: str) -> bool:
        """Whether delivering a message of ``topic`` now could wait (flow off, a buffer full)."""
        if self.suspend_flow.is_set() or not self.app.flow_control.is_active():
            return True
        channels = self.app.topics._topic_name_index.get(topic)
        return not channels or any(ch.queue.full() for ch in channels)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs a broker
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        may_block = self._may_block
        commit_every = self._commit_every
        since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records = getmany(timeout=1.0)
                await asyncio.sleep(0)
                if not self.should_stop:
                    async for tp, message in records:
                        since_yield += 1
                        if since_yield > YIELD_EVERY:
                            await asyncio.sleep(0)
                            since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is not None and offset < r_offset:
                            continue  # already read (Faust logs it at dev level)
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        if may_block(message.topic):
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        else:
                            await callback(message)
                        set_read_offset(tp, offset)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class Transport(_faust_aiokafka.Transport):
    """The aiokafka transport with :class:`Consumer`."""

    Consumer = Consumer
