"""End-to-end latency tick -> risk snapshot at a fixed tick rate (p50 / p99).

Starts the embedded broker and Valkey and one worker with a 10-asset portfolio (EWMA
champion), then sends live-like ticks (event time = wall clock) at ``--rate`` ticks per
second for ``--seconds``: every ``--bundle-ms`` each asset's new ticks go out as one
message. A consumer on topic ``risk`` records, for each intraday snapshot, ``receive
time - snapshot.ts`` (``ts`` = event time of the newest tick behind it = the wall time
that tick was made): tick -> producer -> broker -> ingest -> ``bars`` -> risk ->
``risk`` -> consumer; also up to the snapshot being built in the worker (its ``wall_ns``,
just before it is sent: the reader's own fetch wait left out), and by stage. The worker's
own histogram ``riskmon_tick_to_snapshot_seconds`` (arrival -> published) is printed too. Baseline measured in the same run: a bare
round trip producer -> broker -> consumer on a scratch topic at the same message rate
(the broker's floor). Target: p99 < 100 ms at 5,000 ticks/s.

Each asset sends a last price every ``--last-price-ms`` (50) of event time and the risk
agent builds an intraday snapshot at most every 50 ms. Ingest passes on every last price
it makes, in tick order (none coalesced away), so a 1 ms interval would turn every tick
into a last price for the risk agent (as this bench did until ingest stopped keeping only
one per asset and batch).

    python bench/bench_latency.py [--rate 5000] [--seconds 30] [--bundle-ms 20] [--partitions 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from producers.kafka_out import TickPublisher, ensure_topics
from stream_app.demo import Stack
from stream_app.records import RiskSnapshot

ASSETS = [f"A{i}" for i in range(10)]


def consumer_thread(
    bootstrap: str, topic: str, stop: threading.Event, out: list, decode, stages: list | None = None
) -> None:
    from kafka import KafkaConsumer

    c = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        fetch_max_wait_ms=10,
        consumer_timeout_ms=200,
    )
    c.poll(timeout_ms=1000)  # join and seek to the end before the producer starts
    try:
        while not stop.is_set():
            for batch in c.poll(timeout_ms=100).values():
                now = time.time_ns()
                for m in batch:
                    ts = decode(m.value)
                    if ts is None:
                        continue
                    out.append((now, (now - ts) / 1e9))
                    if stages is not None:
                        snap = RiskSnapshot.decode(m.value)
                        # tick made -> worker received it -> snapshot built -> received here
                        stages.append(
                            (
                                now,
                                (snap.source_wall_ns - ts) / 1e9,
                                (snap.wall_ns - snap.source_wall_ns) / 1e9,
                                (now - snap.wall_ns) / 1e9,
                            )
                        )
    finally:
        c.close()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        parts = fh.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def produce(pub: TickPublisher, rate: float, seconds: float, bundle_ms: float) -> int:
    """Send ``rate`` ticks/s for ``seconds``: one bundle per asset every ``bundle_ms``."""
    rng = np.random.default_rng(42)
    price = {a: 100.0 for a in ASSETS}
    per_asset = rate / len(ASSETS) * bundle_ms / 1000.0
    carry = dict.fromkeys(ASSETS, 0.0)
    t_end = time.monotonic() + seconds
    tick = time.monotonic()
    sent = 0
    while time.monotonic() < t_end:
        for a in ASSETS:
            carry[a] += per_asset
            k = int(carry[a])
            if k == 0:
                continue
            carry[a] -= k
            now = time.time_ns()
            rows = []
            for j in range(k):
                price[a] *= float(np.exp(rng.normal(0, 1e-4)))
                rows.append((now - (k - 1 - j) * 1000, price[a], 1.0))  # 1 us apart
            pub.send_bundle(a, rows)
            sent += k
        tick += bundle_ms / 1000.0
        delay = tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    pub.flush()
    return sent


def snapshot_ts(raw: bytes) -> int | None:
    try:
        s = RiskSnapshot.decode(raw)
    except Exception:
        return None
    return s.ts if s.kind == "intraday" else None


def quantiles(lat: list[float]) -> str:
    a = np.asarray(lat) * 1e3
    return (
        f"p50 {np.percentile(a, 50):.1f} ms, p99 {np.percentile(a, 99):.1f} ms, "
        f"max {a.max():.1f} ms over {a.size} samples"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=5000.0, help="ticks per second")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds left out at the start")
    ap.add_argument("--bundle-ms", type=float, default=20.0)
    ap.add_argument(
        "--last-price-ms",
        type=float,
        default=50.0,
        help="event-time ms between an asset's last-price updates (RISKMON_LAST_PRICE_INTERVAL_S)",
    )
    ap.add_argument(
        "--partitions", type=int, default=4, help="partitions of every topic (the default 4)"
    )
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="riskmon-bench-latency-"))
    weights = "\n".join(f"      {a}: 0.1" for a in ASSETS)
    (out / "p.yaml").write_text(
        f"portfolios:\n  - name: lat\n    champion: ewma\n    challengers: []\n"
        f"    weights:\n{weights}\n"
    )
    env = {
        "RISKMON_PORTFOLIOS_FILE": str(out / "p.yaml"),
        # one last price per asset per intraday interval: ingest sends every last price it
        # makes, in tick order, and the risk agent builds a snapshot at most every 50 ms
        "RISKMON_LAST_PRICE_INTERVAL_S": str(args.last_price_ms / 1000.0),
        "RISKMON_INTRADAY_INTERVAL_S": "0.05",
        "RISKMON_APP_ID": "riskmon-bench-latency",
    }
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with Stack(out, worker_env=env, partitions=args.partitions) as stack:
        bootstrap = stack.bootstrap
        print(f"worker ready in {stack.ready_s:.1f} s")

        # the stream
        lat: list[tuple[int, float]] = []
        stages: list[tuple[int, float, float, float]] = []
        stop = threading.Event()
        th = threading.Thread(
            target=consumer_thread,
            args=(bootstrap, "risk", stop, lat, snapshot_ts, stages),
            daemon=True,
        )
        th.start()
        time.sleep(2.0)
        cpu0, wall0 = cpu_seconds(stack.worker.pid), time.monotonic()
        t_start = time.time_ns()
        with TickPublisher(bootstrap, run_id=None, source="bench", linger_ms=1) as pub:
            sent = produce(pub, args.rate, args.seconds, args.bundle_ms)
        busy = (cpu_seconds(stack.worker.pid) - cpu0) / (time.monotonic() - wall0)
        time.sleep(2.0)
        stop.set()
        th.join(10)
        cut = t_start + int(args.warmup * 1e9)
        stream = [x for t, x in lat if t >= cut]
        print(
            f"stream: {sent:,} ticks in {args.seconds:.0f} s ({sent / args.seconds:,.0f}/s, "
            f"bundles every {args.bundle_ms:.0f} ms); tick -> risk snapshot: "
            + (quantiles(stream) if stream else "no snapshots")
            + f"; worker CPU {busy:.0%} of one core"
        )
        if stream:
            # the embedded broker keeps every topic in memory and slows as it fills: p99 by window
            window_ns = 10 * 10**9
            windows: dict[int, list[float]] = {}
            for t, x in lat:
                if t >= cut:
                    windows.setdefault((t - cut) // window_ns, []).append(x)
            print(
                "  p99 by 10 s window since the warm-up: "
                + ", ".join(
                    f"{np.percentile(np.asarray(v) * 1e3, 99):.0f} ms"
                    for _, v in sorted(windows.items())
                )
            )
        kept = np.array([x[1:] for x in stages if x[0] >= cut]) * 1e3
        if kept.size:
            # up to the snapshot being built in the worker: this reader's fetch wait left out
            print(
                "  tick -> snapshot built in the worker (its wall clock): "
                + quantiles((kept[:, 0] + kept[:, 1]) / 1e3)
            )
            names = ("tick -> worker", "worker -> snapshot", "snapshot -> reader")
            print(
                "  by stage (p50 / p99 ms): "
                + "; ".join(
                    f"{n} {np.percentile(kept[:, i], 50):.1f} / {np.percentile(kept[:, i], 99):.1f}"
                    for i, n in enumerate(names)
                )
            )
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        text = urllib.request.urlopen(
            f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=5
        ).read()
        families = list(text_string_to_metric_families(text.decode()))

        def bucket_quantiles(name: str) -> tuple[float, float, float]:
            buckets = [
                (float(s.labels["le"]), s.value)
                for fam in families
                for s in fam.samples
                if s.name == f"{name}_bucket"
            ]
            total = buckets[-1][1] if buckets else 0
            p50 = next((le for le, c in buckets if total and c >= 0.5 * total), float("nan"))
            p99 = next((le for le, c in buckets if total and c >= 0.99 * total), float("nan"))
            return p50, p99, total

        p50, p99, total = bucket_quantiles("riskmon_tick_to_snapshot_seconds")
        print(
            f"worker histogram (arrival -> published, whole run incl. start): p50 <= {p50 * 1e3:g} ms, "
            f"p99 <= {p99 * 1e3:g} ms ({total:.0f} snapshots)"
        )
        p50, p99, total = bucket_quantiles("riskmon_event_loop_lag_seconds")
        print(
            f"worker event-loop lag (10 ms sleeps): p50 <= {p50 * 1e3:g} ms, "
            f"p99 <= {p99 * 1e3:g} ms ({total:.0f} samples)"
        )

        # baseline: producer -> broker -> consumer on a scratch topic, same message rate
        ensure_topics(bootstrap, ["bench-rtt"], 4)
        base: list[tuple[int, float]] = []
        stop = threading.Event()

        def ts_of(raw: bytes) -> int | None:
            return int(raw)

        th = threading.Thread(
            target=consumer_thread, args=(bootstrap, "bench-rtt", stop, base, ts_of), daemon=True
        )
        th.start()
        time.sleep(2.0)
        n_msgs = int(args.rate / len(ASSETS) * args.bundle_ms / 1000.0 >= 1) * len(ASSETS)
        period = args.bundle_ms / 1000.0
        from kafka import KafkaProducer

        prod = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks="all")
        t_end = time.monotonic() + min(args.seconds, 15.0)
        tick = time.monotonic()
        while time.monotonic() < t_end:
            for a in ASSETS[: max(n_msgs, 1)]:
                prod.send("bench-rtt", key=a.encode(), value=str(time.time_ns()).encode())
            tick += period
            delay = tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        prod.flush()
        prod.close()
        time.sleep(1.0)
        stop.set()
        th.join(10)
        rtt = [x for _, x in base[len(base) // 10 :]]
        if rtt and stream:
            print(f"baseline, broker round trip at the same message rate: {quantiles(rtt)}")
            print(
                f"-> the stream's p99 is {np.percentile(stream, 99) / np.percentile(rtt, 99):.1f}x "
                f"the broker round trip's; target p99 < 100 ms: "
                f"{'OK' if np.percentile(stream, 99) < 0.1 else 'missed'}"
            )


if __name__ == "__main__":
    main()
