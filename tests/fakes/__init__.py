"""Local fake venues on 127.0.0.1 that speak each venue's documented protocol
(shapes in tests/fixtures/venues/), for the SDKs to be pointed at."""
from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any, Coroutine

from aiohttp import web

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "venues"


def fixture(name: str) -> dict[str, Any]:
    data = json.loads((FIXTURES / name).read_text())
    data.pop("_source", None)
    return data


class FakeServer:
    """An aiohttp app served from its own thread and event loop on 127.0.0.1:<free port>."""

    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        self._app = app
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake venue did not start")

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._runner = web.AppRunner(self._app)
        self.loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def run(self, coro: Coroutine) -> Any:
        """Run a coroutine on the server's loop from the test's thread, and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def stop(self) -> None:
        self.run(self._runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
