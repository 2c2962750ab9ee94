"""ops/prometheus: promtool accepts the config and the rules; the rules' unit tests pass;
the rules only use metrics of the contract and only page on live data."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
PROM = ROOT / "ops" / "prometheus"

SYSTEM_METRICS = {"up"}


def run(cmd: list[str], cwd: Path = PROM) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)


def rules() -> list[dict]:
    doc = yaml.safe_load((PROM / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_check_config(promtool):
    out = run([promtool, "check", "config", "prometheus.yml"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_check_rules(promtool):
    out = run([promtool, "check", "rules", "alerts.yml"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules())} rules found" in out.stdout


def test_promtool_rule_unit_tests(promtool):
    """Each alert fires on synthetic series and stays quiet where it should."""
    out = run([promtool, "test", "rules", "alerts_test.yml"])
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_unit_test():
    tested = set(re.findall(r"alertname: (\w+)", (PROM / "alerts_test.yml").read_text()))
    assert {r["alert"] for r in rules()} <= tested


def test_rule_unit_tests_can_fail(promtool, tmp_path):
    """A mutated threshold is caught by the unit tests."""
    for name in ("alerts.yml", "alerts_test.yml"):
        shutil.copy(PROM / name, tmp_path / name)
    text = (tmp_path / "alerts.yml").read_text()
    mutated = text.replace('level="0.99"} > 0.8', 'level="0.99"} > 0.9')
    assert mutated != text
    (tmp_path / "alerts.yml").write_text(mutated)
    out = run([promtool, "test", "rules", "alerts_test.yml"], cwd=tmp_path)
    assert out.returncode != 0 and "RiskmonIntradayLossNearVaR" in out.stdout + out.stderr


def test_rules_are_complete_and_well_formed():
    names = {r["alert"] for r in rules()}
    for needed in (
        "RiskmonVaRException99",
        "RiskmonIntradayLossNearVaR",
        "RiskmonTrafficLightYellow",
        "RiskmonTrafficLightRed",
        "RiskmonNoTicks",
        "RiskmonStaleAsset",
        "RiskmonDeadLetterRate",
        "RiskmonPipelineLatencyHigh",
    ):
        assert needed in names
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_rules_use_contract_metrics_and_risk_rules_watch_live_data_only(contract_metrics):
    for rule in rules():
        expr = rule["expr"]
        metrics = set(re.findall(r"\b(riskmon_[a-z0-9_]+|up)\b(?=\s*[{\[)]|\s)", expr))
        assert metrics, rule["alert"]
        assert metrics <= contract_metrics | SYSTEM_METRICS, (rule["alert"], metrics)
        for selector in re.findall(r"riskmon_(?:portfolio|asset)_\w+\{[^}]*\}", expr):
            assert 'run="live"' in selector, (rule["alert"], selector)


@pytest.mark.parametrize("bad", ['riskmon_portfolio_var_ratio{run="live"} >', "sum(("])
def test_promtool_rejects_a_broken_rule(promtool, tmp_path, bad):
    doc = {"groups": [{"name": "g", "rules": [{"alert": "Broken", "expr": bad}]}]}
    (tmp_path / "bad.yml").write_text(yaml.safe_dump(doc))
    out = run([promtool, "check", "rules", "bad.yml"], cwd=tmp_path)
    assert out.returncode != 0
