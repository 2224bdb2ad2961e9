"""The peer comparison: the same workloads through ``eventsourcing``'s PostgreSQL DCB recorder.

The recorder is ``PostgresDCBRecorderTT``, on the same server, in a database of its own.

Shared workloads: one-event appends with and without a condition on a unique tag, at each
connection count (they take turns with this library's appends, in the harness's rounds), and
reading one tag's 10 events. The conditional append also runs on a second database of the
peer's, set to ``plan_cache_mode = force_generic_plan``: the peer at its best. The peer owns its
connections and transactions (one pool connection per thread here).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

from sqlalchemy import create_engine, make_url

from dcb_store.bench import _common as common
from dcb_store.bench._common import Row

__all__ = [
    "PEER_DB",
    "PEER_GENERIC_DB",
    "Peer",
    "append_op",
    "append_scenarios",
    "measure_peer_reads",
    "open_peer",
    "open_recorder",
]

PEER_DB = "dcb_store_bench_peer"
PEER_GENERIC_DB = "dcb_store_bench_peer_generic"  # the peer's database at its best


def open_recorder(url: str, dbname: str, pool_size: int) -> tuple[Any, Any]:
    """The peer's recorder on database ``dbname`` of the server at ``url``, its table created.

    Also returns the datastore that holds its connections: close it when done.
    """
    from eventsourcing.dcb.postgres_tt import PostgresDCBRecorderTT
    from eventsourcing.postgres import PostgresDatastore

    u = make_url(url)
    datastore = PostgresDatastore(
        dbname=dbname,
        host=str(u.host or u.query.get("host") or "localhost"),
        port=u.port or 5432,
        user=u.username or "postgres",
        password=u.password or "",
        pool_size=pool_size,
        max_overflow=0,
    )
    recorder = PostgresDCBRecorderTT(datastore, events_table_name="peer")
    recorder.create_table()
    return recorder, datastore


def append_op(recorder: Any, conditional: bool) -> Callable[[], int]:
    """One peer append of one event with a unique tag (conditional on that tag when asked).

    The op returns the events written: 1, or 0 when the peer refused the condition.
    """
    from eventsourcing.dcb.api import DCBAppendCondition, DCBEvent, DCBQuery, DCBQueryItem
    from eventsourcing.persistence import IntegrityError

    def op() -> int:
        tag = f"s:{uuid.uuid4()}"
        query = DCBQuery([DCBQueryItem(tags=[tag])])
        condition = DCBAppendCondition(query) if conditional else None
        try:
            recorder.append([DCBEvent(type="Registered", data=b'{"x": 1}', tags=[tag])], condition)
        except IntegrityError:
            return 0
        return 1

    return op


class Peer(NamedTuple):
    """The peer's recorder on its own database, and the datastore to close when done."""

    recorder: Any
    datastore: Any
    database: str


def open_peer(
    url: str,
    pool_size: int,
    log: Callable[[str], None],
    *,
    database: str = PEER_DB,
    generic_plans: bool = False,
) -> Peer | None:
    """The peer on a fresh database, or None (with a note) when it is not installed.

    ``generic_plans``: the database set to ``plan_cache_mode = force_generic_plan`` before the
    recorder connects. The peer's conditional check (a statement with parameters in a PL/pgSQL
    function) is otherwise planned again on every call once its tables are analyzed; with the
    setting it costs about a third of the server CPU (docs/performance.md, round six).
    """
    try:
        import eventsourcing.dcb.postgres_tt  # noqa: F401  (is the peer installed?)
    except ImportError:
        log(
            "peer: eventsourcing[postgres] is not installed; its rows are skipped "
            "(pip install 'eventsourcing[postgres]')"
        )
        return None
    settings = {"plan_cache_mode": "force_generic_plan"} if generic_plans else None
    common.recreate_database(url, database, settings=settings)
    peer = Peer(*open_recorder(url, database, pool_size), database)
    _seed(peer.recorder)
    common.analyze(url, [database])
    return peer


#: Events in each of the peer's stores before anything is timed.
SEEDED = 10_000


def _seed(recorder: Any) -> None:
    """SEEDED events with a tag each, so that the peer's plans are those of a store in use.

    Its generic plans are made from the statistics of the table: made on a table of a few
    hundred rows (after the harness's first round), its conditional check scanned the table
    and cost three times the server CPU of the same check after the next ANALYZE.
    """
    from eventsourcing.dcb.api import DCBEvent

    for start in range(0, SEEDED, 1000):
        recorder.append(
            [DCBEvent("Seeded", b"{}", [f"seed:{i}"]) for i in range(start, start + 1000)]
        )


def append_scenarios(
    peer: Peer, tuned: Peer | None = None
) -> list[tuple[str, Callable[[int], Callable[[], int]], str]]:
    """The peer's one-event appends: (row name, per-thread op maker, database).

    Plain and conditional on ``peer``; conditional on ``tuned`` (its generic-plans database)
    as well when given.
    """

    def make(recorder: Any, conditional: bool) -> Callable[[int], Callable[[], int]]:
        return lambda _i: append_op(recorder, conditional)

    scenarios = [
        (common.PEER_APPEND, make(peer.recorder, False), peer.database),
        (common.PEER_APPEND_CONDITION, make(peer.recorder, True), peer.database),
    ]
    if tuned is not None:
        scenarios.append(
            (common.PEER_APPEND_CONDITION_GENERIC, make(tuned.recorder, True), tuned.database)
        )
    return scenarios


def measure_peer_reads(
    peer: Peer, url: str, n_events: int, log: Callable[[str], None]
) -> list[Row]:
    """Reading one tag's 10 events of a store of the same shape, seeded through the peer."""
    from eventsourcing.dcb.api import DCBEvent, DCBQuery, DCBQueryItem

    recorder = peer.recorder
    rows: list[Row] = []
    # Reads: a store of the same shape, seeded through the peer's own API (batches of 1,000).
    size = min(n_events, 100_000)
    tags = max(1, size // 10)
    for start in range(0, size, 1000):
        recorder.append(
            [
                DCBEvent("Seeded", b"{}", [f"entity:{i % tags}"])
                for i in range(start, min(size, start + 1000))
            ]
        )
    peer_engine = create_engine(make_url(url).set(database=peer.database))
    common.settle(peer_engine)
    peer_engine.dispose()
    for _ in range(common.WARM_UP_READS):
        list(recorder.read(DCBQuery([DCBQueryItem(tags=[f"entity:{random.randrange(tags)}"])])))
    latencies = []
    for _ in range(300):
        tag = f"entity:{random.randrange(tags)}"
        started = time.perf_counter()
        got = list(recorder.read(DCBQuery([DCBQueryItem(tags=[tag])])))
        latencies.append(time.perf_counter() - started)
        assert len(got) == 10
    rows.append(
        Row(
            common.PEER_READ_ONE_TAG,
            1,
            10,
            300 / sum(latencies),
            3000 / sum(latencies),
            extra={
                "p50_ms": common.percentile_ms(latencies, 0.5),
                "p99_ms": common.percentile_ms(latencies, 0.99),
                "store_events": size,
            },
        )
    )
    log(common.fmt(rows[-1]))
    return rows
