"""The embedded database: the nx-27017 MongoDB wire server on a local SQLite file.

The process runs nx-27017's command handler in st2common.persistence.dbserver's
one-thread loop rather than nx-27017's own servers (see there why).

Used by st2ctl for the zero-setup default and by the test fixtures. Every
instance gets its own pid and log file, because nx-27017's defaults are fixed
paths under /tmp and a second instance would refuse to start.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pymongo
from pymongo.errors import PyMongoError

from st2common.exceptions import DatabaseError
from st2common.util import process
from st2common.util.process import read_pid, stop_pid

LOG = logging.getLogger(__name__)


# A Unix socket's path is limited to 108 bytes on Linux.
_SOCKET_PATH_MAX = 100


def local_socket(run_dir: Path) -> Path | None:
    """Where the embedded server run from run_dir listens locally, or None when the path is too long."""
    path = (Path(run_dir) / "nx-27017.sock").absolute()
    return path if len(os.fsencode(path)) <= _SOCKET_PATH_MAX else None


class EmbeddedMongo:
    """One nx-27017 server process on host:port, storing into db_path."""

    def __init__(self, db_path: Path, port: int, run_dir: Path, host: str = "127.0.0.1") -> None:
        self.db_path = Path(db_path)
        self.port = port
        self.host = host
        self.run_dir = Path(run_dir)
        self.pid_file = self.run_dir / "nx-27017.pid"
        self.log_file = self.run_dir / "nx-27017.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}"

    @property
    def socket_path(self) -> Path | None:
        """The local socket the server also listens on (None where its path is too long for one)."""
        return local_socket(self.run_dir)

    def command(self) -> list[str]:
        """The command line that starts the server in the foreground."""
        return [
            sys.executable, "-m", "st2common.persistence.dbserver",
            "--db", str(self.db_path), "--host", self.host, "--port", str(self.port),
            "--pid-file", str(self.pid_file), "--log-file", str(self.log_file),
        ] + (["--unix-socket", str(self.socket_path)] if self.socket_path is not None else [])

    def start(self, timeout: float = 20.0, stdout=None, die_with_parent: bool = False) -> int:
        """Start the server detached from this process and wait until it answers; returns its pid.

        die_with_parent (Linux): the kernel stops the server when the process that
        started it dies, even by SIGKILL; test runs use it so none is left behind.
        """
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.ping(timeout_ms=300):
            raise DatabaseError(f"something already answers on {self.host}:{self.port}")
        out = stdout if stdout is not None else open(self.run_dir / "nx-27017.out", "ab")
        try:
            self.process = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, close_fds=True,
                preexec_fn=process.die_with_parent(signal.SIGTERM) if die_with_parent else None,
            )
        finally:
            if stdout is None:
                # The child holds its own copy; ours would leak for the process lifetime.
                out.close()
        self.wait_ready(timeout)
        return self.process.pid

    def wait_ready(self, timeout: float) -> None:
        """Wait until the server answers a ping, or raise DatabaseError."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise DatabaseError(
                    f"embedded database exited with code {self.process.returncode}; see {self.log_file}"
                )
            if self.ping(timeout_ms=200):
                return
            time.sleep(0.05)
        raise DatabaseError(f"embedded database did not answer on {self.host}:{self.port} within {timeout:.0f}s")

    def ping(self, timeout_ms: int = 500) -> bool:
        """True when a server answers on host:port."""
        client = pymongo.MongoClient(self.host, self.port, serverSelectionTimeoutMS=timeout_ms,
                                     connectTimeoutMS=timeout_ms)
        try:
            client.admin.command("ping")
            return True
        except PyMongoError:
            return False
        finally:
            client.close()

    def stop(self, grace: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after grace seconds)."""
        pid = self.process.pid if self.process is not None else read_pid(self.pid_file)
        if pid is not None:
            stop_pid(pid, grace)
        if self.process is not None:
            try:
                self.process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        self.pid_file.unlink(missing_ok=True)

