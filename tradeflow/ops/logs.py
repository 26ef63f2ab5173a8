"""Structured logs for every tradeflow process.

`configure()` sets the root logger from TRADEFLOW_LOG_FORMAT (text | json,
default text) and TRADEFLOW_LOG_LEVEL. A level nobody chose is a default that
fits the command: INFO for the daemons (start-up line, heartbeat, every order
action), WARNING for commands that draw a progress bar or print a result
(`quiet_by_default()`), so their output is the result, not a log. Log calls
pass the ids that follow an
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


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")
_chosen = False  # whether the level was chosen (option, -v/-q, environment) rather than defaulted


class LogSettingError(ValueError):
    """An unknown log level or format; the message names the setting and the valid values."""


def configure(fmt: str | None = None, level: str | None = None) -> None:
    """Log to stderr in `fmt` at `level` (each from the environment when None; the level
    defaults to INFO). Raises LogSettingError for a value that is not one of FORMATS / LEVELS."""
    global _chosen
    fmt = (fmt or os.environ.get("TRADEFLOW_LOG_FORMAT") or "text").lower()
    if fmt not in FORMATS:
        raise LogSettingError(f"log format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    level = level or os.environ.get("TRADEFLOW_LOG_LEVEL")
    _chosen = level is not None
    level = (level or "INFO").upper()
    if level not in LEVELS:
        raise LogSettingError(f"log level: must be one of {', '.join(LEVELS)}, got {level!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def quiet_by_default() -> None:
    """For a command whose output is a progress bar or a result: WARNING unless a level was chosen.
    Call after configure()."""
    if not _chosen:
        logging.getLogger().setLevel(logging.WARNING)
