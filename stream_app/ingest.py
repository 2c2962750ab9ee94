"""The ingest step without Faust: raw ticks -> dead letters, daily bars, last prices.

:class:`IngestProcessor` holds no state of its own beyond per-run watermarks: the
per-asset state lives in a mapping the caller owns (in the worker, a plain Faust table
keyed by asset, so that state is co-partitioned with topic ``ticks``)::

    store[asset] = {run_id: {"seq": int, "ts": int, "closed_day": int | None,
                             "last_emit": int | None, "bar": {...} | None,
                             "partition": int | None}}

Each value is plain JSON-able data. ``"partition"`` is the source partition of the
(run, asset)'s latest tick; state written before it was recorded has no such key.

A message value is one tick object, or a *bundle*: a JSON array of tick objects of the
message key's asset, in order (producers bundle to cut the bytes and broker records
per tick; the worker takes a partition's fetched messages as one Faust event either
way, see :mod:`stream_app.consumer`). Each item is validated alone; a bad item is dead-lettered
alone, its value re-encoded and its ``bundle_index`` given. A bar is built in event time: the first trade of a
trading day opens it, a trade of a later day (or an end-of-day marker) closes it and
emits it. Only the open bar and the cursor are kept per (run, asset); a (run, asset)
idle for ``state_ttl_days`` of event time behind the watermark of its run *on its
source partition* (the latest event time seen for that run on the partition its ticks
come from) is evicted by :meth:`IngestProcessor.evict`, its open bar emitted with
``closed_by="evicted"``. Watermarks are kept per partition because one worker consumes
its partitions at different paces (catch-up after a restart, a replay at full speed, a
slow partition): a watermark shared by all of them would make the assets of a lagging
partition look idle, cut their open bars and drop their cursors (a replayed tick would
then pass as new). A (run, asset) whose partition is not recorded (state written before
it was) is never evicted in event time until one of its ticks records it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from stream_app.records import NS_PER_DAY, NS_PER_SECOND, Bar, Tick, day_to_iso, dumps
from stream_app.validate import Reason, parse_payload, validate_tick, validate_tick_obj

__all__ = ["BatchResult", "DeadLetter", "IngestProcessor", "StoreView"]

log = logging.getLogger(__name__)

AssetStore = MutableMapping[str, dict[str, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected message: the original bytes and why."""

    key: bytes | None
    value: bytes
    reason: Reason
    partition: int | None = None
    offset: int | None = None
    bundle_index: int | None = None  #: position in a bundle (the value is then that item)


@dataclass(slots=True)
class BatchResult:
    """What one batch produced, in input order within each list."""

    n_in: int = 0
    n_ok: int = 0
    dead: list[DeadLetter] = field(default_factory=list)
    #: closed bars and last-price snapshots, in the order the batch's ticks made them
    emitted: list[Bar] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)  #: assets whose store entry changed
    deleted: set[str] = field(default_factory=set)  #: assets whose store entry was removed

    def emit(self, bar: Bar) -> None:
        """Record a closed bar or a last-price snapshot."""
        self.emitted.append(bar)

    @property
    def bars(self) -> list[Bar]:
        """The closed bars of :attr:`emitted`, in order."""
        return [b for b in self.emitted if b.kind != "last"]

    @property
    def lasts(self) -> list[Bar]:
        """The last-price snapshots of :attr:`emitted`, in order."""
        return [b for b in self.emitted if b.kind == "last"]


class StoreView(Mapping[tuple[str, str], Mapping[str, Any]]):
    """Read-only ``{(run_id, asset): cursor}`` view of an asset store (for the validator)."""

    __slots__ = ("_store",)

    def __init__(self, store: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
        self._store = store

    def __getitem__(self, key: tuple[str, str]) -> Mapping[str, Any]:
        run_id, asset = key
        runs = self._store.get(asset)
        if runs is None:
            raise KeyError(key)
        return runs[run_id]

    def get(self, key: tuple[str, str], default: Any = None) -> Any:  # type: ignore[override]
        runs = self._store.get(key[1])
        if runs is None:
            return default
        return runs.get(key[0], default)

    def __iter__(self):  # type: ignore[no-untyped-def]
        for asset, runs in self._store.items():
            for run_id in runs:
                yield (run_id, asset)

    def __len__(self) -> int:
        return sum(len(runs) for runs in self._store.values())


def _encode_item(item: Any) -> bytes:
    try:
        return dumps(item)
    except Exception:  # pragma: no cover - parsed JSON always re-encodes
        return repr(item).encode()


def _new_bar(tick: Tick, day: int) -> dict[str, Any]:
    return {
        "day": day,
        "o": tick.price,
        "h": tick.price,
        "l": tick.price,
        "c": tick.price,
        "v": tick.size,
        "n": 1,
        "fs": tick.seq,
        "ls": tick.seq,
        "ft": tick.ts,
        "lt": tick.ts,
    }


class IngestProcessor:
    """Validate ticks and turn them into event-time daily bars.

    Parameters
    ----------
    assets : collection of str or None
        Accepted assets; ``None`` accepts any well-formed name.
    max_tick_bytes : int
        Larger single-tick messages are dead-lettered as ``oversized``.
    max_bundle_bytes : int
        The same for bundles (JSON arrays of ticks).
    portfolio : str
        Stamped on every bar (the key of topic ``bars``).
    last_price_interval_s : float
        Event-time seconds between two last-price snapshots of one (run, asset);
        0 disables them.
    state_ttl_days : float
        Event-time idle time after which a (run, asset) is evicted, measured against
        its run's watermark on its own source partition.
    trading_day_offset_hours : float
        Trading day = UTC date of ``ts + offset``.
    evict_idle_wall_s : float
        Eviction also needs the (run, asset) to have sent nothing for this many wall
        seconds (a guard on top of the per-partition watermarks, e.g. for ticks of one
        asset spread over partitions by unkeyed producers). 0 (the default) evicts on
        event time alone; the worker uses 60.

    Attributes
    ----------
    watermarks : dict of (str, int or None) to int
        Latest event time (ns) seen per (run id, source partition), in memory only
        (rebuilt from traffic after a restart).
    """

    def __init__(
        self,
        *,
        assets: Collection[str] | None = None,
        max_tick_bytes: int = 4096,
        max_bundle_bytes: int = 1_048_576,
        portfolio: str = "default",
        last_price_interval_s: float = 900.0,
        state_ttl_days: float = 10.0,
        trading_day_offset_hours: float = 0.0,
        evict_idle_wall_s: float = 0.0,
    ) -> None:
        if last_price_interval_s < 0:
            raise ValueError(f"last_price_interval_s={last_price_interval_s} must be >= 0")
        if state_ttl_days <= 0:
            raise ValueError(f"state_ttl_days={state_ttl_days} must be > 0")
        if not -24 <= trading_day_offset_hours <= 24:
            raise ValueError(
                f"trading_day_offset_hours={trading_day_offset_hours} not in [-24, 24]"
            )
        self.assets = frozenset(assets) if assets is not None else None
        self.max_tick_bytes = max_tick_bytes
        self.max_bundle_bytes = max_bundle_bytes
        self.portfolio = portfolio
        self.last_interval_ns = int(last_price_interval_s * NS_PER_SECOND)
        self.ttl_ns = int(state_ttl_days * NS_PER_DAY)
        self.day_offset_ns = int(trading_day_offset_hours * 3600 * NS_PER_SECOND)
        #: Latest event time seen per (run id, source partition) (in memory; rebuilt
        #: from traffic).
        self.watermarks: dict[tuple[str, int | None], int] = {}
        #: Wall clock (ns) stamped on the bars of the batch being processed.
        self.wall_ns = 0
        if evict_idle_wall_s < 0:
            raise ValueError(f"evict_idle_wall_s={evict_idle_wall_s} must be >= 0")
        self.evict_idle_wall_s = float(evict_idle_wall_s)
        #: (run, asset) -> monotonic wall clock of its last tick in this process (not
        #: state: after a restart every asset gets evict_idle_wall_s to show up again)
        self._arrival: dict[tuple[str, str], float] = {}
        self._started = time.monotonic()

    @classmethod
    def from_settings(cls, settings: Any) -> IngestProcessor:
        return cls(
            assets=settings.assets,
            max_tick_bytes=settings.max_tick_bytes,
            max_bundle_bytes=settings.max_bundle_bytes,
            portfolio=settings.portfolio,
            last_price_interval_s=settings.last_price_interval_s,
            state_ttl_days=settings.state_ttl_days,
            trading_day_offset_hours=settings.trading_day_offset_hours,
        )

    # -- one batch ----------------------------------------------------------------
    def process(
        self,
        messages: Iterable[tuple[bytes | None, bytes, int | None, int | None]],
        store: AssetStore,
        result: BatchResult | None = None,
        *,
        wall_ns: int | None = None,
    ) -> BatchResult:
        """Process ``(key, value, partition, offset)`` messages in order.

        A value is one JSON tick object, or a *bundle*: a JSON array of tick objects
        of the message's asset, checked one by one (see the module notes).
        ``store`` is updated in place (entries of ``result.touched``); outputs are
        collected in the returned :class:`BatchResult`. ``n_in`` counts ticks.
        ``wall_ns`` (default: now) is stamped on the bars as :attr:`Bar.wall_ns`, the
        arrival time behind the tick-to-snapshot latency.
        """
        res = result if result is not None else BatchResult()
        self.wall_ns = time.time_ns() if wall_ns is None else int(wall_ns)
        view = StoreView(store)
        for key, value, partition, offset in messages:
            try:
                if value[:1] == b"[":
                    self._bundle(key, value, partition, offset, store, view, res)
                    continue
                res.n_in += 1
                tick, reason = validate_tick(
                    value,
                    view,
                    assets=self.assets,
                    max_bytes=self.max_tick_bytes,
                    day_offset_ns=self.day_offset_ns,
                )
                if tick is not None:
                    reason = self._accept(key, tick, partition, store, res)
                    if reason is None:
                        continue
            except Exception:  # never let one message kill the worker
                log.exception("ingest failed on a message at %s/%s", partition, offset)
                reason = Reason.INTERNAL_ERROR
            res.dead.append(DeadLetter(key, bytes(value), reason, partition, offset))
        return res

    def _accept(
        self,
        key: bytes | None,
        tick: Tick,
        partition: int | None,
        store: AssetStore,
        res: BatchResult,
    ) -> Reason | None:
        if key is not None and key != tick.asset.encode():
            return Reason.KEY_MISMATCH
        self._apply(tick, partition, store, res)
        res.n_ok += 1
        return None

    def _bundle(
        self,
        key: bytes | None,
        value: bytes,
        partition: int | None,
        offset: int | None,
        store: AssetStore,
        view: StoreView,
        res: BatchResult,
    ) -> None:
        """A JSON array of ticks: a bad element is dead-lettered alone (re-encoded,
        with its index); a bundle that is not a JSON array of objects is dead-lettered
        whole."""
        items, reason = parse_payload(value, self.max_bundle_bytes)
        if reason is None and (not isinstance(items, list) or not items):
            reason = Reason.MALFORMED
        if reason is not None:
            res.n_in += 1
            res.dead.append(DeadLetter(key, bytes(value), reason, partition, offset))
            return
        for index, item in enumerate(items):
            res.n_in += 1
            try:
                if not isinstance(item, dict):
                    reason = Reason.MALFORMED
                else:
                    tick, reason = validate_tick_obj(
                        item, view, assets=self.assets, day_offset_ns=self.day_offset_ns
                    )
                    if tick is not None:
                        reason = self._accept(key, tick, partition, store, res)
                        if reason is None:
                            continue
            except Exception:
                log.exception("ingest failed on bundle item %d at %s/%s", index, partition, offset)
                reason = Reason.INTERNAL_ERROR
            res.dead.append(
                DeadLetter(key, _encode_item(item), reason, partition, offset, bundle_index=index)
            )

    def _apply(
        self, tick: Tick, partition: int | None, store: AssetStore, res: BatchResult
    ) -> None:
        runs = store.get(tick.asset)
        if runs is None:
            runs = store[tick.asset] = {}
        st = runs.get(tick.run_id)
        if st is None:
            st = runs[tick.run_id] = {
                "seq": None,
                "ts": None,
                "closed_day": None,
                "last_emit": None,
                "bar": None,
                "partition": partition,
            }
        res.touched.add(tick.asset)
        res.deleted.discard(tick.asset)
        if self.evict_idle_wall_s:
            self._arrival[(tick.run_id, tick.asset)] = time.monotonic()
        day = (tick.ts + self.day_offset_ns) // NS_PER_DAY
        bar = st["bar"]
        st["seq"] = tick.seq
        st["ts"] = tick.ts
        st["partition"] = partition  # also records it in state written before it was
        source = (tick.run_id, partition)
        wm = self.watermarks.get(source)
        if wm is None or tick.ts > wm:
            self.watermarks[source] = tick.ts

        if tick.eod:
            if bar is not None:  # the validator guarantees bar["day"] <= day
                res.emit(self._bar(tick.asset, tick.run_id, bar, "bar", "eod"))
                st["bar"] = None
            st["closed_day"] = day
            return

        if bar is not None and bar["day"] != day:
            res.emit(self._bar(tick.asset, tick.run_id, bar, "bar", "next_day"))
            bar = None
        if bar is None:
            bar = st["bar"] = _new_bar(tick, day)
        else:
            p = tick.price
            if p > bar["h"]:
                bar["h"] = p
            if p < bar["l"]:
                bar["l"] = p
            bar["c"] = p
            bar["v"] += tick.size
            bar["n"] += 1
            bar["ls"] = tick.seq
            bar["lt"] = tick.ts
        if self.last_interval_ns:
            last = st["last_emit"]
            if last is None or tick.ts - last >= self.last_interval_ns:
                st["last_emit"] = tick.ts
                res.emit(self._bar(tick.asset, tick.run_id, bar, "last", ""))

    def _bar(
        self, asset: str, run_id: str, bar: Mapping[str, Any], kind: str, closed_by: str
    ) -> Bar:
        return Bar(
            asset=asset,
            day=day_to_iso(bar["day"]),
            open=bar["o"],
            high=bar["h"],
            low=bar["l"],
            close=bar["c"],
            volume=bar["v"],
            n_ticks=bar["n"],
            first_seq=bar["fs"],
            last_seq=bar["ls"],
            ts_first=bar["ft"],
            ts_last=bar["lt"],
            portfolio=self.portfolio,
            run_id=run_id,
            kind=kind,
            closed_by=closed_by,
            wall_ns=self.wall_ns,
        )

    # -- eviction -------------------------------------------------------------------
    def evict(self, store: AssetStore, result: BatchResult | None = None) -> BatchResult:
        """Drop every (run, asset) idle for more than ``state_ttl_days`` of event time
        behind its run's watermark on its source partition (and, with
        ``evict_idle_wall_s``, silent for that many wall seconds), emitting its open bar
        (``closed_by="evicted"``).

        A (run, asset) is judged only by the time of its own partition: one consumed
        ahead of another does not make the other's assets look idle. Those without a
        watermark (none of their run's ticks seen on their partition since this process
        started) or without a recorded partition (state written before it was) are left
        alone.
        """
        res = result if result is not None else BatchResult()
        now = time.monotonic()
        for asset in list(store.keys()):
            runs = store[asset]
            changed = False
            for run_id in list(runs):
                st = runs[run_id]
                if st["ts"] is None or "partition" not in st:
                    continue  # never judged by another partition's time
                wm = self.watermarks.get((run_id, st["partition"]))
                if wm is None or wm - st["ts"] <= self.ttl_ns:
                    continue
                if self.evict_idle_wall_s:
                    seen = self._arrival.get((run_id, asset), self._started)
                    if now - seen < self.evict_idle_wall_s:
                        continue  # behind in event time, but still arriving: not idle
                if st["bar"] is not None:
                    res.emit(self._bar(asset, run_id, st["bar"], "bar", "evicted"))
                del runs[run_id]
                changed = True
            if changed:
                if runs:
                    res.touched.add(asset)
                else:
                    del store[asset]
                    res.touched.discard(asset)
                    res.deleted.add(asset)
        return res
