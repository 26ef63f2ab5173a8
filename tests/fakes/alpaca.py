"""A fake Alpaca: Trading API v2 REST (orders, FILL activities), the trade_updates
stream (JSON in binary frames, as the paper endpoint sends), Market Data v2
REST bars and the stock data stream (msgpack). Message shapes from
tests/fixtures/venues/alpaca_*.json. The test drives fills, rejects, rate
limits and disconnects."""
from __future__ import annotations

import asyncio
import copy
import json
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import msgpack
from aiohttp import WSMsgType, web

from fakes import FakeServer, fixture

KEY, SECRET = "fake-key-id", "fake-secret-key"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class FakeAlpaca(FakeServer):
    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}        # by Alpaca id
        self.by_client_id: dict[str, str] = {}
        self.activities: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []            # every trade update sent, to re-send copies
        self.requests: list[tuple[str, str, Any]] = []     # (method, path, json body or query)
        self.reject_next: str | None = None
        self.rate_limited = 0                              # answer the next n requests with 429
        self.hold_cancels = False                          # DELETE leaves the order pending_cancel
        self.bars: dict[str, list[dict[str, Any]]] = {}
        self.trade_sockets: set[web.WebSocketResponse] = set()
        self.data_sockets: set[web.WebSocketResponse] = set()
        self.trade_connections = 0
        self.data_connections = 0
        app = web.Application(middlewares=[self._gate])
        app.router.add_post("/v2/orders", self._submit)
        app.router.add_get("/v2/orders:by_client_order_id", self._by_client_id)
        app.router.add_get("/v2/orders/{id}", self._get)
        app.router.add_delete("/v2/orders/{id}", self._cancel)
        app.router.add_get("/v2/account/activities/FILL", self._fills)
        app.router.add_get("/v2/stocks/bars", self._bars)
        app.router.add_get("/stream", self._trade_stream)
        app.router.add_get("/v2/iex", self._data_stream)
        super().__init__(app)

    # -- REST ------------------------------------------------------------------------------
    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in ("/stream", "/v2/iex"):
            return await handler(request)
        body = await request.json() if request.can_read_body else dict(request.query)
        self.requests.append((request.method, request.path, body))
        if request.headers.get("APCA-API-KEY-ID") != KEY or request.headers.get("APCA-API-SECRET-KEY") != SECRET:
            return web.json_response({"code": 40110000, "message": "request is not authorized"}, status=401)
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return web.json_response({"code": 42910000, "message": "rate limit exceeded"}, status=429)
        return await handler(request)

    async def _submit(self, request: web.Request) -> web.Response:
        body = await request.json()
        coid = body["client_order_id"]
        if coid in self.by_client_id:
            return web.json_response({"code": 40010001, "message": "client_order_id must be unique"}, status=422)
        if self.reject_next is not None:
            message, self.reject_next = self.reject_next, None
            return web.json_response({"code": 40310000, "message": message}, status=403)
        order = copy.deepcopy(fixture("alpaca_order.json"))
        now = _now()
        order.update(id=str(uuid.uuid4()), client_order_id=coid, created_at=now, updated_at=now, submitted_at=now,
                     symbol=body["symbol"], qty=body["qty"], side=body["side"], type=body["type"],
                     order_type=body["type"], time_in_force=body["time_in_force"],
                     limit_price=body.get("limit_price"), stop_price=body.get("stop_price"), status="accepted")
        self.orders[order["id"]] = order
        self.by_client_id[coid] = order["id"]
        await self._send_update("new", order)
        return web.json_response(order)

    async def _by_client_id(self, request: web.Request) -> web.Response:
        order_id = self.by_client_id.get(request.query.get("client_order_id", ""))
        if order_id is None:
            return web.json_response({"code": 40410000, "message": "order not found"}, status=404)
        return web.json_response(self.orders[order_id])

    async def _get(self, request: web.Request) -> web.Response:
        order = self.orders.get(request.match_info["id"])
        if order is None:
            return web.json_response({"code": 40410000, "message": "order not found"}, status=404)
        return web.json_response(order)

    async def _cancel(self, request: web.Request) -> web.Response:
        order = self.orders.get(request.match_info["id"])
        if order is None:
            return web.json_response({"code": 40410000, "message": "order not found"}, status=404)
        if order["status"] in ("filled", "canceled", "expired", "rejected"):
            return web.json_response({"code": 42210000, "message": "order is not cancelable"}, status=422)
        order["status"] = "pending_cancel"
        if not self.hold_cancels:
            await self._finish_cancel(order)
        return web.Response(status=204)

    async def _finish_cancel(self, order: dict[str, Any]) -> None:
        order.update(status="canceled", canceled_at=_now(), updated_at=_now())
        await self._send_update("canceled", order)

    async def _fills(self, request: web.Request) -> web.Response:
        after = request.query.get("after", "")
        return web.json_response([a for a in self.activities if a["transaction_time"] >= after[:23]])

    async def _bars(self, request: web.Request) -> web.Response:
        query = request.query
        start, end = query["start"], query.get("end", "9999")
        limit = int(query.get("limit", 10_000))
        offset = int(query.get("page_token") or 0)
        out: dict[str, list] = {}
        count = 0
        rows = [(s, b) for s in query["symbols"].split(",") for b in self.bars.get(s, []) if start <= _iso(b["t"]) <= end]
        for symbol, bar in rows[offset:offset + limit]:
            out.setdefault(symbol, []).append(bar)
            count += 1
        more = offset + count < len(rows)
        return web.json_response({"bars": out, "next_page_token": str(offset + count) if more else None})

    # -- trade_updates stream ---------------------------------------------------------------
    async def _trade_stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            data = json.loads(msg.data)
            if data.get("action") == "authenticate":
                ok = data["data"].get("key_id") == KEY and data["data"].get("secret_key") == SECRET
                await ws.send_bytes(json.dumps({"stream": "authorization", "data": {
                    "status": "authorized" if ok else "unauthorized", "action": "authenticate"}}).encode())
                if not ok:
                    await ws.close()
            elif data.get("action") == "listen":
                self.trade_sockets.add(ws)
                self.trade_connections += 1
                await ws.send_bytes(json.dumps({"stream": "listening",
                                                "data": {"streams": data["data"]["streams"]}}).encode())
        self.trade_sockets.discard(ws)
        return ws

    async def _send_update(self, event: str, order: dict[str, Any], **extra: Any) -> None:
        message = {"stream": "trade_updates", "data": {"event": event, "order": copy.deepcopy(order),
                                                       "timestamp": _now(), **extra}}
        self.updates.append(message)
        await self._broadcast(json.dumps(message).encode())

    async def _broadcast(self, frame: bytes) -> None:
        for ws in list(self.trade_sockets):
            await ws.send_bytes(frame)

    # -- the test's controls ------------------------------------------------------------------
    def order(self, client_order_id: str) -> dict[str, Any]:
        return self.orders[self.by_client_id[client_order_id]]

    def fill(self, client_order_id: str, qty: str, price: str, *, send: bool = True) -> dict[str, Any]:
        """Execute qty at price: the order, a FILL activity and (unless send=False) the trade update."""
        return self.run(self._fill(client_order_id, qty, price, send))

    async def _fill(self, client_order_id: str, qty: str, price: str, send: bool) -> dict[str, Any]:
        order = self.order(client_order_id)
        filled = Decimal(order["filled_qty"]) + Decimal(qty)
        done = filled == Decimal(order["qty"])
        now = _now()
        order.update(filled_qty=str(filled), filled_avg_price=price, updated_at=now,
                     status="filled" if done else "partially_filled", filled_at=now if done else None)
        execution_id = str(uuid.uuid4())
        activity = dict(fixture("alpaca_fill_activity.json"), id=f"{now}::{execution_id}", cum_qty=str(filled),
                        leaves_qty=str(Decimal(order["qty"]) - filled), price=price, qty=qty, side=order["side"],
                        symbol=order["symbol"], transaction_time=now[:23], order_id=order["id"],
                        type="fill" if done else "partial_fill")
        self.activities.append(activity)
        if send:
            await self._send_update("fill" if done else "partial_fill", order, execution_id=execution_id,
                                    price=price, qty=qty, position_qty=str(filled))
        return activity

    def cancel_now(self, client_order_id: str) -> None:
        self.run(self._finish_cancel(self.order(client_order_id)))

    def resend(self, index: int = -1) -> None:
        self.run(self._broadcast(json.dumps(self.updates[index]).encode()))

    def send_raw(self, message: Any) -> None:
        self.run(self._broadcast(json.dumps(message).encode()))

    def drop_streams(self) -> None:
        async def drop() -> None:
            for ws in list(self.trade_sockets) + list(self.data_sockets):
                await ws.close()
        self.run(drop())

    # -- stock data stream (msgpack) ---------------------------------------------------------
    async def _data_stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_bytes(msgpack.packb([{"T": "success", "msg": "connected"}]))
        async for msg in ws:
            if msg.type is not WSMsgType.BINARY:
                continue
            data = msgpack.unpackb(msg.data)
            if data.get("action") == "auth":
                ok = data.get("key") == KEY and data.get("secret") == SECRET
                reply = {"T": "success", "msg": "authenticated"} if ok else {"T": "error", "code": 402,
                                                                            "msg": "auth failed"}
                await ws.send_bytes(msgpack.packb([reply]))
            elif data.get("action") == "subscribe":
                self.data_sockets.add(ws)
                self.data_connections += 1
                await ws.send_bytes(msgpack.packb([{"T": "subscription", "trades": [], "quotes": [],
                                                   "bars": data.get("bars", [])}]))
        self.data_sockets.discard(ws)
        return ws

    def push_bars(self, *bars: dict[str, Any]) -> None:
        """Send stream bars ({T: b, S, o, h, l, c, v, t: msgpack Timestamp}) to every subscriber."""
        async def push() -> None:
            frame = msgpack.packb([_stream_bar(b) for b in bars], datetime=True)
            for ws in list(self.data_sockets):
                await ws.send_bytes(frame)
        self.run(push())

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        async def poll() -> None:
            deadline = asyncio.get_running_loop().time() + timeout
            while not predicate():
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError("fake alpaca: condition not reached")
                await asyncio.sleep(0.01)
        self.run(poll())


def _iso(value: str) -> str:
    return value.replace("Z", "+00:00")


def _stream_bar(bar: dict[str, Any]) -> dict[str, Any]:
    if isinstance(bar.get("t"), str) and bar["t"].endswith("Z"):
        # the real stream sends t as a msgpack timestamp, not text
        return {**bar, "t": datetime.fromisoformat(_iso(bar["t"]))}
    return bar
