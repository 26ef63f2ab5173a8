"""Grafana dashboards (deploy/grafana/dashboards/), checked without Grafana.

SQL panels and query variables: Grafana's macros and the dashboard's variables
are rendered the way Grafana would, then the SQL must parse in the postgres and
risingwave dialects, reference only relations and columns of the deployed
embedded engine, and run there. PromQL panels may select only exported metrics.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlglot
import yaml
from sqlglot import exp
from sqlglot.optimizer.qualify import qualify

from test_alerts import unknown_metrics
from tradeflow import engine

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
DATASOURCES = {ds["uid"]: ds["type"] for ds in yaml.safe_load(
    (ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "tradeflow.yaml").read_text())["datasources"]}
SQL_TYPE, PROM_TYPE = "grafana-postgresql-datasource", "prometheus"
DIALECTS = ("postgres", "risingwave")

# Grafana's rendering for a fixed time range and interval
TIME_FROM, TIME_TO, INTERVAL_SECONDS = "'2024-01-01T00:00:00Z'", "'2024-01-02T00:00:00Z'", 60
SQL_MACROS = [
    (re.compile(r"\$__timeFilter\(([^)]+)\)"), lambda m: f"{m[1]} BETWEEN {TIME_FROM} AND {TIME_TO}"),
    (re.compile(r"\$__timeFrom\(\)"), lambda m: TIME_FROM),
    (re.compile(r"\$__timeTo\(\)"), lambda m: TIME_TO),
    (re.compile(r"\$__timeGroupAlias\(([^,]+),\s*\$__interval\)"),
     lambda m: f'floor(extract(epoch from {m[1]})/{INTERVAL_SECONDS})*{INTERVAL_SECONDS} AS "time"'),
]
PROM_MACROS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1d"}
SAMPLE_VALUE = "'acc-test'"  # a query variable's value, quoted as ${var:sqlstring} renders it


def variables(dashboard: dict) -> list[dict]:
    return dashboard.get("templating", {}).get("list", [])


def datasource_type(item: dict) -> str:
    return DATASOURCES[item["datasource"]["uid"]]


def sql_queries() -> list:
    """(dashboard, query, format) of every SQL target and SQL query variable, as pytest params."""
    out = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                if datasource_type(target) == SQL_TYPE:
                    out.append(pytest.param(dashboard, target["rawSql"], target["format"],
                                            id=f"{path.stem}: {panel['title']} {target['refId']}"))
        for var in variables(dashboard):
            if var["type"] == "query" and datasource_type(var) == SQL_TYPE:
                out.append(pytest.param(dashboard, var["query"], "table", id=f"{path.stem}: ${var['name']}"))
    return out


def render_sql(sql: str, dashboard: dict, schema: str) -> str:
    for pattern, repl in SQL_MACROS:
        sql = pattern.sub(repl, sql)
    for var in variables(dashboard):
        value = schema if var["name"] == "schema" else SAMPLE_VALUE
        sql = re.sub(rf"\$\{{{var['name']}(:\w+)?\}}|\${var['name']}\b", value, sql)
    assert "$" not in sql, f"macro or variable left unrendered:\n{sql}"
    return sql


@pytest.fixture(scope="module")
def catalog(engine_settings) -> dict:
    """{schema: {relation: {column: type}}} of the deployed embedded engine."""
    with engine.connect(engine_settings) as conn:
        rows = conn.execute("SELECT table_name, column_name, data_type FROM information_schema.columns "
                            "WHERE table_schema = %s", (engine_settings.schema,)).fetchall()
    relations: dict[str, dict[str, str]] = {}
    for table, column, data_type in rows:
        relations.setdefault(table, {})[column] = data_type
    return {engine_settings.schema: relations}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_loads_with_unique_panels_and_provisioned_datasources(path):
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"]
    panels = dashboard["panels"]
    for key in ("id", "title"):
        values = [p[key] for p in panels]
        assert len(values) == len(set(values)), f"duplicate panel {key}s in {path.name}"
    targets = [t for p in panels for t in p["targets"]]
    for item in [*panels, *targets, *(v for v in variables(dashboard) if v["type"] == "query")]:
        assert item["datasource"]["uid"] in DATASOURCES, item
    for target in targets:
        if datasource_type(target) == SQL_TYPE:
            assert target["rawQuery"] and target["format"] in {"table", "time_series"}, target
        else:
            assert datasource_type(target) == PROM_TYPE and target["expr"], target


def test_dashboard_uids_are_unique():
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize(("dashboard", "sql", "fmt"), sql_queries())
def test_sql_parses_references_deployed_columns_and_runs(dashboard, sql, fmt, catalog, engine_settings):
    schema = engine_settings.schema
    rendered = render_sql(sql, dashboard, schema)
    for dialect in DIALECTS:
        tree = sqlglot.parse_one(rendered, read=dialect)
        ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
        for table in tree.find_all(exp.Table):
            if table.name not in ctes:
                assert (table.db, table.name in catalog[schema]) == (schema, True), f"unknown relation {table.sql()}"
        qualify(tree, schema=catalog, dialect=dialect, validate_qualify_columns=True)  # unknown column: OptimizeError
    with engine.connect(engine_settings) as conn:
        cur = conn.execute(rendered)
    if fmt == "time_series":
        assert "time" in [c.name for c in cur.description], "a time series query needs a column named time"


def test_promql_uses_only_exported_metrics():
    exprs = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                if datasource_type(target) == PROM_TYPE:
                    expr = target["expr"]
                    for macro, value in PROM_MACROS.items():
                        expr = expr.replace(macro, value)
                    exprs.append(expr)
    assert exprs
    assert not unknown_metrics(exprs)
