"""A fake Binance spot venue: REST /api/v3 (exchangeInfo, klines, order POST/GET/DELETE,
myTrades; SIGNED requests checked as Binance documents: X-MBX-APIKEY header and an
HMAC-SHA256 signature of the query and body) and the market-data websocket (combined
streams under /stream: SUBSCRIBE answered {"result": null, "id"}, events wrapped as
{"stream", "data"}). Shapes from tests/fixtures/venues/binance.json. The test drives
fills, rejects, rate limits, dropped connections and duplicated trades."""
from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import time
from decimal import Decimal
from typing import Any

from aiohttp import web

from fakes import FakeServer, fixture

KEY, SECRET = "fake-binance-key", "fake-binance-secret"
SIGNED = ("/api/v3/order", "/api/v3/myTrades")
DONE = ("FILLED", "CANCELED", "EXPIRED", "REJECTED")
PARAMS = web.RequestKey("params", dict)


def _ms() -> int:
    return int(time.time() * 1000)


class FakeBinance(FakeServer):
    def __init__(self) -> None:
        self.data = fixture("binance.json")
        self.orders: dict[int, dict[str, Any]] = {}
        self.trades: list[dict[str, Any]] = []
        self.klines: dict[str, list[list[Any]]] = {}          # by Binance symbol id, oldest first
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.reject_next: str | None = None                     # the next order is refused with this error
        self.rate_limited = 0                                   # answer the next n requests with 429
        self.disconnects = 0                                    # drop the connection of the next n requests
        self.fill_on_cancel = False                             # a DELETE finds the order filled meanwhile
        self.duplicate_trades = False                           # myTrades lists every trade twice
        self.sockets: set[web.WebSocketResponse] = set()
        self.stream_connections = 0
        self._next_order = 1000
        self._next_trade = 5000
        app = web.Application(middlewares=[self._gate])
        app.router.add_get("/api/v3/exchangeInfo", self._exchange_info)
        app.router.add_get("/api/v3/klines", self._klines)
        app.router.add_post("/api/v3/order", self._new_order)
        app.router.add_get("/api/v3/order", self._query_order)
        app.router.add_delete("/api/v3/order", self._cancel_order)
        app.router.add_get("/api/v3/myTrades", self._my_trades)
        app.router.add_get("/stream", self._stream)
        app.router.add_get("/stream/{n}", self._stream)
        super().__init__(app)

    # -- REST ----------------------------------------------------------------------------------
    def _error(self, name: str, status: int = 400) -> web.Response:
        return web.json_response(self.data["errors"][name], status=status)

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/stream"):
            return await handler(request)
        body = await request.text()
        params = dict(request.query)
        if body:
            params.update((k, v) for k, v in (pair.split("=", 1) for pair in body.split("&") if "=" in pair))
        self.requests.append((request.method, request.path, params))
        if self.disconnects > 0:
            self.disconnects -= 1
            request.transport.close()  # the client sees the connection drop with no answer
            return web.Response(status=500)
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return web.json_response(self.data["errors"]["rate_limit"], status=429, headers={"Retry-After": "1"})
        if request.path in SIGNED:
            if request.headers.get("X-MBX-APIKEY") != KEY:
                return self._error("bad_key", 401)
            total = request.query_string + body
            payload, _, signature = total.rpartition("&signature=")
            expected = hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(signature, expected):
                return self._error("bad_signature")
        request[PARAMS] = params
        return await handler(request)

    async def _exchange_info(self, request: web.Request) -> web.Response:
        return web.json_response(self.data["exchange_info"])

    async def _klines(self, request: web.Request) -> web.Response:
        q = request.query
        start, end = int(q.get("startTime", 0)), int(q.get("endTime", 2**62))
        limit = min(int(q.get("limit", 500)), 1000)
        rows = [k for k in self.klines.get(q["symbol"], []) if start <= k[0] <= end]
        return web.json_response(rows[:limit])

    async def _new_order(self, request: web.Request) -> web.Response:
        p = request[PARAMS]
        coid = p.get("newClientOrderId")
        if any(o["clientOrderId"] == coid and o["status"] != "FILLED" for o in self.orders.values()):
            return self._error("duplicate")  # unique among orders not filled (rest-api.md, newClientOrderId)
        if self.reject_next is not None:
            name, self.reject_next = self.reject_next, None
            return self._error(name)
        now = _ms()
        order = dict(copy.deepcopy(self.data["order"]), symbol=p["symbol"], orderId=self._next_order,
                     clientOrderId=coid, price=p.get("price", "0.00000000"), origQty=p["quantity"],
                     executedQty="0.00000000", cummulativeQuoteQty="0.00000000", status="NEW",
                     timeInForce=p.get("timeInForce", "GTC"), type=p["type"], side=p["side"],
                     stopPrice=p.get("stopPrice", "0.00000000"), time=now, updateTime=now, workingTime=now)
        self._next_order += 1
        self.orders[order["orderId"]] = order
        answer = {k: order[k] for k in self.data["new_order_full"] if k in order}
        answer.update(transactTime=now, fills=[], origQuoteOrderQty="0.00000000")
        return web.json_response(answer)

    def _find(self, params: dict[str, str]) -> dict[str, Any] | None:
        if "orderId" in params:
            return self.orders.get(int(params["orderId"]))
        matches = [o for o in self.orders.values() if o["clientOrderId"] == params.get("origClientOrderId")]
        return matches[-1] if matches else None

    async def _query_order(self, request: web.Request) -> web.Response:
        order = self._find(request[PARAMS])
        return web.json_response(order) if order else self._error("no_such_order")

    async def _cancel_order(self, request: web.Request) -> web.Response:
        order = self._find(request[PARAMS])
        if order is not None and self.fill_on_cancel and order["status"] not in DONE:
            price = order["price"] if Decimal(order["price"]) > 0 else "100.00"  # a market order: any price
            self._fill(order, str(Decimal(order["origQty"]) - Decimal(order["executedQty"])), price)
        if order is None or order["status"] in DONE:
            return self._error("unknown_order")
        order.update(status="CANCELED", updateTime=_ms())
        answer = {k: order[k] for k in ("symbol", "orderId", "orderListId", "price", "origQty", "executedQty",
                                         "origQuoteOrderQty", "cummulativeQuoteQty", "status", "timeInForce",
                                         "type", "side", "selfTradePreventionMode")}
        answer.update(origClientOrderId=order["clientOrderId"], clientOrderId="cancel-" + str(order["orderId"]),
                      transactTime=_ms())
        return web.json_response(answer)

    async def _my_trades(self, request: web.Request) -> web.Response:
        p = request[PARAMS]
        rows = [t for t in self.trades if t["symbol"] == p["symbol"]
                and ("orderId" not in p or t["orderId"] == int(p["orderId"]))
                and t["id"] >= int(p.get("fromId", 0))]
        if self.duplicate_trades:
            rows = [t for t in rows for _ in (0, 1)]
        return web.json_response(rows)

    # -- the test's controls ----------------------------------------------------------------------
    def order(self, client_order_id: str) -> dict[str, Any]:
        return [o for o in self.orders.values() if o["clientOrderId"] == client_order_id][-1]

    def posted(self) -> list[dict[str, str]]:
        return [params for method, path, params in self.requests if method == "POST" and path == "/api/v3/order"]

    def fill(self, client_order_id: str, qty: str, price: str, commission: str = "0", asset: str = "USDT") -> None:
        self._fill(self.order(client_order_id), qty, price, commission, asset)

    def _fill(self, order: dict[str, Any], qty: str, price: str, commission: str = "0", asset: str = "USDT") -> None:
        executed = Decimal(order["executedQty"]) + Decimal(qty)
        quote = Decimal(order["cummulativeQuoteQty"]) + Decimal(qty) * Decimal(price)
        now = _ms()
        order.update(executedQty=str(executed), cummulativeQuoteQty=str(quote), updateTime=now,
                     status="FILLED" if executed == Decimal(order["origQty"]) else "PARTIALLY_FILLED")
        trade = dict(self.data["trade"], symbol=order["symbol"], id=self._next_trade, orderId=order["orderId"],
                     price=price, qty=qty, quoteQty=str(Decimal(qty) * Decimal(price)), commission=commission,
                     commissionAsset=asset, time=now, isBuyer=order["side"] == "BUY")
        self._next_trade += 1
        self.trades.append(trade)

    def finish(self, client_order_id: str, status: str) -> None:
        """End the order at the venue (CANCELED by someone else, EXPIRED, ...)."""
        self.order(client_order_id).update(status=status, updateTime=_ms())

    # -- market-data websocket ------------------------------------------------------------------------
    async def _stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            data = json.loads(msg.data)
            if data.get("method") == "SUBSCRIBE":
                self.sockets.add(ws)
                self.stream_connections += 1
                await ws.send_str(json.dumps({"result": None, "id": data["id"]}))
        self.sockets.discard(ws)
        return ws

    def push_kline(self, symbol: str, row: list[Any], *, closed: bool = True) -> None:
        """Send the kline stream event of a REST kline row to the subscribers of <symbol>@kline_1m."""
        event = copy.deepcopy(self.data["kline_event"])
        event.update(E=row[6] + 1, s=symbol)
        event["k"].update(t=row[0], T=row[6], s=symbol, o=row[1], h=row[2], l=row[3], c=row[4], v=row[5], n=row[8],
                          q=row[7], x=closed)
        self.send_raw({"stream": f"{symbol.lower()}@kline_1m", "data": event})

    def send_raw(self, message: Any) -> None:
        async def send() -> None:
            for ws in list(self.sockets):
                await ws.send_str(json.dumps(message))
        self.run(send())

    def drop_streams(self) -> None:
        async def drop() -> None:
            for ws in list(self.sockets):
                await ws.close()
        self.run(drop())

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        async def poll() -> None:
            deadline = asyncio.get_running_loop().time() + timeout
            while not predicate():
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError("fake binance: condition not reached")
                await asyncio.sleep(0.01)
        self.run(poll())


def kline(open_ms: int, close: str = "100.00", volume: str = "1.50000000") -> list[Any]:
    """A REST kline row (fixture shape) for the minute opening at open_ms."""
    row = copy.deepcopy(fixture("binance.json")["kline"])
    row[0], row[6] = open_ms, open_ms + 59_999
    high, low = str(Decimal(close) + 1), str(Decimal(close) - 1)
    row[1:6] = [close, high, low, close, volume]
    return row
