"""Connections to the configured target: the embedded server (started on
demand) or a RisingWave / Materialize endpoint from the environment."""
from __future__ import annotations

import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TypeVar

import psycopg

from tradeflow.config import Settings, remote_conninfo

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")

with warnings.catch_warnings():
    # platformdirs warns about XDG_RUNTIME_DIR on import; irrelevant here
    warnings.simplefilter("ignore")
    from tradeflow.embedded import EmbeddedEngine, EngineInfo


def embedded(settings: Settings) -> EmbeddedEngine:
    return EmbeddedEngine(settings)


def conninfo(settings: Settings, *, start: bool = True) -> dict[str, Any]:
    """Connection parameters for the target; starts the embedded engine if it is down
    (start=False: an OperationalError instead, for daemons that wait for it)."""
    if settings.target == "embedded":
        server = embedded(settings)
        # start=False reads the running server's address and never calls start(): a start
        # waiting for a stop in progress (the engine lock) would start it again
        info = server.start() if start else server.status()
        if info is None:
            raise psycopg.OperationalError("the embedded server is not running")
        # Our prepared statements are the ingesters' multi-row INSERTs: a
        # custom plan per execution of a 5000-row VALUES list costs more than
        # the insert itself.
        return {**info.conninfo(), "options": "-c plan_cache_mode=force_generic_plan"}
    return remote_conninfo(settings.target)


def search_path(schema: str) -> str:
    """The search_path every tradeflow session and reader uses: the deployed schema, then public."""
    return f'"{schema}", public'


def connect(settings: Settings, *, autocommit: bool = True, start: bool = True) -> psycopg.Connection:
    conn = psycopg.connect(**conninfo(settings, start=start), autocommit=autocommit)
    conn.execute(f"SET search_path TO {search_path(settings.schema)}")
    return conn


def publish_search_path(conn: psycopg.Connection, settings: Settings) -> None:
    """Make the deployed schema the database's default search_path, so psql, BI tools
    and Grafana, which connect without setting one, see the views (the embedded
    engine; on the streaming engines the roles script sets it per role)."""
    if settings.target != "embedded":
        return
    conn.execute(f'ALTER DATABASE "{settings.database}" SET search_path TO {search_path(settings.schema)}')


def transactional(settings: Settings) -> bool:
    """Whether the target has multi-statement write transactions and advisory locks
    (the embedded PostgreSQL). RisingWave and Materialize have neither: code that
    needs them asks here, in one place, and documents what it does without."""
    return settings.target == "embedded"


def query_frame(conn: psycopg.Connection, query: Any, params: Sequence[object] = ()) -> "pd.DataFrame":
    """A query's rows as a DataFrame with the query's column names."""
    import pandas as pd

    cur = conn.execute(query, params)
    return pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])


def copy_frame_out(conn: psycopg.Connection, query: str, column_types: dict[str, Any],
                   params: Sequence[object] = ()) -> "pd.DataFrame":
    """A large read as a DataFrame: COPY ... TO STDOUT as CSV, parsed by Arrow, with
    no Python object per value (query_frame builds a tuple per row). column_types:
    Arrow types per column; timestamps should come as epoch microseconds (bigint)."""
    import io

    import pyarrow.csv as pacsv

    buffer = io.BytesIO()
    with conn.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT (FORMAT csv, HEADER)", params or None) as copy:
        for block in copy:
            buffer.write(block)
    buffer.seek(0)
    # NULL is an unquoted empty field in PostgreSQL's CSV, an empty text a quoted one
    return pacsv.read_csv(buffer, convert_options=pacsv.ConvertOptions(
        column_types=column_types, strings_can_be_null=True, quoted_strings_can_be_null=False)).to_pandas()


@contextmanager
def read_scope(conn: psycopg.Connection, settings: Settings, *, as_of: datetime,
               live_bars: int | None = None, live_since: datetime | None = None,
               symbols: Sequence[str] | None = None) -> Iterator[None]:
    """A transaction whose reads see only bars that closed before as_of and,
    with live_bars, only the newest live_bars bars of each symbol with a bar
    since live_since, and with symbols only those symbols' bars (see the
    price_rows macro). The embedded engine computes views on read, so this
    bounds what a read touches; the streaming engines maintain the views and
    need no scope."""
    with conn.transaction():
        if settings.target == "embedded":
            conn.execute(
                "SELECT set_config('tradeflow.as_of', %s, true), set_config('tradeflow.live_bars', %s, true),"
                " set_config('tradeflow.live_since', %s, true), set_config('tradeflow.symbols', %s, true)",
                (as_of.isoformat(), "" if live_bars is None else str(live_bars),
                 "" if live_since is None else live_since.isoformat(),
                 "" if symbols is None else _text_array(symbols)))
        yield


def _text_array(values: Sequence[str]) -> str:
    """A PostgreSQL text[] literal (a setting is text: the macro casts it back)."""
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


class ConnectionPool:
    """Connections of a few threads of their own, kept between calls: `map` runs jobs
    side by side, one connection per thread. The embedded engine runs one query on
    one core: independent reads and bulk writes (one symbol group each, one result
    table each, one timeframe's signals each) use the others. A job that fails
    closes every connection (the next `map` reconnects) and its error is raised."""

    def __init__(self, settings: Settings, workers: int | None = None, *, start: bool = True) -> None:
        """start=False: a connection opened while the embedded server is down fails
        instead of starting it (a daemon's pool: the daemon waits for the server)."""
        self.settings, self._start = settings, start
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._opened: list[psycopg.Connection] = []

    def map(self, jobs: Sequence[Callable[[psycopg.Connection], T]]) -> list[T]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tradeflow-conn")
            self._local = threading.local()
        try:
            return list(self._pool.map(self._run, jobs))
        except BaseException:
            self.close()
            raise

    def _run(self, job: Callable[[psycopg.Connection], T]) -> T:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.settings, start=self._start)
            self._opened.append(conn)
        return job(conn)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for conn in self._opened:
            conn.close()
        self._opened = []

    def __enter__(self) -> "ConnectionPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def in_parallel(settings: Settings, jobs: Sequence[Callable[[psycopg.Connection], T]],
                workers: int | None = None) -> list[T]:
    """Each job run with a connection of its own thread, up to `workers` (default:
    the CPU count) at once; results in the jobs' order (ConnectionPool, for once)."""
    with ConnectionPool(settings, min(workers or os.cpu_count() or 1, len(jobs))) as pool:
        return pool.map(jobs)


def dbt_env(settings: Settings) -> dict[str, str]:
    """Environment under which profiles.yml resolves to this target."""
    env = {
        "TRADEFLOW_TARGET": settings.target,
        "TRADEFLOW_SCHEMA": settings.schema,
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DO_NOT_TRACK": "1",
    }
    if settings.target == "embedded":
        info: EngineInfo = embedded(settings).start()
        env.update(TRADEFLOW_PG_HOST="127.0.0.1", TRADEFLOW_PG_PORT=str(info.port))
    return env


def relation_exists(conn: psycopg.Connection, schema: str, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
        (schema, name),
    ).fetchone()
    return row is not None


__all__ = ["conninfo", "connect", "dbt_env", "embedded", "publish_search_path", "relation_exists", "search_path",
           "EngineInfo"]
