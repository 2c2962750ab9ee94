"""Grafana dashboards as code: build, export as JSON, push with ``grafana-client``.

Three dashboards read the worker's Prometheus metrics (names fixed by the metrics
contract, see ``ops/README.md``):

``riskmon-portfolio-risk``     VaR/ES against realised P&L with exceptions marked, traffic
                               light, CNN risk score, predicted volatility, risk
                               contributions per asset, correlation regime, latest alerts.
``riskmon-model-calibration``  rolling exception rate against the expected rate, Kupiec p,
                               the champion against the challengers.
``riskmon-pipeline-health``    ticks/s, tick-to-snapshot latency, consumer lag, DLQ by
                               reason, alerts fired.

Every panel reads the Prometheus datasource with the fixed uid :data:`DATASOURCE_UID`
(provisioned by ``ops/grafana/provisioning/datasources``); ``datasource_uid=`` rewrites it
for a Grafana whose Prometheus datasource has another uid. Template variables:
``portfolio``, ``run`` (``live`` or a replay run id), ``model`` (the champion shown in
single-model panels), ``level`` (VaR level), and ``instance`` on the pipeline dashboard.

``ops/grafana/dashboards/*.json`` is :func:`export_dashboards` output
(``python scripts/build_dashboards.py`` rewrites it; a test checks they agree).

Examples
--------
>>> boards = build_dashboards()
>>> sorted(b["uid"] for b in boards.values())
['riskmon-model-calibration', 'riskmon-pipeline-health', 'riskmon-portfolio-risk']
>>> all(q for _, q in iter_queries(boards["pipeline-health.json"]))
True
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from stream_app.exceptions import MissingDependency, StreamAppError

__all__ = [
    "DATASOURCE_UID",
    "FOLDER_TITLE",
    "FOLDER_UID",
    "DashboardPushError",
    "GrafanaSettings",
    "PushResult",
    "add_dashboards_command",
    "build_dashboards",
    "export_dashboards",
    "iter_queries",
    "load_dashboards",
    "push_dashboards",
]

#: uid of the Prometheus datasource that every panel reads (provisioned with this uid).
DATASOURCE_UID = "riskmon-prometheus"
#: Grafana folder the dashboards are pushed to.
FOLDER_UID = "riskmon"
FOLDER_TITLE = "riskmon"
#: Job name of the workers' scrape config (ops/prometheus/prometheus.yml).
SCRAPE_JOB = "riskmon"

_SCHEMA_VERSION = 39
_TAGS = ["riskmon"]

# Selectors shared by the panels (Grafana substitutes the $variables).
_P = 'portfolio="$portfolio",run="$run"'
_PM = _P + ',model="$model"'
_PML = _PM + ',level="$level"'
_PL = _P + ',level="$level"'
_I = 'instance=~"$instance"'


class DashboardPushError(StreamAppError):
    """Grafana could not be reached, refused the credentials or rejected a dashboard."""


# -- panel builders ------------------------------------------------------------------
def _ds(uid: str = DATASOURCE_UID) -> dict[str, str]:
    return {"type": "prometheus", "uid": uid}


def _target(
    expr: str, legend: str = "", *, instant: bool = False, table: bool = False
) -> dict[str, Any]:
    return {
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "format": "table" if table else "time_series",
    }


def _thresholds(*steps: tuple[float | None, str]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"value": value, "color": color} for value, color in steps],
    }


_TRAFFIC_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "GREEN", "color": "green", "index": 0},
            "1": {"text": "YELLOW", "color": "yellow", "index": 1},
            "2": {"text": "RED", "color": "red", "index": 2},
        },
    }
]
_TRAFFIC_THRESHOLDS = _thresholds((None, "green"), (1, "yellow"), (2, "red"))


def _panel(
    kind: str,
    title: str,
    targets: list[dict[str, Any]],
    *,
    width: int,
    height: int,
    description: str = "",
    unit: str | None = None,
    decimals: int | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    thresholds: dict[str, Any] | None = None,
    mappings: list[dict[str, Any]] | None = None,
    custom: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    overrides: list[dict[str, Any]] | None = None,
    transformations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    if unit is not None:
        defaults["unit"] = unit
    if decimals is not None:
        defaults["decimals"] = decimals
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if thresholds is not None:
        defaults["thresholds"] = thresholds
    if mappings is not None:
        defaults["mappings"] = mappings
    if custom is not None:
        defaults["custom"] = custom
    panel: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": _ds(),
        "gridPos": {"w": width, "h": height},
        "targets": [
            {**t, "refId": chr(ord("A") + i), "datasource": _ds()} for i, t in enumerate(targets)
        ],
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
    }
    if transformations:
        panel["transformations"] = transformations
    return panel


def _stat(title: str, expr: str, **kw: Any) -> dict[str, Any]:
    kw.setdefault("options", {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"})
    kw.setdefault("width", 4)
    kw.setdefault("height", 5)
    return _panel("stat", title, [_target(expr)], **kw)


def _timeseries(title: str, targets: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    kw.setdefault("width", 12)
    kw.setdefault("height", 8)
    kw.setdefault("options", {"legend": {"displayMode": "list", "placement": "bottom"}})
    return _panel("timeseries", title, targets, **kw)


def _layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Place panels left to right, wrapping at 24 columns; give them ids."""
    x = y = row_height = 0
    for i, panel in enumerate(panels, start=1):
        pos = panel["gridPos"]
        if x + pos["w"] > 24:
            x, y, row_height = 0, y + row_height, 0
        pos["x"], pos["y"] = x, y
        x += pos["w"]
        row_height = max(row_height, pos["h"])
        panel["id"] = i
    return panels


def _query_var(name: str, label: str, query: str, **kw: Any) -> dict[str, Any]:
    var = {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": _ds(),
        "definition": query,
        "query": query,
        "refresh": 2,  # on time range change
        "sort": 1,
        "multi": False,
        "includeAll": False,
        "current": {},
        "options": [],
    }
    var.update(kw)
    return var


def _level_var() -> dict[str, Any]:
    levels = ["0.95", "0.975", "0.99"]
    return {
        "type": "custom",
        "name": "level",
        "label": "VaR level",
        "query": ",".join(levels),
        "current": {"text": "0.99", "value": "0.99", "selected": True},
        "options": [{"text": v, "value": v, "selected": v == "0.99"} for v in levels],
        "multi": False,
        "includeAll": False,
    }


def _risk_vars(*, with_model: bool) -> list[dict[str, Any]]:
    out = [
        _query_var(
            "portfolio", "Portfolio", "label_values(riskmon_portfolio_var_ratio, portfolio)"
        ),
        _query_var(
            "run",
            "Run (live or replay id)",
            'label_values(riskmon_portfolio_var_ratio{portfolio="$portfolio"}, run)',
        ),
    ]
    if with_model:
        out.append(
            _query_var(
                "model",
                "Champion model",
                'label_values(riskmon_portfolio_var_ratio{portfolio="$portfolio",run="$run"}, model)',
                current={"text": "lstm_copula", "value": "lstm_copula"},
            )
        )
    out.append(_level_var())
    return out


def _dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[dict[str, Any]],
    variables: list[dict[str, Any]],
    annotations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    builtin = {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": list(_TAGS),
        "timezone": "browser",
        "schemaVersion": _SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "5s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": [builtin, *(annotations or [])]},
        "links": [
            {
                "type": "dashboards",
                "tags": list(_TAGS),
                "asDropdown": True,
                "title": "riskmon",
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "panels": _layout(panels),
    }


# -- the three dashboards ------------------------------------------------------------
def _portfolio_risk() -> dict[str, Any]:
    var = f"riskmon_portfolio_var_ratio{{{_PML}}}"
    es = f"riskmon_portfolio_es_ratio{{{_PML}}}"
    realized = f"riskmon_portfolio_realized_return_ratio{{{_P}}}"
    exceptions = f"riskmon_portfolio_exceptions_total{{{_PML}}}"
    pct = {"unit": "percentunit", "decimals": 2}
    panels = [
        _stat(
            "Traffic light ($model, 99 %, 250 d)",
            f"riskmon_portfolio_traffic_light{{{_PM}}}",
            description="Basel traffic light of the champion over the last 250 days at 99 %.",
            mappings=_TRAFFIC_MAPPINGS,
            thresholds=_TRAFFIC_THRESHOLDS,
            options={"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"},
            width=4,
        ),
        _stat(
            "VaR $level (next day)",
            var,
            description="Next-day VaR of the champion, a positive loss as a fraction of NAV.",
            width=3,
            **pct,
        ),
        _stat(
            "ES $level (next day)", es, description="Next-day expected shortfall.", width=3, **pct
        ),
        _stat(
            "Intraday loss / VaR",
            f"-max by (portfolio, run) (riskmon_portfolio_pnl_ratio{{{_P}}}) "
            f"/ on(portfolio, run) max by (portfolio, run) ({var})",
            description="Today's running loss as a share of today's VaR (negative: a gain). "
            "The early-warning alert fires at a share of VaR.",
            unit="percentunit",
            decimals=0,
            thresholds=_thresholds((None, "green"), (0.8, "orange"), (1, "red")),
            width=3,
        ),
        _stat(
            "CNN risk score",
            f"riskmon_portfolio_cnn_risk_score{{{_P}}}",
            description="Heatmap CNN risk score in [0, 1].",
            decimals=2,
            minimum=0,
            maximum=1,
            thresholds=_thresholds((None, "green"), (0.5, "orange"), (0.8, "red")),
            width=3,
        ),
        _stat(
            "Average correlation",
            f"riskmon_portfolio_avg_correlation{{{_P}}}",
            description="Average pairwise copula correlation: the correlation regime.",
            decimals=2,
            thresholds=_thresholds((None, "green"), (0.5, "orange"), (0.7, "red")),
            width=3,
        ),
        _stat(
            "Event day of the last snapshot",
            f"max by (portfolio, run) (riskmon_portfolio_event_time_seconds{{{_P}}}) * 1000",
            description="Event time of the latest snapshot: the market day a replay is at.",
            unit="dateTimeAsIsoNoDateIfToday",
            width=5,
            options={
                "reduceOptions": {"calcs": ["lastNotNull"]},
                "colorMode": "none",
                "textMode": "value",
            },
        ),
        _timeseries(
            "VaR and ES ($level, $model) against realised returns",
            [
                _target(f"-{var}", "-VaR {{level}} ({{model}})"),
                _target(f"-{es}", "-ES {{level}} ({{model}})"),
                _target(realized, "realised return (last closed day)"),
                _target(f"riskmon_portfolio_pnl_ratio{{{_P}}}", "intraday P&L"),
                _target(
                    f"{realized} and on(portfolio, run) "
                    f"(increase({exceptions}[$__rate_interval]) > 0)",
                    "VaR exception",
                ),
            ],
            width=24,
            height=10,
            description="Losses are negative: an exception is a realised return below -VaR. "
            "Red points (and annotations) mark the days the exception counter moved. The "
            "x axis is wall-clock time of the snapshots (a replay compresses history).",
            unit="percentunit",
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "VaR exception"},
                    "properties": [
                        {"id": "custom.drawStyle", "value": "points"},
                        {"id": "custom.pointSize", "value": 12},
                        {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
                    ],
                }
            ],
        ),
        _timeseries(
            "Predicted volatility (CNN, daily units)",
            [_target(f"riskmon_portfolio_predicted_vol_ratio{{{_P}}}", "{{horizon}}-day horizon")],
            description="Volatility predicted by the heatmap CNN, per horizon.",
            unit="percentunit",
        ),
        _timeseries(
            "CNN risk score",
            [_target(f"riskmon_portfolio_cnn_risk_score{{{_P}}}", "risk score")],
            unit="none",
            minimum=0,
            maximum=1,
            custom={"thresholdsStyle": {"mode": "line"}},
            thresholds=_thresholds((None, "green"), (0.8, "red")),
        ),
        _panel(
            "bargauge",
            "Risk contributions per asset ($level)",
            [
                _target(
                    f"sort_desc(riskmon_portfolio_risk_contribution_ratio{{{_PL}}})",
                    "{{asset}}",
                    instant=True,
                )
            ],
            width=8,
            height=9,
            description="Euler contributions of each asset to the portfolio's VaR/ES "
            "(they sum to the total; negative = a hedge).",
            unit="percentunit",
            decimals=2,
            options={
                "orientation": "horizontal",
                "displayMode": "gradient",
                "reduceOptions": {"calcs": ["lastNotNull"], "values": False},
            },
        ),
        _timeseries(
            "Risk contributions over time ($level)",
            [
                _target(
                    f"riskmon_portfolio_risk_contribution_ratio{{{_PL}}}",
                    "{{asset}}",
                )
            ],
            width=16,
            height=9,
            unit="percentunit",
            custom={"stacking": {"mode": "normal"}, "fillOpacity": 40},
        ),
        _timeseries(
            "Correlation regime",
            [_target(f"riskmon_portfolio_avg_correlation{{{_P}}}", "average correlation")],
            description="Average pairwise correlation of the copula; a jump is a regime "
            "shift (crises push correlations towards 1).",
            minimum=-1,
            maximum=1,
        ),
        _timeseries(
            "Asset volatility (EWMA, daily)",
            [_target('riskmon_asset_volatility_ratio{run="$run"}', "{{asset}}")],
            unit="percentunit",
        ),
        _panel(
            "table",
            "Latest alerts (count over the time range)",
            [
                _target(
                    "sort_desc(sum by (rule, severity, state) "
                    "(increase(riskmon_alerts_total[$__range])) > 0)",
                    instant=True,
                    table=True,
                )
            ],
            width=12,
            height=8,
            description="Alerts raised by the worker in the selected time range, from "
            "riskmon_alerts_total. The alerts themselves (portfolio, asset, value, threshold, "
            "event time, heatmap) are in the Redis stream: `riskmon alerts tail` shows them; "
            "a Redis datasource plugin (redis-datasource) can show the stream in Grafana.",
            transformations=[
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True},
                        "renameByName": {"Value": "count"},
                    },
                }
            ],
        ),
        _timeseries(
            "Asset prices",
            [_target('riskmon_asset_price{run="$run"}', "{{asset}}")],
            custom={"scaleDistribution": {"type": "log", "log": 10}},
        ),
    ]
    annotations = [
        {
            "name": "VaR exceptions",
            "datasource": _ds(),
            "enable": True,
            "iconColor": "red",
            "expr": f"increase({exceptions}[$__rate_interval]) > 0",
            "step": "$__interval",
            "titleFormat": "VaR exception",
            "textFormat": "{{model}} at {{level}}",
            "tagKeys": "model,level",
            "useValueForTime": False,
        }
    ]
    return _dashboard(
        "riskmon-portfolio-risk",
        "riskmon / Portfolio risk",
        "Next-day VaR and ES against realised P&L, traffic light, CNN risk and volatility, "
        "risk contributions, correlation regime and alerts of one portfolio and run.",
        panels,
        _risk_vars(with_model=True),
        annotations,
    )


def _model_calibration() -> dict[str, Any]:
    rate = f"riskmon_portfolio_exception_rate_250d{{{_PL}}}"
    kupiec = f"riskmon_portfolio_kupiec_pvalue{{{_PL}}}"
    light = f"riskmon_portfolio_traffic_light{{{_P}}}"
    exc = f"sum by (model) (riskmon_portfolio_exceptions_total{{{_PL}}})"
    days = f"sum by (model) (riskmon_portfolio_days_total{{{_P}}})"
    panels = [
        _stat(
            "Champion ($model): exception rate, 250 d",
            f"riskmon_portfolio_exception_rate_250d{{{_PML}}}",
            description="Share of the last 250 days with a loss beyond the VaR; expected "
            "1 - level.",
            unit="percentunit",
            decimals=2,
            width=6,
        ),
        _stat(
            "Champion ($model): Kupiec p",
            f"riskmon_portfolio_kupiec_pvalue{{{_PML}}}",
            description="Kupiec proportion-of-failures test over 250 days; below 0.05 the "
            "coverage is rejected at 5 %.",
            decimals=3,
            thresholds=_thresholds((None, "red"), (0.05, "green")),
            width=6,
        ),
        _stat(
            "Champion ($model): traffic light",
            f"riskmon_portfolio_traffic_light{{{_PM}}}",
            mappings=_TRAFFIC_MAPPINGS,
            thresholds=_TRAFFIC_THRESHOLDS,
            options={"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"},
            width=6,
        ),
        _stat(
            "Champion ($model): days scored",
            f"riskmon_portfolio_days_total{{{_PM}}}",
            decimals=0,
            width=6,
        ),
        _timeseries(
            "Exception rate over the last 250 days vs expected ($level)",
            [_target(rate, "{{model}}"), _target("vector(1 - $level)", "expected")],
            width=24,
            description="Every model's rolling exception rate; the dashed line is the rate "
            "a calibrated model has, 1 - level.",
            unit="percentunit",
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "expected"},
                    "properties": [
                        {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                        {"id": "color", "value": {"mode": "fixed", "fixedColor": "white"}},
                    ],
                }
            ],
        ),
        _timeseries(
            "Kupiec POF p-value ($level)",
            [_target(kupiec, "{{model}}")],
            description="Below the red line (0.05) the model's coverage is rejected.",
            minimum=0,
            maximum=1,
            custom={"thresholdsStyle": {"mode": "line"}},
            thresholds=_thresholds((None, "red"), (0.05, "transparent")),
        ),
        _panel(
            "state-timeline",
            "Traffic light by model (99 %, 250 d)",
            [_target(light, "{{model}}")],
            width=12,
            height=8,
            mappings=_TRAFFIC_MAPPINGS,
            thresholds=_TRAFFIC_THRESHOLDS,
            options={"showValue": "never", "mergeValues": True},
        ),
        _panel(
            "table",
            "Champion ($model) against the challengers ($level)",
            [
                _target(exc, instant=True, table=True),
                _target(days, instant=True, table=True),
                _target(f"{exc} / {days}", instant=True, table=True),
                _target(f"max by (model) ({rate})", instant=True, table=True),
                _target(f"max by (model) ({kupiec})", instant=True, table=True),
                _target(f"max by (model) ({light})", instant=True, table=True),
                _target(
                    f"max by (model) (riskmon_portfolio_var_ratio{{{_PL}}})",
                    instant=True,
                    table=True,
                ),
            ],
            width=24,
            height=8,
            description="One row per model: exceptions and days scored since the start of "
            "the run, the observed rate, the 250-day rate, Kupiec p, traffic light, current "
            "VaR. A calibrated model has an observed rate near 1 - level and a Kupiec p "
            "above 0.05.",
            transformations=[
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True},
                        "renameByName": {
                            "Value #A": "exceptions",
                            "Value #B": "days",
                            "Value #C": "observed rate",
                            "Value #D": "rate 250 d",
                            "Value #E": "Kupiec p",
                            "Value #F": "traffic light",
                            "Value #G": "VaR now",
                        },
                    },
                },
            ],
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "traffic light"},
                    "properties": [
                        {"id": "mappings", "value": _TRAFFIC_MAPPINGS},
                        {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                    ],
                }
            ],
        ),
        _timeseries(
            "VaR by model ($level) against the realised loss",
            [
                _target(f"riskmon_portfolio_var_ratio{{{_PL}}}", "VaR {{model}}"),
                _target(
                    f"-riskmon_portfolio_realized_return_ratio{{{_P}}}",
                    "realised loss",
                ),
            ],
            width=24,
            description="Positive losses: a realised loss above a model's VaR is an exception "
            "of that model.",
            unit="percentunit",
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "realised loss"},
                    "properties": [
                        {"id": "custom.drawStyle", "value": "bars"},
                        {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
                    ],
                }
            ],
        ),
    ]
    return _dashboard(
        "riskmon-model-calibration",
        "riskmon / Model calibration",
        "Live backtest of every model: rolling exception rate, Kupiec p, traffic light, "
        "the champion against the classical baselines.",
        panels,
        _risk_vars(with_model=True),
    )


def _pipeline_health() -> dict[str, Any]:
    def quantiles(metric: str, by: str = "") -> list[dict[str, Any]]:
        group = f"le, {by}" if by else "le"
        suffix = f" {{{{{by}}}}}" if by else ""
        return [
            _target(
                f"histogram_quantile({q}, sum by ({group}) "
                f"(rate({metric}_bucket{{{_I}}}[$__rate_interval])))",
                f"p{round(q * 100)}{suffix}",
            )
            for q in (0.5, 0.99)
        ]

    panels = [
        _stat(
            "Workers up",
            f'sum(up{{job="{SCRAPE_JOB}",{_I}}})',
            decimals=0,
            thresholds=_thresholds((None, "red"), (1, "green")),
        ),
        _stat(
            "Ticks in / s",
            f"sum(rate(riskmon_ticks_in_total{{{_I}}}[$__rate_interval]))",
            unit="short",
            decimals=0,
        ),
        _stat(
            "Tick to snapshot p99",
            "histogram_quantile(0.99, sum by (le) "
            f"(rate(riskmon_tick_to_snapshot_seconds_bucket{{{_I}}}[$__rate_interval])))",
            unit="s",
            thresholds=_thresholds((None, "green"), (0.1, "orange"), (1, "red")),
        ),
        _stat(
            "Consumer lag",
            f"sum(riskmon_consumer_lag{{{_I}}})",
            decimals=0,
            thresholds=_thresholds((None, "green"), (10_000, "orange"), (100_000, "red")),
        ),
        _stat(
            "Stalled partitions",
            f"sum(riskmon_consumer_stalled_partitions{{{_I}}})",
            description="Partitions whose fetches have come back empty for 15 s although "
            "records wait: the broker no longer serves them (see ops/METRICS.md).",
            decimals=0,
            thresholds=_thresholds((None, "green"), (1, "red")),
        ),
        _stat(
            "DLQ / s",
            f"sum(rate(riskmon_dlq_total{{{_I}}}[$__rate_interval]))",
            decimals=1,
            thresholds=_thresholds((None, "green"), (1, "orange")),
        ),
        _stat(
            "Alerts waiting for Redis",
            f"sum(riskmon_alerts_pending{{{_I}}})",
            decimals=0,
            thresholds=_thresholds((None, "green"), (1, "orange")),
        ),
        _timeseries(
            "Ticks per second",
            [
                _target(
                    f"sum by (instance) (rate(riskmon_ticks_in_total{{{_I}}}[$__rate_interval]))",
                    "in {{instance}}",
                ),
                _target(
                    f"sum by (instance) (rate(riskmon_ticks_ok_total{{{_I}}}[$__rate_interval]))",
                    "accepted {{instance}}",
                ),
            ],
            unit="short",
        ),
        _timeseries(
            "Bars and snapshots per second",
            [
                _target(
                    f"sum by (closed_by) (rate(riskmon_bars_out_total{{{_I}}}[$__rate_interval]))",
                    "bars closed by {{closed_by}}",
                ),
                _target(
                    f"sum(rate(riskmon_snapshots_total{{{_I}}}[$__rate_interval]))",
                    "risk snapshots",
                ),
            ],
            unit="short",
        ),
        _timeseries(
            "Tick-to-snapshot latency",
            quantiles("riskmon_tick_to_snapshot_seconds"),
            description="Wall time from a tick's arrival to the risk snapshot it completes.",
            unit="s",
        ),
        _timeseries(
            "Model update time",
            quantiles("riskmon_model_update_seconds", "model"),
            description="Time of one model update (forecast + state update) per model.",
            unit="s",
        ),
        _timeseries(
            "Consumer lag by topic and partition",
            [
                _target(
                    f"sum by (topic, partition) (riskmon_consumer_lag{{{_I}}})",
                    "{{topic}}[{{partition}}]",
                )
            ],
            unit="short",
        ),
        _timeseries(
            "Fetch max wait",
            [
                _target(
                    f"max by (instance) (riskmon_consumer_fetch_max_wait_ms{{{_I}}})",
                    "{{instance}}",
                )
            ],
            description="The worker's fetch max wait: the configured one, raised while the "
            "broker returns nothing although records wait (the embedded broker, long runs).",
            unit="ms",
        ),
        _timeseries(
            "Dead letters by reason",
            [
                _target(
                    f"sum by (reason) (rate(riskmon_dlq_total{{{_I}}}[$__rate_interval]))",
                    "{{reason}}",
                )
            ],
            unit="short",
            custom={"stacking": {"mode": "normal"}, "fillOpacity": 30},
        ),
        _timeseries(
            "Alerts fired",
            [
                _target(
                    "sum by (rule, severity) "
                    f'(increase(riskmon_alerts_total{{state="firing",{_I}}}[$__rate_interval]))',
                    "{{rule}} ({{severity}})",
                )
            ],
            custom={"drawStyle": "bars", "stacking": {"mode": "normal"}},
        ),
        _timeseries(
            "Ingest batch time",
            quantiles("riskmon_ingest_batch_seconds"),
            unit="s",
        ),
        _timeseries(
            "Day close time (all models of a portfolio)",
            quantiles("riskmon_day_close_seconds"),
            description="Wall time of one portfolio's day close: every model, contributions "
            "and heatmap.",
            unit="s",
        ),
        _timeseries(
            "Writes to Redis",
            [
                _target(
                    f"sum(rate(riskmon_alerts_delivered_total{{{_I}}}[$__rate_interval]))",
                    "alerts delivered",
                ),
                _target(
                    f"sum(rate(riskmon_alerts_delivery_errors_total{{{_I}}}[$__rate_interval]))",
                    "alert delivery errors",
                ),
                _target(
                    f"sum by (sink) (rate(riskmon_sink_errors_total{{{_I}}}[$__rate_interval]))",
                    "snapshot errors ({{sink}})",
                ),
            ],
            description="Alerts delivered from the outbox to the Redis stream, failed "
            "attempts (Redis down: they are retried), and failed snapshot writes per sink.",
            unit="short",
        ),
    ]
    variables = [
        _query_var(
            "instance",
            "Worker",
            f'label_values(up{{job="{SCRAPE_JOB}"}}, instance)',
            multi=True,
            includeAll=True,
            allValue=".*",
            current={"text": "All", "value": "$__all"},
        )
    ]
    return _dashboard(
        "riskmon-pipeline-health",
        "riskmon / Pipeline health",
        "Throughput, latency, consumer lag, dead letters and alerts of the stream workers.",
        panels,
        variables,
    )


_BUILDERS = {
    "portfolio-risk.json": _portfolio_risk,
    "model-calibration.json": _model_calibration,
    "pipeline-health.json": _pipeline_health,
}


def _with_datasource(obj: Any, uid: str) -> Any:
    """Copy of ``obj`` with every Prometheus datasource reference set to ``uid``."""
    if isinstance(obj, dict):
        if obj.get("type") == "prometheus" and "uid" in obj and set(obj) == {"type", "uid"}:
            return {"type": "prometheus", "uid": uid}
        return {k: _with_datasource(v, uid) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_with_datasource(v, uid) for v in obj]
    return obj


def build_dashboards(datasource_uid: str = DATASOURCE_UID) -> dict[str, dict[str, Any]]:
    """The dashboards as Grafana JSON models, by file name.

    Parameters
    ----------
    datasource_uid : str
        uid of the Prometheus datasource the panels read.

    Returns
    -------
    dict of str to dict
        ``{"portfolio-risk.json": {...}, "model-calibration.json": ...,
        "pipeline-health.json": ...}``; each value has ``uid``, ``title``, ``panels``,
        ``templating`` and ``annotations`` (Grafana schema version 39).
    """
    if not datasource_uid or not isinstance(datasource_uid, str):
        raise ValueError(f"datasource_uid={datasource_uid!r} must be a non-empty string")
    boards = {name: build() for name, build in _BUILDERS.items()}
    if datasource_uid != DATASOURCE_UID:
        boards = {name: _with_datasource(b, datasource_uid) for name, b in boards.items()}
    return boards


def dumps_dashboard(dashboard: Mapping[str, Any]) -> str:
    """Canonical JSON text of a dashboard (sorted keys, 2-space indent, final newline)."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export_dashboards(out_dir: str | Path, datasource_uid: str = DATASOURCE_UID) -> list[Path]:
    """Write the dashboards as JSON files into ``out_dir`` (created if missing).

    Returns
    -------
    list of Path
        The files written, one per dashboard.
    """
    out = Path(out_dir)
    written = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, board in build_dashboards(datasource_uid).items():
            path = out / name
            path.write_text(dumps_dashboard(board), encoding="utf-8")
            written.append(path)
    except OSError as exc:
        raise StreamAppError(
            f"cannot write the dashboards to {out}: {exc.strerror or exc}"
            + (" (it is a file, not a folder)" if out.is_file() else "")
        ) from None
    return written


def load_dashboards(directory: str | Path) -> dict[str, dict[str, Any]]:
    """Read every ``*.json`` dashboard of ``directory`` (each must have a ``uid``)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise DashboardPushError(f"dashboard folder {folder} does not exist")
    boards = {}
    for path in sorted(folder.glob("*.json")):
        try:
            board = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DashboardPushError(f"cannot read dashboard {path}: {exc}") from None
        if not isinstance(board, dict) or not board.get("uid") or not board.get("title"):
            raise DashboardPushError(f"{path}: a dashboard needs a 'uid' and a 'title'")
        boards[path.name] = board
    if not boards:
        raise DashboardPushError(f"no *.json dashboards in {folder}")
    return boards


def iter_queries(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Every PromQL expression of a dashboard, as ``(where, expr)`` pairs.

    ``where`` is ``"panel <title> [refId]"``, ``"annotation <name>"`` or
    ``"variable <name>"`` (for a query variable the expression is Grafana's
    ``label_values(...)`` definition, not PromQL).
    """
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield f"panel {panel['title']!r} [{target.get('refId')}]", target["expr"]
    for ann in dashboard.get("annotations", {}).get("list", []):
        if ann.get("expr"):
            yield f"annotation {ann['name']!r}", ann["expr"]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            yield f"variable {var['name']!r}", var["definition"]


# -- push --------------------------------------------------------------------------
class GrafanaSettings(BaseSettings):
    """Where and how to reach Grafana (``RISKMON_GRAFANA_*`` environment variables).

    A token (``RISKMON_GRAFANA_TOKEN``, a service-account token) wins over basic auth
    (``RISKMON_GRAFANA_USER`` / ``RISKMON_GRAFANA_PASSWORD``).
    """

    model_config = SettingsConfigDict(env_prefix="RISKMON_GRAFANA_", extra="ignore", frozen=True)

    url: str = Field("http://localhost:3000", description="Grafana base URL.")
    token: SecretStr | None = None
    user: str | None = None
    password: SecretStr | None = None
    timeout: float = Field(10.0, gt=0, description="Seconds per HTTP request.")

    def credential(self) -> str | tuple[str, str] | None:
        """The credential for ``grafana_client``: a token, ``(user, password)`` or None."""
        if self.token is not None and self.token.get_secret_value():
            return self.token.get_secret_value()
        if self.user:
            password = self.password.get_secret_value() if self.password else ""
            return (self.user, password)
        return None

    def auth_description(self) -> str:
        if self.token is not None and self.token.get_secret_value():
            return "token from RISKMON_GRAFANA_TOKEN"
        if self.user:
            return f"basic auth as {self.user!r} (RISKMON_GRAFANA_USER/RISKMON_GRAFANA_PASSWORD)"
        return "no credentials (set RISKMON_GRAFANA_TOKEN or RISKMON_GRAFANA_USER/PASSWORD)"


@dataclass(frozen=True)
class PushResult:
    """What happened to one dashboard: ``status`` is created, updated or unchanged."""

    uid: str
    title: str
    status: str
    url: str
    version: int | None


def _import_grafana_client() -> Any:
    try:
        import grafana_client
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependency("grafana-client", "riskmon dashboards push") from exc
    return grafana_client


def _root_cause(exc: BaseException) -> str:
    """The short reason of a connection error ("[Errno 111] Connection refused")."""
    text = str(exc)
    found = re.search(r"\[Errno -?\d+\] [^'\")]+|Failed to resolve '[^']+'", text)
    return found.group(0) if found else text


def _comparable(board: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(board))
    for key in ("id", "version", "iteration"):
        out.pop(key, None)
    return out


class _Pusher:
    """Maps grafana-client and HTTP failures to :class:`DashboardPushError` messages."""

    def __init__(self, settings: GrafanaSettings) -> None:
        gc = _import_grafana_client()
        from grafana_client.client import (
            GrafanaClientError,
            GrafanaException,
            GrafanaTimeoutError,
            GrafanaUnauthorizedError,
        )

        self.errors = (GrafanaClientError, GrafanaException, GrafanaTimeoutError)
        self.unauthorized = GrafanaUnauthorizedError
        self.client_error = GrafanaClientError
        self.timeout_error = GrafanaTimeoutError
        parts = urlsplit(settings.url)
        try:
            parts.port  # noqa: B018 - urlsplit checks the port only when asked
        except ValueError:
            parts = parts._replace(scheme="")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DashboardPushError(
                f"Grafana URL {settings.url!r} must look like http://host:3000"
            )
        self.settings = settings
        self.where = f"Grafana at {settings.url}"
        self.api = gc.GrafanaApi.from_url(
            settings.url, credential=settings.credential(), timeout=settings.timeout
        )

    def call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self.unauthorized:
            raise DashboardPushError(
                f"{self.where} refused the credentials (401 Unauthorized) while trying to "
                f"{what}; used {self.settings.auth_description()}"
            ) from None
        except self.timeout_error as exc:
            raise DashboardPushError(
                f"{self.where} did not answer within {self.settings.timeout} s while trying "
                f"to {what}: {exc}"
            ) from None
        except self.client_error as exc:
            if exc.status_code == 403:
                raise DashboardPushError(
                    f"{self.where} denied permission (403) to {what}: the token or user needs "
                    "the Editor role on the folder (or Admin to create it)"
                ) from None
            raise
        except self.errors as exc:
            raise DashboardPushError(f"{self.where} failed to {what}: {exc}") from None
        except OSError as exc:  # connection refused, DNS, TLS (niquests' errors are OSErrors)
            raise DashboardPushError(
                f"cannot reach {self.where} to {what}: {_root_cause(exc)}. Is Grafana running? "
                "(docker compose up grafana; or pass --url / RISKMON_GRAFANA_URL)"
            ) from None

    def ensure_folder(self, uid: str, title: str) -> None:
        try:
            self.call(f"read folder {uid!r}", self.api.folder.get_folder, uid)
        except self.client_error as exc:
            if exc.status_code != 404:
                raise DashboardPushError(
                    f"{self.where} failed to read folder {uid!r}: {exc.message}"
                ) from None
            try:
                self.call(f"create folder {title!r}", self.api.folder.create_folder, title, uid)
            except self.client_error as exc2:
                hint = " (is the URL the base URL of a Grafana?)" if exc2.status_code == 404 else ""
                raise DashboardPushError(
                    f"{self.where} failed to create folder {title!r} "
                    f"({exc2.status_code}): {exc2.message}{hint}"
                ) from None

    def existing(self, uid: str) -> dict[str, Any] | None:
        try:
            found = self.call(f"read dashboard {uid!r}", self.api.dashboard.get_dashboard, uid)
        except self.client_error as exc:
            if exc.status_code == 404:
                return None
            raise DashboardPushError(
                f"{self.where} failed to read dashboard {uid!r}: {exc.message}"
            ) from None
        return found if isinstance(found, dict) else None

    def push(self, board: dict[str, Any], folder_uid: str, message: str) -> PushResult:
        uid, title = board["uid"], board["title"]
        old = self.existing(uid)
        if old is not None:
            old_board = old.get("dashboard", {})
            same_folder = old.get("meta", {}).get("folderUid", folder_uid) == folder_uid
            if same_folder and _comparable(old_board) == _comparable(board):
                return PushResult(
                    uid,
                    title,
                    "unchanged",
                    old.get("meta", {}).get("url", ""),
                    old_board.get("version"),
                )
        payload = {
            "dashboard": {**board, "id": None},
            "folderUid": folder_uid,
            "overwrite": True,
            "message": message,
        }
        try:
            answer = self.call(
                f"save dashboard {uid!r}", self.api.dashboard.update_dashboard, payload
            )
        except self.client_error as exc:
            raise DashboardPushError(
                f"{self.where} rejected dashboard {uid!r} ({exc.status_code}): {exc.message}"
            ) from None
        answer = answer if isinstance(answer, dict) else {}
        return PushResult(
            uid,
            title,
            "created" if old is None else "updated",
            str(answer.get("url", "")),
            answer.get("version"),
        )


def push_dashboards(
    settings: GrafanaSettings | None = None,
    *,
    dashboards: Mapping[str, dict[str, Any]] | None = None,
    folder_uid: str = FOLDER_UID,
    folder_title: str = FOLDER_TITLE,
    datasource_uid: str = DATASOURCE_UID,
    message: str = "riskmon dashboards push",
) -> list[PushResult]:
    """Create or overwrite the dashboards in Grafana, by uid, inside a folder.

    Idempotent: the folder is created only when missing, a dashboard identical to the
    stored one is left alone (``unchanged``), others are saved with ``overwrite=True``
    under their fixed uid (``created`` / ``updated``).

    Parameters
    ----------
    settings : GrafanaSettings or None
        URL and credentials; ``None`` reads the ``RISKMON_GRAFANA_*`` environment.
    dashboards : mapping or None
        Dashboards by file name; ``None`` builds them (:func:`build_dashboards`).
    folder_uid, folder_title : str
        The folder that holds them.
    datasource_uid : str
        uid of the Prometheus datasource, when ``dashboards`` is None.
    message : str
        Version-history message.

    Raises
    ------
    DashboardPushError
        Grafana unreachable, credentials refused (401), permission denied (403), a
        timeout or a dashboard rejected; the message names the URL and the auth used.
    """
    settings = settings if settings is not None else GrafanaSettings()
    boards = dashboards if dashboards is not None else build_dashboards(datasource_uid)
    pusher = _Pusher(settings)
    pusher.ensure_folder(folder_uid, folder_title)
    return [pusher.push(dict(board), folder_uid, message) for board in boards.values()]


# -- command line (riskmon dashboards ...) -------------------------------------------
_DASHBOARDS_EPILOG = """\
examples:
  riskmon dashboards export --out ops/grafana/dashboards
  riskmon dashboards push --url http://localhost:3000          # token or user/password from env
  RISKMON_GRAFANA_TOKEN=glsa_... riskmon dashboards push --url https://grafana.example.com
  riskmon dashboards push --from-dir my-dashboards --datasource-uid P1809F7CD0C75ACF3

environment:
  RISKMON_GRAFANA_URL        default of --url (http://localhost:3000)
  RISKMON_GRAFANA_TOKEN      service-account token (wins over basic auth)
  RISKMON_GRAFANA_USER       basic auth user
  RISKMON_GRAFANA_PASSWORD   basic auth password
"""


def add_dashboards_command(sub: argparse._SubParsersAction) -> None:
    """Add ``riskmon dashboards export|push`` to the ``riskmon`` subcommands
    (called by :func:`stream_app.cli_ops.register`)."""
    p = sub.add_parser(
        "dashboards",
        help="export the Grafana dashboards as JSON or push them to a Grafana",
        description=(
            "The riskmon Grafana dashboards (portfolio risk, model calibration, pipeline "
            "health) as code. 'export' writes their JSON; 'push' creates or overwrites them "
            "in a Grafana by uid, inside a folder (created when missing)."
        ),
        epilog=_DASHBOARDS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="dashboards_command", metavar="ACTION")
    actions.required = True

    ex = actions.add_parser("export", help="write the dashboards' JSON files")
    ex.add_argument(
        "--out",
        metavar="DIR",
        default="dashboards",
        help="output folder (default: ./dashboards)",
    )
    ex.add_argument(
        "--datasource-uid",
        default=DATASOURCE_UID,
        help=f"uid of the Prometheus datasource the panels read (default {DATASOURCE_UID})",
    )
    ex.set_defaults(func=cmd_dashboards_export)

    push = actions.add_parser(
        "push",
        help="create or overwrite the dashboards in Grafana (idempotent)",
        epilog=_DASHBOARDS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    push.add_argument(
        "--url", help="Grafana base URL (default: $RISKMON_GRAFANA_URL or http://localhost:3000)"
    )
    push.add_argument(
        "--folder", default=FOLDER_TITLE, help=f"folder title (default {FOLDER_TITLE})"
    )
    push.add_argument("--folder-uid", default=FOLDER_UID, help=f"folder uid (default {FOLDER_UID})")
    push.add_argument(
        "--datasource-uid",
        default=DATASOURCE_UID,
        help=f"uid of the Prometheus datasource in that Grafana (default {DATASOURCE_UID})",
    )
    push.add_argument(
        "--from-dir",
        metavar="DIR",
        help="push the *.json dashboards of DIR instead of the built-in ones",
    )
    push.add_argument("--timeout", type=float, help="seconds per HTTP request (default 10)")
    push.set_defaults(func=cmd_dashboards_push)


def cmd_dashboards_export(args: argparse.Namespace) -> int:
    for path in export_dashboards(Path(args.out), datasource_uid=args.datasource_uid):
        print(path)
    return 0


def cmd_dashboards_push(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    if args.url:
        overrides["url"] = args.url
    if args.timeout is not None:
        overrides["timeout"] = args.timeout
    settings = GrafanaSettings(**overrides)  # type: ignore[arg-type]
    boards = load_dashboards(args.from_dir) if args.from_dir else None
    results = push_dashboards(
        settings,
        dashboards=boards,
        folder_uid=args.folder_uid,
        folder_title=args.folder,
        datasource_uid=args.datasource_uid,
    )
    base = settings.url.rstrip("/")
    for r in results:
        where = f"{base}{r.url}" if r.url.startswith("/") else r.url
        print(f"{r.status:<9} {r.uid:<28} {r.title}  {where}".rstrip())
    print(f"{len(results)} dashboards in folder {args.folder!r} of {base}", file=sys.stderr)
    return 0
