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
    "prices_bar_delay_seconds": ("gauge", ("symbol",),
                                 "Seconds without a new bar while the symbol's market is open (active symbols)"),
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
    "adapter_venue_reports_dead_lettered_total": ("counter", ("venue",),
                                                  "Unreadable venue reports written to dead_letter (kind venue_report)"),
}

# process metrics of the ingesters
INGEST_METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "ingest_records_total": ("counter", ("kind", "outcome"), "Records read by outcome: inserted, duplicate, rejected"),
    "ingest_batch_seconds": ("histogram", ("kind",), "Time to validate and write one batch"),
    # live venue feeds (ingest/venue_feeds.py)
    "feed_messages_total": ("counter", ("source",), "Bar messages received from a live venue feed"),
    "feed_gaps_total": ("counter", ("source",), "Gaps found in a live feed's bars (a missed minute, a reconnect)"),
    "feed_backfilled_bars_total": ("counter", ("source",), "Bars fetched over REST to fill a live feed's gaps"),
    "feed_reconnects_total": ("counter", ("source",), "Reconnections of a live venue feed"),
    "feed_lag_seconds": ("gauge", ("source",), "Seconds from the latest live bar's close to its arrival"),
    "ingest_late_records_total": ("counter", ("kind",), "Records stored late: behind their key's watermark"),
}

# process metrics of the decision gate (`gate run --metrics-port`)
GATE_METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "gate_decisions_total": ("counter", ("outcome", "code"), "Decisions of this gate by outcome and reason code (OK)"),
    "gate_decision_latency_seconds": ("histogram", (), "From the close of a signal's bar to its decision"),
    "gate_stale_signals_total": ("counter", (), "Undecided signals found older than max_signal_age at start-up"),
    "gate_pass_age_seconds": ("gauge", (), "Seconds since the gate last brought its book up to date and decided"),
}

ALL_METRICS = {**VIEW_METRICS, **ADAPTER_METRICS, **INGEST_METRICS, **GATE_METRICS}
