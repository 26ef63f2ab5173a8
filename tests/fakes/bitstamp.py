"""A fake Bitstamp (HTTP API v2, public market data only): GET /api/v2/markets/ and
GET /api/v2/ohlc/{pair}/ (step 60, start/end in seconds, inclusive, at most limit rows,
oldest first, the minute still open included). Shapes from
tests/fixtures/venues/bitstamp.json. The test sets the candles and makes the venue unavailable."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from fakes import FakeServer, fixture


class FakeBitstamp(FakeServer):
    def __init__(self) -> None:
        self.data = fixture("bitstamp.json")
        self.candles: dict[str, list[dict[str, str]]] = {}    # by pair (btcusd), oldest first
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.unavailable = 0                                   # answer the next n requests 503 (maintenance)
        app = web.Application(middlewares=[self._gate])
        app.router.add_get("/api/v2/markets/", self._markets)
        app.router.add_get("/api/v2/ohlc/{pair}/", self._ohlc)
        super().__init__(app)

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.query)))
        if self.unavailable > 0:
            self.unavailable -= 1
            return web.Response(status=503, text="Service Unavailable")
        return await handler(request)

    async def _markets(self, request: web.Request) -> web.Response:
        return web.json_response([self.data["market"]])

    async def _ohlc(self, request: web.Request) -> web.Response:
        q, pair = request.query, request.match_info["pair"]
        if q.get("step") != "60":
            return web.json_response({"status": "error", "reason": "step must be 60 here"}, status=400)
        start, end = int(q.get("start", 0)), int(q.get("end", 2**40))
        rows = [c for c in self.candles.get(pair, []) if start <= int(c["timestamp"]) <= end]
        return web.json_response({"data": {"pair": "BTC/USD", "ohlc": rows[:int(q.get("limit", 1000))]}})

    def ohlc_requests(self) -> list[dict[str, str]]:
        return [query for path, query in self.requests if path.startswith("/api/v2/ohlc/")]


def candle(open_s: int, close: str = "60000", volume: str = "1.5") -> dict[str, str]:
    """An OHLC row (fixture shape) for the minute opening at open_s (seconds)."""
    row = dict(fixture("bitstamp.json")["ohlc_row"])
    row.update(timestamp=str(open_s), open=close, high=str(int(close) + 1), low=str(int(close) - 1), close=close,
               volume=volume)
    return row
