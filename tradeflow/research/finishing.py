"""A sweep's finishing process: each run's write, check against the views, store and metrics
(Backtest._finish) in a Python process of its own, while the sweep replays the next run.

A thread would share the interpreter lock with the replay, and both are mostly Python: on
bench_sweep's 3 x 3 grid they then ran nearly one after the other (the nine replays took 5.8 s
next to a finishing thread, about 3 s alone). The process is started with `python -m` on this
module, not by multiprocessing: a spawned child re-imports the caller's main script (a script
without a `__main__` guard would start the sweep again), and a forked one would inherit the
caller's threads' locks and connections.

One run at a time: the sweep collects a run's result before the next run writes, so a task and
its reply are one pickle each way over the process's stdin and stdout.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

from tradeflow import engine
from tradeflow.research.backtest import Backtest, BacktestError, BacktestResult, BacktestSpec, ReplayOutcome, RunShape


class Finisher:
    def __init__(self, bt: Backtest) -> None:
        # the packages (tradeflow, adapters, ingest) importable as they are here, installed or not
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
        self._process = subprocess.Popen([sys.executable, "-m", "tradeflow.research.finishing"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._send((bt.settings, bt.model_vars))
        self._busy = False

    def start(self, spec: BacktestSpec, shape: RunShape, run_id: str, replay: ReplayOutcome,
              seconds: dict[str, float], tz: str, config: dict[str, Any]) -> None:
        """Finish a run; its result comes from result()."""
        if self._busy:
            raise BacktestError("finishing: the previous run's result was not collected")
        self._send((spec, shape, run_id, replay, seconds, tz, config))
        self._busy = True

    def result(self) -> BacktestResult:
        """The started run's result, or the error its finishing raised."""
        self._busy = False
        try:
            ok, value = pickle.load(self._process.stdout)
        except EOFError:
            raise BacktestError(f"finishing: the process ended (exit code {self._process.wait()});"
                                " its error is on stderr") from None
        if not ok:
            raise value
        return value

    def _send(self, message: tuple) -> None:
        try:
            pickle.dump(message, self._process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._process.stdin.flush()
        except BrokenPipeError:
            raise BacktestError(f"finishing: the process ended (exit code {self._process.wait()});"
                                " its error is on stderr") from None

    def __enter__(self) -> Finisher:
        return self

    def __exit__(self, *exc: object) -> None:
        # end of input ends the process; a result nobody collects (the sweep failed) is not waited for
        if self._busy:
            self._process.kill()
        with contextlib.suppress(BrokenPipeError):  # the process ended first
            self._process.stdin.close()
        self._process.wait()
        self._process.stdout.close()


def _serve() -> None:
    """The process: finish each run read from stdin, reply on stdout, until stdin ends."""
    tasks, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever else writes to stdout goes to stderr, not into the replies
    settings, model_vars = pickle.load(tasks)
    bt = Backtest(settings, model_vars=model_vars)
    # the sweep's process started the engine: this one only connects
    with engine.connect(bt.bt_settings, start=False) as conn:
        while True:
            try:
                spec, shape, run_id, replay, seconds, tz, config = pickle.load(tasks)
            except EOFError:
                return
            try:
                reply: tuple[bool, object] = (True, bt._finish(conn, spec, shape, run_id, replay, seconds, tz=tz,
                                                                config=config))
            except Exception as error:  # noqa: BLE001  (raised again in the sweep's process)
                reply = (False, error)
            try:
                data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:  # noqa: BLE001  (an error that does not pickle goes back as its text)
                data = pickle.dumps((False, BacktestError(f"finishing {run_id}: {reply[1]!r}")))
            replies.write(data)
            replies.flush()


if __name__ == "__main__":
    _serve()
