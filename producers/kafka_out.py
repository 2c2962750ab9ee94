"""Publish ticks to Kafka with kafka-python: a tick publisher and a panel replay.

* Key = asset (UTF-8), so one asset's ticks stay in order on one partition.
* Per-(run, asset) sequence numbers, strictly increasing. A replay gets a fresh
  ``run_id`` (its state and outputs are kept apart from live data); live data
  (``run_id=None``) starts its sequence at the current time in microseconds, so a
  restarted live producer keeps increasing and is not taken for duplicates.
* ``acks="all"`` and idempotence (the embedded broker and Kafka >= 0.11 support it;
  ``idempotent=False`` turns it off for brokers that do not).
* A replay stops cleanly on ``KeyboardInterrupt`` or a ``stop`` event: what was sent
  is flushed, and the stats say where it stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.panel import Panel
from producers.ticks import panel_ticks
from stream_app.exceptions import StreamAppError
from stream_app.records import dumps

__all__ = [
    "BrokerUnavailable",
    "ReplayProgress",
    "ReplayStats",
    "TickPublisher",
    "ensure_topics",
    "new_run_id",
    "replay_panel",
]

log = logging.getLogger(__name__)


def new_run_id(prefix: str = "replay") -> str:
    """A run id such as ``replay-20240101T120000-3f2a`` (valid for Settings/validation)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"{prefix}-{stamp}-{np.random.default_rng().integers(16**4):04x}"


class BrokerUnavailable(StreamAppError, ConnectionError):
    """The Kafka broker named by a bootstrap address could not be reached."""


def _admin(bootstrap: str, timeout_ms: int, bootstrap_timeout_ms: int) -> Any:
    """A kafka-python admin client on ``bootstrap``, or :class:`BrokerUnavailable`."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        return KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=bootstrap_timeout_ms,
            client_id="riskmon-admin",
        )
    except ValueError as exc:  # kafka-python parses host:port in the constructor
        raise BrokerUnavailable(
            f"Kafka bootstrap {bootstrap!r} is not host:port[,host:port] ({exc}); "
            "check RISKMON_KAFKA_BOOTSTRAP"
        ) from None
    except (KafkaError, OSError) as exc:
        raise BrokerUnavailable(
            f"cannot reach a Kafka broker at {bootstrap!r} within "
            f"{bootstrap_timeout_ms / 1000:g} s ({exc}); check RISKMON_KAFKA_BOOTSTRAP "
            "(host:port of a running broker) or run `riskmon demo`"
        ) from None


def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int,
    *,
    timeout_ms: int = 10_000,
    bootstrap_timeout_ms: int = 5_000,
) -> list[str]:
    """Create the topics that do not exist yet (replication 1); return those created.

    Raises
    ------
    BrokerUnavailable
        No broker answered at ``bootstrap`` within ``bootstrap_timeout_ms``.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = _admin(bootstrap, timeout_ms, bootstrap_timeout_ms)
    try:
        existing = set(admin.list_topics())
        wanted = [t for t in dict.fromkeys(topics) if t not in existing]
        if wanted:
            try:
                admin.create_topics(
                    [NewTopic(t, partitions, 1) for t in wanted], timeout_ms=timeout_ms
                )
            except TopicAlreadyExistsError:  # a concurrent creator won
                pass
        return wanted
    finally:
        admin.close()


class TickPublisher:
    """A kafka-python producer of ticks with per-asset sequence numbers.

    Parameters
    ----------
    bootstrap : str
        ``host:port[,host:port]``.
    topic : str
    run_id : str or None
        Replay run id; ``None`` for live data.
    source : str
        Producer name stamped on every tick.
    idempotent : bool
        Enable the idempotent producer (with ``acks="all"``).
    linger_ms : int
        Producer batching delay.
    seq_start : int or None
        First sequence number; ``None``: 0 for a replay, time in microseconds for live.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str = "ticks",
        *,
        run_id: str | None = None,
        source: str = "replay",
        idempotent: bool = True,
        linger_ms: int = 5,
        seq_start: int | None = None,
        **producer_config: Any,
    ) -> None:
        from kafka import KafkaProducer

        self.topic = topic
        self.run_id = run_id or ""
        self.source = source
        if seq_start is None:
            seq_start = 0 if run_id else time.time_ns() // 1000
        self._next_seq: dict[str, int] = {}
        self._seq_start = int(seq_start)
        config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "acks": "all",
            "linger_ms": linger_ms,
            "client_id": f"riskmon-{source}",
            "enable_idempotence": idempotent,
        }
        config.update(producer_config)
        self._producer = KafkaProducer(**config)
        self.sent = 0
        #: Sends the broker never acknowledged, by exception type (filled by the I/O thread).
        self.failed: dict[str, int] = {}
        self.last_error: str | None = None

    def next_seq(self, asset: str) -> int:
        seq = self._next_seq.get(asset, self._seq_start)
        self._next_seq[asset] = seq + 1
        return seq

    def _tick_value(self, asset: str, ts: int, price: float, size: float = 0.0) -> dict[str, Any]:
        """The JSON object of one trade, with the asset's next sequence number."""
        value: dict[str, Any] = {
            "asset": asset,
            "ts": int(ts),
            "price": float(price),
            "size": float(size),
            "seq": self.next_seq(asset),
            "source": self.source,
        }
        if self.run_id:
            value["run_id"] = self.run_id
        return value

    def send_tick(self, asset: str, ts: int, price: float, size: float = 0.0) -> Any:
        """Send one trade; returns kafka-python's future."""
        return self.send_raw(asset.encode(), dumps(self._tick_value(asset, ts, price, size)))

    def send_bundle(self, asset: str, rows: Iterable[tuple[int, float, float]]) -> Any:
        """Send several trades of one asset as one message (a JSON array of ticks).

        ``rows`` are ``(ts, price, size)`` in event-time order; each gets its own
        sequence number. Bundles cut the per-message cost of the stream workers.
        """
        items = [self._tick_value(asset, ts, price, size) for ts, price, size in rows]
        if not items:
            return None
        return self.send_raw(asset.encode(), dumps(items))

    def send_eod(self, asset: str, ts: int) -> Any:
        """Send an end-of-day marker: closes the asset's bar of the day of ``ts``."""
        value: dict[str, Any] = {
            "asset": asset,
            "ts": int(ts),
            "seq": self.next_seq(asset),
            "eod": True,
            "source": self.source,
        }
        if self.run_id:
            value["run_id"] = self.run_id
        return self.send_raw(asset.encode(), dumps(value))

    def send_raw(self, key: bytes | None, value: bytes) -> Any:
        """Send arbitrary bytes (for adapters, and tests of the dead-letter path)."""
        fut = self._producer.send(self.topic, key=key, value=value)
        fut.add_errback(self._on_error)
        self.sent += 1
        return fut

    def _on_error(self, exc: BaseException) -> None:
        name = type(exc).__name__
        self.failed[name] = self.failed.get(name, 0) + 1
        if self.last_error is None or self.failed[name] == 1:
            log.error("send to %s failed (%s): %s", self.topic, name, exc)
        self.last_error = f"{name}: {exc}"

    @property
    def n_failed(self) -> int:
        """Messages the broker did not acknowledge (lost, not silently: counted and logged)."""
        return sum(self.failed.values())

    def flush(self, timeout: float | None = None) -> None:
        self._producer.flush(timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Flush and close."""
        try:
            self._producer.flush(timeout)
        finally:
            self._producer.close(timeout)

    def __enter__(self) -> TickPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class ReplayProgress:
    """Passed to the progress callback after each day."""

    day: str
    days_done: int
    n_days: int
    ticks_sent: int
    elapsed_s: float


@dataclass
class ReplayStats:
    """What a replay did."""

    run_id: str
    days: int = 0
    ticks: int = 0
    eod_markers: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    last_day: str | None = None
    per_asset: dict[str, int] = field(default_factory=dict)
    #: Messages the broker did not acknowledge, by error (e.g. after a broker restart).
    failed_sends: dict[str, int] = field(default_factory=dict)

    @property
    def ticks_per_s(self) -> float:
        return self.ticks / self.elapsed_s if self.elapsed_s > 0 else float("nan")


def replay_panel(
    panel: Panel,
    bootstrap: str | None = None,
    *,
    topic: str = "ticks",
    run_id: str | None = None,
    ticks_per_day: int = 78,
    seed: int = 42,
    days_per_second: float | None = None,
    eod_markers: bool = True,
    progress: Callable[[ReplayProgress], None] | None = None,
    stop: threading.Event | None = None,
    publisher: TickPublisher | None = None,
    source: str = "replay",
    bundle: int = 1,
) -> ReplayStats:
    """Replay a daily panel as intraday ticks (:func:`producers.ticks.panel_ticks`).

    Parameters
    ----------
    panel : Panel
    bootstrap : str or None
        Broker; not needed when ``publisher`` is given.
    topic : str
    run_id : str or None
        ``None`` makes a new one (:func:`new_run_id`).
    ticks_per_day : int
        Ticks per asset-day.
    seed : int
    days_per_second : float or None
        Pace of the replay; ``None`` sends as fast as possible.
    eod_markers : bool
        After each day, send an end-of-day marker per asset so that its bar closes
        at once (otherwise it closes on the next day's first tick).
    progress : callable or None
        Called with a :class:`ReplayProgress` after each day.
    stop : threading.Event or None
        Set it to stop after the current day.
    publisher : TickPublisher or None
        Use this one (not closed here) instead of creating one.
    source : str
        Producer name stamped on the ticks.
    bundle : int
        Ticks of one asset per message (>= 1); > 1 sends JSON arrays of ticks, which
        a worker ingests many times faster (Faust's cost is per message).

    Returns
    -------
    ReplayStats
        ``interrupted`` is True after a ``KeyboardInterrupt`` or ``stop``; the ticks
        sent before it were flushed.
    """
    if days_per_second is not None and days_per_second <= 0:
        raise ValueError(f"days_per_second={days_per_second} must be > 0 or None")
    if bundle < 1:
        raise ValueError(f"bundle={bundle} must be >= 1")
    if run_id is None:
        run_id = new_run_id()
    own = publisher is None
    if publisher is None:
        if bootstrap is None:
            raise ValueError("give bootstrap or publisher")
        publisher = TickPublisher(bootstrap, topic, run_id=run_id, source=source)
    stats = ReplayStats(run_id=publisher.run_id or run_id)
    assets = panel.assets
    t0 = time.monotonic()
    try:
        for k, day in enumerate(panel_ticks(panel, ticks_per_day, seed=seed)):
            if stop is not None and stop.is_set():
                stats.interrupted = True
                break
            ts_list = day.ts.tolist()
            px_list = day.price.tolist()
            sz_list = day.size.tolist()
            pending: dict[int, list[tuple[int, float, float]]] = {}
            for j, ts, px, sz in zip(
                day.asset_idx.tolist(), ts_list, px_list, sz_list, strict=True
            ):
                stats.per_asset[assets[j]] = stats.per_asset.get(assets[j], 0) + 1
                if bundle == 1:
                    publisher.send_tick(assets[j], ts, px, sz)
                    continue
                rows = pending.setdefault(j, [])
                rows.append((ts, px, sz))
                if len(rows) >= bundle:
                    publisher.send_bundle(assets[j], rows)
                    rows.clear()
            for j in sorted(pending):
                if pending[j]:
                    publisher.send_bundle(assets[j], pending[j])
            stats.ticks += len(day)
            if eod_markers:
                last_ts = int(day.ts[-1])
                for j in sorted(set(day.asset_idx.tolist())):
                    publisher.send_eod(assets[j], last_ts)
                    stats.eod_markers += 1
            stats.days += 1
            stats.last_day = str(day.day)
            elapsed = time.monotonic() - t0
            if progress is not None:
                progress(ReplayProgress(str(day.day), k + 1, panel.n_days, stats.ticks, elapsed))
            if days_per_second is not None:
                wait = (k + 1) / days_per_second - elapsed
                if wait > 0:
                    if stop is not None:
                        stop.wait(wait)
                    else:
                        time.sleep(wait)
    except KeyboardInterrupt:
        stats.interrupted = True
        log.warning("replay %s interrupted after %d days; flushing", stats.run_id, stats.days)
    finally:
        if own:
            publisher.close()
        else:
            publisher.flush()
        stats.elapsed_s = time.monotonic() - t0
        stats.failed_sends = dict(publisher.failed)
        if stats.failed_sends:
            log.error(
                "replay %s: %d messages were not acknowledged by the broker and are lost (%s)",
                stats.run_id,
                sum(stats.failed_sends.values()),
                publisher.last_error,
            )
    return stats
