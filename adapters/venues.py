"""Real brokers by name, as `tradeflow adapter run --broker` takes them, each
behind ResilientBroker (retry with backoff around a circuit breaker).

    alpaca-paper   Alpaca's paper endpoints    keys: APCA_API_KEY_ID, APCA_API_SECRET_KEY
    alpaca         Alpaca's live endpoints     same keys (live ones)
    ccxt:<id>      a ccxt spot exchange        keys: <ID>_API_KEY, <ID>_API_SECRET (+ _PASSWORD, _UID where
                                               required), e.g. BINANCE_API_KEY; adapters/ccxt_exchanges.py

TRADEFLOW_ALPACA_URL and TRADEFLOW_ALPACA_STREAM_URL point the SDK elsewhere
(a proxy, or the fake venue of the tests), TRADEFLOW_BINANCE_URL Binance's REST. Keys come from the environment or
TRADEFLOW_VENUE_CREDENTIALS_FILE (tradeflow.ops.venue_keys).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

from adapters.broker import Broker
from adapters.resilience import CircuitBreaker, ResilientBroker, RetryPolicy
from tradeflow.ops.venue_keys import venue_secret

BROKERS = ("paper", "alpaca-paper", "alpaca", "ccxt:<exchange id>")


class UnknownVenue(ValueError):
    pass


def make_broker(name: str, environ: Mapping[str, str] | None = None) -> Broker:
    """The named real broker; raises MissingCredential (one line naming the variable) or UnknownVenue."""
    env = os.environ if environ is None else environ
    if name in ("alpaca", "alpaca-paper"):
        from adapters.alpaca import KEY_VARS, AlpacaBroker

        key, secret = (venue_secret(var, env) for var in KEY_VARS)
        inner = AlpacaBroker(key, secret, paper=name == "alpaca-paper", url_override=env.get("TRADEFLOW_ALPACA_URL"),
                             stream_url_override=env.get("TRADEFLOW_ALPACA_STREAM_URL"))
    elif name.startswith("ccxt:"):
        from adapters.ccxt_broker import CcxtBroker
        from adapters.ccxt_exchanges import (
            UnsupportedExchange,
            check_broker,
            credential_vars,
            exchange_id,
            rest_exchange,
            urls_from,
        )

        try:
            exchange = exchange_id(name)
            check_broker(rest_exchange(exchange))  # before asking for keys: an unusable exchange needs none
            variables = credential_vars(exchange)
        except UnsupportedExchange as err:
            raise UnknownVenue(str(err)) from None
        credentials = {field: venue_secret(var, env) for field, var in variables.items()}
        inner = CcxtBroker(rest_exchange(exchange, credentials, rest_url=urls_from(exchange, env)[0]))
    else:
        raise UnknownVenue(f"broker: {name!r} is not one of {', '.join(BROKERS)}")
    return ResilientBroker(inner, CircuitBreaker(failure_threshold=5, recovery_timeout=30.0),
                           RetryPolicy(attempts=5, base_delay=0.5, max_delay=10.0))
