"""The HTTP side of a tradeflow process, served from a background thread:

    /metrics       a Prometheus registry (prometheus_client's own WSGI app:
                   content negotiation, gzip, ?name[]= filters)
    /health/live   200 while the process serves at all
    /health/ready  200 once every readiness check passes, else 503; the JSON
                   body lists each check and the failing ones
    /health        the same as /health/ready

A check is a callable returning true when it passes; one that raises fails,
with the error in the body. Bootstrap turns start-up steps into such checks.
"""
from __future__ import annotations

import json
import threading
from socketserver import ThreadingMixIn
from typing import Callable, Iterable, Mapping
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

Check = Callable[[], bool]


class Bootstrap:
    """Named start-up steps; each passes once the process marks it passed, for good."""

    def __init__(self, *steps: str) -> None:
        self._done = {step: threading.Event() for step in steps}

    def passed(self, step: str) -> None:
        self._done[step].set()

    @property
    def checks(self) -> dict[str, Check]:
        return {step: done.is_set for step, done in self._done.items()}


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scrape never holds up the process's exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Probes come every few seconds: no access log."""


class HealthServer:
    def __init__(self, registry: CollectorRegistry, port: int, *, addr: str = "127.0.0.1",
                 checks: Mapping[str, Check] | None = None, on_stop: Callable[[], None] | None = None) -> None:
        self.checks = dict(checks or {})
        self._on_stop = on_stop
        self._metrics = make_wsgi_app(registry)
        self._httpd = make_server(addr, port, self._app, server_class=_Server, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=f"health:{self.port}", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._httpd.server_port

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def readiness(self) -> tuple[bool, dict[str, object]]:
        results = {name: _run(check) for name, check in self.checks.items()}
        failing = [name for name, result in results.items() if result != "ok"]
        return not failing, {"ready": not failing, "checks": results, "failing": failing}

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        if self._on_stop is not None:
            self._on_stop()

    def __enter__(self) -> HealthServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _app(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics(environ, start_response)
        if path == "/health/live":
            return _json(start_response, "200 OK", {"live": True})
        if path in {"/health", "/health/ready"}:
            ready, body = self.readiness()
            return _json(start_response, "200 OK" if ready else "503 Service Unavailable", body)
        return _json(start_response, "404 Not Found", {"error": f"{path}: try /metrics, /health, /health/live, /health/ready"})


def _run(check: Check) -> str:
    try:
        return "ok" if check() else "not yet"
    except Exception as exc:  # a probe must answer: the failure is the answer
        return f"error: {type(exc).__name__}: {exc}"


def _json(start_response: Callable, status: str, body: dict[str, object]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


__all__ = ["Bootstrap", "Check", "HealthServer"]
