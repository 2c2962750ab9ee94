"""Delivery of alerts to Redis: an idempotent Stream + pub/sub write, and an outbox.

Keys (``<run>`` is the replay run id, or ``live``):

``riskmon:alerts:<run>``
    Redis Stream, one entry per alert event (fields of :meth:`Alert.to_fields`),
    trimmed with ``XADD ... MAXLEN ~ maxlen``.
``riskmon:alerts:<run>`` (pub/sub channel)
    The JSON of each alert (:meth:`Alert.encode`), published as it is added.
``riskmon:alert-ids:<run>:<id>:<state>:<severity>``
    De-duplication marker, holding the stream entry id, expiring after ``id_ttl_s``.
    The severity is part of the key because an episode can escalate (warning, then
    critical) under one alert id.

:class:`RedisAlertSink` runs one Lua script per alert: if the marker exists it does
nothing, else it ``XADD``\\s, sets the marker and ``PUBLISH``\\es, atomically; so an
alert retried after a lost reply, or re-raised by a restarted worker, is written once.

:class:`Outbox` keeps the alerts not yet written (bounded, oldest first) and
:class:`AlertDelivery` drains it into the sink, backing off exponentially while Redis
is unavailable; nothing is dropped unless the outbox overflows (counted, logged).
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from stream_app.alerts import SEVERITIES, STATES, Alert

__all__ = [
    "ALERT_IDS_PREFIX",
    "STREAM_PREFIX",
    "AlertDelivery",
    "AlertMetrics",
    "AlertReader",
    "Backoff",
    "DrainResult",
    "Outbox",
    "RedisAlertSink",
    "attach_alerts",
    "channel_name",
    "dedup_key",
    "make_redis",
    "parse_since",
    "stream_key",
]

log = logging.getLogger(__name__)

STREAM_PREFIX = "riskmon:alerts:"
ALERT_IDS_PREFIX = "riskmon:alert-ids:"


def stream_key(run_label: str) -> str:
    """Redis Stream of a run's alerts: ``riskmon:alerts:<run>``."""
    return f"{STREAM_PREFIX}{run_label or 'live'}"


def channel_name(run_label: str) -> str:
    """Pub/sub channel of a run's alerts (same name as the stream)."""
    return f"{STREAM_PREFIX}{run_label or 'live'}"


def dedup_key(alert: Alert) -> str:
    """``riskmon:alert-ids:<run>:<id>:<state>:<severity>``."""
    return f"{ALERT_IDS_PREFIX}{alert.run_label}:{alert.event_key}"


# KEYS[1] marker, KEYS[2] stream; ARGV[1] ttl s, ARGV[2] maxlen, ARGV[3] channel,
# ARGV[4] JSON payload, ARGV[5..] stream fields and values. Returns the entry id, or
# nil (None) when the marker exists (already delivered).
_DELIVER_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 5))
redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return id
"""


def make_redis(
    url: str,
    password: str | None = None,
    *,
    asyncio: bool = True,
    timeout: float = 2.0,
) -> Any:
    """A Redis client with short timeouts and no client-side retries (the outbox retries).

    Parameters
    ----------
    url : str
        ``redis://[user:password@]host:port/db``.
    password : str or None
        Overrides the URL's password.
    asyncio : bool
        ``redis.asyncio.Redis`` (for the worker) or ``redis.Redis`` (for the CLI).
    timeout : float
        Connect and socket timeout in seconds.
    """
    try:
        import redis
        import redis.asyncio
        from redis.backoff import NoBackoff
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from stream_app.exceptions import MissingDependency

        raise MissingDependency("redis", "alert delivery to Redis") from exc
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "health_check_interval": 10,
    }
    if password is not None:
        kwargs["password"] = password
    if asyncio:
        from redis.asyncio.retry import Retry as AsyncRetry

        return redis.asyncio.Redis.from_url(url, retry=AsyncRetry(NoBackoff(), 0), **kwargs)
    from redis.retry import Retry

    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **kwargs)


class RedisAlertSink:
    """Idempotent writer of alerts to a Redis Stream and pub/sub channel.

    Parameters
    ----------
    client : redis.asyncio.Redis
    maxlen : int
        Approximate length bound of each run's stream (``MAXLEN ~``).
    id_ttl_s : int
        Lifetime of the de-duplication markers, in seconds.
    """

    def __init__(self, client: Any, *, maxlen: int = 10_000, id_ttl_s: int = 30 * 86_400) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen={maxlen} must be >= 1")
        if id_ttl_s < 1:
            raise ValueError(f"id_ttl_s={id_ttl_s} must be >= 1")
        self.client = client
        self.maxlen = int(maxlen)
        self.id_ttl_s = int(id_ttl_s)
        self._script = client.register_script(_DELIVER_LUA)

    def _args(self, alert: Alert) -> tuple[list[str], list[str]]:
        flat: list[str] = []
        for key, value in alert.to_fields().items():
            flat += [key, value]
        keys = [dedup_key(alert), stream_key(alert.run_label)]
        args = [
            str(self.id_ttl_s),
            str(self.maxlen),
            channel_name(alert.run_label),
            alert.encode().decode(),
            *flat,
        ]
        return keys, args

    async def deliver(self, alert: Alert) -> str | None:
        """Write one alert; the stream entry id, or None if it was already written.

        Raises the client's errors (``redis.ConnectionError``, ``TimeoutError``, ...)
        when Redis cannot be reached: the caller keeps the alert and retries.
        """
        keys, args = self._args(alert)
        entry = await self._script(keys=keys, args=args)
        if entry is None:
            return None
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    async def aclose(self) -> None:
        close = getattr(self.client, "aclose", None) or self.client.close
        await close()


class Outbox:
    """Alerts waiting for Redis: bounded, unique by event key, oldest first.

    Parameters
    ----------
    max_size : int
        When full, adding an alert drops the oldest one (returned by :meth:`add`).

    Examples
    --------
    >>> from stream_app.alerts import Alert
    >>> box = Outbox(max_size=2)
    >>> a = [Alert(str(i), "cnn_score", "warning", "firing", "p", "", 0.9, 0.8, i, "d")
    ...      for i in range(3)]
    >>> box.add(a[0]), box.add(a[1]), box.add(a[0])
    ([], [], [])
    >>> [x.id for x in box.add(a[2])], [x.id for x in box]
    (['0'], ['1', '2'])
    """

    def __init__(self, max_size: int = 100_000) -> None:
        if max_size < 1:
            raise ValueError(f"max_size={max_size} must be >= 1")
        self.max_size = int(max_size)
        self._items: dict[str, Alert] = {}
        self.dropped_total = 0

    def add(self, alert: Alert) -> list[Alert]:
        """Queue ``alert`` unless its event key is queued; return the alerts dropped."""
        if alert.event_key in self._items:
            return []
        self._items[alert.event_key] = alert
        dropped = []
        while len(self._items) > self.max_size:
            oldest = next(iter(self._items))
            dropped.append(self._items.pop(oldest))
        self.dropped_total += len(dropped)
        return dropped

    def extend(self, alerts: Iterable[Alert]) -> list[Alert]:
        dropped = []
        for alert in alerts:
            dropped += self.add(alert)
        return dropped

    def remove(self, event_key: str) -> Alert | None:
        return self._items.pop(event_key, None)

    def oldest(self) -> Alert | None:
        return next(iter(self._items.values()), None)

    def __contains__(self, event_key: object) -> bool:
        return event_key in self._items

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)


class Backoff:
    """Exponential backoff with jitter: ``initial * factor**k`` capped at ``max_delay``.

    Examples
    --------
    >>> b = Backoff(initial=0.1, factor=2.0, max_delay=0.5, jitter=0.0)
    >>> [b.next_delay() for _ in range(5)]
    [0.1, 0.2, 0.4, 0.5, 0.5]
    >>> b.reset(); b.next_delay()
    0.1
    """

    def __init__(
        self,
        initial: float = 0.1,
        factor: float = 2.0,
        max_delay: float = 5.0,
        jitter: float = 0.1,
        seed: int | None = None,
    ) -> None:
        if not 0 < initial <= max_delay:
            raise ValueError(f"need 0 < initial={initial} <= max_delay={max_delay}")
        if factor < 1:
            raise ValueError(f"factor={factor} must be >= 1")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter={jitter} must be in [0, 1)")
        self.initial, self.factor, self.max_delay, self.jitter = initial, factor, max_delay, jitter
        self.failures = 0
        self._rng = random.Random(seed)

    def next_delay(self) -> float:
        """The delay before the next attempt after one more failure."""
        delay = min(self.max_delay, self.initial * self.factor**self.failures)
        self.failures += 1
        if self.jitter:
            delay *= 1 + self.jitter * (2 * self._rng.random() - 1)
        return delay

    def reset(self) -> None:
        self.failures = 0


class AlertMetrics:
    """Prometheus metrics of the alerts stage (registry passed in).

    ``riskmon_alerts_total{rule,severity,state}`` (raised),
    ``riskmon_alerts_pending`` (in the outbox), ``riskmon_alerts_delivered_total``,
    ``riskmon_alerts_duplicates_total`` (already in Redis: not written again),
    ``riskmon_alerts_dropped_total`` (outbox overflow), ``riskmon_alerts_delivery_errors_total``,
    ``riskmon_alerts_bad_snapshots_total`` (risk messages that could not be read).
    """

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge

        ns = "riskmon"
        self.raised = Counter(
            "alerts",
            "Alerts raised, by rule, severity and state (firing|resolved).",
            ["rule", "severity", "state"],
            namespace=ns,
            registry=registry,
        )
        self.pending = Gauge(
            "alerts_pending", "Alerts waiting for Redis (outbox).", namespace=ns, registry=registry
        )
        self.delivered = Counter(
            "alerts_delivered", "Alerts written to Redis.", namespace=ns, registry=registry
        )
        self.duplicates = Counter(
            "alerts_duplicates",
            "Alerts found already written to Redis (not written again).",
            namespace=ns,
            registry=registry,
        )
        self.dropped = Counter(
            "alerts_dropped",
            "Alerts dropped because the outbox was full.",
            namespace=ns,
            registry=registry,
        )
        self.errors = Counter(
            "alerts_delivery_errors",
            "Failed attempts to write to Redis.",
            namespace=ns,
            registry=registry,
        )
        self.bad_snapshots = Counter(
            "alerts_bad_snapshots",
            "Messages of the risk topic that could not be read as snapshots.",
            namespace=ns,
            registry=registry,
        )
        for rule in ("var_exception", "intraday_loss", "traffic_light"):
            for sev in SEVERITIES[1:]:
                for state in STATES:
                    self.raised.labels(rule=rule, severity=sev, state=state)


@dataclass
class DrainResult:
    """What one :meth:`AlertDelivery.drain` did."""

    delivered: list[Alert] = field(default_factory=list)  #: written now
    duplicates: list[Alert] = field(default_factory=list)  #: were already in Redis
    error: BaseException | None = None  #: why it stopped early
    skipped: bool = False  #: still backing off: nothing attempted

    @property
    def done(self) -> list[Alert]:
        """Alerts no longer pending (written now or before)."""
        return self.delivered + self.duplicates


class AlertDelivery:
    """Drain an :class:`Outbox` into a sink, oldest first, with backoff.

    Parameters
    ----------
    sink : object with ``async deliver(alert) -> str | None``
    outbox : Outbox
    backoff : Backoff or None
    metrics : AlertMetrics or None
    clock : callable
        Monotonic seconds (tests pass a fake).
    """

    def __init__(
        self,
        sink: Any,
        outbox: Outbox | None = None,
        *,
        backoff: Backoff | None = None,
        metrics: AlertMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.outbox = outbox if outbox is not None else Outbox()
        self.backoff = backoff if backoff is not None else Backoff()
        self.metrics = metrics
        self.clock = clock
        self.not_before = 0.0
        self.failing_since: float | None = None

    def add(self, alerts: Iterable[Alert]) -> list[Alert]:
        """Queue alerts; returns (and counts, logs) any dropped by the bound."""
        dropped = self.outbox.extend(alerts)
        if dropped:
            log.error(
                "alert outbox full (%d): dropped %d oldest alert(s), first %s",
                self.outbox.max_size,
                len(dropped),
                dropped[0].event_key,
            )
            if self.metrics is not None:
                self.metrics.dropped.inc(len(dropped))
        self._gauge()
        return dropped

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.pending.set(len(self.outbox))

    @property
    def retry_in(self) -> float:
        """Seconds until the next attempt is allowed (0 when not backing off)."""
        return max(0.0, self.not_before - self.clock())

    async def drain(self) -> DrainResult:
        """Deliver the queued alerts oldest first; stop at the first failure.

        Never raises (except cancellation): a failure is logged (once per outage),
        counted, and delays the next attempt by the backoff.
        """
        res = DrainResult()
        if not len(self.outbox):
            return res
        if self.clock() < self.not_before:
            res.skipped = True
            return res
        for alert in self.outbox:
            try:
                entry = await self.sink.deliver(alert)
            except Exception as exc:  # Redis down, timeouts, script errors: keep, retry
                res.error = exc
                delay = self.backoff.next_delay()
                self.not_before = self.clock() + delay
                if self.metrics is not None:
                    self.metrics.errors.inc()
                if self.failing_since is None:
                    self.failing_since = self.clock()
                    log.warning(
                        "Redis unavailable (%s: %s): %d alert(s) kept in the outbox, "
                        "retrying with backoff",
                        type(exc).__name__,
                        exc,
                        len(self.outbox),
                    )
                else:
                    log.debug("Redis still unavailable; next try in %.2f s", delay)
                break
            self.outbox.remove(alert.event_key)
            if entry is None:
                res.duplicates.append(alert)
            else:
                res.delivered.append(alert)
        if res.error is None:
            self.backoff.reset()
            if self.failing_since is not None:
                log.warning(
                    "Redis is back after %.1f s: delivered %d pending alert(s)",
                    self.clock() - self.failing_since,
                    len(res.delivered),
                )
                self.failing_since = None
        if self.metrics is not None:
            self.metrics.delivered.inc(len(res.delivered))
            self.metrics.duplicates.inc(len(res.duplicates))
        self._gauge()
        return res


# -- reading (riskmon alerts tail) -------------------------------------------------------
_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_since(spec: str | None, now_ms: int | None = None) -> str | None:
    """Stream id to read after, from a ``--since`` value.

    ``None`` -> None (caller shows the last few entries); ``"all"`` or ``"0"`` ->
    ``"0-0"`` (everything); ``"new"`` or ``"$"`` -> ``"$"`` (only new entries);
    ``"10m"``, ``"2h"``, ``"30s"``, ``"1d"`` -> entries added in that wall time;
    an ISO-8601 time (naive = UTC) -> entries added since then; a stream id
    ``"1700000000000-0"`` (or milliseconds) as it is.

    Examples
    --------
    >>> parse_since("all"), parse_since("new"), parse_since("1700000000000-3")
    ('0-0', '$', '1700000000000-3')
    >>> parse_since("10m", now_ms=1_000_000)
    '400000-0'
    >>> parse_since("2008-10-01T00:00:00Z")
    '1222819200000-0'
    """
    if spec is None:
        return None
    text = spec.strip()
    if text in ("all", "0", "0-0", "begin"):
        return "0-0"
    if text in ("new", "$", "now"):
        return "$"
    if re.fullmatch(r"\d+-\d+", text):
        return text
    if re.fullmatch(r"\d{10,}", text):
        return f"{text}-0"
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text)
    if m:
        if now_ms is None:
            now_ms = int(time.time() * 1000)
        start = now_ms - int(float(m.group(1)) * _DURATION[m.group(2)] * 1000)
        return f"{max(start, 0)}-0"
    from stream_app.records import iso_to_ns

    try:
        return f"{iso_to_ns(text) // 1_000_000}-0"
    except ValueError:
        raise ValueError(
            f"--since {spec!r}: expected all, new, a duration (10m, 2h, 1d), "
            "an ISO time or a stream id"
        ) from None


class AlertReader:
    """Read alerts from the runs' streams: a backlog, then new entries (blocking).

    Parameters
    ----------
    client : redis.Redis
        A synchronous client.
    runs : list of str or None
        Run labels (``live`` for live data); ``None`` follows every
        ``riskmon:alerts:*`` stream, including runs that appear later.
    since : str or None
        As returned by :func:`parse_since`; ``None`` starts with the last ``backlog``
        entries of each stream.
    backlog : int
    """

    def __init__(
        self,
        client: Any,
        runs: list[str] | None = None,
        since: str | None = None,
        backlog: int = 20,
    ) -> None:
        self.client = client
        self.runs = runs
        self.since = since
        self.backlog = backlog
        self.cursor: dict[str, str] = {}  # stream key -> last id read
        self._last_scan = 0.0

    def streams(self) -> list[str]:
        if self.runs is not None:
            return [stream_key(r) for r in self.runs]
        found = []
        for key in self.client.scan_iter(match=f"{STREAM_PREFIX}*", count=500, _type="stream"):
            found.append(key.decode() if isinstance(key, bytes) else key)
        return sorted(found)

    def _start(self, key: str, first_scan: bool) -> list[tuple[str, Alert]]:
        """Place the cursor of a newly seen stream; return its backlog."""
        since = self.since if first_scan else "0-0"  # a stream born later: all of it
        if since is None:
            entries = self.client.xrevrange(key, count=self.backlog)
            entries = list(reversed(entries))
            self.cursor[key] = _id(entries[-1][0]) if entries else "0-0"
            return [(_id(i), _alert(f)) for i, f in entries]
        if since == "$":
            last = self.client.xrevrange(key, count=1)
            self.cursor[key] = _id(last[0][0]) if last else "0-0"
            return []
        self.cursor[key] = since
        return []

    def poll(self, block_ms: int = 1000, count: int = 100) -> list[tuple[str, str, Alert]]:
        """New alerts as ``(stream key, entry id, alert)``, oldest first per stream;
        blocks up to ``block_ms`` when there are none."""
        out: list[tuple[str, str, Alert]] = []
        now = time.monotonic()
        if not self.cursor or (self.runs is None and now - self._last_scan > 2.0):
            first = not self.cursor and self._last_scan == 0.0
            self._last_scan = now
            for key in self.streams():
                if key not in self.cursor:
                    out += [(key, i, a) for i, a in self._start(key, first)]
        if out:
            return out
        if not self.cursor:
            time.sleep(block_ms / 1000)
            return out
        reply = self.client.xread(dict(self.cursor), count=count, block=block_ms)
        for key, entries in reply or []:
            key = key.decode() if isinstance(key, bytes) else key
            for entry_id, fields in entries:
                self.cursor[key] = _id(entry_id)
                out.append((key, _id(entry_id), _alert(fields)))
        return out


def _id(entry_id: bytes | str) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


def _alert(fields: Any) -> Alert:
    try:
        return Alert.from_fields(fields)
    except Exception:  # a foreign entry in our stream: show what it has
        return Alert("?", "?", "info", "?", "?", "", None, None, 0, "", message=repr(fields)[:200])


def attach_alerts(app: Any, settings: Any, registry: Any, **kwargs: Any) -> Any:
    """Add the alerts agent to a Faust app: see :func:`stream_app.alerts_agent.attach_alerts`
    (re-exported here, where ``stream_app.app.create_app`` looks for it)."""
    from stream_app.alerts_agent import attach_alerts as _attach

    return _attach(app, settings, registry, **kwargs)
