"""Prometheus metrics: the view collector on a small book, the process metrics
of the adapter and the ingesters, the health endpoints, and a real Prometheus
scraping the exporter."""
from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from positions_helpers import T0, add_price
from prometheus_client import CollectorRegistry, generate_latest

from adapters.broker import BrokerError
from adapters.execution import instrument_broker
from adapters.orders import Order, Side
from adapters.paper import PaperBroker, PaperConfig
from adapters.resilience import CircuitBreaker, ResilientBroker, RetryPolicy
from ingest.execs import ExecIngester, Fill
from ingest.prices import PriceIngester
from tradeflow.config import PROJECT_DIR, Settings
from tradeflow.ops.health import Bootstrap, HealthServer
from tradeflow.ops.metric_names import ADAPTER_METRICS, ALL_METRICS, GATE_METRICS, INGEST_METRICS, VIEW_METRICS
from tradeflow.ops.metrics import PROCESS_REGISTRY, ViewCollector, serve
from tradeflow.trading import accounts, policy
from tradeflow.trading.daemon import PaperAdapter, run_adapter
from tradeflow.trading.gate import Decision, DecisionGate, Signal

GATE_NOW = T0 + timedelta(hours=1)
NOW = T0 + timedelta(hours=2)
STRATEGY = "sma_crossover"


def signal(n: int, symbol: str, action: str = "BUY") -> Signal:
    return Signal(signal_id=f"{STRATEGY}:{symbol}:1m:{n}", strategy_id=STRATEGY, symbol=symbol, timeframe="1m",
                  signal_ts=T0 + timedelta(minutes=n), action=action, size_hint=1.0, confidence=1.0,
                  ref_price=Decimal(100), atr_14=2.0)


def fill(decision: Decision, qty: Decimal, price: str) -> Fill:
    return Fill(account_id=decision.account_id, strategy_id=STRATEGY, order_id=decision.client_order_id,
                fill_id="1", symbol=decision.signal.symbol, side=decision.signal.action, fill_qty=qty,
                fill_price=Decimal(price), exec_ts=decision.signal.signal_ts + timedelta(minutes=1))


@dataclass
class Book:
    gate: DecisionGate


@pytest.fixture
def book(conn, embedded_settings) -> Book:
    """A1 holds 150 AAA @100 (bought 250, sold 100 @110), A2 250 BBB @50;
    A1 is BLOCKED, A2's kill switch is on; marks AAA 120, BBB 40."""
    accounts.add(conn, "A1", capital="100000", max_leverage="1")
    accounts.add(conn, "A2", capital="100000", max_leverage="1")
    gate = DecisionGate(conn, embedded_settings, clock=lambda: GATE_NOW, max_signal_age=timedelta(days=30))
    execs = ExecIngester(conn, embedded_settings, source="test")
    buy_aaa, buy_bbb = gate.decide(signal(1, "AAA")), gate.decide(signal(2, "BBB"))
    assert (buy_aaa.account_id, buy_aaa.qty, buy_bbb.account_id, buy_bbb.qty) == ("A1", 250, "A2", 250)
    execs.ingest_fills([fill(buy_aaa, buy_aaa.qty, "100"), fill(buy_bbb, buy_bbb.qty, "50")])
    accounts.set_status(conn, "A1", "BLOCKED")
    policy.update(conn, "A2", kill_switch=True, at=T0 + timedelta(minutes=90))
    assert gate.decide(signal(3, "CCC", "SELL")).code == "NO_OPEN_POSITION"
    assert gate.decide(signal(4, "CCC")).code == "ACCOUNT_BLOCKED"
    sell = gate.decide(signal(5, "AAA", "SELL"))  # a blocked account may still close
    assert sell.account_id == "A1"
    execs.ingest_fills([fill(sell, Decimal(100), "110")])
    add_price(conn, "AAA", "120", minute=100)
    add_price(conn, "BBB", "40", minute=90)
    return Book(gate)


def samples(collector) -> dict[str, dict[tuple[str, ...], float]]:
    """name -> {label values in metric_names order: value}, from one collect()."""
    found: dict[str, dict[tuple[str, ...], float]] = defaultdict(dict)
    for family in collector.collect():
        for sample in family.samples:
            labels = ALL_METRICS[sample.name][1]
            assert set(sample.labels) == set(labels), sample
            found[sample.name][tuple(sample.labels[name] for name in labels)] = sample.value
    return found


def test_view_metrics_of_a_small_book(book, embedded_settings):
    got = samples(ViewCollector(embedded_settings, clock=lambda: NOW))
    a1, a2 = ("A1", STRATEGY), ("A2", STRATEGY)
    assert dict(got) == {
        "te_realized_pnl_total": {a1: 1000.0, a2: 0.0},
        "te_unrealized_pnl_total": {a1: 3000.0, a2: -2500.0},
        "te_net_exposure": {a1: 18000.0, a2: 10000.0},
        "te_open_positions_count": {a1: 1.0, a2: 1.0},
        "te_unmatched_lot_queue_depth": {a1: 1.0, a2: 1.0},
        # marks are bars opened at minutes 100 and 90; now is minute 120
        "te_rollup_staleness_seconds": {("AAA",): 1200.0, ("BBB",): 1800.0},
        "prices_bar_delay_seconds": {("AAA",): 1140.0, ("BBB",): 1740.0},
        "te_top_exposure": {("AAA", "1"): 18000.0, ("BBB", "2"): 10000.0},
        "te_policy_update_lag_seconds": {("A2",): 1800.0},  # A1 never had a policy version
        "te_account_equity": {("A1",): 104000.0, ("A2",): 97500.0},
        "te_kill_switch_engaged": {("A1",): 0.0, ("A2",): 1.0},
        "te_account_blocked": {("A1",): 1.0, ("A2",): 0.0},
        "tp_signals_accepted_total": {("A1", "OK"): 2.0, ("A2", "OK"): 1.0},
        "tp_signals_rejected_total": {("ACCOUNT_BLOCKED",): 1.0, ("NO_OPEN_POSITION",): 1.0},
        "engine_matches_emitted_total": {(): 1.0},
        "te_risk_events_total": {("KILL_SWITCH", "CRITICAL"): 1.0},
        "tradeflow_scrape_errors_total": {(): 0.0},
    }
    top_1 = samples(ViewCollector(embedded_settings, clock=lambda: NOW, top_k=1))["te_top_exposure"]
    assert top_1 == {("AAA", "1"): 18000.0}


@pytest.mark.parametrize("now, calendars, expected", [
    # 2024-01-02 is a Tuesday: NYSE opens 14:30 UTC, closes 21:00
    (NOW, {}, {("AAA",): 1140.0, ("BBB",): 1740.0}),
    (T0.replace(hour=22), {}, {}),  # after the close: no series, nothing to alert on
    (T0.replace(hour=22), {"TRADEFLOW_SYMBOL_CALENDARS": "AAA=24/7"}, {("AAA",): 22740.0}),  # 22:30 - 16:11
    (T0 + timedelta(days=1, minutes=5), {}, {("AAA",): 300.0, ("BBB",): 300.0}),  # counted from the open
    (T0 + timedelta(days=30), {}, {}),  # no bar for 30 days: out of the active universe
])
def test_bar_delay_covers_the_active_universe_while_its_market_is_open(book, embedded_settings, now, calendars,
                                                                       expected):
    from tradeflow.ops.sessions import SymbolCalendars

    collector = ViewCollector(embedded_settings, clock=lambda: now, calendars=SymbolCalendars.from_env(calendars))
    assert samples(collector).get("prices_bar_delay_seconds", {}) == expected


def test_exposed_names_are_exactly_those_of_metric_names(book, embedded_settings):
    registry = CollectorRegistry()
    registry.register(ViewCollector(embedded_settings, clock=lambda: NOW))
    for reg, names in ((registry, VIEW_METRICS), (PROCESS_REGISTRY, {**ADAPTER_METRICS, **INGEST_METRICS, **GATE_METRICS})):
        text = generate_latest(reg).decode()
        types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
        assert types == {name: kind for name, (kind, _, _) in names.items()}
        histograms = {name for name, (kind, _, _) in names.items() if kind == "histogram"}
        for name in set(re.findall(r"^([a-z_]+)[{ ]", text, re.M)):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            assert name in names or base in histograms, name


def test_counters_survive_an_exporter_restart(book, embedded_settings):
    before = samples(ViewCollector(embedded_settings, clock=lambda: NOW))
    assert book.gate.decide(signal(6, "DDD")).code == "ACCOUNT_BLOCKED"
    after = samples(ViewCollector(embedded_settings, clock=lambda: NOW))  # a new process: nothing kept in memory
    for name, (kind, _, _) in VIEW_METRICS.items():
        if kind == "counter" and name != "tradeflow_scrape_errors_total":
            assert all(after[name][labels] >= value for labels, value in before[name].items()), name
    assert after["tp_signals_rejected_total"][("ACCOUNT_BLOCKED",)] == 2.0


def test_a_failing_scrape_is_counted_not_raised(monkeypatch, tmp_path, caplog):
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RISINGWAVE_HOST", "127.0.0.1")
    monkeypatch.setenv("RISINGWAVE_PORT", str(port))
    collector = ViewCollector(Settings(target="risingwave", data_dir=tmp_path))
    for expected in (1.0, 2.0):
        assert samples(collector) == {"tradeflow_scrape_errors_total": {(): expected}}
    assert "connecting to the engine failed" in caplog.text
    with serve(Settings(target="risingwave", data_dir=tmp_path), 0) as exporter:
        assert get(exporter.url + "/metrics")[0] == 200
        status, body = get(exporter.url + "/health/ready")
        assert status == 503 and body["failing"] == ["engine", "models"]
        assert "refused" in body["checks"]["engine"]


def test_a_failing_query_drops_only_its_own_families(book, embedded_settings, conn):
    conn.execute("ALTER TABLE risk_events RENAME TO risk_events_away")
    try:
        got = samples(ViewCollector(embedded_settings, clock=lambda: NOW))
    finally:
        conn.execute("ALTER TABLE risk_events_away RENAME TO risk_events")
    assert "te_risk_events_total" not in got
    assert got["tradeflow_scrape_errors_total"] == {(): 1.0}
    assert got["te_account_equity"] == {("A1",): 104000.0, ("A2",): 97500.0}


def get(url: str) -> tuple[int, dict | str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            status, body, kind = response.status, response.read().decode(), response.headers["Content-Type"]
    except urllib.error.HTTPError as err:
        status, body, kind = err.code, err.read().decode(), err.headers["Content-Type"]
    return status, json.loads(body) if kind == "application/json" else body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(check, what: str, deadline: float = 30.0):
    end = time.monotonic() + deadline
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > end:
            pytest.fail(f"{what}: not within {deadline:.0f} s")
        time.sleep(0.05)  # paces the poll: a refused connection answers at once


def test_health_endpoints_follow_the_bootstrap():
    registry = CollectorRegistry()
    bootstrap = Bootstrap("engine", "models")
    with HealthServer(registry, 0, checks=bootstrap.checks) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert get(server.url + "/health/live") == (200, {"live": True})
        assert get(server.url + "/health/ready") == (503, {"ready": False, "failing": ["engine", "models"],
                                                           "checks": {"engine": "not yet", "models": "not yet"}})
        bootstrap.passed("engine")
        assert get(server.url + "/health/ready")[1]["failing"] == ["models"]
        bootstrap.passed("models")
        assert get(server.url + "/health/ready") == (200, {"ready": True, "failing": [],
                                                           "checks": {"engine": "ok", "models": "ok"}})
        assert get(server.url + "/nope")[0] == 404
        assert get(server.url + "/metrics")[0] == 200


def test_the_exporter_serves_the_views_and_is_ready(book, embedded_settings):
    with serve(embedded_settings, 0, clock=lambda: NOW) as exporter:
        assert get(exporter.url + "/health/ready")[0] == 200
        status, text = get(exporter.url + "/metrics")
        assert status == 200
        assert 'tp_signals_rejected_total{code="NO_OPEN_POSITION"} 1.0' in text.splitlines()


def value(name: str, **labels: str) -> float:
    return PROCESS_REGISTRY.get_sample_value(name, labels) or 0.0


def bars(minute: int, price: float = 100.0) -> pd.DataFrame:
    return pd.DataFrame([{"symbol": "AAA", "ts": T0 + timedelta(minutes=minute), "open": price, "high": price + 1,
                          "low": price - 1, "close": price, "volume": 1_000_000.0}])


def test_adapter_and_ingest_metrics_after_paper_steps(conn, embedded_settings):
    accounts.add(conn, "A1", capital="1000000")
    conn.execute("TRUNCATE adapter_feed_position")
    clock = lambda: T0 + timedelta(minutes=1)  # noqa: E731
    prices = PriceIngester(conn, embedded_settings, source="test", clock=clock)
    before = {outcome: value("ingest_records_total", kind="price", outcome=outcome)
              for outcome in ("inserted", "duplicate", "rejected")}
    batches = value("ingest_batch_seconds_count", kind="price")
    prices.ingest_frame(pd.concat([bars(0), bars(0), bars(0).assign(close=-1.0)], ignore_index=True))
    assert {k: value("ingest_records_total", kind="price", outcome=k) - v for k, v in before.items()} == {
        "inserted": 1, "duplicate": 1, "rejected": 1}
    assert value("ingest_batch_seconds_count", kind="price") == batches + 1

    DecisionGate(conn, embedded_settings, clock=clock).decide(Signal(
        signal_id="s1", strategy_id=STRATEGY, symbol="AAA", timeframe="1m", signal_ts=T0, action="BUY",
        size_hint=1.0, confidence=1.0, ref_price=Decimal(100), atr_14=5.0))
    sent, fills = value("adapter_orders_sent_total", broker="paper"), value("adapter_fills_ingested_total",
                                                                           broker="paper")
    submits = value("adapter_broker_latency_seconds_count", broker="paper", call="submit")
    adapter = PaperAdapter(conn, embedded_settings, clock=lambda: T0 + timedelta(minutes=5))
    adapter.step(timeout=2)
    assert value("adapter_orders_sent_total", broker="paper") == sent + 1
    assert value("adapter_broker_latency_seconds_count", broker="paper", call="submit") == submits + 1
    # decided and received at minute 1, processed at minute 5
    assert value("adapter_feed_lag_seconds", feed="accepted_trade_signal_history") == 240.0
    prices.ingest_frame(bars(1, price=101.0))
    adapter.step(timeout=0.5)
    adapter.close()
    assert value("adapter_fills_ingested_total", broker="paper") == fills + 1
    assert value("adapter_feed_lag_seconds", feed="price_1m_history") == 240.0


class FlakyBroker(PaperBroker):
    def __init__(self, failures: int) -> None:
        super().__init__(PaperConfig(), clock=lambda: T0)
        self.failures = failures

    def submit(self, order: Order):
        if self.failures:
            self.failures -= 1
            raise BrokerError("timed out", retryable=True)
        return super().submit(order)


def test_retries_and_circuit_breaker_state_of_a_resilient_broker():
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=10, clock=lambda: now[0])
    broker = ResilientBroker(FlakyBroker(failures=3), breaker, RetryPolicy(attempts=2, sleep=lambda s: None))
    instrument_broker(broker, "flaky")
    retries = value("adapter_broker_retries_total", broker="flaky")
    assert value("adapter_circuit_breaker_state", broker="flaky") == 0
    order = Order(client_order_id="c1", account_id="A1", strategy_id=STRATEGY, symbol="AAA", side=Side.BUY,
                  qty=Decimal(1), created_at=T0)
    with pytest.raises(BrokerError):
        broker.submit(order)  # fails, retried once, fails again: two failures open the breaker
    assert value("adapter_broker_retries_total", broker="flaky") == retries + 1
    assert value("adapter_circuit_breaker_state", broker="flaky") == 2
    now[0] = 10.0
    assert breaker.state == "HALF_OPEN" and value("adapter_circuit_breaker_state", broker="flaky") == 1
    with pytest.raises(BrokerError):
        broker.submit(order)  # the trial call fails: open again
    assert value("adapter_circuit_breaker_state", broker="flaky") == 2
    now[0] = 20.0
    assert broker.submit(order).status == "ACK"
    assert value("adapter_circuit_breaker_state", broker="flaky") == 0


def test_adapter_daemon_is_ready_once_bootstrapped(embedded_settings):
    port, stop = free_port(), threading.Event()
    daemon = threading.Thread(target=run_adapter, args=(embedded_settings,),
                              kwargs={"interval": 0.1, "stop": stop, "metrics_port": port})
    daemon.start()
    try:
        url = f"http://127.0.0.1:{port}"
        ready = poll(lambda: (answer := _answer(url + "/health/ready")) and answer[0] == 200 and answer,
                     "adapter ready")
        assert ready[1]["checks"] == {"engine": "ok", "models": "ok", "feed_position": "ok", "database": "ok"}
        assert "adapter_orders_sent_total" in get(url + "/metrics")[1]
    finally:
        stop.set()
        daemon.join(timeout=30)
    assert not daemon.is_alive()


def test_gate_daemon_serves_its_decision_metrics_and_health(embedded_settings, prices_for_gate):
    from tradeflow.trading.daemon import run_gate

    def accepted() -> float:  # the registry is the process's: other tests' gates count in it too
        return PROCESS_REGISTRY.get_sample_value("gate_decisions_total", {"outcome": "ACCEPTED", "code": "OK"}) or 0

    def latencies() -> float:
        return PROCESS_REGISTRY.get_sample_value("gate_decision_latency_seconds_count") or 0

    before = (accepted(), latencies())
    port, stop = free_port(), threading.Event()
    decided: list[int] = []
    daemon = threading.Thread(target=lambda: decided.append(run_gate(
        embedded_settings, interval=0.1, stop=stop, metrics_port=port, max_signal_age=timedelta(days=36500))))
    daemon.start()
    try:
        url = f"http://127.0.0.1:{port}"
        poll(lambda: (answer := _answer(url + "/health")) and answer[0] == 200, "gate ready on /health")
        poll(lambda: accepted() == before[0] + 1, "the decision counted")
        assert latencies() == before[1] + 1
        text = get(url + "/metrics")[1]
        assert 'gate_decisions_total{code="OK",outcome="ACCEPTED"}' in text
        assert re.search(r"^gate_pass_age_seconds \d", text, re.M)
    finally:
        stop.set()
        daemon.join(timeout=30)
    assert decided == [1]


@pytest.fixture
def prices_for_gate(conn):
    """One account, one bar and an operator's order for the gate to decide."""
    from tradeflow.trading import accounts, orders

    accounts.add(conn, "G1", capital="100000")
    conn.execute("INSERT INTO price_1m_history (symbol, ts, open, high, low, close, volume, source, batch_id,"
                 " received_at) VALUES ('AAA', now() - interval '2 minutes', 10, 10, 10, 10, 100, 't', 'b', now())")
    orders.request_manual_order(conn, "G1", "AAA", "BUY", "5", reason="metrics test")


def _answer(url: str):
    try:
        return get(url)
    except urllib.error.URLError:  # not listening yet
        return None


# -- a real Prometheus ----------------------------------------------------------------
@pytest.mark.slow
def test_prometheus_scrapes_the_exporter(book, embedded_settings, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        if shutil.which("apt-get") is None:
            pytest.skip("no prometheus binary and no apt-get to install Debian's")
        pytest.fail("prometheus not found: `python3 scripts/dev.py test` installs Debian's package"
                    " (as root), or run `apt-get install prometheus`")
    with serve(embedded_settings, 0) as exporter:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: tradeflow\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{exporter.port}']\n")
        port = free_port()
        log = tmp_path / "prometheus.log"
        with open(log, "w") as out:
            server = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                                       f"--web.listen-address=127.0.0.1:{port}"],
                                      stdout=out, stderr=subprocess.STDOUT)
        try:
            def query(expr: str):
                answer = _answer(f"http://127.0.0.1:{port}/api/v1/query?query={expr}")
                if server.poll() is not None:
                    pytest.fail(f"prometheus exited ({server.returncode}):\n{log.read_text()[-3000:]}")
                return answer[1]["data"]["result"] if answer and answer[0] == 200 else None

            rejected = poll(lambda: query("tp_signals_rejected_total"), "tp_signals_rejected_total in Prometheus",
                            deadline=60)
            assert {r["metric"]["code"]: r["value"][1] for r in rejected} == {"ACCOUNT_BLOCKED": "1",
                                                                              "NO_OPEN_POSITION": "1"}
            assert {r["metric"]["job"] for r in rejected} == {"tradeflow"}
            # a gauge named *_total survives Prometheus's OpenMetrics parsing too
            unrealized = query("te_unrealized_pnl_total")
            assert {r["metric"]["account"]: r["value"][1] for r in unrealized} == {"A1": "3000", "A2": "-2500"}
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


# -- docs ---------------------------------------------------------------------------------
def metrics_doc_table() -> str:
    sources = ((VIEW_METRICS, "views"), (ADAPTER_METRICS, "adapter"), (INGEST_METRICS, "ingesters"),
               (GATE_METRICS, "gate"))
    lines = ["| metric | type | labels | from | meaning |", "| --- | --- | --- | --- | --- |"]
    for metrics, source in sources:
        for name, (kind, labels, help_text) in metrics.items():
            lines.append(f"| `{name}` | {kind} | {', '.join(f'`{label}`' for label in labels) or '-'} | {source} |"
                         f" {help_text} |")
    return "\n".join(lines)


def test_operations_doc_lists_every_metric():
    doc = (Path(PROJECT_DIR) / "docs" / "operations.md").read_text()
    table = re.search(r"<!-- metrics table: .*? -->\n(.*?)\n<!-- end of metrics table -->", doc, re.S)
    assert table, "docs/operations.md: the metrics table markers are missing"
    assert table.group(1) == metrics_doc_table(), "regenerate the table: tests/test_metrics.py metrics_doc_table()"


def test_ingest_command_serves_its_process_metrics(embedded_settings):
    import socket

    from typer.testing import CliRunner

    from tradeflow.cli import app
    from tradeflow.ops.metrics import PROCESS_REGISTRY

    def inserted() -> float:
        return PROCESS_REGISTRY.get_sample_value("ingest_records_total", {"kind": "price", "outcome": "inserted"}) or 0

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = inserted()
    result = CliRunner().invoke(app, ["ingest", "synthetic", "--symbols", "1", "--metrics-port", str(port)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert inserted() - before == 390
