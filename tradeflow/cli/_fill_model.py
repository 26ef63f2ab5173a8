"""The paper broker's fill model as command-line flags: `tradeflow backtest` and `tradeflow adapter run`
take the same ones, with the same defaults (adapters.paper.DEFAULT_FILL_MODEL)."""
from __future__ import annotations

import typer

from adapters.paper import DEFAULT_FILL_MODEL as _D


def _session_end_text(value: object) -> str:
    return "none" if value is None else value if isinstance(value, str) else f"{value:%H:%M}"


FILL_AT = typer.Option(None, "--fill-at", help=f"Market orders fill at the next bar's open or close, or at the"
                                               f" signal bar's close (signal_close). [default: {_D.fill_at}]")
SLIPPAGE_BPS = typer.Option(None, "--slippage-bps", help=f"Against the order. [default: {_D.slippage_bps}]")
FEE_BPS = typer.Option(None, "--fee-bps", help=f"Fee in bps of notional. [default: {_D.fee_bps}]")
FEE_PER_SHARE = typer.Option(None, "--fee-per-share", help=f"[default: {_D.fee_per_share}]")
MIN_FEE = typer.Option(None, "--min-fee", help=f"Per order. [default: {_D.min_fee}]")
FEE_STEP = typer.Option(None, "--fee-step", help=f"Fees are rounded to this step. [default: {_D.fee_step}]")
FEE_ROUNDING = typer.Option(None, "--fee-rounding", help=f"up or nearest. [default: {_D.fee_rounding}]")
MAX_PARTICIPATION = typer.Option(None, "--max-participation",
                                 help=f"Largest share of a bar's volume all orders take. [default:"
                                      f" {_D.max_participation}]")
LOT_SIZE = typer.Option(None, "--lot-size", help=f"[default: {_D.lot_size}]")
TICK_SIZE = typer.Option(None, "--tick-size", help=f"[default: {_D.tick_size}]")
SESSION_END = typer.Option(None, "--session-end",
                           help="When DAY orders expire: calendar (the close of the symbol's market session),"
                                f" HH:MM UTC, or none (midnight UTC). [default: {_session_end_text(_D.session_end)}]")


def given(**flags: str | None) -> dict[str, str]:
    """The fill model flags that were given."""
    return {name: value for name, value in flags.items() if value is not None}
