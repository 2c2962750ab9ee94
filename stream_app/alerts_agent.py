"""The ``alerts`` agent: risk snapshots -> rule engine -> outbox -> Redis.

``attach_alerts(app, settings, registry)`` adds to a Faust app (from
:func:`stream_app.app.create_app`):

* the agent ``alerts`` on topic ``settings.topic_risk`` (key = portfolio, value = a
  JSON :class:`~stream_app.records.RiskSnapshot`), concurrency 1;
* the table ``alerts-state`` (plain, changelogged), one entry per portfolio::

      {"partition": int,
       "runs": {run_label: {"engine": <AlertEngine state>, "outbox": [alert dicts]}}}

  Its keys are raw UTF-8 portfolio names placed by the producer's partitioner
  (``use_partitioner=True``), the same murmur2 choice that put the portfolio's
  snapshots on their partition, so the background task may update an entry too;
* a background task that delivers the outbox to Redis (:mod:`stream_app.alerts_sink`)
  oldest first, backing off while Redis is unavailable, and removes what was
  delivered from the table.

Crash safety: the alerts raised by a snapshot are written to the table (its changelog
topic) in the same step as the engine state that raised them, before any delivery is
tried; a restarted worker restores the table and delivers what is still pending. A
snapshot processed again after a crash raises nothing new (the engine skips what it
has seen) or, if the table lagged, the same alerts with the same ids, which the Redis
script does not write twice. Delivered alerts stay in the table until the next write
of their entry; if the worker dies before that, they are offered again and found
already written. The de-duplication markers live ``id_ttl_s`` (30 days by default):
an outbox restored later than that could write an alert twice.

The embedded broker keeps topics in memory: its restart loses the changelog, so the
outbox survives a *worker* crash, not a broker restart (use Kafka in production).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.exceptions import DataError
from stream_app.alerts import Alert, AlertEngine, check_limits, new_state
from stream_app.alerts_sink import (
    AlertDelivery,
    AlertMetrics,
    Backoff,
    DrainResult,
    Outbox,
    RedisAlertSink,
    make_redis,
)
from stream_app.faust_tables import raw_keyed_table
from stream_app.records import RiskSnapshot
from stream_app.settings import Settings

__all__ = ["ALERTS_TABLE", "AlertSettings", "AlertsRuntime", "attach_alerts", "run_alerts_worker"]

log = logging.getLogger(__name__)

ALERTS_TABLE = "alerts-state"


class AlertSettings(BaseSettings):
    """Settings of the alerts stage (environment prefix ``RISKMON_ALERTS_``)."""

    model_config = SettingsConfigDict(env_prefix="RISKMON_ALERTS_", extra="ignore", frozen=True)

    enabled: bool = Field(True, description="Attach the alerts agent.")
    stream_maxlen: int = Field(10_000, ge=1, description="MAXLEN ~ of each run's alert stream.")
    id_ttl_s: int = Field(30 * 86_400, ge=60, description="Lifetime of de-duplication markers.")
    outbox_max: int = Field(100_000, ge=1, description="Alerts kept while Redis is down.")
    retry_initial_s: float = Field(0.1, gt=0, description="First retry delay.")
    retry_max_s: float = Field(5.0, gt=0, description="Longest retry delay.")
    redis_timeout_s: float = Field(2.0, gt=0, description="Redis connect/socket timeout.")
    sweep_interval_s: float = Field(1.0, gt=0, description="Outbox/table sweep period.")
    portfolios_file: Path | None = Field(
        None, description="YAML of portfolios whose 'limits' apply (snapshots' limits win)."
    )


def _load_limits(path: Path | None) -> dict[str, dict[str, float]]:
    if path is None:
        return {}
    from stream_app.portfolio import load_portfolios

    out = {}
    for p in load_portfolios(path):
        for problem in check_limits(p.limits):
            log.warning("portfolio %r in %s: %s (default used)", p.name, path, problem)
        out[p.name] = dict(p.limits)
    return out


class AlertsRuntime:
    """State and plumbing of the ``alerts`` agent (tests drive it without a broker).

    Attributes
    ----------
    engine : AlertEngine
    delivery : AlertDelivery
        In-memory outbox and retry state; ``delivery.sink`` is None until the
        background task connects (or when no Redis is configured).
    table : faust.Table
    metrics : AlertMetrics
    """

    def __init__(
        self,
        app: Any,
        settings: Settings,
        alert_settings: AlertSettings,
        registry: Any,
        *,
        engine: AlertEngine | None = None,
        sink: Any = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.conf = alert_settings
        self.metrics = AlertMetrics(registry)
        self.engine = engine or AlertEngine(_load_limits(alert_settings.portfolios_file))
        self.redis_enabled = sink is not None or settings.redis_url is not None
        self.delivery = AlertDelivery(
            sink,
            Outbox(alert_settings.outbox_max),
            backoff=Backoff(alert_settings.retry_initial_s, 2.0, alert_settings.retry_max_s),
            metrics=self.metrics,
        )
        self.topic = app.topic(
            settings.topic_risk,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
        )
        self.table = raw_keyed_table(
            app,
            ALERTS_TABLE,
            partitions=settings.partitions,
            help="Per portfolio: alert engine state and undelivered alerts, per run.",
        )
        #: event keys delivered (or found in Redis) but still listed in a table entry
        self._done: dict[str, set[str]] = {}
        #: table key of each queued alert
        self._owner: dict[str, str] = {}
        self._wake = asyncio.Event()
        #: held while a table write is made and flushed (agent and sweeper)
        self.write_lock = asyncio.Lock()
        self._warned_no_redis = False
        self._bad_logged = 0
        self._dirty = False

    # -- one snapshot (synchronous: no await between table read and write) -----------
    def handle(self, key: bytes | None, value: bytes, partition: int | None) -> list[Alert]:
        """Evaluate one ``risk`` message; write state + new alerts to the table; queue them."""
        try:
            snap = RiskSnapshot.decode(value)
        except DataError as exc:
            self.metrics.bad_snapshots.inc()
            if self._bad_logged < 10:
                self._bad_logged += 1
                log.warning("alerts: unreadable risk message at partition %s: %s", partition, exc)
            return []
        tkey = key.decode("utf-8", "replace") if key else snap.portfolio
        entry = self.table.get(tkey) or {"partition": partition, "runs": {}}
        runs = entry.setdefault("runs", {})
        run = runs.setdefault(snap.run_label, {"engine": new_state(), "outbox": []})
        alerts = self.engine.evaluate(run["engine"], snap)
        for a in alerts:
            self.metrics.raised.labels(rule=a.rule, severity=a.severity, state=a.state).inc()
            log.info(
                "ALERT %s %s %s %s%s run=%s day=%s: %s",
                a.state,
                a.severity,
                a.rule,
                a.portfolio,
                f"/{a.asset}" if a.asset else "",
                a.run_label,
                a.day,
                a.message,
            )
        if self.redis_enabled:
            run["outbox"].extend(a.to_dict() for a in alerts)
            self._prune(tkey, entry)
        if partition is not None:
            entry["partition"] = partition
        self.table[tkey] = entry
        if self.redis_enabled:
            for a in alerts:
                self._owner[a.event_key] = tkey
            self._forget(self.delivery.add(alerts))
            if alerts:
                self._wake.set()
        elif alerts and not self._warned_no_redis:
            self._warned_no_redis = True
            log.warning("alerts: no Redis configured (RISKMON_REDIS_URL): alerts are only logged")
        return alerts

    def _prune(self, tkey: str, entry: dict[str, Any]) -> None:
        """Drop delivered alerts from an entry's outboxes, and the oldest past the bound."""
        done = self._done.pop(tkey, set())
        for run in entry.get("runs", {}).values():
            box = [d for d in run.get("outbox", []) if _event_key(d) not in done]
            if len(box) > self.conf.outbox_max:
                over = len(box) - self.conf.outbox_max
                log.error("alerts: table outbox of %r over its bound: dropping %d", tkey, over)
                box = box[over:]
            run["outbox"] = box

    def _forget(self, alerts: list[Alert]) -> None:
        """Alerts no longer pending in memory (delivered or dropped): clean the table later."""
        for a in alerts:
            tkey = self._owner.pop(a.event_key, None)
            if tkey is not None:
                self._done.setdefault(tkey, set()).add(a.event_key)

    # -- background: restore / clean the table, deliver ----------------------------------
    def _active(self, partition: Any) -> bool:
        try:
            actives = self.app.assignor.assigned_actives()
        except Exception:  # pragma: no cover - no assignor yet
            return False
        if not actives:
            return True  # not assigned anything: the table holds nothing but test data
        return any(
            tp.partition == partition and tp.topic == self.topic.get_topic_name() for tp in actives
        )

    def sweep(self) -> int:
        """Queue pending alerts found in the table (after a restart), write back entries
        whose delivered alerts can be removed; returns the number of alerts restored."""
        restored: list[tuple[tuple[int, int, int], Alert, str]] = []
        for tkey, entry in list(self.table.items()):
            if not isinstance(entry, Mapping) or not self._active(entry.get("partition")):
                continue
            done = self._done.get(tkey, set())
            for run in entry.get("runs", {}).values():
                for d in run.get("outbox", []):
                    ek = _event_key(d)
                    if ek in done or ek in self.delivery.outbox:
                        continue
                    try:
                        alert = Alert.from_dict(d)
                    except DataError:  # pragma: no cover - written by this module
                        continue
                    restored.append((alert.sort_key, alert, tkey))
            if done:
                entry = dict(entry)
                self._prune(tkey, entry)
                self.table[tkey] = entry
                self._dirty = True
        restored.sort(key=lambda item: item[0])
        for _, alert, tkey in restored:
            self._owner[alert.event_key] = tkey
        if restored:
            log.warning("alerts: %d undelivered alert(s) restored from the table", len(restored))
            self._forget(self.delivery.add(a for _, a, _ in restored))
        return len(restored)

    async def persist(self) -> None:
        """Wait until the table writes made so far are on the broker.

        Called after each write (under :attr:`write_lock`), so that each write of the
        table is a record batch of its own: the embedded broker answers a "latest
        offset" request with the base offset of the last batch + 1, and Faust's table
        recovery reads the changelog only up to there (the newest writes of a batch of
        several would be lost on restart). It also puts the outbox on the broker before
        the snapshot that raised it is acknowledged.
        """
        producer = getattr(self.app, "producer", None)
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.flush()

    async def drain(self) -> DrainResult:
        """One delivery attempt of the outbox (oldest first)."""
        res = await self.delivery.drain()
        self._forget(res.done)
        return res

    async def run(self) -> None:
        """Background task: connect, then sweep and deliver until cancelled."""
        if not self.redis_enabled:
            return
        if self.delivery.sink is None:
            password = self.settings.redis_password
            client = make_redis(
                str(self.settings.redis_url),
                password.get_secret_value() if password is not None else None,
                timeout=self.conf.redis_timeout_s,
            )
            self.delivery.sink = RedisAlertSink(
                client, maxlen=self.conf.stream_maxlen, id_ttl_s=self.conf.id_ttl_s
            )
        try:
            while True:
                async with self.write_lock:
                    if self.sweep() or self._dirty:
                        await self.persist()
                    self._dirty = False
                await self.drain()
                wait = self.conf.sweep_interval_s
                if len(self.delivery.outbox):
                    wait = min(wait, max(self.delivery.retry_in, 0.01))
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
        finally:
            sink, self.delivery.sink = self.delivery.sink, None
            if sink is not None and hasattr(sink, "aclose"):
                with contextlib.suppress(Exception):
                    await sink.aclose()


def _event_key(d: Mapping[str, Any]) -> str:
    return f"{d.get('id')}:{d.get('state')}:{d.get('severity')}"


def attach_alerts(
    app: Any,
    settings: Settings,
    registry: Any,
    *,
    alert_settings: AlertSettings | None = None,
    engine: AlertEngine | None = None,
    sink: Any = None,
) -> AlertsRuntime | None:
    """Add the ``alerts`` agent, its table and its delivery task to ``app``.

    :func:`stream_app.app.create_app` calls it (through the re-export in
    :mod:`stream_app.alerts_sink`), so every worker runs the alerts stage unless
    ``RISKMON_ALERTS_ENABLED=false``.

    Parameters
    ----------
    app : faust.App
        Built by :func:`stream_app.app.create_app`.
    settings : Settings
        ``topic_risk``, ``partitions``, ``redis_url`` and ``redis_password`` are used;
        without ``redis_url`` alerts are evaluated, counted and logged, not delivered.
    registry : prometheus_client.CollectorRegistry
        Where ``riskmon_alerts_*`` go (the worker's registry).
    alert_settings : AlertSettings or None
        ``None`` reads ``RISKMON_ALERTS_*`` from the environment.
    engine : AlertEngine or None
        Custom rules/limits.
    sink : object or None
        A ready sink (tests); ``None`` connects to ``settings.redis_url`` at start.

    Returns
    -------
    AlertsRuntime or None
        Also stored as ``app.riskmon_alerts``; a second call returns the runtime
        already attached. None when ``alert_settings.enabled`` is false.
    """
    existing = getattr(app, "riskmon_alerts", None)
    if existing is not None:
        return existing
    conf = alert_settings if alert_settings is not None else AlertSettings()
    if not conf.enabled:
        log.info("alerts stage disabled (RISKMON_ALERTS_ENABLED=false)")
        return None
    rt = AlertsRuntime(app, settings, conf, registry, engine=engine, sink=sink)

    @app.agent(rt.topic, name="alerts", concurrency=1)
    async def alerts(stream: Any) -> Any:
        """Evaluate the alert rules on each risk snapshot."""
        async for event in stream.events():
            msg = event.message
            async with rt.write_lock:
                try:
                    raised = rt.handle(msg.key, event.value, msg.partition)
                except Exception:  # a bug must not stop the stream: log, count, go on
                    log.exception("alerts: failed on %s/%s", msg.partition, msg.offset)
                    rt.metrics.bad_snapshots.inc()
                    raised = []
                await rt.persist()
            yield len(raised)

    @app.task
    async def deliver_alerts() -> None:
        await rt.run()

    rt.agent = alerts
    app.riskmon_alerts = rt
    return rt


def run_alerts_worker(
    settings: Settings | None = None,
    *,
    registry: Any = None,
    loglevel: str = "info",
) -> None:
    """Run a worker of :func:`create_app` plus the alerts agent (blocking).

    For when ``create_app`` does not attach the alerts agent itself (a separate alerts
    worker, tests). Needs ``settings.kafka_bootstrap``; serves metrics on
    ``metrics_host:metrics_port``.
    """
    from prometheus_client import CollectorRegistry

    from stream_app.app import create_app, serve_worker
    from stream_app.heap import keep_heap

    keep_heap()
    settings = settings if settings is not None else Settings()
    registry = registry if registry is not None else CollectorRegistry()
    app = create_app(settings, registry=registry)
    if getattr(app, "riskmon_alerts", None) is None:
        attach_alerts(app, settings, registry)
    serve_worker(app, settings, registry, loglevel)


def _main() -> None:  # pragma: no cover - `python -m stream_app.alerts_agent`
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        run_alerts_worker()


if __name__ == "__main__":  # pragma: no cover
    _main()
