"""The PrometheusRule the monitoring component ships: promtool validates it, and each alert fires
on its sample series in include/manifests/monitoring/prometheus-rules.test.yaml."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

RULES = ROOT / "include" / "manifests" / "monitoring" / "prometheus-rules.yaml"
UNIT_TESTS = ROOT / "include" / "manifests" / "monitoring" / "prometheus-rules.test.yaml"
SCRAPE = ROOT / "include" / "manifests" / "monitoring" / "prometheus-scrape.yaml"
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus) is not installed")


def rule_file(tmp_path: Path) -> Path:
    """The PrometheusRule's spec is a plain Prometheus rule file."""
    rule = yaml.safe_load(RULES.read_text())
    assert rule["kind"] == "PrometheusRule"
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(rule_file(tmp_path))], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_every_alert_fires_on_its_sample_series(tmp_path: Path) -> None:
    rules = rule_file(tmp_path)
    tests = yaml.safe_load(UNIT_TESTS.read_text()) | {"rule_files": [rules.name]}
    alerts = {r["alert"] for group in yaml.safe_load(rules.read_text())["groups"] for r in group["rules"]}
    tested = {
        case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"] if case["exp_alerts"]
    }
    assert tested == alerts, f"alerts without a firing test: {sorted(alerts - tested)}"
    path = tmp_path / "rules.test.yaml"
    path.write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [str(PROMTOOL), "test", "rules", str(path)], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_and_the_rules_use_only_metrics_that_exist() -> None:
    """Every metric the Grafana dashboard or an alert queries is one /metrics exports, or Airflow's
    own (airflow_*, through the statsd exporter): a renamed metric cannot leave a blank panel."""
    import inspect
    import json
    import re

    from base_platform.ui import metrics

    exported = set(re.findall(r'Gauge\(\s*"(base_\w+)"', inspect.getsource(metrics)))
    dashboard = json.loads((RULES.parent / "grafana-dashboard.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queries += [r["expr"] for g in yaml.safe_load(RULES.read_text())["spec"]["groups"] for r in g["rules"]]
    used = {name for query in queries for name in re.findall(r"\b((?:base|airflow)_[a-z_]+)\b", query)}
    assert used - exported <= {"airflow_scheduler_heartbeat", "airflow_ti_successes", "airflow_ti_failures"}
    assert exported <= used, f"exported but neither charted nor alerted on: {sorted(exported - used)}"


def test_promtool_accepts_the_scrape_job_which_reads_its_token_from_a_file_not_from_the_config(
    tmp_path: Path,
) -> None:
    """The job scrapes the page's /metrics with the scrape token from the mounted Secret's file (no
    credential in the repository, none that expires with an Airflow session)."""
    config = yaml.safe_load(SCRAPE.read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/base-platform/metrics"
    assert job["authorization"] == {
        "type": "Bearer",
        "credentials_file": "/etc/prometheus/secrets/base-metrics-scrape/token",
    }
    assert not {"bearer_token", "bearer_token_file", "basic_auth"} & set(job)
    token = tmp_path / "token"  # promtool checks that the file exists; the Secret is not mounted here
    token.write_text("placeholder")
    job["authorization"]["credentials_file"] = str(token)
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([str(PROMTOOL), "check", "config", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
