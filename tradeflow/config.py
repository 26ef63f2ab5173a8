"""Settings from the environment, with defaults that work in a fresh checkout.

One place for every knob; each is named in docs/configuration.md.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
TARGETS = ("embedded", "risingwave", "materialize")


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    project_dir: Path = PROJECT_DIR
    data_dir: Path = field(default_factory=lambda: Path(os.environ.get("TRADEFLOW_DATA_DIR", PROJECT_DIR / ".tradeflow")))
    target: str = field(default_factory=lambda: os.environ.get("TRADEFLOW_TARGET", "embedded"))
    schema: str = field(default_factory=lambda: os.environ.get("TRADEFLOW_SCHEMA", "tradeflow"))
    database: str = "tradeflow"
    # Embedded engine durability: tests and benchmarks turn fsync off for speed.
    embedded_durable: bool = field(default_factory=lambda: _env_bool("TRADEFLOW_EMBEDDED_DURABLE", True))
    ingest_batch_rows: int = field(default_factory=lambda: int(os.environ.get("TRADEFLOW_INGEST_BATCH_ROWS", "5000")))
    # A bar stamped further ahead of the wall clock than this is rejected.
    max_future_skew: timedelta = field(
        default_factory=lambda: timedelta(seconds=int(os.environ.get("TRADEFLOW_MAX_FUTURE_SECONDS", "300")))
    )
    # The gate reads signals over the newest N bars of each timeframe (0 = all
    # history): enough for the longest window (SMA 200 + 1) and for the EMA and
    # Wilder smoothing to forget their seed ((13/14)^400 < 1e-12).
    live_warmup_bars: int = field(default_factory=lambda: int(os.environ.get("TRADEFLOW_LIVE_WARMUP_BARS", "400")))
    # Accounts whose orders always go to the paper broker, whatever broker the adapter runs with
    # (shadow accounts, paper:*, always do): comma-separated account ids.
    paper_accounts: frozenset[str] = field(default_factory=lambda: frozenset(
        name.strip() for name in os.environ.get("TRADEFLOW_PAPER_ACCOUNTS", "").split(",") if name.strip()))
    # Event time, bounded out-of-orderness (the seed's wm.engine.latenessSec): a bar more than this behind
    # the newest bar stored for its symbol, or a fill behind the newest fill of its (account, strategy,
    # symbol), is late: stored all the same, flagged in late_arrivals, counted and raised as a risk event.
    price_lateness: timedelta = field(
        default_factory=lambda: timedelta(seconds=float(os.environ.get("TRADEFLOW_PRICE_LATENESS_SECONDS", "5"))))
    exec_lateness: timedelta = field(
        default_factory=lambda: timedelta(seconds=float(os.environ.get("TRADEFLOW_EXEC_LATENESS_SECONDS", "5"))))
    # How often (wall time) the gate reloads the daily returns its VaR and correlation checks read.
    risk_refresh: timedelta = field(
        default_factory=lambda: timedelta(seconds=float(os.environ.get("TRADEFLOW_RISK_REFRESH_SECONDS", "300"))))

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"TRADEFLOW_TARGET={self.target!r}: must be one of {', '.join(TARGETS)}")

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"


def remote_conninfo(target: str) -> dict[str, object]:
    """Connection parameters of a streaming engine, from the same variables profiles.yml reads."""
    if target == "risingwave":
        return {
            "host": os.environ.get("RISINGWAVE_HOST", "localhost"),
            "port": int(os.environ.get("RISINGWAVE_PORT", "4566")),
            "user": os.environ.get("RISINGWAVE_USER", "root"),
            "password": os.environ.get("RISINGWAVE_PASSWORD", ""),
            "dbname": os.environ.get("RISINGWAVE_DB", "dev"),
        }
    if target == "materialize":
        return {
            "host": os.environ.get("MATERIALIZE_HOST", "localhost"),
            "port": int(os.environ.get("MATERIALIZE_PORT", "6875")),
            "user": os.environ.get("MATERIALIZE_USER", "materialize"),
            "password": os.environ.get("MATERIALIZE_PASSWORD", ""),
            "dbname": os.environ.get("MATERIALIZE_DB", "materialize"),
        }
    raise ValueError(f"{target!r} is not a remote target")
