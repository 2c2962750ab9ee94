"""Fixtures of the ops tests: Debian's ``promtool`` (installed with apt-get when missing)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

#: Series names of the metrics contract (the worker exposes them; histograms by _bucket).
CONTRACT = {
    "riskmon_portfolio_var_ratio",
    "riskmon_portfolio_es_ratio",
    "riskmon_portfolio_pnl_ratio",
    "riskmon_portfolio_realized_return_ratio",
    "riskmon_portfolio_exceptions_total",
    "riskmon_portfolio_days_total",
    "riskmon_portfolio_exception_rate_250d",
    "riskmon_portfolio_kupiec_pvalue",
    "riskmon_portfolio_traffic_light",
    "riskmon_portfolio_predicted_vol_ratio",
    "riskmon_portfolio_cnn_risk_score",
    "riskmon_portfolio_risk_contribution_ratio",
    "riskmon_portfolio_avg_correlation",
    "riskmon_portfolio_event_time_seconds",
    "riskmon_snapshots_total",
    "riskmon_asset_price",
    "riskmon_asset_volatility_ratio",
    "riskmon_ticks_in_total",
    "riskmon_ticks_ok_total",
    "riskmon_dlq_total",
    "riskmon_bars_out_total",
    "riskmon_tick_to_snapshot_seconds_bucket",
    "riskmon_consumer_lag",
    "riskmon_model_update_seconds_bucket",
    "riskmon_alerts_total",
    "riskmon_alerts_pending",
    "riskmon_ingest_batch_seconds_bucket",
}


def ensure_prometheus_package() -> None:
    """Install Debian's ``prometheus`` package (prometheus + promtool) if it is missing.

    Needs root and apt-get (CI machines have both); elsewhere the test fails on CI and is
    skipped on a developer machine, with the command to run.
    """
    if shutil.which("promtool") and shutil.which("prometheus"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        msg = "Debian's prometheus package is missing: sudo apt-get install -y prometheus"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert out.returncode == 0, f"apt-get install prometheus failed:\n{out.stderr[-2000:]}"


@pytest.fixture(scope="session")
def promtool() -> str:
    ensure_prometheus_package()
    path = shutil.which("promtool")
    assert path
    return path


@pytest.fixture(scope="session")
def contract_metrics() -> set[str]:
    return set(CONTRACT)
