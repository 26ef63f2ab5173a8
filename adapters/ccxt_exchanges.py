"""ccxt exchanges as tradeflow uses them (Binance first): one place that builds
the REST client (ccxt) and the websocket client (ccxt.pro, part of ccxt), with
the URL overrides the tests' fake and a proxy use, and that reads a ccxt
failure as retryable or not.

    ccxt:binance   spot only      keys (trading only): BINANCE_API_KEY, BINANCE_API_SECRET
                                  TRADEFLOW_BINANCE_URL         REST base (…/api/v3 is appended)
                                  TRADEFLOW_BINANCE_STREAM_URL  websocket base, ending in /stream

Market loading asks for spot markets only and no currencies, so load_markets
is one request (GET /api/v3/exchangeInfo). ccxt's own throttle
(enableRateLimit) spaces requests by Binance's weights; a 429/418 that comes
anyway is a ccxt DDoSProtection, a NetworkError like a timeout or a dropped
connection: retryable. ccxt puts the response body (and for network errors the
URL with its signed query) into its messages; messages built here carry only
the venue's own "msg", never a key or a signature.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping

import ccxt
import ccxt.pro

from tradeflow.ops.venue_keys import Secret

# exchange id -> (key variable, secret variable)
KEY_VARS = {"binance": ("BINANCE_API_KEY", "BINANCE_API_SECRET")}
URL_VARS = {"binance": ("TRADEFLOW_BINANCE_URL", "TRADEFLOW_BINANCE_STREAM_URL")}


class UnsupportedExchange(ValueError):
    pass


def exchange_id(source: str) -> str:
    """'ccxt:binance' -> 'binance'; only the exchanges this module knows how to point and read."""
    name = source.removeprefix("ccxt:")
    if name not in KEY_VARS:
        raise UnsupportedExchange(f"ccxt exchange {name!r} is not supported (supported: {', '.join(KEY_VARS)})")
    return name


def urls_from(name: str, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    rest_var, stream_var = URL_VARS[name]
    return environ.get(rest_var) or None, environ.get(stream_var) or None


def _config(key: Secret | None, secret: Secret | None) -> dict:
    config: dict = {
        "enableRateLimit": True,
        "timeout": 10_000,
        # spot markets only, no currencies, no margin pairs: load_markets is GET /api/v3/exchangeInfo alone
        "options": {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
                    "fetchMargins": False},
    }
    if key is not None and secret is not None:
        config.update(apiKey=key.reveal(), secret=secret.reveal())
    return config


def _point(exchange: ccxt.Exchange, rest_url: str | None, stream_url: str | None) -> None:
    if rest_url:
        base = rest_url.rstrip("/") + "/api/v3"
        exchange.urls["api"]["public"] = base
        exchange.urls["api"]["private"] = base
    if stream_url:
        # ccxt.pro tells a spot connection by "/stream" in its URL
        exchange.urls["api"]["ws"]["spot"] = stream_url.rstrip("/")


def rest_exchange(name: str, key: Secret | None = None, secret: Secret | None = None, *,
                  rest_url: str | None = None) -> ccxt.Exchange:
    exchange = getattr(ccxt, name)(_config(key, secret))
    _point(exchange, rest_url, None)
    return exchange


def stream_exchange(cls: type, *, rest_url: str | None = None, stream_url: str | None = None) -> ccxt.pro.Exchange:
    """An instance of cls (a ccxt.pro exchange class or a subclass), public data only."""
    exchange = cls(_config(None, None))
    _point(exchange, rest_url, stream_url)
    return exchange


def venue_message(err: Exception) -> str:
    """The venue's own words from a ccxt error: the {"code", "msg"} body it quotes, or the message ccxt matched
    ("binance <msg>"); for a network failure (whose text holds the signed URL) only its kind."""
    text = str(err)
    found = re.search(r"\{.*\}", text)
    if found:
        try:
            body = json.loads(found.group(0))
            if isinstance(body, dict) and body.get("msg"):
                return f"{body['msg']} (code {body.get('code')})"
        except ValueError:
            pass
    if isinstance(err, ccxt.NetworkError) or "://" in text or "signature" in text:
        return type(err).__name__
    _, _, message = text.partition(" ")
    return message[:200] or type(err).__name__


def is_retryable(err: Exception) -> bool:
    """A request that got no answer, or 'try again': rate limits, timeouts, dropped connections, venue busy."""
    # ccxt's NetworkError (DDoSProtection for 429/418, RequestTimeout, ExchangeNotAvailable) is an OperationFailed
    return isinstance(err, ccxt.OperationFailed)
