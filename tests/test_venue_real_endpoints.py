"""Against Alpaca's real paper endpoints: only where the user has network and
paper keys and asks for it (TRADEFLOW_VENUE_TESTS=1); skipped otherwise. The
fake venues (tests/fakes) cover the protocol everywhere else."""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pytest

from adapters.alpaca import KEY_VARS, AlpacaBroker
from ingest.venue_feeds import AlpacaBars
from tradeflow.ops.venue_keys import MissingCredential, venue_secret

pytestmark = pytest.mark.venue


def paper_keys():
    if os.environ.get("TRADEFLOW_VENUE_TESTS") != "1":
        pytest.skip("real-venue test: set TRADEFLOW_VENUE_TESTS=1 with network access and Alpaca paper keys"
                    " (APCA_API_KEY_ID, APCA_API_SECRET_KEY) to run it")
    try:
        return [venue_secret(var) for var in KEY_VARS]
    except MissingCredential as err:
        pytest.skip(f"real-venue test: {err}")


def test_alpaca_paper_history_and_an_unknown_order():
    key, secret = paper_keys()
    end = datetime.now(timezone.utc) - timedelta(days=1)
    bars = AlpacaBars(key, secret).history("AAPL", end - timedelta(days=7), end)
    assert list(bars.columns) == ["symbol", "ts", "open", "high", "low", "close", "volume"]
    broker = AlpacaBroker(key, secret, paper=True)
    try:
        assert broker.order_history(["tf-never-placed-by-tradeflow"]) == []
    finally:
        broker.close()


def test_binance_history_and_an_unknown_order():
    """Binance's public klines need no keys; the order query needs BINANCE_API_KEY and BINANCE_API_SECRET."""
    from adapters.ccxt_broker import CcxtBroker
    from adapters.ccxt_exchanges import credential_vars, rest_exchange
    from ingest.ccxt_bars import CcxtBars

    if os.environ.get("TRADEFLOW_VENUE_TESTS") != "1":
        pytest.skip("real-venue test: set TRADEFLOW_VENUE_TESTS=1 with network access and Binance keys"
                    " (BINANCE_API_KEY, BINANCE_API_SECRET) to run it")
    try:
        credentials = {field: venue_secret(var) for field, var in credential_vars("binance").items()}
    except MissingCredential as err:
        pytest.skip(f"real-venue test: {err}")
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(hours=1)
    bars = CcxtBars("binance").history("BTC/USDT", end - timedelta(hours=2), end)
    assert len(bars) == 120 and list(bars.columns) == ["symbol", "ts", "open", "high", "low", "close", "volume"]
    broker = CcxtBroker(rest_exchange("binance", credentials), symbol_of=lambda coid: "BTC/USDT")
    assert broker.order_history(["tf-never-placed-by-tradeflow"]) == []
