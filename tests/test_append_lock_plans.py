"""append_v5 since revision 0009 takes the locks, marker and traces revision 0008's body took.

Revision 0009 replaced append_v5's body: the in-flight marker reads its sequence through a
function and takes its lock in expressions, and a transaction's first append inserts its trace
rows without ON CONFLICT. Appends of both bodies (and of append_v3 and append_v4) must keep
serializing with each other: the same keys in the same modes, one marker, the same trace rows,
the same outcome and, on a lock timeout, the same ``detail``. Each random case runs through
both bodies in turn, each in a transaction that is rolled back, with real and with colliding
lock keys (a 2-bit hash: names share keys, so the merge of modes and the least name of a key
are exercised); a second append in the same transaction takes the ON CONFLICT path.

Revision 0011 replaced it again: an append of one event without an id or lock: tags tries its
keys one by one instead of planning them (the sorted plan when one is not free). Half the
random cases have no lock: tags, so that path is compared on the same terms.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

from dcb_store import (
    AppendCondition,
    ConcurrencyError,
    DeadlockError,
    Event,
    EventStore,
    Query,
    _sql,
)
from tests.concurrency import race, run_unit

TAGS = ["a", "b", "B", "course:c1", "student:s7", "é", "x" * 40, "lock-ish", "z"]
TYPES = ["Registered", "Enrolled", "Left"]
CALL = (
    "SELECT outcome, last_position, conflict_position, detail FROM dcb.{fn}("
    "CAST(:events AS jsonb), CAST(:locks AS text[]), CAST(:condition AS jsonb), :timeout)"
)
# advisory locks of the key space (top byte 0xDC) and the marker space (0xDD), this backend's
LOCKS = """
SELECT (l.classid::bigint << 32) | l.objid::bigint AS key, l.mode
  FROM pg_locks l
 WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.pid = pg_backend_pid()
"""
TRACES = "SELECT key FROM dcb.append_traces WHERE xid = pg_current_xact_id() ORDER BY key"
FIRST = "SELECT min(first_position) FROM dcb.append_traces WHERE xid = pg_current_xact_id()"
HOLD = (
    "SELECT {fn}((k >> 32)::bit(32)::int, k::bit(32)::int) "
    "FROM (SELECT dcb.lock_key_v2('t:' || t) AS k FROM unnest(CAST(:t AS text[])) t) s"
)
KEY_SPACE, MARKER_SPACE = -36, -35  # top bytes 0xDC and 0xDD, signed


def _install_revision_8_body(engine: Engine) -> None:
    body = _sql.replacing("v8_append.sql", "dcb.append_v5(")
    body = body.replace("dcb.append_v5(", "dcb.append_v5_r8(", 1)
    with engine.begin() as conn:
        conn.execute(text(body))


def _case(rng: random.Random) -> dict[str, Any]:
    def tags(most: int) -> list[str]:
        return rng.sample(TAGS, rng.randint(0, min(most, len(TAGS))))

    big = rng.random() < 0.15  # past the 16 names of the expression path
    events = []
    for _ in range(rng.choice([1, 1, 1, 2, 3] if not big else [6, 8])):
        event: dict[str, Any] = {"type": rng.choice(TYPES), "tags": tags(4), "data": {}}
        if big:
            event["tags"] = [f"{t}:{rng.randrange(1000)}" for t in tags(4)]
        if rng.random() < 0.2:
            event["id"] = str(uuid.uuid4())
        events.append(event)
    condition = None
    if rng.random() < 0.6:
        items = [
            {"tags": tags(2), "types": rng.sample(TYPES, rng.randint(0, 1))}
            for _ in range(rng.randint(1, 3))
        ]
        condition = {"items": items, "after": 10**12}  # never fails: nothing is above it
    lock_tags = tags(2) if rng.random() < 0.5 else []  # none: revision 0011's tried locks
    locks = "{" + ",".join(f'"{t}"' for t in lock_tags) + "}"
    return {
        "events": json.dumps(events),
        "locks": locks,
        "condition": None if condition is None else json.dumps(condition),
        "timeout": None,
        "second": rng.random() < 0.3,
    }


def _observe(conn: Connection, fn: str, case: dict[str, Any]) -> tuple[Any, ...]:
    with conn.begin():
        if case.get("second"):  # the transaction's id and first trace rows exist already
            first = [{k: v for k, v in e.items() if k != "id"} for e in json.loads(case["events"])]
            conn.execute(
                text(CALL.format(fn=fn)),
                {**case, "events": json.dumps(first), "condition": None, "locks": "{}"},
            )
        outcome, last, conflict, detail = conn.execute(text(CALL.format(fn=fn)), case).one()
        held = conn.execute(text(LOCKS)).all()
        keys = sorted((k, mode) for k, mode in held if k >> 56 == KEY_SPACE)
        markers = [k for k, _mode in held if k >> 56 == MARKER_SPACE]
        traces = conn.execute(text(TRACES)).scalars().all()
        first = conn.execute(text(FIRST)).scalar()
        conn.rollback()
    # positions differ between the two runs (the sequence is not rolled back): compare shapes
    return (outcome, last is None, conflict, detail, keys, len(markers), traces, first is None)


def _compare(engine: Engine, cases: int, seed: int) -> int:
    rng = random.Random(seed)
    compared = 0
    with engine.connect() as conn:
        for _ in range(cases):
            case = _case(rng)
            new = _observe(conn, "append_v5", case)
            old = _observe(conn, "append_v5_r8", case)
            assert new == old, (case, new, old)
            assert new[5] == 1, "one marker"
            compared += new[0] == "00000"
    return compared


def test_the_usual_append_takes_what_revision_8_took(engine: Engine) -> None:
    _install_revision_8_body(engine)
    assert _compare(engine, 300, seed=9) > 250


def test_colliding_keys_merge_as_revision_8_merged_them(colliding_engine: Engine) -> None:
    _install_revision_8_body(colliding_engine)
    assert _compare(colliding_engine, 200, seed=10) > 150


def test_one_event_appends_taking_each_others_keys_never_deadlock(engine: Engine) -> None:
    """Since revision 0011 a one-event append tries its keys in no particular order, none
    waiting, and takes the sorted plan when one is not free. Here each append takes exclusive
    (its condition) a key that others write shared, and writes keys that others take
    exclusive: taking the tried keys by waiting for each deadlocks within a round or two."""
    keys: list[str] = []

    def make_work(_i: int):  # type: ignore[no-untyped-def]
        rng = random.Random()
        decided = rng.choice(keys)
        written = rng.sample([k for k in keys if k != decided], 2)

        def work(store: EventStore, _session: Any) -> None:
            store.append(Event("E", tags=written), AppendCondition(Query.of(tags=[decided])))

        return lambda: run_unit(engine, "READ COMMITTED", work)

    for _ in range(8):
        keys[:] = [f"k:{uuid.uuid4()}" for _ in range(4)]  # unseen: the first decisions commit
        outcome = race(12, make_work)
        assert not [e for e in outcome.errors if isinstance(e, DeadlockError)]
        assert not outcome.errors, outcome.errors
        assert outcome.commits >= 1


@pytest.mark.parametrize("colliding", [False, True])
def test_a_timed_out_usual_append_names_what_revision_8_named(
    request: pytest.FixtureRequest, colliding: bool
) -> None:
    """A timed-out append names the same held keys (with colliding keys: each by the least of
    its names)."""
    engine: Engine = request.getfixturevalue("colliding_engine" if colliding else "engine")
    _install_revision_8_body(engine)
    rng = random.Random(11)
    with engine.connect() as holder, engine.connect() as conn, holder.begin():
        # exclusive holds on some tags, shared on others: every conflicting mode appears
        holder.execute(text(HOLD.format(fn="pg_advisory_xact_lock")), {"t": TAGS[:4]})
        holder.execute(text(HOLD.format(fn="pg_advisory_xact_lock_shared")), {"t": TAGS[4:6]})
        timed_out = 0
        for _ in range(60):
            case = _case(rng) | {"timeout": 20}
            new = _observe(conn, "append_v5", case)
            old = _observe(conn, "append_v5_r8", case)
            assert new[:4] == old[:4], (case, new, old)
            timed_out += new[0] == "55P03"
        holder.rollback()
    assert timed_out > 10


def test_trace_rows_restored_from_another_server_do_not_fail_appends(engine: Engine) -> None:
    """A store restored from a dump onto a server whose transaction ids have not yet reached the
    dumped trace rows' ids: the transactions that get those ids still append (a draft of
    revision 0009 inserted a transaction's first trace rows without ON CONFLICT and failed
    them with a unique violation; found by an adversarial review)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO dcb.append_traces (xid, key, first_position) "
                "SELECT (pg_current_xact_id()::text::bigint + i)::text::xid8, "
                "dcb.lock_key_v2(n), 10000000 + i "
                "FROM generate_series(1, 60) i, unnest(ARRAY['a:', 'y:R', 't:restored']) n"
            )
        )
    for _ in range(30):
        with engine.begin() as conn:
            EventStore(conn).append(Event("R", {}, ["restored"]))
    with engine.begin() as conn:
        assert len(EventStore(conn).read(Query.of(tags=["restored"]))) == 30


@pytest.mark.parametrize("forge", [False, True])
@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_forged_marker_setting_does_not_blind_the_snapshot_probe(
    engine: Engine, forge: bool, isolation: str
) -> None:
    """A transaction that appended twice, a writer of tag x committing between its appends,
    then the marker setting forged above its own events: its decision "no x yet" and its read
    of x must still be refused (revision 0006-0008's probe took its bound from the setting
    alone and let both through; found by an adversarial review)."""
    call = CALL.format(fn="append_v5")
    event = '[{{"type": "E", "tags": ["{tag}"], "data": {{}}}}]'
    cond = '{"items": [{"tags": ["x"]}], "after": 0}'
    with engine.connect() as decider:
        decider.execute(text(f"SET TRANSACTION ISOLATION LEVEL {isolation}"))
        params = {"locks": "{}", "condition": None, "timeout": None}
        first = decider.execute(text(call), {**params, "events": event.format(tag="a")}).one()
        with engine.begin() as writer:
            EventStore(writer).append(Event("W", {}, ["x"]))
        second = decider.execute(text(call), {**params, "events": event.format(tag="b")}).one()
        assert first[0] == second[0] == "00000"
        if forge:
            xid = decider.execute(text("SELECT pg_current_xact_id()::text")).scalar_one()
            decider.execute(text(f"SET dcb.in_flight_marker = '{xid}:{second[1] + 1}'"))
        decided = decider.execute(
            text(call), {**params, "events": event.format(tag="c"), "condition": cond}
        ).one()
        assert decided[0] == "40001", decided
        decider.rollback()


# append_v1 and append_v2 call append_v3; code of earlier releases calls any of them
OLDER_APPENDS = ["append_v4", "append_v3", "append_v2", "append_v1"]
ANY_APPEND = (
    "SELECT last_position FROM dcb.{fn}("
    "CAST(:events AS jsonb), CAST('{{}}' AS text[]), CAST(NULL AS jsonb), NULL)"
)


@pytest.mark.parametrize("fn", ["append_v5", *OLDER_APPENDS])
@pytest.mark.parametrize("forged", ["1", "99999999999999", "abc", ""])
def test_a_forged_marker_setting_does_not_let_an_append_skip_its_marker(
    engine: Engine, fn: str, forged: str
) -> None:
    """Revision 0008 trusted ``dcb.in_flight_marker`` when it named the transaction and took no
    marker lock: a session that set it by hand appended unseen by readers' caps, and a reader
    reported a head above its uncommitted event (found by an adversarial review). The older
    functions (granted to writers for code of earlier releases) trusted it until revision 0010
    (found by the next review)."""
    with engine.connect() as writer:
        xid = writer.execute(text("SELECT pg_current_xact_id()::text")).scalar_one()
        writer.execute(text(f"SET LOCAL dcb.in_flight_marker = '{xid}:{forged}'"))
        in_flight = writer.execute(
            text(ANY_APPEND.format(fn=fn)),
            {"events": '[{"type": "A", "tags": ["forged"], "data": {}}]'},
        ).scalar_one()
        with engine.begin() as other:
            later = EventStore(other).append(Event("B", {}, ["forged"]))
        assert later > in_flight
        with engine.begin() as reader:
            result = EventStore(reader).read(Query.of(tags=["forged"]))
        # the head never passes an event a reader cannot see yet
        assert (result.head or 0) < in_flight, (result.head, in_flight)
        writer.commit()
    with engine.begin() as reader:
        assert [e.position for e in EventStore(reader).read(Query.of(tags=["forged"]))] == [
            in_flight,
            later,
        ]


@pytest.mark.parametrize("fn", ["append_v4", "append_v3"])
@pytest.mark.parametrize("isolation", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_decision_after_a_forged_older_append_is_still_probed(
    engine: Engine, fn: str, isolation: str
) -> None:
    """The reviewer's case: a transaction reads x, a writer of x commits, the transaction
    forges the setting and appends through an older function (no marker below that event
    until revision 0010), then decides "no x since my read": the decision must be refused."""
    with engine.connect() as decider:
        decider.execute(text(f"SET TRANSACTION ISOLATION LEVEL {isolation}"))
        store = EventStore(decider)
        head = store.read(Query.of(tags=["x"])).head
        with engine.begin() as writer:
            EventStore(writer).append(Event("W", {}, ["x"]))
        xid = decider.execute(text("SELECT pg_current_xact_id()::text")).scalar_one()
        # above every position: append_v5 will not reuse it, and takes a marker above the noise
        decider.execute(text(f"SET LOCAL dcb.in_flight_marker = '{xid}:99999999999999'"))
        decider.execute(
            text(ANY_APPEND.format(fn=fn)),
            {"events": '[{"type": "N", "tags": ["noise"], "data": {}}]'},
        ).scalar_one()
        with pytest.raises(ConcurrencyError):
            store.append(Event("D", {}, ["x"]), AppendCondition(Query.of(tags=["x"]), head))
        decider.rollback()
