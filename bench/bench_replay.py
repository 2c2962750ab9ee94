"""Wall time and worker memory of a crisis replay through the whole stream.

Starts the embedded broker and Valkey, one worker (``python -m stream_app.app``) and
replays ``--crisis`` (default gfc2008: warm-up + period, the shipped history, the demo
portfolio of 10 assets, 50 ticks per asset-day) as fast as possible. Measures the wall
time from the first tick sent until the daily snapshot of the last day is in Redis, and
the worker's peak RSS (``VmHWM`` from /proc). Baselines measured in the same run: the
producer alone (kafka-python, the same ticks) and the offline walk-forward of the same
models on the same closes (``models.walkforward``), so the ratio says what the stream
adds to the engine's own cost.

    python bench/bench_replay.py [--crisis gfc2008] [--days N] [--ticks-per-day 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.registry import make_model
from models.walkforward import walk_forward
from producers.kafka_out import TickPublisher, replay_panel
from stream_app.demo import (
    DemoOptions,
    Stack,
    _load_configs,
    _write_portfolios,
    plan_replay,
)
from stream_app.records import RiskSnapshot
from stream_app.risk import ModelUnavailable, build_model
from stream_app.sinks import latest_key


def peak_rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MiB, from /proc/<pid>/status."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) / 1024
    return out.get("VmRSS", float("nan")), out.get("VmHWM", float("nan"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as fh:
        parts = fh.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def histogram(port: int, name: str) -> tuple[float, float]:
    """(count, sum) of a histogram on the worker's /metrics."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    count = total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == f"{name}_count":
                count += s.value
            elif s.name == f"{name}_sum":
                total += s.value
    return count, total


def load_avg() -> str:
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crisis", default="gfc2008")
    ap.add_argument("--days", type=int, default=None)
    ap.add_argument("--warmup-days", type=int, default=260)
    ap.add_argument("--ticks-per-day", type=int, default=50)
    ap.add_argument("--bundle", type=int, default=10)
    ap.add_argument("--champion", default=None)
    ap.add_argument("--challengers", default=None, help="comma-separated; '' = none")
    args = ap.parse_args()

    opts = DemoOptions(
        champion=args.champion,
        challengers=None
        if args.challengers is None
        else tuple(c for c in args.challengers.split(",") if c),
    )
    configs = _load_configs(opts)
    plan = plan_replay(configs, period=args.crisis, warmup_days=args.warmup_days, days=args.days)
    n_ticks = plan.n_days * len(plan.panel.assets) * args.ticks_per_day
    print(
        f"{plan.label}: {plan.n_days} days ({plan.n_warmup} warm-up) x "
        f"{len(plan.panel.assets)} assets x {args.ticks_per_day} ticks = {n_ticks:,} ticks; "
        f"load average {load_avg()} on {os.cpu_count()} cores"
    )
    out = Path(tempfile.mkdtemp(prefix="riskmon-bench-replay-"))
    yaml_path = out / "portfolios.yaml"
    _write_portfolios(yaml_path, configs)
    env = {
        "RISKMON_PORTFOLIOS_FILE": str(yaml_path),
        "RISKMON_OUTPUT_DIR": str(out / "heatmaps"),
        "RISKMON_APP_ID": "riskmon-bench-replay",
    }
    last_day = str(plan.panel.dates[-1])
    with Stack(out, worker_env=env) as stack:
        print(f"worker ready in {stack.ready_s:.1f} s; pid {stack.worker.pid}")
        r = stack.redis()
        rss_samples: list[float] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                try:
                    rss_samples.append(peak_rss_mb(stack.worker.pid)[0])
                except OSError:  # the worker is gone
                    return
                done.wait(0.5)

        threading.Thread(target=sample, daemon=True).start()
        run_id = "bench-replay"
        cpu0 = cpu_seconds(stack.worker.pid)
        pcpu0 = time.process_time()
        t0 = time.monotonic()
        with TickPublisher(stack.bootstrap, run_id=run_id) as pub:
            stats = replay_panel(
                plan.panel,
                run_id=run_id,
                ticks_per_day=args.ticks_per_day,
                bundle=args.bundle,
                publisher=pub,
            )
        t_sent = time.monotonic() - t0
        producer_cpu = time.process_time() - pcpu0
        name = configs[0].name
        snap = None
        while time.monotonic() - t0 < 900:
            raw = r.get(latest_key(name, run_id, "daily"))
            if raw:
                snap = RiskSnapshot.decode(raw)
                if snap.day >= last_day:
                    break
            time.sleep(0.05)
        wall = time.monotonic() - t0
        done.set()
        worker_cpu = cpu_seconds(stack.worker.pid) - cpu0
        rss, hwm = peak_rss_mb(stack.worker.pid)
        days_seen = r.xlen(f"riskmon:risk:{run_id}:{name}:history")
        # the worker observes its metrics after the Redis write of the same batch
        deadline = time.monotonic() + 5.0
        while True:
            n_close, s_close = histogram(stack.metrics_port, "riskmon_day_close_seconds")
            if n_close >= days_seen or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    print(
        f"stream: {stats.ticks:,} ticks sent in {t_sent:.1f} s; last daily snapshot "
        f"({snap.day if snap else None}, champion {snap.model if snap else '?'}) after "
        f"{wall:.1f} s -> {stats.ticks / wall:,.0f} ticks/s end to end "
        f"({'OK' if wall < 60 else 'over'} the 60 s target); {days_seen} snapshots in Redis"
    )
    print(
        f"CPU: worker {worker_cpu:.1f} s, producer (this process) {producer_cpu:.1f} s, over "
        f"{wall:.1f} s of wall time on {os.cpu_count()} shared cores (load {load_avg()}); "
        f"day closes: {n_close:.0f}, mean {1e3 * s_close / max(n_close, 1):.1f} ms "
        f"(models, contributions, heatmap; off the event loop)"
    )
    print(
        f"worker RSS: peak {hwm:.0f} MiB (VmHWM), at end {rss:.0f} MiB, max sampled "
        f"{max(rss_samples or [float('nan')]):.0f} MiB ({'OK' if hwm < 1536 else 'over'} 1.5 GB)"
    )

    # baseline 1: the offline engine on the same closes (same models, one process)
    c = configs[0]
    x = plan.panel.select(c.assets).log_returns()
    dates = plan.panel.dates[1:]
    names = [snap.model if snap else c.champion, *c.challengers]
    t1 = time.monotonic()
    for m in dict.fromkeys(names):
        try:
            model, _ = build_model(m, c.weight_array, seed=c.seed)
        except ModelUnavailable:
            model = make_model(c.fallback, c.weight_array, seed=c.seed)
        walk_forward(model, x, dates, dates[0])
    t_engine = time.monotonic() - t1
    print(
        f"baseline, offline walk-forward of the same {len(set(names))} models on the same "
        f"closes: {t_engine:.1f} s -> the stream takes {wall / t_engine:.2f}x the engine's time"
    )
    print(
        f"baseline, producer alone (the ticks above): {t_sent:.1f} s ({stats.ticks_per_s:,.0f} ticks/s)"
    )


if __name__ == "__main__":
    main()
