"""`riskmon worker`, `riskmon replay` and `riskmon demo` (registered by ``stream_app.cli``)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]

DEMO_EPILOG = """\
examples:
  riskmon demo                          # embedded broker + Valkey, gfc2008, live view
  riskmon demo --crisis covid2020 --speed 20
  riskmon demo --days 30 --fast         # a short run (tests, a first look)
  RISKMON_KAFKA_BOOTSTRAP=kafka:9092 RISKMON_REDIS_URL=redis://redis:6379/0 riskmon demo
"""

REPLAY_EPILOG = """\
examples:
  riskmon replay --crisis gfc2008                     # shipped history, as fast as possible
  riskmon replay --data ../shared/data/daily --period 2020-02-01:2020-06-30 --speed 5
  riskmon replay --portfolios book.yaml --crisis covid2020 --ticks-per-day 100
needs RISKMON_KAFKA_BOOTSTRAP (a broker with a running `riskmon worker`), or use `riskmon demo`.
"""


def _speed(text: str) -> float | None:
    if text.strip().lower() in ("max", "inf", "0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--speed {text!r}: give trading days per second (e.g. 5) or 'max'"
        ) from None
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"--speed {text!r} must be > 0 or 'max'")
    return None if math.isinf(value) else value


def _at_least(lowest: int, what: str) -> Any:
    """An argparse type: an integer >= ``lowest`` (checked before anything starts)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"{value} must be >= {lowest} ({what})")
        return value

    return parse


def _models(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        metavar="DIR",
        help="folder of daily CSVs (Date,Open,High,Low,Close,Volume); default: the shipped history",
    )
    period = p.add_mutually_exclusive_group()
    period.add_argument(
        "--crisis",
        metavar="NAME",
        help="crisis preset: gfc2008 (default), euro2011, china2015, covid2020, rates2022",
    )
    period.add_argument("--period", metavar="SPEC", help="START:END dates or a year (YYYY)")
    p.add_argument(
        "--portfolios",
        metavar="YAML",
        help="portfolio file (default: the shipped stream_app/portfolios/demo.yaml)",
    )
    p.add_argument(
        "--warmup-days",
        type=int,
        default=260,
        help="trading days replayed before the period to warm the models up (default 260)",
    )
    p.add_argument("--days", type=int, help="replay only the first N trading days of the period")
    p.add_argument(
        "--speed",
        type=_speed,
        default=None,
        metavar="DAYS_PER_S|max",
        help="trading days per second, or 'max' (default)",
    )
    p.add_argument(
        "--ticks-per-day",
        type=_at_least(4, "a bar's open, high, low and close need a tick each"),
        default=50,
        help="ticks per asset and day, >= 4 (default 50)",
    )
    p.add_argument(
        "--bundle",
        type=_at_least(1, "ticks per message"),
        default=10,
        help="ticks of one asset per Kafka message (1 = one tick per message; default 10)",
    )
    p.add_argument("--run-id", help="replay run id (default: a new one)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``worker``, ``replay`` and ``demo`` to the ``riskmon`` command."""
    w = sub.add_parser(
        "worker",
        help="run one stream worker (ingest + risk agents); settings from RISKMON_* env",
        description=(
            "Run one Faust worker: agents ingest (ticks -> bars) and risk (bars -> risk "
            "snapshots on topic risk, Redis and Prometheus). Settings come from RISKMON_* "
            "environment variables; several workers with the same RISKMON_APP_ID share the "
            "topics' partitions. Without RISKMON_KAFKA_BOOTSTRAP it starts an embedded broker."
        ),
    )
    w.add_argument("--portfolios", metavar="YAML", help="portfolio file (RISKMON_PORTFOLIOS_FILE)")
    w.add_argument("--metrics-port", type=int, help="Prometheus port (RISKMON_METRICS_PORT)")
    w.add_argument("--output-dir", metavar="DIR", help="heatmap PNG files (RISKMON_OUTPUT_DIR)")
    w.add_argument("--loglevel", default="info", choices=("debug", "info", "warning", "error"))
    w.set_defaults(func=cmd_worker)

    r = sub.add_parser(
        "replay",
        help="replay history through the stream as intraday ticks",
        description=(
            "Turn each daily bar into intraday ticks (Brownian bridge through O/H/L/C) and "
            "publish them to the ticks topic, keyed by asset, with a run id that keeps the "
            "replay's outputs apart from live data. Ctrl-C stops cleanly after flushing."
        ),
        epilog=REPLAY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_data_args(r)
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_replay)

    d = sub.add_parser(
        "demo",
        help="the whole stream with a live view: embedded services, worker, crisis replay",
        description=(
            "Start what is not configured (the embedded Kafka-compatible broker and Valkey on "
            "free loopback ports; RISKMON_KAFKA_BOOTSTRAP / RISKMON_REDIS_URL use yours), a "
            "worker, replay a crisis and show portfolio VaR/ES, P&L, exceptions, the traffic "
            "light and the latest alerts live; then a summary. Everything started is stopped "
            "on exit or Ctrl-C."
        ),
        epilog=DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_data_args(d)
    d.add_argument("--out", metavar="DIR", help="output folder (default runs/demo-<time>)")
    d.add_argument(
        "--metrics-port", type=int, default=0, help="worker metrics port (default: a free one)"
    )
    d.add_argument("--champion", help="champion model of every portfolio (e.g. fhs, ewma)")
    d.add_argument(
        "--challengers", type=_models, help="challenger models, comma-separated ('' = none)"
    )
    d.add_argument(
        "--fast",
        action="store_true",
        help="a quick look: 10 ticks per day, 60 warm-up days, ewma champion, no challengers",
    )
    d.add_argument("--no-live", action="store_true", help="no live view (summary only)")
    d.set_defaults(func=cmd_demo)


def cmd_worker(args: argparse.Namespace) -> int:
    from stream_app.app import StreamSettings, run_worker

    overrides: dict[str, Any] = {}
    if args.portfolios:
        overrides["portfolios_file"] = Path(args.portfolios)
    if args.metrics_port is not None:
        overrides["metrics_port"] = args.metrics_port
    if args.output_dir:
        overrides["output_dir"] = Path(args.output_dir)
    settings = StreamSettings(**overrides)
    logging.basicConfig(
        level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    with contextlib.suppress(KeyboardInterrupt):
        run_worker(settings, loglevel=args.loglevel)
    return 0


def _period(args: argparse.Namespace) -> str:
    return args.period or args.crisis or "gfc2008"


def cmd_replay(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from producers.kafka_out import ensure_topics, new_run_id, replay_panel
    from stream_app.app import DEMO_PORTFOLIOS, StreamSettings
    from stream_app.demo import plan_replay
    from stream_app.risk import load_portfolio_configs

    settings = StreamSettings()
    if not settings.kafka_bootstrap:
        raise ValueError(
            "RISKMON_KAFKA_BOOTSTRAP is not set: point it at the broker of a running "
            "`riskmon worker`, or run `riskmon demo` (it starts everything)"
        )
    console = Console(stderr=True)
    configs = load_portfolio_configs(args.portfolios or settings.portfolios_file or DEMO_PORTFOLIOS)
    plan = plan_replay(
        configs,
        data=args.data,
        period=_period(args),
        warmup_days=args.warmup_days,
        days=args.days,
    )
    run_id = args.run_id or settings.replay_run_id or new_run_id()
    ensure_topics(
        settings.kafka_bootstrap,
        settings.stream_topics,
        settings.partitions,
    )
    console.print(
        f"[bold]riskmon replay[/] run [cyan]{run_id}[/]: {plan.label}, {plan.n_days} days "
        f"({plan.n_warmup} warm-up), {len(plan.panel.assets)} assets, "
        f"{args.ticks_per_day} ticks per asset-day -> {settings.kafka_bootstrap}"
    )
    show = not args.no_progress and sys.stderr.isatty()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} days"),
        TimeRemainingColumn(),
        console=console,
        disable=not show,
    ) as bar:
        task = bar.add_task("replay", total=plan.n_days)

        def progress(p: Any) -> None:
            bar.update(task, completed=p.days_done, description=p.day)

        stats = replay_panel(
            plan.panel,
            settings.kafka_bootstrap,
            topic=settings.topic_ticks,
            run_id=run_id,
            ticks_per_day=args.ticks_per_day,
            days_per_second=args.speed,
            progress=progress,
            bundle=args.bundle,
        )
    console.print(
        f"{'interrupted after' if stats.interrupted else 'sent'} {stats.days} days, "
        f"{stats.ticks:,} ticks + {stats.eod_markers} end-of-day markers in "
        f"{stats.elapsed_s:.1f} s ({stats.ticks_per_s:,.0f} ticks/s); run id {run_id}"
    )
    return 130 if stats.interrupted else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from stream_app.demo import DemoOptions, run_demo

    champion, challengers = args.champion, args.challengers
    ticks, warmup = args.ticks_per_day, args.warmup_days
    if args.fast:
        champion = champion or "ewma"
        challengers = challengers if challengers is not None else ()
        ticks = 10 if ticks == 50 else ticks
        warmup = 60 if warmup == 260 else warmup
    opts = DemoOptions(
        period=_period(args),
        data=args.data,
        portfolios_file=args.portfolios or os.environ.get("RISKMON_PORTFOLIOS_FILE"),
        warmup_days=warmup,
        days=args.days,
        speed=args.speed,
        ticks_per_day=ticks,
        bundle=args.bundle,
        metrics_port=args.metrics_port,
        live=not args.no_live,
        champion=champion,
        challengers=challengers,
        run_id=args.run_id,
    )
    if args.out:
        opts.out = Path(args.out)
    summary = run_demo(opts, Console(width=None if sys.stdout.isatty() else 160))
    return 130 if summary.get("interrupted") else 0
