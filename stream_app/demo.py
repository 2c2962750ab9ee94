"""`riskmon demo`: the whole stream on one machine, with a live terminal view.

:class:`Stack` starts what is not configured - the embedded Kafka-compatible broker
and Valkey on free loopback ports (``RISKMON_KAFKA_BOOTSTRAP`` / ``RISKMON_REDIS_URL``
select external services instead) - creates the topics and runs one worker as a child
process (``python -m stream_app.app``, its own event loop and signal handling). The
replay runs in a thread of this process; the view polls Redis (the latest snapshots,
the alert stream ``riskmon:alerts:<run>``) a few times a second. Everything started is
stopped, by pid, on exit, on an error and on Ctrl-C.

Outputs under ``--out``: ``heatmaps/<run>/<portfolio>/<day>.png`` (written by the
worker), ``snapshots.csv`` (the daily snapshots), ``summary.json`` and ``worker.log``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.panel import Panel
from stream_app.records import RiskSnapshot
from stream_app.risk import PortfolioConfig

__all__ = [
    "DemoOptions",
    "ReplayPlan",
    "Stack",
    "WorkerProcess",
    "plan_replay",
    "run_demo",
]

REPO = Path(__file__).resolve().parents[1]
_ZONE = {"green": "bold green", "yellow": "bold yellow", "red": "bold red", None: "dim"}


# -- what to replay ------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplayPlan:
    """A panel to replay: warm-up days, then the period (possibly cut to ``days``)."""

    panel: Panel
    start: np.datetime64
    end: np.datetime64
    label: str

    @property
    def n_days(self) -> int:
        return self.panel.n_days

    @property
    def n_warmup(self) -> int:
        return int(np.searchsorted(self.panel.dates, self.start))


def plan_replay(
    portfolios: Sequence[PortfolioConfig],
    *,
    data: str | None = None,
    period: str = "gfc2008",
    warmup_days: int = 260,
    days: int | None = None,
) -> ReplayPlan:
    """Load the assets of ``portfolios`` and cut the period with its warm-up.

    Parameters
    ----------
    portfolios : sequence of PortfolioConfig
        Their assets (union, in order) are replayed.
    data : str or None
        A folder of daily CSVs; ``None`` = the shipped history.
    period : str
        A crisis preset, ``YYYY`` or ``START:END``.
    warmup_days : int
        Trading days before the period (fed to the models, not the point of the show).
    days : int or None
        Keep only the first ``days`` trading days of the period.
    """
    from producers.history import load_history
    from producers.presets import resolve_period

    assets = list(dict.fromkeys(a for p in portfolios for a in p.assets))
    panel = load_history(data, assets)
    start, end, wstart = resolve_period(period, panel.dates, warmup_days=warmup_days)
    if days is not None:
        if days < 1:
            raise ValueError(f"days={days} must be >= 1")
        i = int(np.searchsorted(panel.dates, start))
        end = min(end, panel.dates[min(i + days, panel.n_days) - 1])
    return ReplayPlan(panel.between(wstart, end), start, end, f"{period} ({start}..{end})")


# -- the worker child process ---------------------------------------------------------------
class WorkerProcess:
    """``python -m stream_app.app`` with ``RISKMON_*`` settings, stopped by pid."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream_app.app"],
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(self.log_path.parent),
            )
        return self

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Block until the worker logs ``Worker ready``; returns the seconds it took."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"worker exited with {code}:\n{self.log()[-3000:]}")
            if "Worker ready" in self.log():
                return time.monotonic() - t0
            time.sleep(0.1)
        raise TimeoutError(f"worker not ready after {timeout} s:\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM by pid, SIGKILL after ``timeout``; returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        return proc.returncode


# -- services ------------------------------------------------------------------------------
def stack_partitions(settings: Any, environ: Mapping[str, str]) -> int:
    """Partitions of every topic of a :class:`Stack` left to choose them.

    ``RISKMON_PARTITIONS`` when the user set it; otherwise 1 when the stack starts the
    embedded broker (its only consumer is the stack's one worker, and each partition a
    fetch asks for costs that broker a walk over its record batches), else the settings'
    default.

    >>> from stream_app.settings import Settings
    >>> stack_partitions(Settings(kafka_bootstrap=None), {})
    1
    >>> stack_partitions(Settings(kafka_bootstrap=None, partitions=3), {"RISKMON_PARTITIONS": "3"})
    3
    >>> stack_partitions(Settings(kafka_bootstrap="kafka:9092"), {})
    4
    """
    if settings.kafka_bootstrap is None and "RISKMON_PARTITIONS" not in environ:
        return 1
    return int(settings.partitions)


class Stack:
    """Broker + Redis (embedded unless configured) + one worker; a context manager.

    Parameters
    ----------
    out : Path
        Logs and heatmaps go here.
    worker_env : dict of str to str
        Extra ``RISKMON_*`` settings of the worker.
    metrics_port : int
        The worker's metrics port (0 picks a free one).
    partitions : int or None
        Partitions of every topic; None: :func:`stack_partitions`.
    """

    def __init__(
        self,
        out: Path,
        *,
        worker_env: dict[str, str] | None = None,
        metrics_port: int = 0,
        partitions: int | None = None,
    ) -> None:
        from stream_app.settings import Settings

        self.settings = Settings()
        self.out = out
        self.worker_env = dict(worker_env or {})
        self.metrics_port = metrics_port
        self.partitions = partitions
        self.started: list[str] = []
        self._stack = contextlib.ExitStack()
        self.bootstrap = self.settings.kafka_bootstrap
        self.redis_url = self.settings.redis_url
        pw = self.settings.redis_password
        self.redis_password = pw.get_secret_value() if pw is not None else None
        self.worker: WorkerProcess | None = None
        self.ready_s = float("nan")

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        from producers.kafka_out import ensure_topics
        from stream_app.embedded import EmbeddedKafka, EmbeddedValkey, find_free_port

        logs = self.out / "logs"
        if self.bootstrap is None:
            kafka = EmbeddedKafka(log_dir=logs)
            self._stack.enter_context(kafka)
            self.bootstrap = kafka.bootstrap
            self.started.append(f"embedded broker on {kafka.bootstrap} (pid {kafka.pid})")
        if self.redis_url is None:
            self.redis_password = secrets.token_urlsafe(16)
            valkey = EmbeddedValkey(log_dir=logs, password=self.redis_password)
            self._stack.enter_context(valkey)
            self.redis_url = valkey.url
            self.started.append(f"embedded Valkey on {valkey.url} (pid {valkey.pid})")
        s = self.settings
        if self.partitions is None:
            self.partitions = stack_partitions(s, os.environ)
        ensure_topics(
            self.bootstrap,
            s.stream_topics,
            self.partitions,
        )
        port = self.metrics_port or find_free_port()
        self.metrics_port = port
        env = dict(os.environ)  # RISKMON_* of the user (external services, tuning) included
        env.update(
            RISKMON_KAFKA_BOOTSTRAP=self.bootstrap,
            RISKMON_REDIS_URL=self.redis_url,
            RISKMON_METRICS_PORT=str(port),
            RISKMON_PARTITIONS=str(self.partitions),
            RISKMON_DATA_DIR=str(self.out / "faust"),
            PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        )
        if self.redis_password:
            env["RISKMON_REDIS_PASSWORD"] = self.redis_password
        env.update(self.worker_env)
        self.worker = WorkerProcess(env, self.out / "worker.log").start()
        self._stack.callback(self.worker.stop)
        self.started.append(f"worker (pid {self.worker.pid}, metrics :{port})")
        self.ready_s = self.worker.wait_ready()

    def redis(self) -> Any:
        """A synchronous Redis client of the stack."""
        import redis

        return redis.Redis.from_url(
            self.redis_url, password=self.redis_password, socket_timeout=5.0
        )

    def close(self) -> None:
        self._stack.close()


# -- the view ------------------------------------------------------------------------------
@dataclass
class ViewState:
    """What the live view shows (updated by the replay thread and the Redis poller)."""

    label: str
    run_id: str
    n_days: int
    n_warmup: int
    days_done: int = 0
    day: str = ""
    ticks: int = 0
    elapsed: float = 0.0
    replay_done: bool = False
    latest: dict[str, RiskSnapshot] = field(default_factory=dict)
    daily: dict[str, RiskSnapshot] = field(default_factory=dict)
    alerts: list[Any] = field(default_factory=list)
    n_alerts: int = 0
    alert_counts: dict[str, int] = field(default_factory=dict)  #: "rule/state" -> events
    metrics_url: str = ""


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}%"


def _lv(d: dict[str, Any] | None, key: str) -> Any:
    return None if not d else d.get(key)


def render(view: ViewState) -> Any:
    """The rich renderable of the live view."""
    from rich.console import Group
    from rich.panel import Panel as RichPanel
    from rich.table import Table

    rate = view.days_done / view.elapsed if view.elapsed > 0 else 0.0
    phase = "warm-up" if view.days_done <= view.n_warmup else "period"
    head = (
        f"[bold]riskmon demo[/] {view.label}  run [cyan]{view.run_id}[/]\n"
        f"replayed {view.days_done}/{view.n_days} days ({phase}), day {view.day or '-'}, "
        f"{view.ticks:,} ticks, {rate:.1f} days/s"
        + ("  [green]replay done[/]" if view.replay_done else "")
        + f"\nmetrics {view.metrics_url}"
    )
    parts: list[Any] = [head]
    for name in sorted(view.daily or view.latest):
        d = view.daily.get(name)
        last = view.latest.get(name, d)
        ref = d or last
        version = f", champion {ref.model} {ref.model_version}" if ref is not None else ""
        t = Table(title=f"portfolio {name}{version}", header_style="bold", expand=False)
        for col in ("model", "VaR95", "VaR99", "ES97.5", "ES99", "day ret", "P&L today",
                    "exc95/99 (250d)", "Kupiec p99", "light", "avg corr"):  # fmt: skip
            t.add_column(col, justify="right" if col != "model" else "left")
        if d is not None:
            zone = d.traffic_light
            exc = d.exception or {}
            ret_style = "bold red" if exc.get("0.99") else ("yellow" if exc.get("0.95") else "")
            t.add_row(
                f"[bold]{d.model}[/]",
                _pct(_lv(last.var if last else d.var, "0.95")),
                _pct(_lv(last.var if last else d.var, "0.99")),
                _pct(_lv(d.es, "0.975")),
                _pct(_lv(d.es, "0.99")),
                f"[{ret_style}]{_pct(d.realized_return)}[/]"
                if ret_style
                else _pct(d.realized_return),
                _pct(last.pnl if last is not None and last.kind == "intraday" else None),
                f"{d.exceptions_250d.get('0.95', 0)}/{d.exceptions_250d.get('0.99', 0)}"
                f" of {d.days_250d}",
                "-" if d.kupiec_p.get("0.99") is None else f"{d.kupiec_p['0.99']:.3f}",
                f"[{_ZONE.get(zone, 'dim')}]{zone or '-'}[/]",
                "-" if d.avg_correlation is None else f"{d.avg_correlation:.2f}",
            )
            for ch in d.challengers.values():
                t.add_row(
                    f"[dim]{ch.model}[/]",
                    _pct(_lv(ch.var, "0.95")),
                    _pct(_lv(ch.var, "0.99")),
                    _pct(_lv(ch.es, "0.975")),
                    _pct(_lv(ch.es, "0.99")),
                    "",
                    "",
                    f"{ch.exceptions_250d.get('0.95', 0)}/{ch.exceptions_250d.get('0.99', 0)}"
                    f" of {ch.days_250d}",
                    "-" if ch.kupiec_p.get("0.99") is None else f"{ch.kupiec_p['0.99']:.3f}",
                    f"[{_ZONE.get(ch.traffic_light, 'dim')}]{ch.traffic_light or '-'}[/]",
                    "",
                )
        parts.append(t)
    alerts = Table(title=f"latest alerts ({view.n_alerts} events)", header_style="bold")
    for col in ("day", "severity", "state", "rule", "portfolio", "asset", "message"):
        alerts.add_column(col)
    for a in view.alerts[-8:]:
        sev = getattr(a, "severity", "?")
        style = {"critical": "red", "breach": "bold red", "warning": "yellow"}.get(sev, "")
        alerts.add_row(
            getattr(a, "day", ""),
            f"[{style}]{sev}[/]" if style else sev,
            getattr(a, "state", ""),
            getattr(a, "rule", ""),
            getattr(a, "portfolio", ""),
            getattr(a, "asset", ""),
            getattr(a, "message", "")[:70],
        )
    parts.append(alerts)
    return RichPanel(Group(*parts), border_style="blue")


class RedisView:
    """Polls Redis for a run's latest snapshots and alerts."""

    def __init__(self, client: Any, run_id: str, portfolios: Sequence[str]) -> None:
        self.client = client
        self.run_id = run_id
        self.portfolios = list(portfolios)
        self.alert_cursor = "0-0"

    def poll(self, view: ViewState) -> None:
        from stream_app.sinks import latest_key

        pipe = self.client.pipeline(transaction=False)
        for p in self.portfolios:
            pipe.get(latest_key(p, self.run_id))
            pipe.get(latest_key(p, self.run_id, "daily"))
        raw = pipe.execute()
        for i, p in enumerate(self.portfolios):
            for slot, target in ((raw[2 * i], view.latest), (raw[2 * i + 1], view.daily)):
                if slot:
                    with contextlib.suppress(Exception):
                        target[p] = RiskSnapshot.decode(slot)
        key = f"riskmon:alerts:{self.run_id or 'live'}"
        entries = self.client.xrange(key, min=f"({self.alert_cursor}", count=500)
        if self.alert_cursor == "0-0":
            entries = self.client.xrange(key, count=100_000)
        for entry_id, fields in entries:
            self.alert_cursor = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            alert = _alert(fields)
            view.alerts.append(alert)
            view.n_alerts += 1
            key = f"{getattr(alert, 'rule', '?')}/{getattr(alert, 'state', '?')}"
            view.alert_counts[key] = view.alert_counts.get(key, 0) + 1
        del view.alerts[:-50]

    def settle_alerts(self, view: ViewState, timeout: float, quiet_s: float = 2.0) -> bool:
        """Poll until the run's alert stream has not grown for ``quiet_s`` seconds (the
        alerts stage delivers the alerts of the last snapshots after them), at most
        ``timeout`` seconds; whether it settled."""
        key = f"riskmon:alerts:{self.run_id or 'live'}"
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            n = int(self.client.xlen(key))
            now = time.monotonic()
            if n != last:
                last, since = n, now
            elif now - since >= quiet_s:
                self.poll(view)
                return True
            time.sleep(0.25)
        self.poll(view)
        return False


def _alert(fields: dict[Any, Any]) -> Any:
    try:
        from stream_app.alerts import Alert

        return Alert.from_fields(fields)
    except Exception:
        from types import SimpleNamespace

        d = {
            (k.decode() if isinstance(k, bytes) else k): (
                v.decode(errors="replace") if isinstance(v, bytes) else v
            )
            for k, v in fields.items()
        }
        return SimpleNamespace(**{k: d.get(k, "") for k in
                                  ("day", "severity", "state", "rule", "portfolio", "asset",
                                   "message")})  # fmt: skip


# -- the run -------------------------------------------------------------------------------
@dataclass
class DemoOptions:
    """Options of :func:`run_demo` (the command-line flags)."""

    period: str = "gfc2008"
    data: str | None = None
    portfolios_file: str | None = None
    warmup_days: int = 260
    days: int | None = None
    speed: float | None = None  # days per second; None = as fast as possible
    ticks_per_day: int = 50
    bundle: int = 10
    out: Path = field(default_factory=lambda: Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S"))
    metrics_port: int = 0
    live: bool = True
    champion: str | None = None
    challengers: tuple[str, ...] | None = None
    run_id: str | None = None
    intraday_interval_s: float = 1800.0
    settle_timeout: float = 60.0


def _load_configs(opts: DemoOptions) -> list[PortfolioConfig]:
    from stream_app.app import DEMO_PORTFOLIOS
    from stream_app.risk import load_portfolio_configs

    configs = load_portfolio_configs(opts.portfolios_file or DEMO_PORTFOLIOS)
    out = []
    for c in configs:
        changes: dict[str, Any] = {}
        if opts.champion:
            changes["champion"] = opts.champion
        if opts.challengers is not None:
            changes["challengers"] = tuple(opts.challengers)
        out.append(PortfolioConfig(**{**c.__dict__, **changes}) if changes else c)
    return out


def run_demo(opts: DemoOptions, console: Any = None) -> dict[str, Any]:
    """Start the stack, replay, show the live view, write and print the summary.

    Returns the summary dict (also written to ``<out>/summary.json``).
    """
    from rich.console import Console
    from rich.live import Live

    from producers.kafka_out import TickPublisher, new_run_id, replay_panel

    console = console or Console()
    configs = _load_configs(opts)
    plan = plan_replay(
        configs,
        data=opts.data,
        period=opts.period,
        warmup_days=opts.warmup_days,
        days=opts.days,
    )
    out = Path(opts.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_id = opts.run_id or new_run_id("demo")
    portfolios_yaml = out / "portfolios.yaml"
    _write_portfolios(portfolios_yaml, configs)
    worker_env = {
        "RISKMON_PORTFOLIOS_FILE": str(portfolios_yaml),
        "RISKMON_OUTPUT_DIR": str(out / "heatmaps"),
        "RISKMON_REDIS_HISTORY_LEN": "200000",
        "RISKMON_INTRADAY_INTERVAL_S": str(opts.intraday_interval_s),
        "RISKMON_APP_ID": f"riskmon-demo-{run_id}",
    }
    console.print(
        f"[bold]riskmon demo[/]: {plan.label}, {plan.n_days} trading days "
        f"({plan.n_warmup} warm-up) of {len(plan.panel.assets)} assets, "
        f"{opts.ticks_per_day} ticks per asset-day; output in {out}"
    )
    summary: dict[str, Any] = {}
    t_start = time.monotonic()
    stop = threading.Event()
    interrupted = False
    with Stack(out, worker_env=worker_env, metrics_port=opts.metrics_port) as stack:
        for line in stack.started:
            console.print(f"  started {line}")
        console.print(f"  worker ready in {stack.ready_s:.1f} s")
        view = ViewState(
            plan.label,
            run_id,
            plan.n_days,
            plan.n_warmup,
            metrics_url=f"http://127.0.0.1:{stack.metrics_port}/metrics",
        )
        client = stack.redis()
        poller = RedisView(client, run_id, [c.name for c in configs])
        box: dict[str, Any] = {}

        def progress(p: Any) -> None:
            view.days_done, view.day, view.ticks, view.elapsed = (
                p.days_done,
                p.day,
                p.ticks_sent,
                p.elapsed_s,
            )

        def replay() -> None:
            try:  # flushes without a deadline (a loaded broker may need more than 10 s)
                with TickPublisher(
                    stack.bootstrap, stack.settings.topic_ticks, run_id=run_id
                ) as pub:
                    box["stats"] = replay_panel(
                        plan.panel,
                        run_id=run_id,
                        ticks_per_day=opts.ticks_per_day,
                        days_per_second=opts.speed,
                        progress=progress,
                        stop=stop,
                        bundle=opts.bundle,
                        publisher=pub,
                    )
            except BaseException as exc:  # shown after the view closes
                box["error"] = exc
            finally:
                view.replay_done = True

        thread = threading.Thread(target=replay, name="riskmon-replay", daemon=True)
        last_day = str(plan.panel.dates[-1])
        try:
            thread.start()
            live_cm: Any = (
                Live(render(view), console=console, auto_refresh=False)
                if opts.live
                else contextlib.nullcontext()
            )
            with live_cm as live:
                settle_deadline: float | None = None
                last_mark: tuple[str, ...] = ()
                while True:
                    with contextlib.suppress(Exception):
                        poller.poll(view)
                    if live is not None:
                        live.update(render(view), refresh=True)
                    if view.replay_done:
                        # the worker may lag the replay: wait while it makes progress, and give
                        # up only after settle_timeout seconds without a new closed day
                        progress_mark = tuple(
                            view.daily[c.name].day if view.daily.get(c.name) else ""
                            for c in configs
                        )
                        if settle_deadline is None or progress_mark != last_mark:
                            settle_deadline = time.monotonic() + opts.settle_timeout
                            last_mark = progress_mark
                        done = all(
                            view.daily.get(c.name) is not None
                            and view.daily[c.name].day >= last_day
                            for c in configs
                        )
                        if done or time.monotonic() > settle_deadline or "error" in box:
                            break
                    time.sleep(0.25)
                with contextlib.suppress(Exception):
                    # the alerts of the last days arrive after their snapshots: count them all
                    poller.settle_alerts(view, timeout=min(opts.settle_timeout, 15.0))
                if live is not None:
                    live.update(render(view), refresh=True)
        except KeyboardInterrupt:
            interrupted = True
            stop.set()
            console.print("[yellow]interrupted: stopping the replay and the services[/]")
        finally:
            stop.set()
            thread.join(30)
        if "error" in box:
            raise box["error"]
        stats = box.get("stats")
        summary = _summarize(client, run_id, configs, view, plan, out, stats, interrupted)
        summary["wall_s"] = time.monotonic() - t_start
        summary["worker_ready_s"] = stack.ready_s
        with contextlib.suppress(Exception):
            client.close()
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _print_summary(console, summary)
    return summary


def _write_portfolios(path: Path, configs: Sequence[PortfolioConfig]) -> None:
    import yaml

    doc = {
        "portfolios": [
            {
                "name": c.name,
                "weights": dict(zip(c.assets, c.weights, strict=True)),
                "champion": c.champion,
                "challengers": list(c.challengers),
                "fallback": c.fallback,
                "seed": c.seed,
                "limits": dict(c.limits),
            }
            for c in configs
        ]
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _summarize(
    client: Any,
    run_id: str,
    configs: Sequence[PortfolioConfig],
    view: ViewState,
    plan: ReplayPlan,
    out: Path,
    stats: Any,
    interrupted: bool,
) -> dict[str, Any]:
    from models.backtest import kupiec_pof
    from stream_app.sinks import history_key

    result: dict[str, Any] = {
        "run_id": run_id,
        "period": plan.label,
        "days_replayed": getattr(stats, "days", view.days_done),
        "ticks": getattr(stats, "ticks", view.ticks),
        "replay_s": getattr(stats, "elapsed_s", view.elapsed),
        "interrupted": interrupted or bool(getattr(stats, "interrupted", False)),
        "portfolios": {},
        "outputs": {
            "heatmaps": str(out / "heatmaps" / run_id),
            "snapshots_csv": str(out / "snapshots.csv"),
            "summary": str(out / "summary.json"),
            "worker_log": str(out / "worker.log"),
        },
    }
    rows = []
    for c in configs:
        daily = []
        try:
            for _, fields in client.xrange(history_key(c.name, run_id)):
                if fields.get(b"kind") == b"daily":
                    daily.append(RiskSnapshot.decode(fields[b"snapshot"]))
        except Exception as exc:
            result["portfolios"][c.name] = {"error": str(exc)}
            continue
        for s in daily:
            rows.append(
                {
                    "portfolio": c.name,
                    "day": s.day,
                    "model": s.model,
                    "realized": s.realized_return,
                    **{f"var{k[2:]}": (s.prev_var or {}).get(k) for k in ("0.95", "0.99")},
                    **{f"exc{k[2:]}": (s.exception or {}).get(k) for k in ("0.95", "0.99")},
                    "traffic_light": s.traffic_light,
                    **{
                        f"var99_{ch.model}": (ch.var or {}).get("0.99")
                        for ch in s.challengers.values()
                    },
                    "heatmap": s.heatmap_path or s.heatmap_key,
                }
            )
        last = daily[-1] if daily else None
        in_period = [s for s in daily if s.day >= str(plan.start)]
        scored = [s for s in in_period if s.exception is not None]
        per: dict[str, Any] = {
            "champion": last.model if last else c.champion,
            "model_version": last.model_version if last else "",
            "daily_snapshots": len(daily),
            "scored_days_in_period": len(scored),
            "last_closed_day": last.day if last else None,
            "complete": bool(last and last.day >= str(plan.panel.dates[-1])),
            "traffic_light": last.traffic_light if last else None,
        }
        for key in ("0.95", "0.99"):
            n_exc = sum(1 for s in scored if s.exception and s.exception[key])
            per[f"exceptions_{key}"] = n_exc
            per[f"expected_{key}"] = round(len(scored) * (1 - float(key)), 2)
            per[f"kupiec_p_{key}"] = (
                kupiec_pof(n_exc, len(scored), float(key)).pvalue if scored else None
            )
        if in_period:
            worst = min(in_period, key=lambda s: s.realized_return or 0.0)
            per["worst_day"] = {"day": worst.day, "return": worst.realized_return}
        if last is not None:
            per["challengers"] = {
                name: {
                    "traffic_light": ch.traffic_light,
                    "exceptions_250d_99": ch.exceptions_250d.get("0.99"),
                }
                for name, ch in last.challengers.items()
            }
        result["portfolios"][c.name] = per
    if rows:
        cols = list(dict.fromkeys(k for r in rows for k in r))
        with open(out / "snapshots.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=cols)
            writer.writeheader()
            writer.writerows(rows)
    result["alerts"] = {
        "events": view.n_alerts,
        "firing": sum(n for k, n in view.alert_counts.items() if k.endswith("/firing")),
        "by_rule": dict(sorted(view.alert_counts.items())),
        "stream": f"riskmon:alerts:{run_id}",
    }
    return result


def _print_summary(console: Any, summary: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title=f"summary of run {summary['run_id']}", header_style="bold")
    for col in ("portfolio", "champion", "days", "exc 95 (exp)", "exc 99 (exp)",
                "Kupiec p 95/99", "traffic light", "worst day"):  # fmt: skip
        t.add_column(col)
    for name, p in summary["portfolios"].items():
        if "error" in p:
            t.add_row(name, "[red]" + p["error"] + "[/]", *[""] * 6)
            continue

        def kp(key: str, p: dict[str, Any] = p) -> str:
            v = p.get(f"kupiec_p_{key}")
            return "-" if v is None else f"{v:.3f}"

        worst = p.get("worst_day") or {}
        zone = p.get("traffic_light")
        t.add_row(
            name,
            f"{p['champion']} ({p['model_version']})",
            str(p["scored_days_in_period"])
            + ("" if p.get("complete", True) else f" [yellow](up to {p['last_closed_day']})[/]"),
            f"{p['exceptions_0.95']} ({p['expected_0.95']})",
            f"{p['exceptions_0.99']} ({p['expected_0.99']})",
            f"{kp('0.95')} / {kp('0.99')}",
            f"[{_ZONE.get(zone, 'dim')}]{zone or '-'}[/]",
            f"{worst.get('day', '-')} {_pct(worst.get('return'))}",
        )
    console.print(t)
    a = summary["alerts"]
    o = summary["outputs"]
    console.print(
        f"alerts: {a['events']} events ({a['firing']} firing) in Redis stream {a['stream']}"
        + "".join(f"\n  {k}: {n}" for k, n in a.get("by_rule", {}).items())
        + "\n"
        f"replayed {summary['days_replayed']} days, {summary['ticks']:,} ticks in "
        f"{summary['replay_s']:.1f} s; demo wall time {summary['wall_s']:.1f} s"
        + (" [yellow](interrupted)[/]" if summary["interrupted"] else "")
        + f"\nheatmaps: {o['heatmaps']}\nsnapshots: {o['snapshots_csv']}\n"
        f"summary: {o['summary']}\nworker log: {o['worker_log']}"
    )
