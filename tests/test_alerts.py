"""Prometheus alert rules (deploy/prometheus/rules/): promtool checks and
unit-tests them, and they may use only the metrics and labels of
tradeflow.ops.metric_names."""
from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import promql_parser
import pytest
import yaml

from tradeflow.ops.metric_names import ALL_METRICS

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "tradeflow.rules.yml"
RULE_TESTS = RULES.with_name("tradeflow.rules.test.yml")
SCRAPE_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series
HISTOGRAM_SERIES = {f"{name}{suffix}": name for name, (kind, _, _) in ALL_METRICS.items() if kind == "histogram"
                    for suffix in ("_bucket", "_sum", "_count")}


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []
    promql_parser.walk(promql_parser.parse(expr),
                       lambda node: found.append(node) if isinstance(node, promql_parser.VectorSelector) else None)
    return found


def unknown_metrics(exprs: Iterable[str]) -> set[str]:
    """Metric names selected by the expressions that tradeflow does not export (an unnamed selector counts)."""
    names = {s.name or str(s) for expr in exprs for s in selectors(expr)}
    return {n for n in names if n not in ALL_METRICS and n not in HISTOGRAM_SERIES}


def load_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not on PATH: `python3 scripts/dev.py test` installs it "
                    "(Debian package prometheus; by hand: apt-get install -y prometheus)")
    return subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize("args", [("check", "rules", RULES), ("check", "config", PROMETHEUS_CONFIG),
                                  ("test", "rules", RULE_TESTS)], ids=lambda a: " ".join(a[:2]))
def test_promtool(args):
    result = promtool(*map(str, args))
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_loads_the_rules():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert [PROMETHEUS_CONFIG.parent / f for f in config["rule_files"]] == [RULES]


def test_rules_use_only_exported_metrics():
    assert not unknown_metrics(rule["expr"] for rule in load_rules())


def test_annotations_template_only_labels_the_metrics_carry():
    for rule in load_rules():
        labels = {label for s in selectors(rule["expr"]) for label in ALL_METRICS[s.name][1]} | SCRAPE_LABELS
        used = set(re.findall(r"\$labels\.(\w+)", " ".join(rule["annotations"].values())))
        assert used <= labels, (rule["alert"], used - labels)


def test_every_alert_is_labelled_annotated_and_unit_tested_firing_and_not():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for rule in load_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert {"summary", "description"} <= rule["annotations"].keys(), name
        outcomes = {bool(case["exp_alerts"]) for case in cases if case["alertname"] == name}
        assert outcomes == {True, False}, f"{name}: needs a firing and a not-firing case"


def test_unit_test_series_have_the_exported_labels():
    series = [s["series"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for s in test["input_series"]]
    assert not unknown_metrics(series)
    for text in series:
        (selector,) = selectors(text)
        labels = {m.name for m in selector.matchers.matchers}
        assert labels - SCRAPE_LABELS == set(ALL_METRICS[selector.name][1]), text
