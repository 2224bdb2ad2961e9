"""The SQL the stores run, and how its parameters are built (its rows: ``rows``).

Sync and async stores both call these functions and differ only in how they execute.
Values always travel as parameters; the SQL text is assembled from fixed fragments only.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import TextClause, text

from dcb_store._impl.errors import outcome_error
from dcb_store._impl.stores import DEFAULT, check_schema, render
from dcb_store._validation import check_position, dumps
from dcb_store.conditions import AppendCondition
from dcb_store.errors import InvalidInputError
from dcb_store.events import Event
from dcb_store.limits import MAX_BATCH_EVENTS, MAX_READ_LIMIT
from dcb_store.queries import Query

APPEND = text(
    "SELECT outcome, last_position, conflict_position, lock_wait_ms, detail "
    "FROM dcb.append_v5(CAST(:events AS jsonb), CAST(:locks AS text[]), "
    "CAST(:condition AS jsonb), CAST(:lock_timeout_ms AS integer))"
)

# --- Following (dcb_store.following, dcb_store._impl.replica) --------------------------------
# Before each read a follower asks whether appends are in flight, and whether the server is a
# hot standby (where no safe head can be computed: docs/consistency.md, "Followers on standbys").
FOLLOWER_CHECK = text("SELECT dcb.appends_in_flight_v2(), pg_is_in_recovery()")
# ... and both with the read, in one statement (a follower's poll on the primary: one round trip
# at AUTOCOMMIT). The checks come first: read_v1's argument "after" depends on them, so they
# are the outer side of the join (OFFSET 0 keeps them a subquery of their own), and read_v1's
# statements take their snapshots after its arguments are computed. The read runs only at READ
# COMMITTED (a one-time filter, kept one by its OFFSET 0; without it PostgreSQL made it a join
# filter and ran read_v1 anyway): at AUTOCOMMIT the statement runs at the server's
# default_transaction_isolation, and under a snapshot read_v1 would probe and refuse; the
# follower then polls in a transaction of its own at READ COMMITTED instead.
_RC = "current_setting('transaction_isolation') = 'read committed'"
FOLLOWER_READ = text(
    "SELECT c.in_flight, c.standby, c.rc, r.head, r.position, r.type, r.tags, "
    "CAST(r.data AS text), CAST(r.metadata AS text), r.id, r.recorded_at "
    "FROM (SELECT dcb.appends_in_flight_v2() AS in_flight, pg_is_in_recovery() AS standby, "
    f"{_RC} AS rc OFFSET 0) c "
    "LEFT JOIN LATERAL (SELECT * FROM dcb.read_v1(CAST(:items AS jsonb), "
    "CASE WHEN c.in_flight >= 0 THEN CAST(:after AS bigint) END, :limit, false) "
    "WHERE c.rc OFFSET 0) r ON true"
)
# An idle projection runner's check, before it opens a transaction: is any event after its
# checkpoint (and is this a standby, where the transaction must run to refuse)? At READ
# COMMITTED only, as above.
RUNNER_PEEK = text(
    "SELECT c.standby, c.rc, r.position "
    "FROM (SELECT pg_is_in_recovery() AS standby, "
    f"{_RC} AS rc, "
    "coalesce((SELECT position FROM dcb.checkpoints WHERE name = :n), 0) AS after OFFSET 0) c "
    "LEFT JOIN LATERAL (SELECT * FROM dcb.read_v1(CAST(:items AS jsonb), c.after, 1, false) "
    "WHERE c.rc OFFSET 0) r ON true"
)
IN_RECOVERY = text("SELECT pg_is_in_recovery(), CAST(pg_last_wal_replay_lsn() AS text)")
CHECKPOINT_POSITION = text("SELECT position FROM dcb.checkpoints WHERE name = :n")
CHECKPOINT_ENSURE = text(
    "INSERT INTO dcb.checkpoints (name) VALUES (:n) ON CONFLICT (name) DO NOTHING"
)
# the row lock makes two runners of one name take turns instead of both applying
CHECKPOINT_LOCK = text("SELECT position FROM dcb.checkpoints WHERE name = :n FOR UPDATE")
CHECKPOINT_SAVE = text(
    "UPDATE dcb.checkpoints SET position = :p, updated_at = now() WHERE name = :n"
)
# On the primary: the safe head for the query (a read of no event), then the fence, the WAL
# insert position. The fence is computed per row of read_v1, and read_v1 yields its row only
# after the statement that took the head's snapshot: every commit that snapshot saw wrote its
# commit record before the fence. The *insert* position, not pg_current_wal_lsn() (the write
# position): an asynchronous commit (synchronous_commit=off) is visible once its record is
# inserted, before it is written.
SAFE_HEAD_AND_FENCE = text(
    "SELECT r.head, f.fence, CAST(current_setting('wal_block_size') AS integer), "
    "pg_size_bytes(current_setting('wal_segment_size')) "
    "FROM dcb.read_v1(CAST(:items AS jsonb), 0, 0, false) r "
    "CROSS JOIN LATERAL (SELECT pg_current_wal_insert_lsn() - CAST('0/0' AS pg_lsn) "
    "+ 0 * coalesce(r.head, 0) AS fence) f"
)
# A fence the replica has not reached may lie beyond what the primary has flushed: standbys
# receive flushed WAL only, and WAL that no synchronous commit flushed (an asynchronous commit,
# a reader's page pruning, a non-transactional message) waits for the WAL writer, which may
# sleep for wal_writer_delay or, idle, hibernate. The follower then asks how far the primary has
# flushed and, if short of the fence, commits a transaction that writes one WAL record of its
# own (a transactional logical message, prefix 'dcb_store', allowed to every role) at
# synchronous_commit = on: its commit flushes everything before it. A transaction that only
# takes an id writes no record before its commit and is committed asynchronously.
WAL_FLUSHED = text(
    "SELECT pg_current_wal_flush_lsn() - CAST('0/0' AS pg_lsn) >= CAST(:fence AS numeric)"
)
FLUSH_SYNCHRONOUSLY = text("SET LOCAL synchronous_commit = on")
WRITE_FLUSH_RECORD = text("SELECT pg_logical_emit_message(true, 'dcb_store', 'fence')")
# On the replica: how far it has replayed, then (a later snapshot: read_v1's statements run
# after its arguments are computed) the page, or no event while it is short of the fence.
# A server that is not in recovery (the primary itself) counts its own insert position.
REPLICA_READ = text(
    "SELECT w.replayed, r.head, r.position, r.type, r.tags, CAST(r.data AS text), "
    "CAST(r.metadata AS text), r.id, r.recorded_at "
    "FROM (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
    "ELSE pg_current_wal_insert_lsn() END - CAST('0/0' AS pg_lsn) AS replayed) w "
    "CROSS JOIN LATERAL dcb.read_v1(CAST(:items AS jsonb), :after, "
    "CASE WHEN w.replayed >= CAST(:fence AS numeric) THEN :limit ELSE 0 END, false) r"
)
LOCK_COUNT = text("SELECT dcb.get_advisory_lock_count()")
LOCK_STATS = text("SELECT * FROM dcb.get_advisory_lock_stats()")
# A read is one statement: dcb.read_v1 computes the in-flight cap, then reads in a newer snapshot.
# data and metadata travel as text: decoding it here is cheaper than the driver's jsonb loader.
READ = text(
    "SELECT head, position, type, tags, CAST(data AS text), CAST(metadata AS text), id, "
    "recorded_at FROM dcb.read_v1(CAST(:items AS jsonb), :after, :limit, :backwards)"
)


@dataclass(frozen=True)
class AppendCall:
    """A validated append, ready to execute."""

    params: dict[str, Any]
    after: int | None
    lock_timeout: float | None


def prepare_append(
    events: Event | Iterable[Event],
    condition: AppendCondition | None,
    lock_timeout: float | None,
) -> AppendCall:
    """Validate an append and build its parameters."""
    batch = [events] if isinstance(events, Event) else list(events)
    if not batch:
        raise InvalidInputError("append needs at least one event")
    if len(batch) > MAX_BATCH_EVENTS:
        raise InvalidInputError(
            f"a batch holds at most {MAX_BATCH_EVENTS} events (dcb_store.limits), got {len(batch)}"
        )
    for event in batch:
        if not isinstance(event, Event):
            raise InvalidInputError(f"append takes Event objects, got {type(event).__name__}")
    ids = [e.id for e in batch if e.id is not None]
    if len(set(ids)) != len(ids):
        raise InvalidInputError("a batch carries the same event id more than once")
    if condition is not None and not isinstance(condition, AppendCondition):
        raise InvalidInputError("condition must be an AppendCondition or None")
    payload = [
        {
            "type": e.type,
            "tags": e.stored_tags,
            "data": e.data,
            "metadata": e.metadata,
            "id": None if e.id is None else str(e.id),
        }
        for e in batch
    ]
    locks = sorted({key for e in batch for key in e.lock_keys})
    return AppendCall(
        params={
            "events": dumps(payload),
            "locks": locks,
            "condition": None if condition is None else dumps(condition.to_json()),
            "lock_timeout_ms": timeout_ms(lock_timeout),
        },
        after=None if condition is None else condition.after,
        lock_timeout=lock_timeout,
    )


def timeout_ms(seconds: float | None) -> int | None:
    """A lock timeout in whole milliseconds (at least 1), or None for no library timeout."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise InvalidInputError(
            f"lock_timeout must be a positive number of seconds or None, got {seconds!r}"
        )
    return max(1, round(seconds * 1000))


def append_result(call: AppendCall, row: Sequence[Any], info: dict[str, Any] | None = None) -> int:
    """The last position of a successful append, or the error its outcome stands for.

    ``info`` (the observation attributes) receives ``lock_wait_seconds``.
    """
    outcome, last_position, conflict, lock_wait_ms, detail = row
    if info is not None and lock_wait_ms is not None:
        info["lock_wait_seconds"] = lock_wait_ms / 1000
    if outcome == "00000":
        return int(last_position)
    raise outcome_error(outcome, conflict, call.after, call.lock_timeout, detail)


@dataclass(frozen=True)
class ReadCall:
    """A validated read, ready to execute as :data:`READ`."""

    params: dict[str, Any]
    limit: int | None
    backwards: bool


def check_batch_size(batch_size: int) -> None:
    """A stream's page size: a positive int, at most a read's largest limit."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive int, got {batch_size!r}")
    if batch_size > MAX_READ_LIMIT:
        raise InvalidInputError(f"batch_size must be at most {MAX_READ_LIMIT}, got {batch_size}")


def prepare_read(
    query: Query | None, after: int | None, limit: int | None, backwards: bool
) -> ReadCall:
    """Validate a read and build its parameters."""
    query = Query.all() if query is None else query
    if not isinstance(query, Query):
        raise InvalidInputError("query must be a Query or None")
    check_position(after, "after")
    check_position(limit, "limit")
    if limit is not None and limit > MAX_READ_LIMIT:
        raise InvalidInputError(f"limit must be at most {MAX_READ_LIMIT}, got {limit}")
    params = {
        "items": dumps(query.to_json()),
        "after": after or 0,
        "limit": limit,
        "backwards": bool(backwards),
    }
    return ReadCall(params, limit, bool(backwards))


def read_attributes(call: ReadCall) -> dict[str, Any]:
    """The attributes a read hands to the observation hooks (dcb_store.observing)."""
    return {"limit": -1 if call.limit is None else call.limit, "backwards": call.backwards}


# Grants (dcb_store.roles): the statements that leave a role with exactly one kind's privileges.
# dcb_store.roles composes them with psycopg.sql: ``{role}`` as an identifier, ``{function}`` as
# a signature of roles.READ_FUNCTIONS / APPEND_FUNCTIONS (fixed text, never a caller's value).
GRANT_RESET = (  # every kind: revoke what the role held in the schema, then grant reading
    "REVOKE ALL ON ALL TABLES IN SCHEMA dcb FROM {role}",
    "REVOKE ALL ON ALL SEQUENCES IN SCHEMA dcb FROM {role}",
    "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA dcb FROM {role}",
    "GRANT USAGE ON SCHEMA dcb TO {role}",
    "GRANT SELECT ON dcb.events TO {role}",
)
GRANT_CHECKPOINTS = "GRANT SELECT, INSERT, UPDATE ON dcb.checkpoints TO {role}"  # runner, writer
GRANT_EXECUTE = "GRANT EXECUTE ON FUNCTION dcb.{function} TO {role}"


@dataclass(frozen=True)
class Statements:
    """The statements of one store (:func:`for_schema`)."""

    APPEND: TextClause
    FOLLOWER_CHECK: TextClause
    FOLLOWER_READ: TextClause
    RUNNER_PEEK: TextClause
    CHECKPOINT_POSITION: TextClause
    CHECKPOINT_ENSURE: TextClause
    CHECKPOINT_LOCK: TextClause
    CHECKPOINT_SAVE: TextClause
    SAFE_HEAD_AND_FENCE: TextClause
    REPLICA_READ: TextClause
    LOCK_COUNT: TextClause
    LOCK_STATS: TextClause
    READ: TextClause
    GRANT_RESET: tuple[str, ...]
    GRANT_CHECKPOINTS: str
    GRANT_EXECUTE: str


@functools.cache
def for_schema(schema: str = DEFAULT) -> Statements:
    """The statements of the store in ``schema``: for ``dcb`` this module's own objects.

    One object per store and statement, so the driver path's cache (per statement) holds.
    """
    names = Statements.__dataclass_fields__
    if check_schema(schema) == DEFAULT:
        return Statements(**{name: globals()[name] for name in names})
    values: dict[str, Any] = {}
    for name in names:
        value = globals()[name]
        if isinstance(value, TextClause):
            values[name] = text(render(value.text, schema))
        elif isinstance(value, tuple):
            values[name] = tuple(render(v, schema) for v in value)
        else:
            values[name] = render(value, schema)
    return Statements(**values)
