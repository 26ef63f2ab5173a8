"""Structured logs for every tradeflow process.

`configure()` sets the root logger from TRADEFLOW_LOG_FORMAT (text | json,
default text) and TRADEFLOW_LOG_LEVEL. Log calls pass the ids that follow an
order through the loop as `extra` fields — signal_id, decision_id, order_id,
fill_id, account_id, symbol — so one order can be found from signal to P&L
(`grep order_id` on JSON lines, or `tradeflow trace ORDER_ID` on the views).
"""
from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone

TRACE_FIELDS = ("signal_id", "decision_id", "order_id", "fill_id", "account_id", "strategy_id", "symbol", "code")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **{name: getattr(record, name) for name in TRACE_FIELDS if hasattr(record, name)},
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(f"{name}={getattr(record, name)}" for name in TRACE_FIELDS if hasattr(record, name))
        return f"{super().format(record)}{' ' + ids if ids else ''}"


def configure(fmt: str | None = None, level: str | None = None) -> None:
    fmt = (fmt or os.environ.get("TRADEFLOW_LOG_FORMAT", "text")).lower()
    if fmt not in {"text", "json"}:
        raise ValueError(f"TRADEFLOW_LOG_FORMAT: must be text or json, got {fmt!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("TRADEFLOW_LOG_LEVEL", "INFO")).upper())
