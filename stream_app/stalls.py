"""Partitions the broker has stopped serving: records wait, but fetches come back empty.

The embedded broker (tansu, memory engine) answers a fetch from the end of a
partition ever more slowly as the partition accumulates record batches, and past
about ten thousand of them not at all (``bench/bench_broker_fetch.py``). A worker
on such a partition would sit still with its lag growing and nothing in its logs.
:class:`FetchStallWatch` runs in the consumer thread after every fetch and names
such a partition: it was in the fetch, its high watermark is above the worker's
position, and no record of it came back, without a break, for ``stall_s`` seconds.
A partition Faust has paused is not in the fetch, so it is never taken for stalled.

The broker walks a partition's batches only until the fetch's max wait runs out
(with 10 ms, the worker's default, a partition's end stops being served at about
20,000 single-record batches; with 5 ms at about 10,000). So the watch also gives
the consumer a longer max wait while fetches come back empty with records
waiting, doubling it each time up to ``max_wait_cap_ms``, and lets it fall back by
a tenth per fetch that brings records: a partition the broker would have dropped
is served later instead of never (``riskmon_consumer_fetch_max_wait_ms``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)


class StallMetrics:
    """``riskmon_consumer_stalled_partitions``, ``riskmon_consumer_stalls_total{topic,partition}``
    and ``riskmon_consumer_fetch_max_wait_ms`` in ``registry``."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge

        self.stalled = Gauge(
            "consumer_stalled_partitions",
            "Partitions whose fetches come back empty although records wait beyond the "
            "worker's position (the broker no longer serves them); which ones: the "
            "riskmon_consumer_stalls_total labels and the worker's ERROR lines.",
            namespace="riskmon",
            registry=registry,
        )
        self.stalls = Counter(
            "consumer_stalls",
            "Times a partition was found stalled (see riskmon_consumer_stalled_partitions).",
            ["topic", "partition"],
            namespace="riskmon",
            registry=registry,
        )
        self.max_wait = Gauge(
            "consumer_fetch_max_wait_ms",
            "The max wait of this worker's fetches now: the configured one, or longer while "
            "the broker returns nothing although records wait.",
            namespace="riskmon",
            registry=registry,
        )


class FetchStallWatch:
    """Finds partitions whose fetches return nothing while records wait for them.

    Parameters
    ----------
    metrics : StallMetrics or None
    stall_s : float
        Seconds without a record or a position change, while the high watermark
        is above the position, before a partition counts as stalled.
    clock : callable
        Monotonic seconds (tests pass their own).
    base_wait_ms : int or None
        The consumer's configured fetch max wait; None: :attr:`fetch_wait_ms` stays None
        (no adaptation).
    max_wait_cap_ms : int
        The longest max wait it asks for.

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> now = [0.0]
    >>> watch = FetchStallWatch(None, stall_s=10.0, clock=lambda: now[0])
    >>> tp = ("ticks", 0)
    >>> states = {tp: NS(highwater=12_500, has_valid_position=True, position=10_000)}
    >>> assignment = NS(state_value=states.get)
    >>> for now[0] in (0.0, 5.0, 10.0):
    ...     watch.after_fetch(assignment, [tp], {})
    >>> sorted(watch.stalled)
    [('ticks', 0)]
    >>> states[tp].position = 10_200  # records came through again
    >>> watch.after_fetch(assignment, [tp], {tp: [object()]})
    >>> sorted(watch.stalled)
    []
    """

    def __init__(
        self,
        metrics: StallMetrics | None,
        stall_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        base_wait_ms: int | None = None,
        max_wait_cap_ms: int = 2000,
    ) -> None:
        if not stall_s > 0:
            raise ValueError(f"stall_s must be > 0, got {stall_s}")
        if base_wait_ms is not None and not 0 <= base_wait_ms <= max_wait_cap_ms:
            raise ValueError(
                f"base_wait_ms must lie in [0, max_wait_cap_ms={max_wait_cap_ms}], "
                f"got {base_wait_ms}"
            )
        self.base_wait_ms = base_wait_ms
        self.max_wait_cap_ms = int(max_wait_cap_ms)
        #: the fetch max wait the consumer should use now (None: not adapted)
        self.fetch_wait_ms: int | None = base_wait_ms
        if metrics is not None and base_wait_ms is not None:
            metrics.max_wait.set(base_wait_ms)
        self.metrics = metrics
        self.stall_s = float(stall_s)
        self.clock = clock
        #: partition -> (position, since when it has waited at it with records beyond)
        self._waiting: dict[Any, tuple[int, float]] = {}
        #: partitions currently stalled
        self.stalled: set[Any] = set()

    def after_fetch(
        self,
        assignment: Any,
        fetched: Iterable[Any],
        records: Mapping[Any, Sequence[Any]],
    ) -> None:
        """After each fetch of the partitions ``fetched`` (records per partition in ``records``).

        ``assignment.state_value(tp)`` gives the partition's ``highwater`` (of the
        last fetch response, empty or not), ``has_valid_position`` and ``position``.
        """
        if assignment is None:
            return
        now = self.clock()
        behind = False
        for tp in fetched:
            state = assignment.state_value(tp)
            if state is None or not state.has_valid_position or state.highwater is None:
                self._progress(tp)
                continue
            position = int(state.position)
            if records.get(tp) or state.highwater <= position:
                self._progress(tp)
                continue
            behind = True
            waiting = self._waiting.get(tp)
            if waiting is None or waiting[0] != position:
                self._progress(tp)
                self._waiting[tp] = (position, now)
                continue
            if tp not in self.stalled and now - waiting[1] >= self.stall_s:
                self._stalled(tp, position, int(state.highwater), now - waiting[1])
        self._adapt_wait(empty_while_behind=behind and not any(records.values()))

    def _adapt_wait(self, empty_while_behind: bool) -> None:
        """Double the fetch max wait after a fetch that brought nothing while records
        wait (the broker gave up walking to them); a tenth less after one that brought
        records, down to the configured wait."""
        if self.fetch_wait_ms is None or self.base_wait_ms is None:
            return
        old = self.fetch_wait_ms
        if empty_while_behind:
            new = min(self.max_wait_cap_ms, max(2 * old, old + 1))
        else:
            new = max(self.base_wait_ms, int(old * 0.9))
        if new == old:
            return
        self.fetch_wait_ms = new
        if self.metrics is not None:
            self.metrics.max_wait.set(new)
        if new > old and old == self.base_wait_ms:
            log.warning(
                "fetches come back empty although records wait: fetch max wait raised "
                "from %d ms (the broker gives up walking a long partition at the max wait)",
                old,
            )

    def _stalled(self, tp: Any, position: int, highwater: int, waited: float) -> None:
        topic, partition = tp[0], tp[1]
        self.stalled.add(tp)
        log.error(
            "partition %s/%s is stalled: %d records wait beyond offset %d, but the broker's "
            "fetches have returned none of them for %.0f s. The embedded broker stops serving "
            "a partition's end past about 10,000 record batches (bench/bench_broker_fetch.py); "
            "run long live feeds on a real Kafka (RISKMON_KAFKA_BOOTSTRAP).",
            topic,
            partition,
            highwater - position,
            position,
            waited,
        )
        if self.metrics is not None:
            self.metrics.stalls.labels(topic, str(partition)).inc()
            self.metrics.stalled.set(len(self.stalled))

    def _progress(self, tp: Any) -> None:
        self._waiting.pop(tp, None)
        if tp in self.stalled:
            self.stalled.discard(tp)
            log.warning("partition %s/%s is served again", tp[0], tp[1])
            if self.metrics is not None:
                self.metrics.stalled.set(len(self.stalled))
