"""Killed connections, the listener's connection arguments, bench's target (issue 13, item 7).

Connections are killed with pg_terminate_backend from another session, as a DBA or a failover
would; each client is found by an application_name of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from dcb_store import DcbStoreError, Event, EventStore, ProjectionRunner, subscribe
from dcb_store.cli import main
from dcb_store.errors import ConnectionLostError


def _named(url: str, name: str) -> Engine:
    return create_engine(url, connect_args={"options": f"-c application_name={name}"})


def _kill(engine: Engine, name: str) -> int:
    with engine.connect() as conn:
        killed = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :n"
            ),
            {"n": name},
        ).scalar_one()
        conn.commit()
    return int(killed)


def _append(engine: Engine, n: int, start: int = 0) -> None:
    with Session(engine) as s:
        EventStore(s).append([Event("E", {"i": start + i}, ["t:1"]) for i in range(n)])
        s.commit()


def test_the_listener_connects_with_the_engines_connect_args(
    engine: Engine, fresh_db_url: str
) -> None:
    name = f"dcb13-listen-{uuid.uuid4().hex[:6]}"
    follower = _named(fresh_db_url, name)
    _append(engine, 1)
    sub = subscribe(follower, poll_interval=0.2)
    next(sub)
    with engine.connect() as conn:
        listening = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = :n "
                "AND query LIKE 'LISTEN%'"
            ),
            {"n": name},
        ).scalar_one()
    sub.close()
    follower.dispose()
    assert listening == 1


def test_a_killed_connection_is_a_dcb_store_error_everywhere(
    engine: Engine, fresh_db_url: str
) -> None:
    name = f"dcb13-kill-{uuid.uuid4().hex[:6]}"
    victim = _named(fresh_db_url, name)
    _append(engine, 2)
    with Session(victim) as s:
        EventStore(s).read()
        assert _kill(engine, name) == 1
        with pytest.raises(ConnectionLostError):
            EventStore(s).read()
    sub = subscribe(victim, poll_interval=0.2, reconnect=False)
    next(sub)
    _kill(engine, name)
    with pytest.raises(ConnectionLostError):  # the in-flight check first, then the read
        list(sub)
    sub.close()
    runner = ProjectionRunner(victim, "p", lambda s, e: None, batch_size=1)
    runner.run_once()
    _kill(engine, name)
    with pytest.raises(DcbStoreError):
        runner.run_once()
    victim.dispose()


def test_a_subscription_reconnects_without_skipping_or_repeating(
    engine: Engine, fresh_db_url: str
) -> None:
    name = f"dcb13-follow-{uuid.uuid4().hex[:6]}"
    follower = _named(fresh_db_url, name)
    _append(engine, 5)
    sub = subscribe(follower, batch_size=3, poll_interval=0.2, busy_interval=0.01)
    seen: list[int] = []

    def follow() -> None:
        for event in sub:
            seen.append(event.position)
            if len(seen) == 50:
                sub.stop()

    thread = threading.Thread(target=follow)
    thread.start()
    killed = 0
    for round_ in range(9):
        time.sleep(0.15)
        killed += _kill(engine, name)
        _append(engine, 5, start=5 * (round_ + 1))
    thread.join(30)
    sub.close()
    assert seen == list(range(1, 51)) and killed >= 9
    # the read's own connection lost (the listener does not know yet): read again, once
    again = subscribe(follower, after=50, poll_interval=0.2)
    _append(engine, 1, start=50)
    assert next(again).position == 51
    assert _kill(engine, name) == 2  # its reader (idle in the pool) and its listener
    _append(engine, 1, start=51)
    assert next(again).position == 52 and again.reconnects == 1
    again.close()
    follower.dispose()


def test_tail_reconnects_after_a_killed_connection(engine: Engine, fresh_db_url: str) -> None:
    name = f"dcb13-tail-{uuid.uuid4().hex[:6]}"
    _append(engine, 3)
    env = {**os.environ, "PGAPPNAME": name, "DATABASE_URL": fresh_db_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dcb_store.cli", "tail", "--count", "6", "--poll", "0.2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _count_backends(engine, name) < 2:
            time.sleep(0.1)  # the follower's reader and listener are connected
        time.sleep(0.3)
        assert _kill(engine, name) >= 1
        _append(engine, 3, start=3)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    positions = [int(line.split()[0]) for line in out.splitlines()]
    assert positions == [1, 2, 3, 4, 5, 6], (out, err)


def _count_backends(engine: Engine, name: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :n"),
                {"n": name},
            ).scalar_one()
        )


def test_bench_needs_an_explicit_target(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # DATABASE_URL names a server the benchmark must not touch (it drops databases there)
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/precious")
    assert main(["bench", "--quick", "--no-peer", "--out", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "--url" in error and "--embedded" in error and len(error.strip().splitlines()) == 1
    assert main(["--url", "postgresql://x@127.0.0.1:1/x", "bench", "--embedded"]) == 1
    assert "not both" in capsys.readouterr().err
