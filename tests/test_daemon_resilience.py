"""The gate and adapter daemons against the database: one gate at a time (the
gate lease), and both outliving a restart of the embedded server."""
from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pandas as pd
import pytest
from positions_helpers import rows
from test_metrics import free_port, get, poll
from typer.testing import CliRunner

from ingest.prices import PriceIngester
from tradeflow import engine
from tradeflow.cli import app
from tradeflow.clock import utc_now
from tradeflow.trading import accounts, orders
from tradeflow.trading.daemon import run_adapter, run_gate
from tradeflow.trading.lease import LeaseHeld


def _status(url: str) -> tuple[int, dict] | None:
    try:
        return get(url + "/health/ready")
    except OSError:  # not listening yet
        return None


def _ready(url: str, ready: bool = True):
    return poll(lambda: (answer := _status(url)) and (answer[0] == 200) == ready and answer,
                f"{url} {'ready' if ready else 'not ready'}")


def _start(target, settings, **kwargs) -> tuple[threading.Thread, threading.Event, str, dict]:
    port, stop, result = free_port(), threading.Event(), {}

    def run() -> None:
        result["value"] = target(settings, stop=stop, metrics_port=port, **kwargs)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, stop, f"http://127.0.0.1:{port}", result


def _finish(thread: threading.Thread, stop: threading.Event) -> None:
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_a_second_gate_refuses_while_one_runs_and_a_waiting_one_takes_over(embedded_settings):
    first, first_stop, url, _ = _start(run_gate, embedded_settings, interval=0.1)
    try:
        _ready(url)
        with pytest.raises(LeaseHeld, match="another gate holds the gate lease .* pid \\d+"):
            run_gate(embedded_settings, once=True)
        refused = CliRunner().invoke(app, ["gate", "run", "--once"])
        assert refused.exit_code == 2 and "another gate holds the gate lease" in refused.output
        waiting, waiting_stop, waiting_url, decided = _start(run_gate, embedded_settings, once=True,
                                                             wait_for_lease=True)
        poll(lambda: (answer := _status(waiting_url)) and answer[1]["failing"] == ["lease"],
             "the second gate connected, waiting for the lease")
    finally:
        _finish(first, first_stop)
    waiting.join(timeout=30)  # the lease is free: it decides its pass and returns
    assert not waiting.is_alive() and decided == {"value": 0}


def test_gate_and_adapter_reconnect_after_the_database_restarts(embedded_settings):
    with engine.connect(embedded_settings) as conn:
        accounts.add(conn, "A1", capital="1000000")
        conn.execute("TRUNCATE adapter_feed_position")
    gate, gate_stop, gate_url, _ = _start(run_gate, embedded_settings, interval=0.1)
    adapter, adapter_stop, adapter_url, _ = _start(run_adapter, embedded_settings, interval=0.1)
    server = engine.embedded(embedded_settings)
    try:
        _ready(gate_url)
        _ready(adapter_url)
        server.stop()
        # the gate's lease went with its connection
        for url, failing in ((gate_url, ["database", "lease"]), (adapter_url, ["database"])):
            poll(lambda: (answer := _status(url)) and answer[1]["failing"] == failing, f"{url} failing {failing}")
        assert server.status() is None  # reconnecting does not start the server: waits for it
        server.start()
        _ready(gate_url)
        _ready(adapter_url)
        # both resumed: an operator's order placed after the restart is decided and submitted
        now = utc_now()
        with engine.connect(embedded_settings) as conn:
            PriceIngester(conn, embedded_settings, source="test").ingest_frame(pd.DataFrame([{
                "symbol": "AAA", "ts": now.replace(second=0, microsecond=0) - timedelta(minutes=1), "open": 100.0,
                "high": 101.0, "low": 99.0, "close": 100.0, "volume": 1000.0}]))
            request = orders.request_manual_order(conn, "A1", "AAA", "BUY", Decimal(5))
            order = poll(lambda: rows(conn, "SELECT o.status FROM orders o JOIN trade_decisions d"
                                            " ON d.client_order_id = o.client_order_id WHERE d.decision_id = %s"
                                            " AND o.status <> 'NEW'", (request.decision_id,)),
                         "the order decided and answered by the broker")
            assert order[0]["status"] in {"ACK", "REJECTED"}
    finally:
        server.start()
        _finish(gate, gate_stop)
        _finish(adapter, adapter_stop)
