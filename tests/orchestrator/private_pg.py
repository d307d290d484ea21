"""A private PostgreSQL cluster a test may stop and start (never the shared server at :5432)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from attrs import define

READY_DEADLINE_S = 60.0


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def available() -> str | None:
    """Why a private cluster cannot be made here, or None if it can."""
    if _bin_dir() is None:
        return "no PostgreSQL server binaries under /usr/lib/postgresql"
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return "making a private cluster needs root and runuser (to run as postgres)"
    return None


@define
class PrivateCluster:
    """One cluster in a temporary directory owned by ``postgres``, on a free port."""

    directory: Path
    port: int

    @property
    def uri(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, *args: str) -> None:
        bin_dir = _bin_dir()
        assert bin_dir is not None
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(bin_dir / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            timeout=READY_DEADLINE_S,
        )

    @classmethod
    def create(cls) -> PrivateCluster:
        directory = Path(tempfile.mkdtemp(prefix="databuild-pg-"))
        shutil.chown(directory, "postgres", "postgres")
        cluster = cls(directory, _free_port())
        cluster._pg("initdb", "-A", "trust", "-U", "postgres", "-D", str(directory / "data"))
        cluster.start()
        return cluster

    def start(self) -> None:
        """Start the server and wait (with a deadline) until it takes connections."""
        self._pg(
            "pg_ctl", "-D", str(self.directory / "data"), "-l", str(self.directory / "log"),
            "-o", f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1",
            "-w", "-t", str(int(READY_DEADLINE_S)), "start",
        )
        end = time.monotonic() + READY_DEADLINE_S
        while not self.ready():
            assert time.monotonic() < end, f"PostgreSQL on port {self.port} did not come up"
            time.sleep(0.05)

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
        except OSError:
            return False
        bin_dir = _bin_dir()
        assert bin_dir is not None
        return subprocess.run(
            [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            timeout=READY_DEADLINE_S,
        ).returncode == 0

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (``immediate``: as if it crashed) and wait until it is gone."""
        self._pg("pg_ctl", "-D", str(self.directory / "data"), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self.stop("fast")
        shutil.rmtree(self.directory, ignore_errors=True)
