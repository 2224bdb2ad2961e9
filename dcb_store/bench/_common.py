"""What the benchmark harness and the peer comparison share: rows, threads, scenario names.

A leaf module: it imports nothing else of ``dcb_store.bench``, so the harness, the scenarios,
the report and the peer can all build on it without importing each other.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

__all__ = [
    "APPEND",
    "APPEND_CONDITION",
    "APPEND_CONDITION_CONNECTION",
    "APPEND_CONNECTION",
    "APPEND_LOCK",
    "BASELINE",
    "CONTENDED",
    "DECISION_MODEL",
    "PEER",
    "PEER_APPEND",
    "PEER_APPEND_CONDITION",
    "PEER_READ_ONE_TAG",
    "READ_ONE_TAG",
    "SESSION_BASELINE",
    "STREAM_ALL",
    "WARM_UP_READS",
    "Row",
    "fmt",
    "percentile_ms",
    "recreate_database",
    "run_threads",
    "settle",
]

# The scenarios, as the rows, the JSON and the plot name them.
BASELINE = "plain INSERT+COMMIT"
SESSION_BASELINE = "INSERT+COMMIT via Session"
APPEND = "append"
APPEND_CONDITION = "append + condition"
APPEND_LOCK = "append + condition + lock: tags"
APPEND_CONNECTION = "append (Connection)"
APPEND_CONDITION_CONNECTION = "append + condition (Connection)"
CONTENDED = "contended (one tag)"
DECISION_MODEL = "decision model (3 projections)"
READ_ONE_TAG = "read one tag's 10 events"
STREAM_ALL = "stream all events (pages of 5,000)"
PEER = "peer: "  # the prefix of the peer library's scenarios
PEER_APPEND = PEER + "eventsourcing append"
PEER_APPEND_CONDITION = PEER_APPEND + " + condition"
PEER_READ_ONE_TAG = PEER + READ_ONE_TAG


@dataclass
class Row:
    """One measured scenario."""

    scenario: str
    connections: int
    batch: int
    ops_per_s: float
    events_per_s: float
    baseline_events_per_s: float | None = None
    conflict_rate: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    session_baseline_events_per_s: float | None = None

    @property
    def ratio(self) -> float | None:
        """Events/s relative to the plain INSERT+COMMIT baseline (bare driver)."""
        if not self.baseline_events_per_s:
            return None
        return self.events_per_s / self.baseline_events_per_s

    @property
    def session_ratio(self) -> float | None:
        """Events/s relative to the same INSERT+COMMIT run through a SQLAlchemy Session."""
        if not self.session_baseline_events_per_s:
            return None
        return self.events_per_s / self.session_baseline_events_per_s


def run_threads(
    n: int, duration: float, make_op: Callable[[int], Callable[[], int]]
) -> tuple[int, int, float]:
    """Run ``n`` threads for ``duration`` s; each op returns events written (0 = conflict)."""
    ops = [0] * n
    events = [0] * n
    conflicts = [0] * n
    barrier = threading.Barrier(n + 1)
    stop = threading.Event()

    def worker(i: int) -> None:
        op = make_op(i)
        barrier.wait()
        while not stop.is_set():
            written = op()
            ops[i] += 1
            if written:
                events[i] += written
            else:
                conflicts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    time.sleep(duration)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return sum(ops), sum(events), elapsed


#: Reads made and not timed before latencies are recorded (plans cached, connection warm).
WARM_UP_READS = 50


def settle(engine: Engine) -> None:
    """VACUUM (ANALYZE) a freshly loaded database, then CHECKPOINT when allowed.

    Reads are then timed in a steady state (hint bits and the visibility map set, statistics
    current, no checkpoint of the load in the middle), the same for this library and the peer.
    """
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE)"))
        with contextlib.suppress(DBAPIError):  # a role without pg_checkpoint settles without
            conn.execute(text("CHECKPOINT"))


def percentile_ms(seconds: list[float], fraction: float) -> float:
    """The ``fraction`` percentile of latencies in seconds, in milliseconds (3 decimals)."""
    ordered = sorted(seconds)
    return round(ordered[int(len(ordered) * fraction)] * 1000, 3)


def recreate_database(url: str, name: str) -> None:
    """Drop (forcing its sessions out) and create the database ``name`` on the server at ``url``."""
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


def fmt(row: Row) -> str:
    """One row as a line of the table printed while the benchmark runs."""
    ratio = f"{row.ratio:6.0%}" if row.ratio is not None else "     -"
    if row.session_ratio is not None:
        ratio += f" (via Session {row.session_ratio:4.0%})"
    conflict = f"{row.conflict_rate:5.0%}" if row.conflict_rate is not None else "    -"
    extra = " ".join(f"{k}={v}" for k, v in row.extra.items())
    return (
        f"{row.scenario:<38} conns={row.connections:>2} batch={row.batch:>4} "
        f"{row.ops_per_s:9.0f} ops/s {row.events_per_s:9.0f} ev/s  "
        f"vs baseline {ratio}  conflicts {conflict} {extra}"
    )
