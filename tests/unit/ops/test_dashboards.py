"""The Grafana dashboards as code: committed JSON == generated, fixed datasource uid,
template variables, the required panels, a sane grid, PromQL that promtool parses, and
``riskmon dashboards export``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stream_app.cli import main
from stream_app.dashboards import (
    DATASOURCE_UID,
    build_dashboards,
    dumps_dashboard,
    export_dashboards,
    iter_queries,
)

ROOT = Path(__file__).resolve().parents[3]
DASHBOARDS = ROOT / "ops" / "grafana" / "dashboards"
BUILTINS = {"__rate_interval", "__interval", "__range"}
#: concrete values for executing / parsing the expressions
SUBSTITUTE = {
    "portfolio": "book",
    "run": "replay-1",
    "model": "hs",
    "level": "0.99",
    "instance": "127.0.0.1:9108",
    "__rate_interval": "20s",
    "__interval": "5s",
    "__range": "10m",
}


def substitute(expr: str, values: dict[str, str] = SUBSTITUTE) -> str:
    """Replace Grafana's $variables by concrete values (longest names first)."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    assert "$" not in expr, expr
    return expr


@pytest.fixture(scope="module")
def boards() -> dict:
    return build_dashboards()


def test_committed_json_is_the_generated_json(boards):
    on_disk = {p.name for p in DASHBOARDS.glob("*.json")}
    assert on_disk == set(boards), "run: python scripts/build_dashboards.py"
    for name, board in boards.items():
        assert (DASHBOARDS / name).read_text() == dumps_dashboard(board), (
            f"{name} is stale: run python scripts/build_dashboards.py"
        )


def test_build_script_check_detects_drift(tmp_path):
    script = ROOT / "scripts" / "build_dashboards.py"
    ok = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    export_dashboards(tmp_path)
    path = tmp_path / "pipeline-health.json"
    path.write_text(path.read_text().replace("Ticks per second", "Ticks/s"))
    bad = subprocess.run(
        [sys.executable, str(script), "--check", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "pipeline-health.json" in bad.stdout


def test_uids_titles_and_provisioning(boards):
    uids = {b["uid"] for b in boards.values()}
    assert uids == {
        "riskmon-portfolio-risk",
        "riskmon-model-calibration",
        "riskmon-pipeline-health",
    }
    for board in boards.values():
        assert "id" not in board  # provisioning and push address dashboards by uid
        assert len(board["uid"]) <= 40 and board["title"].startswith("riskmon / ")
        assert board["schemaVersion"] >= 36


def _datasource_refs(obj, path="$"):
    if isinstance(obj, dict):
        if "datasource" in obj:
            yield path, obj["datasource"]
        for key, value in obj.items():
            yield from _datasource_refs(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _datasource_refs(value, f"{path}[{i}]")


def test_every_query_reads_the_fixed_datasource_uid(boards):
    for name, board in boards.items():
        refs = list(_datasource_refs(board))
        assert len(refs) > 10
        for path, ref in refs:
            if ref.get("type") == "grafana":  # the built-in annotations
                continue
            assert ref == {"type": "prometheus", "uid": DATASOURCE_UID}, (name, path)
        for panel in board["panels"]:
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID


def test_datasource_uid_can_be_rewritten():
    text = json.dumps(build_dashboards("P1809F7CD0C75ACF3"))
    assert DATASOURCE_UID not in text and text.count("P1809F7CD0C75ACF3") > 30
    with pytest.raises(ValueError, match="datasource_uid"):
        build_dashboards("")


def test_template_variables(boards):
    for name in ("portfolio-risk.json", "model-calibration.json"):
        variables = {v["name"]: v for v in boards[name]["templating"]["list"]}
        assert {"portfolio", "run", "level", "model"} <= set(variables)
        assert variables["portfolio"]["definition"].startswith("label_values(")
        assert ", run)" in variables["run"]["definition"]
        assert '$portfolio"' in variables["run"]["definition"]  # runs of the chosen portfolio
        assert [o["value"] for o in variables["level"]["options"]] == ["0.95", "0.975", "0.99"]
    pipeline = {v["name"] for v in boards["pipeline-health.json"]["templating"]["list"]}
    assert pipeline == {"instance"}


def test_every_variable_used_is_defined(boards):
    for name, board in boards.items():
        defined = {v["name"] for v in board["templating"]["list"]} | BUILTINS
        for where, expr in iter_queries(board):
            used = set(re.findall(r"\$\{?(\w+)", expr))
            assert used <= defined, (name, where, used - defined)
        for panel in board["panels"]:
            used = set(re.findall(r"\$\{?(\w+)", panel["title"]))
            assert used <= defined, (name, panel["title"])


def test_risk_panels_select_portfolio_and_run(boards):
    for name in ("portfolio-risk.json", "model-calibration.json"):
        for where, expr in iter_queries(boards[name]):
            if where.startswith("variable"):
                continue
            for sel in re.findall(r"riskmon_portfolio_\w+\{[^}]*\}", expr):
                assert 'portfolio="$portfolio"' in sel and 'run="$run"' in sel, (where, sel)
            for sel in re.findall(r"riskmon_asset_\w+\{[^}]*\}", expr):
                assert 'run="$run"' in sel, (where, sel)


def _exprs(board) -> str:
    return "\n".join(expr for _, expr in iter_queries(board))


def test_portfolio_risk_shows_what_the_desk_needs(boards):
    board = boards["portfolio-risk.json"]
    text = _exprs(board)
    for metric in (
        "riskmon_portfolio_var_ratio",
        "riskmon_portfolio_es_ratio",
        "riskmon_portfolio_realized_return_ratio",
        "riskmon_portfolio_pnl_ratio",
        "riskmon_portfolio_exceptions_total",
        "riskmon_portfolio_traffic_light",
        "riskmon_portfolio_cnn_risk_score",
        "riskmon_portfolio_predicted_vol_ratio",
        "riskmon_portfolio_risk_contribution_ratio",
        "riskmon_portfolio_avg_correlation",
        "riskmon_alerts_total",
    ):
        assert metric in text, metric
    (main_panel,) = [p for p in board["panels"] if p["title"].startswith("VaR and ES")]
    legends = [t["legendFormat"] for t in main_panel["targets"]]
    assert "VaR exception" in legends  # exceptions marked as points
    ann = [a for a in board["annotations"]["list"] if a.get("expr")]
    assert ann and "riskmon_portfolio_exceptions_total" in ann[0]["expr"]
    (alerts,) = [p for p in board["panels"] if p["title"].startswith("Latest alerts")]
    assert "Redis" in alerts["description"]


def test_calibration_and_pipeline_panels(boards):
    text = _exprs(boards["model-calibration.json"])
    for needle in (
        "riskmon_portfolio_exception_rate_250d",
        "vector(1 - $level)",  # the expected rate
        "riskmon_portfolio_kupiec_pvalue",
        "sum by (model)",  # champion vs challengers, one row per model
        "riskmon_portfolio_days_total",
    ):
        assert needle in text, needle
    text = _exprs(boards["pipeline-health.json"])
    for needle in (
        "rate(riskmon_ticks_in_total",
        "riskmon_tick_to_snapshot_seconds_bucket",
        "riskmon_consumer_lag",
        "sum by (reason) (rate(riskmon_dlq_total",
        "riskmon_alerts_total",
        "riskmon_model_update_seconds_bucket",
    ):
        assert needle in text, needle


def test_every_contract_metric_is_on_a_dashboard(boards, contract_metrics):
    text = "\n".join(_exprs(b) for b in boards.values())
    assert len(contract_metrics) > 20
    missing = {n for n in contract_metrics if n not in text}
    assert not missing


def test_grid_is_within_24_columns_without_overlaps(boards):
    for name, board in boards.items():
        cells: set[tuple[int, int]] = set()
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for p in board["panels"]:
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24, (name, p["title"])
            mine = {
                (x, y)
                for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])
            }
            assert not cells & mine, (name, p["title"])
            cells |= mine


def test_promtool_parses_every_expression(boards, promtool, tmp_path):
    """Every panel/annotation expression, with variables substituted, is valid PromQL."""
    rules = []
    for board in boards.values():
        for where, expr in iter_queries(board):
            if where.startswith("variable"):
                continue
            rules.append({"record": f"check:expr_{len(rules)}", "expr": substitute(expr)})
    assert len(rules) > 50
    (tmp_path / "exprs.yml").write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": rules}]}))
    out = subprocess.run(
        [promtool, "check", "rules", "exprs.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_substitute_replaces_every_variable():
    assert (
        substitute('x{run="$run",l="${level}"}[$__rate_interval]')
        == 'x{run="replay-1",l="0.99"}[20s]'
    )
    with pytest.raises(AssertionError):
        substitute('x{a="$unknown"}')


def test_cli_export_writes_the_dashboards(tmp_path, capsys):
    assert main(["dashboards", "export", "--out", str(tmp_path / "d")]) == 0
    written = sorted(p.name for p in (tmp_path / "d").glob("*.json"))
    assert written == sorted(build_dashboards())
    for name in written:
        assert json.loads((tmp_path / "d" / name).read_text()) == build_dashboards()[name]
    assert "portfolio-risk.json" in capsys.readouterr().out
    assert (
        main(["dashboards", "export", "--out", str(tmp_path / "e"), "--datasource-uid", "X1"]) == 0
    )
    assert '"uid": "X1"' in (tmp_path / "e" / "portfolio-risk.json").read_text()
