"""Every Prometheus metric tradeflow exports, in one place: the exporter
registers these names and the dashboards and alert rules may use only these
(tests check both). Names and labels follow the seed design."""
from __future__ import annotations

# gauges and counters derived from the views (tradeflow metrics serve)
VIEW_METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    # name: (type, labels, help)
    "te_unrealized_pnl_total": ("gauge", ("account", "strategy"), "Unrealized P&L of open positions"),
    "te_realized_pnl_total": ("gauge", ("account", "strategy"), "Realized P&L, net of fees"),
    "te_net_exposure": ("gauge", ("account", "strategy"), "Net market value of open positions"),
    "te_open_positions_count": ("gauge", ("account", "strategy"), "Open (account, strategy, symbol) positions"),
    "te_rollup_staleness_seconds": ("gauge", ("symbol",), "Seconds since the mark of an open position's symbol"),
    "prices_bar_delay_seconds": ("gauge", ("symbol",), "Seconds between now and the close of the latest bar"),
    "te_top_exposure": ("gauge", ("symbol", "rank"), "Top-K symbols by gross exposure across accounts"),
    "te_unmatched_lot_queue_depth": ("gauge", ("account", "strategy"), "Open lots waiting to be matched"),
    "te_policy_update_lag_seconds": ("gauge", ("account",), "Seconds since the account's policy last changed"),
    "te_account_equity": ("gauge", ("account",), "Account equity"),
    "te_kill_switch_engaged": ("gauge", ("account",), "1 while the account's kill switch is on"),
    "te_account_blocked": ("gauge", ("account",), "1 while the account is BLOCKED"),
    "tp_signals_accepted_total": ("counter", ("account", "reason"), "Signals accepted by the gate"),
    "tp_signals_rejected_total": ("counter", ("code",), "Signals rejected by the gate, by reason code"),
    "engine_matches_emitted_total": ("counter", (), "FIFO match segments in trade_match_history"),
    "te_risk_events_total": ("counter", ("rule", "severity"), "Risk events raised"),
    # the exporter's own health: counted in the process, so it restarts from 0 with it
    "tradeflow_scrape_errors_total": ("counter", (), "Scrape queries against the views that failed"),
}

# process metrics of the adapter (and its broker wrapper)
ADAPTER_METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "adapter_orders_sent_total": ("counter", ("broker",), "Orders submitted to the broker"),
    "adapter_broker_latency_seconds": ("histogram", ("broker", "call"), "Broker call latency"),
    "adapter_broker_retries_total": ("counter", ("broker",), "Broker calls retried"),
    "adapter_circuit_breaker_state": ("gauge", ("broker",), "0 closed, 1 half-open, 2 open"),
    "adapter_feed_lag_seconds": ("gauge", ("feed",), "Age of the newest change the adapter has processed"),
    "adapter_fills_ingested_total": ("counter", ("broker",), "Fills sent back through the exec ingester"),
}

# process metrics of the ingesters
INGEST_METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "ingest_records_total": ("counter", ("kind", "outcome"), "Records read by outcome: inserted, duplicate, rejected"),
    "ingest_batch_seconds": ("histogram", ("kind",), "Time to validate and write one batch"),
    "ingest_late_records_total": ("counter", ("kind",), "Records stored late: behind their key's watermark"),
}

ALL_METRICS = {**VIEW_METRICS, **ADAPTER_METRICS, **INGEST_METRICS}
