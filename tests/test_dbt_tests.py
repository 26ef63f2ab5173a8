"""dbt's own data tests and unit tests, run on the embedded engine."""
from __future__ import annotations

import re

import pytest

from ingest.prices import PriceIngester
from ingest.synthetic import generate_bars
from tradeflow.dbt import DbtError, run_dbt


def test_data_and_unit_tests_pass_on_synthetic_sessions(conn, embedded_settings):
    PriceIngester(conn, embedded_settings, source="test").ingest(generate_bars(symbols=3, days=2, seed=5))
    output = run_dbt(embedded_settings, ["test"])  # raises DbtError if any test fails
    summary = re.search(r"Done\. PASS=(\d+) WARN=(\d+) ERROR=(\d+)", output)
    assert summary and int(summary[1]) >= 25 and (summary[2], summary[3]) == ("0", "0"), output[-3000:]
    assert "unit_test strategy_sma_crossover" in output


def test_invariant_violation_shows_in_its_audit_view(conn, embedded_settings):
    # Written straight to the raw table, bypassing the ingester's validation.
    conn.execute(
        "INSERT INTO price_1m_history (symbol, ts, open, high, low, close, volume, source, batch_id, received_at)"
        " VALUES ('BAD', '2024-01-02 14:30:00+00', 10, 9, 11, 10, 5, 'manual', 'x', now())")
    with pytest.raises(DbtError, match="stg_prices_ohlc_consistent"):
        run_dbt(embedded_settings, ["test", "--select", "stg_prices"])
    schema = f"{embedded_settings.schema}_audit"
    violations = conn.execute(f"SELECT symbol FROM {schema}.stg_prices_ohlc_consistent").fetchall()
    assert violations == [("BAD",)]
    # the audit relation is a view: fixing the data empties it without re-running dbt
    conn.execute("DELETE FROM price_1m_history WHERE symbol = 'BAD'")
    assert conn.execute(f"SELECT count(*) FROM {schema}.stg_prices_ohlc_consistent").fetchone()[0] == 0
