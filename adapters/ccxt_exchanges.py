"""ccxt exchanges as tradeflow uses them: one place that builds the REST client
(ccxt) and the websocket client (ccxt.pro, part of ccxt), checks that the
exchange can do what is asked of it, names its keys, points it at a fake or a
proxy, and reads a ccxt failure as retryable or not.

    ccxt:<id>      any id in ccxt.exchanges, spot markets
                   keys: <ID>_API_KEY, <ID>_API_SECRET (and <ID>_API_PASSWORD, <ID>_API_UID
                   where the exchange requires them: ccxt's requiredCredentials)
    ccxt:binance   TRADEFLOW_BINANCE_URL         REST base (…/api/v3 is appended)
                   TRADEFLOW_BINANCE_STREAM_URL  websocket base, ending in /stream
    ccxt:bitstamp  TRADEFLOW_BITSTAMP_URL        REST base (…/api/v2 is appended)

Capabilities, checked from ccxt's own description of the exchange (no network):
a broker needs createOrder taking ccxt's clientOrderId param, cancelOrder,
fetchOrder, fetchMyTrades or fetchOrderTrades, and a way to find an order by
our client order id (fetchOrder taking clientOrderId, or fetchOrders, or
fetchOpenOrders with fetchClosedOrders); a bar source needs fetchOHLCV with a
1m timeframe. Whether create_order and fetch_order take clientOrderId is read
from the exchange class's source (ccxt documents the param per exchange, it
has no `has` flag for it). A missing one is a one-line UnsupportedExchange
naming it.

Binance's market loading asks for spot markets only and no currencies, so
load_markets is one request (GET /api/v3/exchangeInfo). ccxt's own throttle
(enableRateLimit) spaces requests by the exchange's weights; a 429/418 that comes
anyway is a ccxt DDoSProtection, a NetworkError like a timeout or a dropped
connection: retryable. ccxt puts the response body (and for network errors the
URL with its signed query) into its messages; messages built here carry only
the venue's own "msg", never a key or a signature.
"""
from __future__ import annotations

import inspect
import json
import re
from collections.abc import Mapping

import ccxt
import ccxt.async_support
import ccxt.pro

from tradeflow.ops.venue_keys import Secret

# ccxt's credential fields -> the suffix of our variable (<ID>_API_KEY, ...)
CREDENTIAL_VARS = {"apiKey": "API_KEY", "secret": "API_SECRET", "password": "API_PASSWORD", "uid": "API_UID"}
# per-exchange options: Binance loads spot markets only, without currencies or margin pairs
OPTIONS = {"binance": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False}}
# exchanges whose URLs can be pointed elsewhere (the tests' fake, a proxy): their variables, the REST
# path ccxt's urls['api'] entries end in, and the urls['api']['ws'] key of the spot websocket
URL_VARS = {"binance": ("TRADEFLOW_BINANCE_URL", "TRADEFLOW_BINANCE_STREAM_URL"),
            "bitstamp": ("TRADEFLOW_BITSTAMP_URL", None)}
_REST_SUFFIX = {"binance": "/api/v3", "bitstamp": "/api"}
_STREAM_KEY = {"binance": "spot"}  # ccxt.pro tells a Binance spot connection by "/stream" in its URL
_READS_CLIENT_ID = re.compile(r"safe_\w+\(\s*\w+,\s*(?:\[[^\]]*'clientOrderId'|(?:'\w+',\s*)?'clientOrderId')")
_CALLS = re.compile(r"self\.(\w+)\(")


class UnsupportedExchange(ValueError):
    pass


def exchange_id(source: str) -> str:
    """'ccxt:kraken' -> 'kraken', for any exchange ccxt has."""
    name = source.removeprefix("ccxt:")
    if name not in ccxt.exchanges:
        raise UnsupportedExchange(f"ccxt exchange {name!r} is unknown: the valid ids are ccxt.exchanges"
                                  " (python -c 'import ccxt; print(ccxt.exchanges)')")
    return name


def credential_vars(name: str) -> dict[str, str]:
    """The exchange's required ccxt credentials -> our variables: {'apiKey': 'KRAKEN_API_KEY', ...}."""
    required = getattr(ccxt, name)().requiredCredentials
    unknown = [field for field, needed in required.items() if needed and field not in CREDENTIAL_VARS]
    if unknown:
        raise UnsupportedExchange(f"ccxt exchange {name!r} signs with {', '.join(unknown)}: not supported"
                                  " (keys: API key, secret, password, uid)")
    return {field: f"{name.upper()}_{CREDENTIAL_VARS[field]}" for field, needed in required.items() if needed}


def urls_from(name: str, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    rest_var, stream_var = URL_VARS.get(name, (None, None))
    return (environ.get(rest_var) or None if rest_var else None,
            environ.get(stream_var) or None if stream_var else None)


def check_broker(exchange: ccxt.Exchange) -> None:
    """UnsupportedExchange naming the first capability a broker needs that the exchange lacks."""
    has = exchange.has
    needs = [("createOrder", has.get("createOrder")), ("cancelOrder", has.get("cancelOrder")),
             ("fetchOrder", has.get("fetchOrder")),
             ("fetchMyTrades or fetchOrderTrades", has.get("fetchMyTrades") or has.get("fetchOrderTrades")),
             ("createOrder's clientOrderId param", takes_client_order_id(type(exchange), "create_order")),
             ("fetchOrder's clientOrderId param, fetchOrders, or fetchOpenOrders with fetchClosedOrders",
              finds_by_client_order_id(exchange) is not None)]
    _require(exchange.id, "a broker", needs)


def check_bars(exchange: ccxt.Exchange) -> None:
    """UnsupportedExchange unless the exchange has 1-minute OHLCV over REST."""
    _require(exchange.id, "a bar source", [("fetchOHLCV", exchange.has.get("fetchOHLCV")),
                                            ("a 1m timeframe", "1m" in (exchange.timeframes or {}))])


def _require(name: str, role: str, needs: list[tuple[str, object]]) -> None:
    missing = [what for what, present in needs if not present]
    if missing:
        raise UnsupportedExchange(f"ccxt exchange {name!r} cannot be {role}: ccxt gives it no {missing[0]}")


def finds_by_client_order_id(exchange: ccxt.Exchange) -> str | None:
    """How an order is found by our client order id: 'fetchOrder' (its clientOrderId param),
    'fetchOrders', 'fetchOpenOrders+fetchClosedOrders' (listed and matched), or None."""
    has = exchange.has
    if has.get("fetchOrder") and takes_client_order_id(type(exchange), "fetch_order"):
        return "fetchOrder"
    if has.get("fetchOrders"):
        return "fetchOrders"
    if has.get("fetchOpenOrders") and has.get("fetchClosedOrders"):
        return "fetchOpenOrders+fetchClosedOrders"
    return None


def takes_client_order_id(cls: type, method: str, depth: int = 2) -> bool:
    """Whether the exchange's method (or a helper it calls, depth levels down) reads ccxt's
    clientOrderId param: the source of its class, not a request."""
    todo, seen = [(method, 0)], set()
    while todo:
        name, level = todo.pop()
        function = getattr(cls, name, None)
        if name in seen or function is None or function is getattr(ccxt.Exchange, name, None) \
                or name.startswith("parse_"):
            continue
        seen.add(name)
        try:
            source = inspect.getsource(function)
        except (OSError, TypeError):
            continue
        if _READS_CLIENT_ID.search(source):
            return True
        if level < depth:
            todo += [(called, level + 1) for called in _CALLS.findall(source)]
    return False


def _config(name: str, credentials: Mapping[str, Secret] | None) -> dict:
    config: dict = {"enableRateLimit": True, "timeout": 10_000,
                    "options": {"defaultType": "spot", **OPTIONS.get(name, {})}}
    config.update((field, secret.reveal()) for field, secret in (credentials or {}).items())
    return config


def _point(exchange: ccxt.Exchange, rest_url: str | None, stream_url: str | None) -> None:
    """The URLs of an exchange in URL_VARS: others are not pointed elsewhere."""
    if rest_url and exchange.id in _REST_SUFFIX:
        base = rest_url.rstrip("/") + _REST_SUFFIX[exchange.id]
        exchange.urls["api"]["public"] = base
        exchange.urls["api"]["private"] = base
    if stream_url and exchange.id in _STREAM_KEY:
        exchange.urls["api"]["ws"][_STREAM_KEY[exchange.id]] = stream_url.rstrip("/")


def rest_exchange(name: str, credentials: Mapping[str, Secret] | None = None, *,
                  rest_url: str | None = None) -> ccxt.Exchange:
    """The exchange's REST client; credentials by ccxt field (apiKey, secret, ...), none for market data."""
    exchange = getattr(ccxt, name)(_config(name, credentials))
    _point(exchange, rest_url, None)
    return exchange


def stream_exchange(name: str, cls: type | None = None, *, rest_url: str | None = None,
                    stream_url: str | None = None) -> ccxt.async_support.Exchange:
    """The exchange's asyncio client for public data: cls (a subclass of its ccxt.pro class), else its ccxt.pro
    class, else (no websocket support in ccxt) its ccxt.async_support class. Make it on the loop it runs on."""
    if cls is None:
        cls = getattr(ccxt.pro, name, None) or getattr(ccxt.async_support, name)
    exchange = cls(_config(name, None))
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
