"""Deploy steps the streaming engines need, run here on the embedded engine
where the SQL is plain PostgreSQL (the engines themselves: tests/integration)."""
from __future__ import annotations

import json

from tradeflow import engine
from tradeflow.dbt import run_dbt
from tradeflow.portability import compile_inline


def test_hook_statements_run_one_request_each(engine_settings):
    # Materialize refuses several DDL statements in one request: the hook's
    # helper sends each statement on its own (run_query) when dbt runs it
    schema = "tradeflow_hook_check"
    statements = [f"create schema if not exists {schema}", f"create table {schema}.a (v int)",
                  f"create table {schema}.b (v int)"]
    output = run_dbt(engine_settings, ["run-operation", "one_statement_per_request",
                                       "--args", json.dumps({"statements": statements})])
    with engine.connect(engine_settings) as conn:
        created = {name for (name,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))}
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
    assert created == {"a", "b"}, output


def test_materialize_hook_compiles_to_its_statements(tmp_path):
    # compiled (not run), the hook shows every statement, so the lint checks them
    sql = compile_inline("materialize", tmp_path, "{{ create_raw_tables() }}")
    statements = [s.strip() for s in sql.split(";") if s.strip()]
    assert statements[0].startswith("create schema")
    assert all(s.startswith("create table") for s in statements[1:]) and len(statements) > 10
    # the tables a change feed follows keep their history, so a feed can resume AS OF its position
    retained = {s.split("(")[0].split(".")[-1].strip() for s in statements if "retain history" in s}
    assert retained == {"price_1m_history", "order_commands"}
