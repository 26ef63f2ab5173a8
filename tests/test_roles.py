"""Least-privilege roles on the embedded engine: each role logs in (trust
authentication on the engine's unix socket) and can do its own work and
nothing else; credentials come from the environment or a file and never
reach a log."""
from __future__ import annotations

import json
import logging
import re
from datetime import timedelta
from decimal import Decimal

import pandas as pd
import psycopg
import pytest
from positions_helpers import T0, rows
from psycopg import errors

from adapters.changefeed import open_feed, position_store
from adapters.execution import ACCEPTED_ORDER_KEY, ACCEPTED_ORDERS, ExecutionAdapter
from adapters.paper import PaperBroker, PaperConfig
from ingest.dlq import pending
from ingest.prices import PriceIngester
from ingest.replay import replay
from tradeflow import engine
from tradeflow.config import PROJECT_DIR
from tradeflow.dbt import deploy
from tradeflow.ops.roles import (
    CREDENTIALS_FILE_VAR,
    ROLE_NAMES,
    ROLES,
    CredentialsError,
    connect_as,
    create_roles,
    load_passwords,
    marts,
    read_credentials_file,
)
from tradeflow.trading import accounts, policy
from tradeflow.trading.gate import DecisionGate, Signal

PROBE = "roles_probe"  # an audit view over a raw table: readable through the view only


@pytest.fixture(scope="module")
def roles(engine_settings):
    audit_schema = f"{engine_settings.schema}_audit"
    with engine.connect(engine_settings) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{audit_schema}"')
        conn.execute(f'CREATE OR REPLACE VIEW "{audit_schema}".{PROBE} AS'
                     f' SELECT symbol FROM "{engine_settings.schema}".price_1m_history WHERE false')
        create_roles(conn, engine_settings.schema, passwords={})
    yield engine_settings
    with engine.connect(engine_settings) as conn:
        conn.execute(f'DROP VIEW IF EXISTS "{audit_schema}".{PROBE}')


def as_role(settings, role: str) -> psycopg.Connection:
    # not autocommit: every test rolls its writes back
    return connect_as(settings, role, passwords={}, autocommit=False)


def test_each_role_logs_in_as_itself_without_superpowers(roles):
    for role in ROLE_NAMES:
        with as_role(roles, role) as conn:
            user, superuser = conn.execute("SELECT current_user, current_setting('is_superuser')").fetchone()
            assert (user, superuser) == (role, "off")


def test_reader_reads_every_mart_and_audit_view(roles, conn):
    with as_role(roles, "tradeflow_reader") as reader:
        for mart in marts():
            reader.execute(f"SELECT * FROM {mart} LIMIT 1").fetchall()
        # views run with their owner's rights: no grant on the raw tables beneath is needed
        assert reader.execute(f"SELECT * FROM {roles.schema}_audit.{PROBE}").fetchall() == []
        reader.rollback()


REFUSED = [
    ("tradeflow_reader", "SELECT * FROM price_1m_history"),
    ("tradeflow_reader", "SELECT * FROM audit_log"),
    ("tradeflow_reader", "SELECT * FROM stg_prices"),  # staging is not a mart
    ("tradeflow_reader", "INSERT INTO price_1m_history (symbol) VALUES ('X')"),
    ("tradeflow_reader", "INSERT INTO audit_log (audit_id) VALUES ('x')"),
    ("tradeflow_reader", "INSERT INTO account_policy (account_id) VALUES ('A1')"),
    ("tradeflow_ingester", "INSERT INTO trade_decisions (decision_id) VALUES ('d')"),
    ("tradeflow_ingester", "INSERT INTO account_policy (account_id) VALUES ('A1')"),
    ("tradeflow_ingester", "DELETE FROM price_1m_history"),
    ("tradeflow_gate", "INSERT INTO account_policy (account_id) VALUES ('A1')"),
    ("tradeflow_gate", "INSERT INTO exec_report_history (order_id) VALUES ('o')"),
    ("tradeflow_adapter", "INSERT INTO trade_decisions (decision_id) VALUES ('d')"),
    ("tradeflow_adapter", "INSERT INTO accounts (account_id) VALUES ('A1')"),
    ("tradeflow_operator", "INSERT INTO exec_report_history (order_id) VALUES ('o')"),
    ("tradeflow_operator", "INSERT INTO trade_decisions (decision_id) VALUES ('d')"),
    # the audit trail is append-only for everyone
    ("tradeflow_operator", "UPDATE audit_log SET actor = 'nobody'"),
    ("tradeflow_operator", "DELETE FROM audit_log"),
    ("tradeflow_gate", "TRUNCATE audit_log"),
]


@pytest.mark.parametrize(("role", "statement"), REFUSED, ids=[f"{r}:{s}" for r, s in REFUSED])
def test_role_is_refused(roles, role, statement):
    with as_role(roles, role) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(statement)
        conn.rollback()


ALLOWED = [
    ("tradeflow_reader", "SELECT * FROM orders"),
    ("tradeflow_reader", "SELECT * FROM audit_history"),
    ("tradeflow_ingester", "INSERT INTO price_1m_history (symbol, ts, close) VALUES ('X', now(), 1)"),
    ("tradeflow_ingester", "INSERT INTO dead_letter (dlq_id) VALUES ('x')"),
    ("tradeflow_gate", "INSERT INTO trade_decisions (decision_id) VALUES ('d')"),
    ("tradeflow_adapter", "INSERT INTO exec_report_history (order_id) VALUES ('o')"),
    ("tradeflow_operator", "INSERT INTO account_policy (account_id) VALUES ('A1')"),
    ("tradeflow_operator", "SELECT * FROM portfolio_state"),
]


@pytest.mark.parametrize(("role", "statement"), ALLOWED, ids=[f"{r}:{s}" for r, s in ALLOWED])
def test_role_may(roles, role, statement):
    with as_role(roles, role) as conn:
        conn.execute(statement)
        conn.rollback()


def bar(minute: int, price: float = 100.0, **overrides) -> dict:
    return {"symbol": "AAA", "ts": T0 + timedelta(minutes=minute), "open": price, "high": price + 1,
            "low": price - 1, "close": price, "volume": 1_000_000.0, **overrides}


def test_the_trading_loop_runs_under_its_roles(roles, conn):
    """Each process's real code path on a connection as its role: the grants
    are what the code needs, not only what the refusal tests probe."""
    clock = lambda: T0 + timedelta(minutes=1)  # noqa: E731
    connections = {role: connect_as(roles, role, passwords={}) for role in ROLE_NAMES}
    try:
        operator, ingester, gate = (connections[f"tradeflow_{r}"] for r in ("operator", "ingester", "gate"))
        accounts.add(operator, "A1", capital="1000000")
        policy.update(operator, "A1", max_open_symbols=5)
        prices = PriceIngester(ingester, roles, source="roles", clock=clock)
        prices.ingest_frame(pd.DataFrame([bar(0), bar(1, high=10.0)]))  # the second is a dead letter
        assert prices.ingest_frame(pd.DataFrame([bar(0)])).duplicates == 1
        assert replay(ingester, roles, kind="price", overrides={"high": "101"})["inserted"] == 1
        assert pending(ingester, kind="price") == []
        decision = DecisionGate(gate, roles, clock=clock).decide(Signal(
            signal_id="s1", strategy_id="sma_crossover", symbol="AAA", timeframe="1m", signal_ts=T0, action="BUY",
            size_hint=1.0, confidence=1.0, ref_price=Decimal(100), atr_14=5.0))
        assert decision.accepted

        adapter_conn = connections["tradeflow_adapter"]
        broker = PaperBroker(PaperConfig(), clock=clock)
        # open_feed connects by itself (as the engine's superuser): only the adapter's own writes run as its role
        feed = open_feed(roles, ACCEPTED_ORDERS, "roles-orders", order_by=ACCEPTED_ORDER_KEY, poll_interval=0.1)
        adapter = ExecutionAdapter(adapter_conn, roles, broker, feed, position_store(roles, adapter_conn, "roles"),
                                   source="roles", clock=clock)
        try:
            assert adapter.submit_accepted(timeout=2) == 1
            broker.on_bar("AAA", T0 + timedelta(minutes=2), Decimal(101), Decimal(102), Decimal(100), Decimal(101),
                          Decimal(1_000_000))
            adapter.process_reports()
        finally:
            feed.close()

        accounts.set_status(gate, "A1", "BLOCKED", updated_by="gate")  # the gate's drawdown block
        reader = connections["tradeflow_reader"]
        assert [r["status"] for r in rows(reader, "SELECT status FROM orders")] == ["FILLED"]
        # functions inside a view run with the caller's rights: the reader may run the indicator smoothing
        assert rows(reader, "SELECT symbol FROM indicator_latest") != []
        assert [r["action"] for r in rows(reader, "SELECT action FROM audit_history ORDER BY ts")] == [
            "ACCOUNT_ADD", "POLICY_CHANGE", "ACCOUNT_STATUS"]
    finally:
        for connection in connections.values():
            connection.close()


def test_create_roles_converges(roles, conn):
    conn.execute("GRANT DELETE ON audit_log TO tradeflow_operator")
    done = create_roles(conn, roles.schema, passwords={})
    assert done == {role: "updated, password unchanged" for role in ROLE_NAMES}
    with as_role(roles, "tradeflow_operator") as operator:
        with pytest.raises(errors.InsufficientPrivilege):
            operator.execute("DELETE FROM audit_log")
        operator.rollback()


@pytest.mark.slow
def test_grants_come_back_when_create_roles_runs_after_a_deploy(roles):
    deploy(roles)  # dbt replaces every view: the grants on the old ones are gone
    with as_role(roles, "tradeflow_reader") as reader, pytest.raises(errors.InsufficientPrivilege):
        reader.execute("SELECT * FROM orders")
    with engine.connect(roles) as conn:
        create_roles(conn, roles.schema, passwords={})
    with as_role(roles, "tradeflow_reader") as reader:
        reader.execute("SELECT * FROM orders")
        reader.rollback()


def script_grants(path) -> dict[tuple[str, str], set[str]]:
    """{(role, privilege): relations} of the GRANT statements of a deploy/roles script."""
    text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith(("--", "\\")))
    grants: dict[tuple[str, str], set[str]] = {}
    for statement in text.split(";"):
        if match := re.match(r"\s*GRANT ([A-Z, ]+) ON .* TO (.+)", statement.strip(), re.DOTALL):
            for role in (r.strip() for r in match[2].split(",")):
                for privilege in (p.strip() for p in match[1].split(",")):
                    grants.setdefault((role, privilege), set()).update(re.findall(r':"schema"\.(\w+)', statement))
    return grants


@pytest.mark.parametrize("engine_name", ["risingwave", "materialize"])
def test_streaming_scripts_grant_what_the_embedded_roles_have(engine_name):
    grants = script_grants(PROJECT_DIR / "deploy" / "roles" / f"{engine_name}.sql")
    for role in ROLES:
        assert grants.get((role.name, "INSERT"), set()) == set(role.insert), role.name
        want = set(role.select) | (set(marts()) if role.marts else set())
        assert grants.get((role.name, "SELECT"), set()) == want, role.name


# -- credentials ---------------------------------------------------------------------
def test_passwords_come_from_the_environment_and_a_file(tmp_path):
    lines = tmp_path / "tradeflow.credentials"
    lines.write_text("# operator credentials\ntradeflow_reader = r-from-file\n\ntradeflow_gate=g=with=equals\n")
    lines.chmod(0o600)
    environ = {CREDENTIALS_FILE_VAR: str(lines), "TRADEFLOW_READER_PASSWORD": "r-from-env",
               "TRADEFLOW_INGESTER_PASSWORD": "i-from-env"}
    assert load_passwords(environ) == {"tradeflow_reader": "r-from-env", "tradeflow_gate": "g=with=equals",
                                       "tradeflow_ingester": "i-from-env"}
    as_json = tmp_path / "credentials.json"
    as_json.write_text(json.dumps({"tradeflow_operator": "o-secret"}))
    as_json.chmod(0o600)
    assert load_passwords({CREDENTIALS_FILE_VAR: str(as_json)}) == {"tradeflow_operator": "o-secret"}
    assert load_passwords({}) == {}
    assert {role.password_var for role in ROLES} == {f"TRADEFLOW_{r}_PASSWORD" for r in
                                                      ("INGESTER", "GATE", "ADAPTER", "OPERATOR", "READER")}


@pytest.mark.parametrize(("content", "message"), [
    ("tradeflow_reader hunter2-secret\n", "line 1: expected role=password"),
    ("tradeflow_raeder=hunter2-secret\n", "unknown role"),
    ("tradeflow_reader=\n", "empty password"),
    ('{"tradeflow_reader": "hunter2-secret",}', "not valid JSON"),
])
def test_bad_credentials_files_are_refused_without_echoing_secrets(tmp_path, content, message):
    path = tmp_path / "credentials"
    path.write_text(content)
    with pytest.raises(CredentialsError, match=message) as refused:
        read_credentials_file(path)
    assert "hunter2" not in str(refused.value)


def test_a_credentials_file_inside_the_repository_is_refused():
    with pytest.raises(CredentialsError, match="outside the repository"):
        read_credentials_file(PROJECT_DIR / "credentials.json")


def test_passwords_never_reach_a_log(roles, caplog):
    secret = "s3cret-Never-Logged"
    server_log = roles.pgdata / "server.log"
    log_start = server_log.stat().st_size
    caplog.set_level(logging.DEBUG)
    with engine.connect(roles) as conn:
        conn.execute("SET log_statement = 'all'")  # the server logs every statement text from here
        done = create_roles(conn, roles.schema, passwords={"tradeflow_reader": secret})
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'tradeflow_reader'").fetchone()[0]
    assert done["tradeflow_reader"] == "updated, password set"
    assert "role tradeflow_reader: updated, password set" in caplog.text
    assert secret not in caplog.text
    logged = server_log.read_text()[log_start:]
    assert "ALTER ROLE" in logged and "SCRAM-SHA-256$" in logged  # the statement was logged, with a verifier
    assert secret not in logged
    assert stored.startswith("SCRAM-SHA-256$") and secret not in stored
    with connect_as(roles, "tradeflow_reader", passwords={"tradeflow_reader": secret}) as reader:
        assert reader.execute("SELECT current_user").fetchone()[0] == "tradeflow_reader"


def test_engine_roles_command_converges(engine_settings):
    from typer.testing import CliRunner

    from tradeflow.cli import app

    result = CliRunner().invoke(app, ["engine", "roles"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "tradeflow_reader" in result.output
