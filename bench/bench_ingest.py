"""Sustained ingest throughput (ticks/s) of one worker on the embedded broker.

Fills topic ``ticks`` first (a synthetic panel as intraday ticks, bundled ``--bundle``
ticks per message), then starts one worker (``python -m stream_app.app``) and times how
fast ``riskmon_ticks_in_total`` grows from its first tick to the last (validation, bar
state, changelog, bars out). Baselines measured in the same run: the same worker with
Faust's one event per message (``RISKMON_INGEST_RUN_MAX=1``, timed for
``--baseline-seconds``; the worker's default delivers a partition's fetched messages as
one event, :mod:`stream_app.consumer`), the same messages through
:class:`~stream_app.ingest.IngestProcessor` in this process (no broker, no Faust: the
pure compute ceiling) and a bare aiokafka consumer draining the topic (the broker's
delivery ceiling). Target: >= 20,000 ticks/s.

    python bench/bench_ingest.py [--days 60] [--assets 10] [--ticks-per-day 390] [--bundle 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client.parser import text_string_to_metric_families

from producers.kafka_out import TickPublisher, ensure_topics, replay_panel
from producers.synthetic import synthetic_panel
from stream_app.embedded import EmbeddedKafka, find_free_port
from stream_app.ingest import IngestProcessor


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                total += s.value
    return total


async def drain(bootstrap: str, n_messages: int) -> float:
    """Seconds a bare aiokafka consumer takes to read ``n_messages`` of topic ticks."""
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(
        "ticks",
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        fetch_max_wait_ms=10,
    )
    await c.start()
    got, t0 = 0, time.monotonic()
    try:
        while got < n_messages:
            batch = await c.getmany(timeout_ms=1000, max_records=5000)
            got += sum(len(v) for v in batch.values())
    finally:
        await c.stop()
    return time.monotonic() - t0


def in_process(bootstrap: str, n_messages: int) -> tuple[int, float]:
    """Read the messages once, then time IngestProcessor on them (no Faust)."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(
        "ticks", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        consumer_timeout_ms=3000, max_partition_fetch_bytes=16 * 2**20,
    )  # fmt: skip
    msgs = [(m.key, m.value, m.partition, m.offset) for m in c]
    c.close()
    proc = IngestProcessor(last_price_interval_s=900)
    store: dict = {}
    t0 = time.perf_counter()
    for k in range(0, len(msgs), 2000):
        res = proc.process(msgs[k : k + 2000], store)
        for bar in res.bars + res.lasts:
            bar.encode()
    dt = time.perf_counter() - t0
    return sum(1 for _ in msgs), dt


def worker_rate(
    bootstrap: str,
    tmp: Path,
    label: str,
    n: int,
    args: argparse.Namespace,
    limit_s: float,
    **env_extra: str,
) -> tuple[float, float, float, float]:
    """Start one worker on topic ``ticks`` (its own group and output topics) and time how
    fast ``riskmon_ticks_in_total`` grows from its first tick until it has all ``n`` or
    ``limit_s`` seconds have passed. Returns (ticks/s, ticks counted, seconds, seconds
    inside the ingest batches)."""
    outputs = [f"ticks.dlq-{label}", f"bars-{label}", f"risk-{label}"]
    ensure_topics(bootstrap, outputs, args.partitions)
    port = find_free_port()
    env = dict(
        os.environ,
        RISKMON_KAFKA_BOOTSTRAP=bootstrap,
        RISKMON_METRICS_PORT=str(port),
        RISKMON_PARTITIONS=str(args.partitions),
        RISKMON_DATA_DIR=str(tmp / f"faust-{label}"),
        RISKMON_APP_ID=f"riskmon-bench-ingest-{label}",
        RISKMON_TOPIC_DLQ=outputs[0],
        RISKMON_TOPIC_BARS=outputs[1],
        RISKMON_TOPIC_RISK=outputs[2],
        **env_extra,
    )
    with open(tmp / f"worker-{label}.log", "wb") as log:
        w = subprocess.Popen(
            [sys.executable, "-m", "stream_app.app"], env=env, stdout=log,
            stderr=subprocess.STDOUT, cwd=tmp,
        )  # fmt: skip
    try:
        t_first = n_first = None
        got = 0.0
        now = t0 = time.monotonic()
        while time.monotonic() - t0 < 600:
            # 4 polls a second: each renders every metric in the worker (at 20 a second
            # that took about a tenth of the worker's time, py-spy)
            time.sleep(0.25)
            try:
                got = metric(port, "riskmon_ticks_in_total")
            except OSError:
                continue
            now = time.monotonic()
            if got > 0 and t_first is None:
                t_first, n_first = now, got
            if got >= n or (t_first is not None and now - t_first >= limit_s):
                break
        counted = got - (n_first or 0)
        seconds = now - (t_first or now)
        busy = metric(port, "riskmon_ingest_batch_seconds_sum")
        return (counted / seconds if seconds > 0 else 0.0), counted, seconds, busy
    finally:
        w.terminate()
        w.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--assets", type=int, default=10)
    ap.add_argument("--ticks-per-day", type=int, default=390)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--bundle", type=int, default=10, help="ticks per message (1 = none)")
    ap.add_argument(
        "--baseline-seconds", type=float, default=20.0,
        help="how long to time the per-message worker (0 = skip it)",
    )  # fmt: skip
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="riskmon-bench-ingest-"))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with EmbeddedKafka(log_dir=tmp) as kafka:
        ensure_topics(kafka.bootstrap, ["ticks"], args.partitions)
        panel = synthetic_panel(args.days, [f"A{i}" for i in range(args.assets)], seed=42)
        with TickPublisher(kafka.bootstrap, run_id="bench", linger_ms=20) as pub:
            stats = replay_panel(
                panel, run_id="bench", ticks_per_day=args.ticks_per_day, bundle=args.bundle,
                publisher=pub,
            )  # fmt: skip
        n = stats.ticks + stats.eod_markers
        n_msgs = pub.sent
        print(
            f"topic filled: {n:,} ticks in {n_msgs:,} messages (bundle {args.bundle}) in "
            f"{stats.elapsed_s:.1f} s"
        )
        base = None
        if args.baseline_seconds > 0:
            # runs of one record: Faust's own one-event-per-message delivery
            base, counted, seconds, busy = worker_rate(
                kafka.bootstrap, tmp, "per-message", n, args, args.baseline_seconds,
                RISKMON_INGEST_RUN_MAX="1",
            )  # fmt: skip
            print(
                f"baseline, the same worker with one Faust event per message: {counted:,.0f} "
                f"ticks in {seconds:.2f} s = {base:,.0f} ticks/s; {busy:.1f} s inside batches"
            )
        rate, counted, seconds, busy = worker_rate(kafka.bootstrap, tmp, "runs", n, args, 600)
        ratio = f" = {rate / base:.1f}x the per-message worker" if base else ""
        print(
            f"worker: {counted:,.0f} ticks in {seconds:.2f} s = {rate:,.0f} ticks/s"
            f"{ratio} ({'OK' if rate >= 20_000 else 'under'} the 20,000 target; one worker, "
            f"{args.partitions} partitions, record runs); {busy:.1f} s inside batches"
        )
        n_proc, dt_proc = in_process(kafka.bootstrap, n_msgs)
        print(
            f"baseline, IngestProcessor in-process on the same {n_proc:,} messages: "
            f"{n / dt_proc:,.0f} ticks/s -> the worker reaches {rate / (n / dt_proc):.0%} of it"
        )
        dt_drain = asyncio.run(drain(kafka.bootstrap, n_msgs))
        print(
            f"baseline, bare aiokafka consumer: {n_msgs / dt_drain:,.0f} messages/s = "
            f"{n / dt_drain:,.0f} ticks/s"
        )


if __name__ == "__main__":
    main()
