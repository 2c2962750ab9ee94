"""Operations subcommands of ``riskmon``: ``riskmon alerts tail`` (and, later, dashboards).

A small dispatcher: :func:`register` adds the subcommands; each ``cmd_*`` reads its
arguments and calls the module that does the work.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

__all__ = ["cmd_alerts_tail", "format_alert", "register"]

ALERTS_EPILOG = """\
examples:
  riskmon alerts tail                          # every run, last 20 alerts each, then live
  riskmon alerts tail --run live --since 1h    # live alerts of the last hour, then new ones
  riskmon alerts tail --run gfc-1 --since all --once --json    # dump a replay's alerts
  riskmon alerts tail --redis redis://localhost:6379/0

Alerts are read from the Redis Streams riskmon:alerts:<run> (run = replay id, or
'live'); RISKMON_REDIS_URL / RISKMON_REDIS_PASSWORD are used when --redis is not given.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``alerts`` (``tail``) to the ``riskmon`` subcommands."""
    p = sub.add_parser(
        "alerts",
        help="risk alerts in Redis (tail)",
        description="Risk alerts written by the stream workers to Redis.",
    )
    asub = p.add_subparsers(dest="alerts_command", metavar="ACTION")
    asub.required = True
    t = asub.add_parser(
        "tail",
        help="show alerts live (Ctrl-C to stop)",
        description="Print the latest alerts, then new ones as they arrive (Ctrl-C stops).",
        epilog=ALERTS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument(
        "--run",
        action="append",
        metavar="RUN",
        help="replay run id, or 'live' (repeatable; default: every run, new ones included)",
    )
    t.add_argument("--redis", metavar="URL", help="redis://[:password@]host:port/db")
    t.add_argument(
        "--since",
        metavar="WHEN",
        help="'all', 'new', a duration (30s, 10m, 2h, 1d), an ISO time or a stream id "
        "(default: the last --count alerts of each run)",
    )
    t.add_argument("--count", type=int, default=20, help="backlog per run (default 20)")
    t.add_argument("--once", action="store_true", help="print what is there and exit")
    t.add_argument("--json", action="store_true", help="one JSON object per line")
    t.set_defaults(func=cmd_alerts_tail)

    from stream_app.dashboards import add_dashboards_command  # riskmon dashboards export|push

    add_dashboards_command(sub)


_SEVERITY_STYLE = {
    "info": "dim",
    "warning": "yellow",
    "critical": "bold red",
    "breach": "bold white on red",
}


def format_alert(alert: Any) -> Any:
    """A rich ``Text`` line for one alert."""
    from rich.text import Text

    line = Text()
    line.append(alert.event_time[:19].replace("T", " "), style="cyan")
    if alert.state == "resolved":
        line.append("  RESOLVED ", style="green")
    else:
        line.append("  FIRING   ", style="bold")
    line.append(f"{alert.severity:<8}", style=_SEVERITY_STYLE.get(alert.severity, ""))
    line.append(f" {alert.rule:<17}", style="bold")
    where = alert.portfolio + (f"/{alert.asset}" if alert.asset else "")
    line.append(f" {where:<14}")
    line.append(f" {alert.message}")
    extra = f"  [{alert.run_label} {alert.day} id={alert.id}"
    if alert.model_version:
        extra += f" model={alert.model}@{alert.model_version}"
    if alert.heatmap:
        extra += f" heatmap={alert.heatmap}"
    line.append(extra + "]", style="dim")
    return line


def _redis_url(args: argparse.Namespace) -> tuple[str, str | None]:
    from stream_app.settings import Settings

    settings = Settings()
    url = args.redis or settings.redis_url
    if not url:
        raise ValueError(
            "no Redis to read: give --redis redis://host:port/0 or set RISKMON_REDIS_URL "
            "(`riskmon demo` prints the URL of the Valkey it starts)"
        )
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    return url, password


def cmd_alerts_tail(args: argparse.Namespace) -> int:
    from rich.console import Console

    from stream_app.alerts_sink import AlertReader, make_redis, parse_since
    from stream_app.settings import mask_url

    if args.count < 1:
        raise ValueError(f"--count {args.count}: must be >= 1")
    url, password = _redis_url(args)
    since = parse_since(args.since)
    console = Console(highlight=False, soft_wrap=True)
    try:
        client = make_redis(url, password, asyncio=False)
    except ValueError as exc:  # redis-py parses the URL here
        raise ValueError(
            f"bad Redis URL {mask_url(url)!r} (--redis or RISKMON_REDIS_URL): {exc}"
        ) from None
    reader = AlertReader(client, args.run, since, backlog=args.count)
    import redis

    waiting = False
    shown = 0
    try:
        if not args.once and not args.json:
            runs = ", ".join(args.run) if args.run else "every run"
            console.print(f"[dim]alerts of {runs} at {mask_url(url)}; Ctrl-C to stop[/]")
        while True:
            try:
                batch = reader.poll(block_ms=200 if args.once else 1000)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                if args.once:
                    raise ValueError(f"cannot read {mask_url(url)}: {exc}") from None
                if not waiting:
                    console.print(f"[yellow]waiting for Redis at {mask_url(url)} ({exc})[/]")
                    waiting = True
                time.sleep(1.0)
                continue
            except redis.RedisError as exc:  # it answered, but not as a Redis with our streams
                raise ValueError(
                    f"cannot read alerts from {mask_url(url)}: {exc} (is it a Redis server?)"
                ) from None
            if waiting:
                console.print("[green]Redis is back[/]")
                waiting = False
            for _key, _entry, alert in batch:
                shown += 1
                if args.json:
                    sys.stdout.write(alert.encode().decode() + "\n")
                    sys.stdout.flush()
                else:
                    console.print(format_alert(alert))
            if args.once and not batch:
                return 0
    except KeyboardInterrupt:
        if not args.json:
            console.print(f"[dim]stopped after {shown} alert(s)[/]")
        return 0
    finally:
        client.close()
