"""Fixtures of the ops tests: Debian's ``promtool`` (installed with apt-get when missing)."""

from __future__ import annotations

import shutil

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
    "riskmon_consumer_stalled_partitions",
    "riskmon_model_update_seconds_bucket",
    "riskmon_alerts_total",
    "riskmon_alerts_pending",
    "riskmon_ingest_batch_seconds_bucket",
}


@pytest.fixture(scope="session")
def promtool(prometheus_installed: None) -> str:
    path = shutil.which("promtool")
    assert path
    return path


@pytest.fixture(scope="session")
def contract_metrics() -> set[str]:
    return set(CONTRACT)
