"""Shared fixtures: one embedded engine per test session, models deployed once.

Views compute on read, so emptying the raw tables gives each test a clean book.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from tradeflow import engine
from tradeflow.config import Settings
from tradeflow.dbt import deploy

RAW_TABLES = ("price_1m_history", "dead_letter", "dead_letter_replay", "exec_report_history", "accounts", "risk_events",
              "order_commands", "manual_order_requests", "account_policy", "trade_decisions", "order_events",
              "audit_log", "strategy_weight_history", "instruments", "late_arrivals")


@pytest.fixture(scope="session")
def engine_settings() -> Iterator[Settings]:
    # Not under pytest's basetemp: pytest re-tightens its permissions to 0700,
    # which locks out the unprivileged user the server runs as under root.
    data_dir = Path(tempfile.mkdtemp(prefix="tradeflow-test-"))
    # The CLI builds its own Settings from the environment: point it here too.
    os.environ.update(TRADEFLOW_DATA_DIR=str(data_dir), TRADEFLOW_EMBEDDED_DURABLE="false",
                      DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    settings = Settings(data_dir=data_dir, embedded_durable=False)
    server = engine.embedded(settings)
    server.start()
    deploy(settings)
    yield settings
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def embedded_settings(engine_settings: Settings) -> Settings:
    """A deployed embedded engine whose raw tables are empty."""
    with engine.connect(engine_settings) as conn:
        conn.execute("TRUNCATE " + ", ".join(RAW_TABLES))
    return engine_settings


@pytest.fixture
def conn(embedded_settings: Settings) -> Iterator[psycopg.Connection]:
    with engine.connect(embedded_settings) as connection:
        yield connection
