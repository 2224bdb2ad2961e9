"""The append scenarios, taking turns in the same rounds: ours, the baselines and the peer.

At each batch size and connection count, every scenario of that batch runs ROUNDS times
``duration / ROUNDS`` seconds, in turns, so a slow minute on the shared machine weighs on all
of them alike instead of on one. At batch 1 the turns also hold our appends through a bare
Connection and the peer's plain and conditional appends (on its own database), and the peer's
conditional append on a database set to generic plans (the peer at its best).

Each row also gives the CPU one append costs: on the client (this process, all threads) and on
the server (the client backends of the scenario's database, from ``/proc/<pid>/stat``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import Engine, text

from dcb_store.bench._common import (
    APPEND,
    APPEND_AUTOCOMMIT,
    APPEND_CONDITION,
    APPEND_CONDITION_AUTOCOMMIT,
    APPEND_CONDITION_CONNECTION,
    APPEND_CONNECTION,
    APPEND_LOCK,
    BASELINE,
    SESSION_BASELINE,
    Row,
    Run,
    analyze,
    backend_pids,
    fmt,
    run_threads,
)
from dcb_store.bench.scenarios import append_op, baseline_op, session_baseline_op

if TYPE_CHECKING:
    from dcb_store.bench.peer import Peer

__all__ = ["ROUNDS", "measure_appends", "reset"]

ROUNDS = 3

Make = Callable[[int], Callable[[], int]]


class _Scenario(NamedTuple):
    name: str
    database: str | None  # None: the harness's own database (reset before each run)
    make: Callable[[int], Make]  # batch -> per-thread op maker
    batch_1_only: bool


def reset(engine: Engine) -> None:
    """Empty the benchmark's store and the baseline's table."""
    with engine.begin() as conn:
        conn.execute(text("SELECT dcb.allow_erasure_v1()"))  # the benchmark's own store
        conn.execute(text("TRUNCATE dcb.events, dcb.key_clocks, bench_plain"))


def _scenarios(engine: Engine, peer: Peer | None, tuned: Peer | None) -> list[_Scenario]:
    scenarios = [
        _Scenario(BASELINE, None, lambda b: baseline_op(engine, b), False),
        _Scenario(SESSION_BASELINE, None, lambda b: session_baseline_op(engine, b), False),
        _Scenario(APPEND, None, lambda b: append_op(engine, b, "none"), False),
        _Scenario(APPEND_CONDITION, None, lambda b: append_op(engine, b, "cond"), False),
        _Scenario(APPEND_LOCK, None, lambda b: append_op(engine, b, "lock"), False),
        _Scenario(
            APPEND_CONNECTION,
            None,
            lambda b: append_op(engine, b, "none", on_connection=True),
            True,
        ),
        _Scenario(
            APPEND_CONDITION_CONNECTION,
            None,
            lambda b: append_op(engine, b, "cond", on_connection=True),
            True,
        ),
        _Scenario(
            APPEND_AUTOCOMMIT,
            None,
            lambda b: append_op(engine, b, "none", on_connection=True, autocommit=True),
            True,
        ),
        _Scenario(
            APPEND_CONDITION_AUTOCOMMIT,
            None,
            lambda b: append_op(engine, b, "cond", on_connection=True, autocommit=True),
            True,
        ),
    ]
    if peer is not None:
        from dcb_store.bench.peer import append_scenarios

        for name, make, database in append_scenarios(peer, tuned):

            def at_any_batch(_batch: int, make: Make = make) -> Make:
                return make

            scenarios.append(_Scenario(name, database, at_any_batch, True))
    return scenarios


def _row(name: str, n: int, batch: int, runs: list[Run]) -> Row:
    ops = sum(r.ops for r in runs)
    events = sum(r.events for r in runs)
    elapsed = sum(r.elapsed for r in runs)
    per_op = 1e6 / max(ops, 1)
    server = None if any(r.server_s is None for r in runs) else sum(r.server_s or 0 for r in runs)
    return Row(
        name,
        n,
        batch,
        ops / elapsed,
        events / elapsed,
        client_us_per_op=sum(r.client_s for r in runs) * per_op,
        server_us_per_op=None if server is None else server * per_op,
    )


def measure_appends(
    engine: Engine,
    url: str,
    conns: list[int],
    batches: list[int],
    duration: float,
    log: Callable[[str], None],
    peer: Peer | None = None,
    tuned: Peer | None = None,
) -> list[Row]:
    """Every append scenario per batch and connection count, taking turns in ROUNDS rounds.

    ``url`` is the admin URL of the server (to find the backends whose CPU is measured);
    ``tuned`` the peer on its generic-plans database (its conditional append only).
    """
    ours = engine.url.database or ""
    scenarios = _scenarios(engine, peer, tuned)
    rows = []
    for batch in batches:
        at_batch = [s for s in scenarios if batch == 1 or not s.batch_1_only]
        for n in conns:
            runs: dict[str, list[Run]] = {s.name: [] for s in at_batch}
            for _round in range(ROUNDS):
                for s in at_batch:
                    if s.database is None:
                        reset(engine)
                    database = s.database or ours

                    def backends(database: str = database) -> list[int]:
                        return backend_pids(url, database)

                    runs[s.name].append(run_threads(n, duration / ROUNDS, s.make(batch), backends))
                analyze(url, {s.database or ours for s in at_batch})
            measured = {name: _row(name, n, batch, got) for name, got in runs.items()}
            base = measured[BASELINE].events_per_s
            session_base = measured[SESSION_BASELINE].events_per_s
            for name, row in measured.items():
                row.baseline_events_per_s = base
                if name != BASELINE:
                    row.session_baseline_events_per_s = session_base
                rows.append(row)
                log(fmt(row))
    return rows
