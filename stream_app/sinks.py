"""Where risk snapshots go besides topic ``risk``: Redis (and heatmap PNG files).

Redis layout (``<run>`` is the replay run id, ``live`` for live data, so a replay never
overwrites live keys):

``riskmon:risk:<run>:<portfolio>``           string: JSON of the latest snapshot (any kind)
``riskmon:risk:<run>:<portfolio>:daily``     string: JSON of the latest daily snapshot
``riskmon:risk:<run>:<portfolio>:history``   stream: one entry per snapshot, fields
                                             ``kind``, ``day``, ``snapshot`` (JSON);
                                             ``XADD MAXLEN ~ history_len``; entry id
                                             ``<event ms>-<seq>``, so a snapshot delivered
                                             twice (after a restart) is refused, not doubled
``riskmon:risk:<run>:portfolios``            set of the run's portfolios
``riskmon:runs``                             sorted set: run -> wall time of its last snapshot
``riskmon:heatmap:<run>:<portfolio>:<day>``  string: PNG of the day's heatmap
                                             (optional expiry ``heatmap_ttl_s``)
``riskmon:heatmap:<run>:<portfolio>:latest`` string: PNG of the latest heatmap

A heatmap file, when the snapshot names one, is ``<dir>/<run>/<portfolio>/<day>.png``.

Clients are created by the caller (at start-up, not import). A Redis that is down never
stops the stream: the write is logged (once a minute), counted in
``riskmon_sink_errors_total{sink="redis"}`` and dropped (snapshots are "latest wins";
the alerts outbox is where delivery is guaranteed).
"""

from __future__ import annotations

import logging
import struct
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from stream_app.records import RiskSnapshot

__all__ = [
    "RedisRiskSink",
    "heatmap_png_fast",
    "history_key",
    "latest_key",
    "runs_key",
    "write_heatmap_file",
]

log = logging.getLogger(__name__)

RUNS_KEY = "riskmon:runs"


def latest_key(portfolio: str, run_id: str, kind: str | None = None) -> str:
    """Key of the latest snapshot of a portfolio run (``kind="daily"``: the latest daily one).

    Examples
    --------
    >>> latest_key("book", ""), latest_key("book", "r1", "daily")
    ('riskmon:risk:live:book', 'riskmon:risk:r1:book:daily')
    """
    base = f"riskmon:risk:{run_id or 'live'}:{portfolio}"
    return f"{base}:{kind}" if kind == "daily" else base


def history_key(portfolio: str, run_id: str) -> str:
    """Key of the bounded snapshot history (a Redis stream)."""
    return f"riskmon:risk:{run_id or 'live'}:{portfolio}:history"


def runs_key() -> str:
    return RUNS_KEY


def portfolios_key(run_id: str) -> str:
    return f"riskmon:risk:{run_id or 'live'}:portfolios"


# -- a small PNG encoder (no matplotlib on the hot path) ------------------------------------
_LUT: NDArray[np.uint8] | None = None


def _viridis() -> NDArray[np.uint8]:
    global _LUT
    if _LUT is None:
        try:
            from matplotlib import colormaps

            _LUT = (colormaps["viridis"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round()
            _LUT = _LUT.astype(np.uint8)
        except Exception:  # pragma: no cover - matplotlib is a dependency
            g = np.arange(256, dtype=np.uint8)
            _LUT = np.stack([g, g, g], axis=1)
    return _LUT


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def heatmap_png_fast(image: NDArray[np.uint8], *, scale: int = 8) -> bytes:
    """PNG bytes of a heatmap image (viridis colours, each cell ``scale`` pixels wide).

    Parameters
    ----------
    image : ndarray of uint8 of shape (height, width)
        0 = low, 255 = high.
    scale : int
        Pixels per cell side (1..64).

    Examples
    --------
    >>> png = heatmap_png_fast(np.arange(16, dtype=np.uint8).reshape(4, 4) * 16, scale=2)
    >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n", len(png) > 50
    (True, True)
    """
    img = np.asarray(image)
    if img.ndim != 2 or img.dtype != np.uint8 or img.size == 0:
        raise ValueError(f"image must be a non-empty 2-d uint8 array, got {img.dtype} {img.shape}")
    if not 1 <= scale <= 64:
        raise ValueError(f"scale={scale} must lie in [1, 64]")
    rgb = _viridis()[img]  # (h, w, 3)
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    h, w = rgb.shape[:2]
    raw = np.concatenate([np.zeros((h, 1), dtype=np.uint8), rgb.reshape(h, w * 3)], axis=1)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


def write_heatmap_file(path: str | Path, png: bytes) -> None:
    """Write a PNG atomically (temp file + rename), creating the folders."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".png.tmp")
    tmp.write_bytes(png)
    tmp.replace(p)


class RedisRiskSink:
    """Writes snapshots (and heatmaps) to Redis in one pipeline per batch.

    Parameters
    ----------
    client : redis.asyncio.Redis
        Created by the caller at start-up.
    history_len : int
        Approximate cap of each portfolio run's history stream (``MAXLEN ~``).
    heatmap_ttl_s : float
        Expiry of the per-day heatmap keys; 0 keeps them (they are per run, and a
        replay of 650 days holds about 650 PNGs of ~3 kB per portfolio).
    errors : prometheus_client.Counter or None
        ``riskmon_sink_errors_total`` (labels ``sink``).
    """

    def __init__(
        self,
        client: Any,
        *,
        history_len: int = 5000,
        heatmap_ttl_s: float = 0.0,
        errors: Any = None,
    ) -> None:
        if history_len < 1:
            raise ValueError(f"history_len={history_len} must be >= 1")
        self.client = client
        self.history_len = int(history_len)
        self.heatmap_ttl_s = float(heatmap_ttl_s)
        self.errors = errors
        self._last_log = 0.0
        self.n_written = 0
        self.n_duplicates = 0

    async def write(
        self,
        snapshots: Sequence[RiskSnapshot],
        heatmaps: Sequence[bytes | None] = (),
        raws: Sequence[bytes] | None = None,
    ) -> bool:
        """Write snapshots (and the PNGs of their heatmaps, aligned; ``raws``: their
        encoded JSON when the caller has it already); False on failure."""
        if not snapshots:
            return True
        pipe = self.client.pipeline(transaction=False)
        ops: list[str] = []
        for i, snap in enumerate(snapshots):
            raw = raws[i] if raws is not None else snap.encode()
            run = snap.run_id
            pipe.set(latest_key(snap.portfolio, run), raw)
            ops.append("set")
            if snap.kind == "daily":
                pipe.set(latest_key(snap.portfolio, run, "daily"), raw)
                ops.append("set")
            pipe.xadd(
                history_key(snap.portfolio, run),
                {"kind": snap.kind, "day": snap.day, "snapshot": raw},
                id=f"{max(snap.ts, 0) // 1_000_000}-{snap.seq}",
                maxlen=self.history_len,
                approximate=True,
            )
            ops.append("xadd")
            pipe.sadd(portfolios_key(run), snap.portfolio)
            ops.append("sadd")
            png = heatmaps[i] if i < len(heatmaps) else None
            if png is not None and snap.heatmap_key:
                ex = int(self.heatmap_ttl_s) if self.heatmap_ttl_s > 0 else None
                pipe.set(snap.heatmap_key, png, ex=ex)
                pipe.set(snap.heatmap_key.rsplit(":", 1)[0] + ":latest", png)
                ops += ["set", "set"]
        runs = {s.run_id or "live" for s in snapshots}
        pipe.zadd(RUNS_KEY, dict.fromkeys(runs, time.time()))
        ops.append("zadd")
        try:
            results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # connection refused, timeout, ...
            self._fail(exc)
            return False
        ok = True
        for op, res in zip(ops, results, strict=False):
            if isinstance(res, Exception):
                if op == "xadd" and "equal or smaller" in str(res):
                    self.n_duplicates += 1  # delivered twice: already in the history
                    continue
                ok = False
                self._fail(res)
        self.n_written += len(snapshots)
        return ok

    def _fail(self, exc: BaseException) -> None:
        if self.errors is not None:
            self.errors.labels(sink="redis").inc()
        now = time.monotonic()
        if now - self._last_log > 60:
            self._last_log = now
            log.warning("redis sink: write failed (%s); snapshots dropped meanwhile", exc)

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except AttributeError:  # redis < 5
            await self.client.close()
