"""Every PromQL expression of the dashboards and the alerting rules, executed against a
real Prometheus that scrapes a real worker which has just processed a short replay.

Debian's ``prometheus`` package is installed when missing (apt-get, root); Prometheus
runs on a free loopback port with a temporary config and ``ops/prometheus/alerts.yml``
(``run="live"`` replaced by the replay's run id, evaluation every second) and is stopped
by pid. The replay is a synthetic panel with a crash, so exceptions and alerts happen.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from stream_app.dashboards import SCRAPE_JOB, build_dashboards, iter_queries
from stream_app.embedded import find_free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RUN = "it-prom-1"
PORTFOLIO = "itbook"
ASSETS = ("SPY", "TLT", "GLD")
N_DAYS = 110
TOPICS = {
    "topic_ticks": "itp-ticks",
    "topic_dlq": "itp-ticks.dlq",
    "topic_bars": "itp-bars",
    "topic_risk": "itp-risk",
}
GRAFANA_VARS = {
    "portfolio": PORTFOLIO,
    "run": RUN,
    "model": "ewma",  # the champion of the test portfolio
    "level": "0.99",
    "__rate_interval": "5s",  # Grafana: max(4 x scrape interval, $__interval + scrape)
    "__interval": "1s",
}


def substitute(expr: str, values: dict[str, str]) -> str:
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    assert "$" not in expr, expr
    return expr


_MODIFIERS = re.compile(
    r"^\s*(bool\s+)?((on|ignoring)\s*\([^)]*\)\s*)?((group_left|group_right)\s*(\([^)]*\))?\s*)?"
)
_SPLIT = re.compile(r"(==|!=|>=|<=|>|<)|\s(and|or|unless)\s")


def operands(expr: str) -> list[str]:
    """The operands of the top-level comparison and set operators of ``expr``
    (``a > 0.8`` -> ``[a]``; ``a == 0 and on() b > 0`` -> ``[a, b]``), numbers dropped."""
    parts, buf, depth, quote, i = [], "", 0, "", 0
    while i < len(expr):
        c = expr[i]
        if quote:
            buf += c
            quote = "" if c == quote and expr[i - 1] != "\\" else quote
            i += 1
            continue
        if c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and (m := _SPLIT.match(expr, i)):
            parts.append(buf)
            buf, i = "", m.end()
            continue
        buf += c
        i += 1
    parts.append(buf)
    out = []
    for part in parts:
        part = _MODIFIERS.sub("", part, count=1).strip()
        if part and not re.fullmatch(r"[-+]?[0-9.eE+-]+", part):
            out.append(part)
    return out


def test_operands():
    assert operands('a{x="1"} > 0.8') == ['a{x="1"}']
    assert operands('-max by (p) (x) / on(p) group_right y{l="0.99"} > 1') == [
        '-max by (p) (x) / on(p) group_right y{l="0.99"}'
    ]
    assert operands("changes(a[15m]) == 0 and on() sum(rate(b[5m])) > 0") == [
        "changes(a[15m])",
        "sum(rate(b[5m]))",
    ]
    assert operands('up{job="r"} == 0') == ['up{job="r"}']


class Prometheus:
    """A prometheus server on a loopback port, stopped by pid."""

    def __init__(self, workdir: Path, scrape_port: int, rules: Path) -> None:
        self.port = find_free_port()
        self.workdir = workdir
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "900ms",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": SCRAPE_JOB,
                    "static_configs": [{"targets": [f"127.0.0.1:{scrape_port}"]}],
                }
            ],
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    shutil.which("prometheus") or "prometheus",
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def api(self, path: str, **params: object) -> dict:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query_range(self, expr: str, start: float, end: float) -> list[dict]:
        return self.api("query_range", query=expr, start=start, end=end, step=1)["result"]


def has_data(result: list[dict]) -> bool:
    """At least one finite sample in a range-query result."""
    return any(math.isfinite(float(v)) for series in result for _, v in series["values"])


def write_portfolio(path: Path) -> Path:
    doc = {
        "portfolios": [
            {
                "name": PORTFOLIO,
                "weights": {"SPY": 0.5, "TLT": 0.3, "GLD": 0.2},
                "champion": "ewma",
                "challengers": ["cnn"],  # the CNN gives predicted vol and the risk score
                "limits": {"var99": 0.04, "es99": 0.05},
            }
        ]
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def live_rules(tmp_path: Path) -> Path:
    """ops/prometheus/alerts.yml for the replay run, evaluated every second."""
    text = (ROOT / "ops" / "prometheus" / "alerts.yml").read_text()
    assert 'run="live"' in text
    text = text.replace('run="live"', f'run="{RUN}"')
    text = re.sub(r"interval: \d+s", "interval: 1s", text)
    path = tmp_path / "alerts.yml"
    path.write_text(text)
    return path


def test_every_dashboard_and_rule_expression_returns_data(
    prometheus_installed, kafka_broker, valkey_server, worker, tmp_path
):
    from producers.kafka_out import ensure_topics, replay_panel
    from producers.synthetic import Crash, synthetic_panel

    ensure_topics(kafka_broker.bootstrap, TOPICS.values(), 2)
    w = worker(
        app_id="it-prom",
        partitions=2,
        redis_url=valkey_server.url,
        redis_password=valkey_server.password,
        portfolios_file=write_portfolio(tmp_path / "book.yaml"),
        output_dir=tmp_path / "out",
        last_price_interval_s=3 * 3600,
        intraday_interval_s=3 * 3600,
        lag_interval_s=1,
        **TOPICS,
    )
    w.wait_ready(60)
    prom = Prometheus(tmp_path, w.metrics_port, live_rules(tmp_path))
    prom.start()
    try:
        t_start = time.time()
        deadline = time.monotonic() + 20
        while not prom.api("query", query=f'up{{job="{SCRAPE_JOB}"}} == 1')["result"]:
            assert time.monotonic() < deadline, "prometheus does not scrape the worker"
            time.sleep(0.3)

        panel = synthetic_panel(N_DAYS, ASSETS, seed=42, crash=Crash(day=N_DAYS - 12, size=-0.15))
        stats = replay_panel(
            panel,
            kafka_broker.bootstrap,
            topic=TOPICS["topic_ticks"],
            run_id=RUN,
            ticks_per_day=8,
            days_per_second=60,
        )
        assert stats.ticks == N_DAYS * len(ASSETS) * 8

        # wait until the worker has closed every day (the snapshot count stops moving)
        deadline, last, stable_since = time.monotonic() + 120, -1.0, time.monotonic()
        while True:
            n = w.metric("riskmon_snapshots_total", portfolio=PORTFOLIO, run=RUN)
            days = w.metric(
                "riskmon_portfolio_days_total", portfolio=PORTFOLIO, run=RUN, model="ewma"
            )
            if n != last:
                last, stable_since = n, time.monotonic()
            if days > 0 and time.monotonic() - stable_since > 3:
                break
            assert time.monotonic() < deadline, w.log()[-3000:]
            time.sleep(0.5)
        time.sleep(3)  # a few more scrapes and rule evaluations
        t_end = time.time()
        window = f"{math.ceil(t_end - t_start) + 5}s"
        values = {**GRAFANA_VARS, "__range": window, "instance": f"127.0.0.1:{w.metrics_port}"}

        failures: list[str] = []
        n_checked = 0
        for name, board in build_dashboards().items():
            for where, expr in iter_queries(board):
                if where.startswith("variable"):
                    m = re.fullmatch(r"label_values\((.*), (\w+)\)", expr)
                    assert m, expr
                    selector, label = substitute(m.group(1), values), m.group(2)
                    got = prom.api(f"label/{label}/values", **{"match[]": selector})
                    expected = values.get(label, PORTFOLIO)
                    if label == "model":
                        expected = "ewma"
                    if not got or expected not in got:
                        failures.append(f"{name} {where}: {selector} -> {got}")
                    n_checked += 1
                    continue
                concrete = substitute(expr, values)
                if not has_data(prom.query_range(concrete, t_start, t_end)):
                    failures.append(f"{name} {where}: no data for {concrete}")
                n_checked += 1

        rules = prom.api("rules")["groups"]
        alert_rules = [r for g in rules for r in g["rules"] if r["type"] == "alerting"]
        assert len(alert_rules) >= 10
        for rule in alert_rules:
            if rule["health"] != "ok":
                failures.append(
                    f"rule {rule['name']}: health {rule['health']} {rule.get('lastError')}"
                )
            prom.query_range(rule["query"], t_start, t_end)  # the whole expression evaluates
            for part in operands(rule["query"]):
                if not has_data(prom.query_range(part, t_start, t_end)):
                    failures.append(f"rule {rule['name']}: no data for {part}")
                n_checked += 1

        assert not failures, f"{len(failures)} of {n_checked} expressions failed:\n" + "\n".join(
            failures
        )
        assert n_checked > 60

        # the crash made the champion's 99 % VaR exception alert fire in Prometheus too
        firing = {
            (a["labels"]["alertname"], a["labels"].get("model"))
            for a in prom.api("alerts")["alerts"]
        }
        fired_ever = prom.query_range(
            f'ALERTS{{alertname="RiskmonVaRException99",run="{RUN}",model="ewma"}}', t_start, t_end
        )
        assert has_data(fired_ever), firing
    finally:
        prom.stop()
    assert prom.proc is not None and prom.proc.poll() is not None
