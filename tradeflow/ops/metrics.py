"""Prometheus metrics, with the names, types and labels of tradeflow.ops.metric_names.

ViewCollector turns the views into the VIEW_METRICS families on every scrape.
Its counters are counts over append-only history (decisions, risk events,
match segments), so they never go backwards, not even across a restart of the
exporter. The process metrics of the adapter and the ingesters
(ADAPTER_METRICS, INGEST_METRICS) live in PROCESS_REGISTRY, which the health
server of a daemon exposes (with GATE_METRICS for the gate).
"""
from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Callable, Iterator

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from tradeflow import engine
from tradeflow.clock import utc_now
from tradeflow.config import Settings
from tradeflow.ops.health import Check, HealthServer
from tradeflow.ops.metric_names import ADAPTER_METRICS, GATE_METRICS, INGEST_METRICS, VIEW_METRICS
from tradeflow.ops.sessions import SymbolCalendars

log = logging.getLogger(__name__)

# Counters and histograms would also expose *_created series: names outside
# metric_names.py, which the dashboards must not depend on.
disable_created_metrics()

SCRAPE_ERRORS = "tradeflow_scrape_errors_total"
BAR = timedelta(minutes=1)  # a 1-minute bar stamped t closes at t + 1 minute
# the active universe: symbols with a bar this recent (a symbol no longer fed drops out)
UNIVERSE_DAYS = timedelta(days=7)
Sample = tuple[str, tuple[str, ...], float]  # metric name, label values, value


# -- process metrics ------------------------------------------------------------
PROCESS_REGISTRY = CollectorRegistry()
_KINDS = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}
# a decision comes a second or so after its bar closes; one that waited for the book takes longer
BUCKETS = {"gate_decision_latency_seconds": (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)}
PROCESS_METRICS: dict[str, Counter | Gauge | Histogram] = {
    name: _KINDS[kind](name, help_text, labels, registry=PROCESS_REGISTRY,
                       **({"buckets": BUCKETS[name]} if name in BUCKETS else {}))
    for name, (kind, labels, help_text) in {**ADAPTER_METRICS, **INGEST_METRICS, **GATE_METRICS}.items()
}


def observe_ingest(kind: str, *, inserted: int, duplicates: int, rejected: int, seconds: float) -> None:
    """One batch of an ingester: records by outcome and the time it took."""
    records = PROCESS_METRICS["ingest_records_total"]
    for outcome, count in (("inserted", inserted), ("duplicate", duplicates), ("rejected", rejected)):
        records.labels(kind, outcome).inc(count)
    PROCESS_METRICS["ingest_batch_seconds"].labels(kind).observe(seconds)


def feed_age(feed: str, clock: Callable[[], datetime]) -> Callable[[datetime], None]:
    """note(ts) for each processed change of `feed`; adapter_feed_lag_seconds{feed}
    then reads clock() - the newest ts noted, at scrape time, so a consumer that
    stops keeps ageing (it also ages while the feed is quiet)."""
    newest: list[datetime] = []

    def note(ts: datetime) -> None:
        if not newest:
            PROCESS_METRICS["adapter_feed_lag_seconds"].labels(feed).set_function(
                lambda: (clock() - newest[0]).total_seconds())
            newest.append(ts)
        newest[0] = max(newest[0], ts)

    return note


# -- metrics from the views ---------------------------------------------------------
def _family(name: str) -> Metric:
    kind, labels, help_text = VIEW_METRICS[name]
    # CounterMetricFamily drops a trailing _total from the family name and adds
    # it back to the sample, so the series is exposed under `name` exactly.
    cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    return cls(name, help_text, labels=labels)


def _number(value: Decimal | int | float | None) -> float:
    return float(value) if value is not None else 0.0


def _seconds_since(now: datetime, ts: datetime | None) -> float:
    # A held symbol never marked is infinitely stale: alerts on a threshold fire.
    return (now - ts).total_seconds() if ts is not None else float("inf")


def _rows(conn: psycopg.Connection, query: str) -> list[tuple]:
    return conn.execute(query).fetchall()


class ViewCollector:
    """Queries the views on every scrape (one connection, kept between scrapes).

    A failing query is logged and counted in tradeflow_scrape_errors_total; the
    families it feeds are left out of that scrape, the rest are exposed. A lost
    connection ends the scrape and is opened again on the next one.
    """

    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] = utc_now, top_k: int = 10,
                 calendars: SymbolCalendars | None = None) -> None:
        if top_k < 1:
            raise ValueError(f"top_k: at least 1, got {top_k}")
        self.settings = settings
        self.clock = clock
        self.calendars = calendars or SymbolCalendars.from_env()
        self.top_k = top_k
        self.scrape_errors = 0
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()  # the HTTP server scrapes from a thread per request

    def describe(self) -> Iterator[Metric]:
        # Lets a registry check names without querying the engine.
        return (_family(name) for name in VIEW_METRICS)

    def collect(self) -> Iterator[Metric]:
        families = {name: _family(name) for name in VIEW_METRICS}
        with self._lock:
            for name, labels, value in self._samples():
                families[name].add_metric(labels, value)
            families[SCRAPE_ERRORS].add_metric((), self.scrape_errors)
        return iter(families.values())

    def ready_checks(self) -> dict[str, Check]:
        """The exporter is ready while the engine answers and the models are deployed."""
        def models() -> bool:
            with self._lock:
                return engine.relation_exists(self._connection(), self.settings.schema, "portfolio_state")
        return {"engine": self._reachable, "models": models}

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- internals ---------------------------------------------------------------
    def _reachable(self) -> bool:
        with self._lock:
            self._connection().execute("SELECT 1")
            return True

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = engine.connect(self.settings)
        return self._conn

    def _samples(self) -> list[Sample]:
        try:
            conn = self._connection()
        except Exception:
            self._failed("connecting to the engine")
            return []
        now = self.clock()
        samples: list[Sample] = []
        for part in (self._positions, self._lots, self._accounts, self._decisions, self._risk_events,
                     self._matches, self._bars):
            try:
                samples += part(conn, now)  # all or nothing: a part adds its samples only once it has them all
            except Exception:
                self._failed(part.__name__.lstrip("_"))
                if conn.closed or conn.broken:
                    break
        return samples

    def _failed(self, what: str) -> None:
        self.scrape_errors += 1
        log.exception("metrics scrape: %s failed", what)

    def _positions(self, conn: psycopg.Connection, now: datetime) -> list[Sample]:
        """P&L, exposure and open positions per (account, strategy), staleness and
        top-K exposure per symbol. The open positions are read once and aggregated
        here: a few rows per account (max_open_symbols bounds them)."""
        realized = {(a, s): pnl for a, s, pnl in _rows(
            conn, "SELECT account_id, strategy_id, sum(realized_pnl) FROM realized_pnl_latest GROUP BY 1, 2")}
        unrealized: dict[tuple[str, str], float] = defaultdict(float)
        net: dict[tuple[str, str], float] = defaultdict(float)
        count: dict[tuple[str, str], int] = defaultdict(int)
        gross: dict[str, float] = defaultdict(float)
        marks: dict[str, datetime | None] = {}
        for account, strategy, symbol, qty, price, mark_ts, pnl in _rows(
                conn, "SELECT account_id, strategy_id, symbol, net_qty, current_price, mark_ts, unrealized_pnl"
                      " FROM unrealized_pnl_latest"):
            key = (account, strategy)
            count[key] += 1
            unrealized[key] += _number(pnl)
            marks[symbol] = mark_ts
            if price is not None:  # no mark yet: its value is unknown, its staleness says so
                net[key] += float(qty * price)
                gross[symbol] += abs(float(qty * price))
        samples: list[Sample] = []
        # every key that ever traded, so a position closing shows as 0 instead of vanishing
        for key in sorted(set(realized) | set(count)):
            samples += [("te_realized_pnl_total", key, _number(realized.get(key))),
                        ("te_unrealized_pnl_total", key, unrealized[key]),
                        ("te_net_exposure", key, net[key]),
                        ("te_open_positions_count", key, count[key])]
        samples += [("te_rollup_staleness_seconds", (symbol,), _seconds_since(now, ts))
                    for symbol, ts in sorted(marks.items())]
        top = sorted(gross.items(), key=lambda item: (-item[1], item[0]))[:self.top_k]
        samples += [("te_top_exposure", (symbol, str(rank)), value) for rank, (symbol, value) in enumerate(top, 1)]
        return samples

    def _lots(self, conn: psycopg.Connection, now: datetime) -> list[Sample]:
        # Flat keys have no lots and no row: they were reported as 0 positions above.
        return [("te_unmatched_lot_queue_depth", (a, s), n) for a, s, n in _rows(
            conn, "SELECT account_id, strategy_id, count(*) FROM open_positions_lots GROUP BY 1, 2 ORDER BY 1, 2")]

    def _accounts(self, conn: psycopg.Connection, now: datetime) -> list[Sample]:
        samples: list[Sample] = []
        for account, status, kill_switch, policy_updated_at, equity in _rows(
                conn, "SELECT p.account_id, p.status, p.kill_switch, p.policy_updated_at, s.equity"
                      " FROM stg_account_policy p JOIN portfolio_state s ON s.account_id = p.account_id"
                      " ORDER BY 1"):
            samples += [("te_account_equity", (account,), float(equity)),
                        ("te_kill_switch_engaged", (account,), float(kill_switch)),
                        ("te_account_blocked", (account,), float(status == "BLOCKED"))]
            if policy_updated_at is not None:  # never changed: the defaults apply, there is no lag to report
                samples.append(("te_policy_update_lag_seconds", (account,), _seconds_since(now, policy_updated_at)))
        return samples

    def _decisions(self, conn: psycopg.Connection, now: datetime) -> list[Sample]:
        accepted = _rows(conn, "SELECT account_id, reason, count(*) FROM accepted_trade_signal_history"
                               " GROUP BY 1, 2 ORDER BY 1, 2")
        rejected = _rows(conn, "SELECT reject_code, count(*) FROM trade_rejections GROUP BY 1 ORDER BY 1")
        return ([("tp_signals_accepted_total", (a, r), n) for a, r, n in accepted]
                + [("tp_signals_rejected_total", (code,), n) for code, n in rejected])

    def _risk_events(self, conn: psycopg.Connection, now: datetime) -> list[Sample]:
        return [("te_risk_events_total", (rule, severity), n) for rule, severity, n in _rows(
            conn, "SELECT rule, severity, count(*) FROM risk_events GROUP BY 1, 2 ORDER BY 1, 2")]

    def _matches(self, conn: psycopg.Connection, now: datetime) -> list[Sample]:
        [(n,)] = _rows(conn, "SELECT count(*) FROM trade_match_history")
        return [("engine_matches_emitted_total", (), n)]

    def _bars(self, conn: psycopg.Connection, now: datetime) -> list[Sample]:
        """How long each symbol of the active universe (a bar in the last UNIVERSE_DAYS)
        has gone without a new bar while its market is open: counted from the later of
        its latest bar's close and the session's open; no sample while the market is
        closed, so a stale-price alert fires only in market hours."""
        samples = []
        for symbol, last in conn.execute(
                "SELECT symbol, max(ts) FROM price_1m_history WHERE ts >= %s GROUP BY symbol ORDER BY symbol",
                (now - UNIVERSE_DAYS,)).fetchall():
            market = self.calendars.of(symbol)
            if market.is_open(now):
                since = max(last + BAR, market.session_open(now))
                samples.append(("prices_bar_delay_seconds", (symbol,), max(0.0, _seconds_since(now, since))))
        return samples


def serve(settings: Settings, port: int, *, addr: str = "127.0.0.1", top_k: int = 10,
          clock: Callable[[], datetime] = utc_now) -> HealthServer:
    """Start the exporter: /metrics (the views), /health/live, /health/ready,
    served from a background thread. Stop it with .stop() (or use it as a
    context manager); port 0 picks a free port (see .port)."""
    collector = ViewCollector(settings, clock=clock, top_k=top_k)
    registry = CollectorRegistry()
    registry.register(collector)
    return HealthServer(registry, port, addr=addr, checks=collector.ready_checks(), on_stop=collector.close)


__all__ = ["PROCESS_METRICS", "PROCESS_REGISTRY", "ViewCollector", "feed_age", "observe_ingest", "serve"]
