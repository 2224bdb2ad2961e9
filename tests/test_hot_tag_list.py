"""The hot-tag list shared by the store's sessions (dcb.hot_tags, revision 0008).

A session's own cache is a setting, which a rollback undoes; the shared row lets sessions whose
transactions roll back skip pg_stats. The row is keyed by the time dcb.events was last analyzed:
a row from older statistics is never trusted. Appends refresh it; readers never write. An append
never writes it where a write could hurt its caller: under a transaction snapshot, or while
another session writes it.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import Engine, text

from dcb_store import AppendCondition, ConditionFailedError, Event, EventStore, Query, _sql

IS_HOT = text("SELECT dcb.tags_are_hot_v1(ARRAY['tenant:planted'])")
ROW = text("SELECT analyzed_at, tags FROM dcb.hot_tags")
ANALYZED_AT = text("SELECT dcb.events_analyzed_at_v1()")


@pytest.fixture
def analyzed(engine: Engine) -> Engine:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE dcb.events"))
        assert conn.execute(ANALYZED_AT).scalar_one() is not None
    return engine


def _plant(engine: Engine, *, current: bool) -> None:
    """A shared row that names a tag pg_stats does not, from the current statistics or not."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO dcb.hot_tags (id, analyzed_at, tags) "
                "VALUES (1, dcb.events_analyzed_at_v1() - :shift, '{tenant:planted}') "
                "ON CONFLICT (id) DO UPDATE SET analyzed_at = excluded.analyzed_at, "
                "tags = excluded.tags"
            ),
            {"shift": timedelta(0) if current else timedelta(seconds=1)},
        )


def _row(engine: Engine) -> tuple[object, list[str]] | None:
    with engine.connect() as conn:
        row = conn.execute(ROW).one_or_none()
        return None if row is None else (row[0], list(row[1]))


def test_a_session_whose_transactions_roll_back_uses_the_shared_list(analyzed: Engine) -> None:
    _plant(analyzed, current=True)
    before = _row(analyzed)
    with analyzed.connect() as conn:
        for _ in range(3):
            assert conn.execute(IS_HOT).scalar_one() is True  # the row, not pg_stats
            conn.rollback()  # undoes the session setting each time
        assert conn.execute(IS_HOT).scalar_one() is True
        conn.commit()
    assert _row(analyzed) == before  # readers leave it as it was


def test_a_list_from_older_statistics_is_not_trusted(analyzed: Engine) -> None:
    _plant(analyzed, current=False)
    before = _row(analyzed)
    with analyzed.connect() as conn:
        assert conn.execute(IS_HOT).scalar_one() is False  # from pg_stats: nothing is hot
        conn.commit()
    assert _row(analyzed) == before  # and a reader does not write it


def test_an_analyze_makes_the_list_current_again(analyzed: Engine) -> None:
    _plant(analyzed, current=True)
    with analyzed.connect() as conn:
        assert conn.execute(IS_HOT).scalar_one() is True
        conn.rollback()
        with analyzed.connect().execution_options(isolation_level="AUTOCOMMIT") as other:
            other.execute(text("SELECT pg_sleep(0.01)"))
            other.execute(text("ANALYZE dcb.events"))
        assert conn.execute(IS_HOT).scalar_one() is False  # new statistics, no session cache


def _append(engine: Engine, level: str = "READ COMMITTED") -> None:
    with engine.connect().execution_options(isolation_level=level) as conn:
        EventStore(conn).append(Event("E", {}, ["x:1"]))
        conn.commit()


def test_an_append_refreshes_a_list_from_older_statistics(analyzed: Engine) -> None:
    _plant(analyzed, current=False)
    _append(analyzed)
    with analyzed.connect() as conn:
        now_analyzed = conn.execute(ANALYZED_AT).scalar_one()
    assert _row(analyzed) == (now_analyzed, [])  # computed from pg_stats again


def test_an_append_keeps_a_current_list(analyzed: Engine) -> None:
    _plant(analyzed, current=True)
    before = _row(analyzed)
    _append(analyzed)
    assert _row(analyzed) == before


def test_nothing_is_shared_before_the_first_analyze(engine: Engine) -> None:
    with engine.connect() as conn:
        if conn.execute(ANALYZED_AT).scalar_one() is not None:
            pytest.skip("this database was analyzed already")
    _append(engine)
    assert _row(engine) is None


@pytest.mark.parametrize("level", ["REPEATABLE READ", "SERIALIZABLE"])
def test_an_append_under_a_snapshot_does_not_write_the_list(analyzed: Engine, level: str) -> None:
    _plant(analyzed, current=False)
    before = _row(analyzed)
    _append(analyzed, level)
    assert _row(analyzed) == before


def test_a_session_holding_the_writer_key_does_not_block_appends(analyzed: Engine) -> None:
    _plant(analyzed, current=False)
    before = _row(analyzed)
    with analyzed.connect() as holder:
        holder.execute(text("SELECT pg_advisory_xact_lock(-553648128, 2)"))
        done: list[bool] = []

        def other() -> None:
            with analyzed.connect() as conn:
                conn.execute(text("SET lock_timeout = '2s'"))
                EventStore(conn).append(Event("E", {}, ["x:1"]))
                conn.commit()
                done.append(True)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(10)
        assert done == [True]  # appended without waiting, the list left as it was
        holder.rollback()
    assert _row(analyzed) == before


def test_store_reads_and_conditions_answer_the_same_with_a_planted_list(
    analyzed: Engine,
) -> None:
    _plant(analyzed, current=True)
    with analyzed.connect() as conn:
        store = EventStore(conn)
        store.append(Event("E", {}, ["tenant:planted", "x:1"]))
        conn.commit()
        # the planted tag is "hot": the primary-key walk must answer what the tag index would
        events = store.read(Query.of(tags=["tenant:planted"])).events
        assert [list(e.tags) for e in events] == [["tenant:planted", "x:1"]]
        conn.rollback()
        condition = AppendCondition(Query.of(tags=["tenant:planted"]), after=0)
        with pytest.raises(ConditionFailedError):
            store.append(Event("E", {}, ["tenant:planted"]), condition)
        assert conn.execute(text("SELECT 1")).scalar_one() == 1  # still usable


def test_a_locked_row_does_not_hold_up_an_append(analyzed: Engine) -> None:
    """Found by review: the refresh waited, past the store's lock timeout, for a row lock."""
    _plant(analyzed, current=False)
    with analyzed.connect() as holder:
        holder.execute(text("SELECT * FROM dcb.hot_tags FOR UPDATE"))
        with analyzed.connect() as conn:
            conn.execute(text("SET lock_timeout = '3s'"))
            started = time.monotonic()
            EventStore(conn).append(Event("E", {}, ["x:1"]), lock_timeout=0.5)
            assert time.monotonic() - started < 0.5  # not even the call's timeout
            assert conn.execute(text("SHOW lock_timeout")).scalar_one() == "3s"
            conn.commit()
        holder.rollback()


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        " ",
        "abc|{x}",
        "1.5|{}",
        "99999999999999999999|{}",
        "NOW|notanarray",
        "NOW|{",
        "|{t:a}",
        "NOW",
        "NOW|",
        "{{a}}",
        "{NULL}",
        "-1|x",
    ],
)
@pytest.mark.parametrize("scope", ["SET", "SET LOCAL"])
def test_no_value_of_the_session_settings_breaks_reads_or_appends(
    analyzed: Engine, value: str, scope: str
) -> None:
    """Found by review: a malformed setting failed reads, conditions and even plain appends."""
    with analyzed.connect() as conn:
        now = conn.execute(text("SELECT extract(epoch FROM now())::bigint")).scalar_one()
        value = value.replace("NOW", str(now))
        for setting in ("dcb.hot_tags", "dcb.hot_tags_refreshed"):
            conn.execute(text(f"{scope} {setting} = '{value}'"))
        store = EventStore(conn)
        position = store.append(Event("E", {}, ["t:a"]))
        store.append(
            Event("E", {}, ["t:a"]), AppendCondition(Query.of(tags=["t:a"]), after=position)
        )
        assert len(store.read(Query.of(tags=["t:a"]))) == 2
        conn.rollback()


def test_the_usual_decision_refreshes_the_shared_row(analyzed: Engine) -> None:
    """Found by review: a read before the append stamped the session, so no append refreshed."""
    with analyzed.begin() as conn:
        conn.execute(text("DELETE FROM dcb.hot_tags"))
    with analyzed.connect() as conn:
        store = EventStore(conn)
        head = store.read(Query.of(tags=["t:d"])).head
        store.append(Event("E", {}, ["t:d"]), AppendCondition(Query.of(tags=["t:d"]), after=head))
        conn.commit()
    with analyzed.connect() as conn:
        assert _row(analyzed) == (conn.execute(ANALYZED_AT).scalar_one(), [])


def test_a_session_that_cached_the_list_sees_the_next_analyze_at_once(analyzed: Engine) -> None:
    """Found by the harness: a list cached in a committed transaction outlived an ANALYZE by up
    to a minute, and pages on a tag that had become hot went through the tag index."""
    with analyzed.connect() as conn:
        assert conn.execute(IS_HOT).scalar_one() is False
        conn.commit()  # the session's setting now holds the list of these statistics
        with analyzed.connect() as writer:
            EventStore(writer).append([Event("E", {}, ["tenant:planted"]) for _ in range(300)])
            writer.commit()
        with analyzed.connect().execution_options(isolation_level="AUTOCOMMIT") as other:
            other.execute(text("SELECT pg_sleep(0.01)"))
            other.execute(text("ANALYZE dcb.events"))
        assert conn.execute(IS_HOT).scalar_one() is True


@pytest.mark.parametrize("analyze", [False, True])
def test_the_cache_read_inline_answers_as_revision_8_did(engine: Engine, analyze: bool) -> None:
    """Since revision 0011 the session's cached list is read through cached_hot_tags_v1, an
    expression inlined into append_v5 (which calls tags_are_hot_v1 only when the cache does not
    hold) and into tags_are_hot_v1. For cached values of every shape (current, from older
    statistics, older than a minute, forged, malformed), both answer as revision 0008's body
    did, and leave the setting as it left it."""
    body = _sql.replacing("v8_hot_tags.sql", "dcb.tags_are_hot_v1(")
    body = body.replace("dcb.tags_are_hot_v1(", "dcb.tags_are_hot_r8(", 1)
    with engine.begin() as conn:
        conn.execute(text(body))
    if analyze:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE dcb.events"))
        _plant(engine, current=True)  # the shared row names tenant:planted
    calls = {
        "revision 8": "dcb.tags_are_hot_r8(CAST(:t AS text[]))",
        "tags_are_hot_v1": "dcb.tags_are_hot_v1(CAST(:t AS text[]))",
        # append_v5's expression until revision 0011, and since
        "append, revision 8": "cardinality(CAST(:t AS text[])) > 0 "
        "AND dcb.tags_are_hot_r8(CAST(:t AS text[]))",
        "inline": "cardinality(CAST(:t AS text[])) > 0 AND coalesce(CAST(:t AS text[]) <@ "
        "dcb.cached_hot_tags_v1(coalesce(current_setting('dcb.hot_tags', true), ''), "
        "extract(epoch FROM clock_timestamp())::bigint), dcb.tags_are_hot_v1(CAST(:t AS text[])))",
    }
    with engine.connect() as conn:
        now = conn.execute(text("SELECT extract(epoch FROM clock_timestamp())::bigint")).scalar()
        analyzed_us = "(extract(epoch FROM dcb.events_analyzed_at_v1()) * 1e6)::bigint"
        key = conn.execute(text(f"SELECT coalesce({analyzed_us}::text, '')")).scalar()
        values = [
            f"{now}|{key}|tenant:planted",
            f"{now}|{key}|other",  # a forged list of the current statistics
            f"{now}|{key}|tenant:planted\x1fb",
            f"{now - 30}|{key}|tenant:planted",
            f"{now - 120}|{key}|tenant:planted",  # older than a minute
            f"{now}|1|tenant:planted",  # from other statistics
            f"{now}|{key}",
            f"{now}||",
            f"{now}",
            "",
            "|||",
            "garbage",
            f"x|{key}|tenant:planted",
            f"-1|{key}|tenant:planted",
            f"99999999999999999999|{key}|tenant:planted",
        ]
        answers = set()
        for value in values:
            for tags in (["tenant:planted"], ["other"], ["tenant:planted", "b"], []):
                seen = {}
                for name, call in calls.items():
                    conn.execute(text("SELECT set_config('dcb.hot_tags', :v, false)"), {"v": value})
                    answer = conn.execute(text(f"SELECT {call}"), {"t": tags}).scalar()
                    after = conn.execute(text("SELECT current_setting('dcb.hot_tags')")).scalar()
                    # a rewritten setting starts with the time of the call: compare the rest
                    kept = after == value
                    seen[name] = (answer, kept, after if kept else after.split("|", 1)[1])
                assert seen["tags_are_hot_v1"] == seen["revision 8"], (value, tags, seen)
                assert seen["inline"] == seen["append, revision 8"], (value, tags, seen)
                answers.add(seen["inline"][:2])
            conn.rollback()
    # hot and not, from the cache and not (never analyzed, a list computed again is empty)
    assert answers == {(True, True), (False, True), (False, False)} | (
        {(True, False)} if analyze else set()
    )


def test_a_decision_reads_a_holding_cache_without_calling_tags_are_hot(analyzed: Engine) -> None:
    """Revision 0011: append_v5 reads the session's cached list inline and calls
    tags_are_hot_v1 only when the cache does not hold (the call cost 16 us per decision).
    Counted by PostgreSQL's function statistics of the current transaction."""
    calls = text(
        "SELECT coalesce(pg_stat_get_xact_function_calls("
        "'dcb.tags_are_hot_v1(text[])'::regprocedure), 0)"
    )
    with analyzed.connect() as conn:
        conn.execute(text("SET track_functions = 'pl'"))
        store = EventStore(conn)
        head = store.append(Event("E", {}, ["t:h"]))
        conn.commit()  # the decision below fills the session's cache, kept by the commit
        head = store.append(
            Event("E", {}, ["t:h"]), AppendCondition(Query.of(tags=["t:h"]), after=head)
        )
        conn.commit()
        # (counts pending since the last flush of the statistics: compare within a transaction)
        before = conn.execute(calls).scalar_one()
        for _ in range(5):
            head = store.append(
                Event("E", {}, ["t:h"]), AppendCondition(Query.of(tags=["t:h"]), after=head)
            )
        assert conn.execute(calls).scalar_one() == before
        # a cache that does not hold (a malformed setting): called, once
        conn.execute(text("SELECT set_config('dcb.hot_tags', 'garbage', false)"))
        store.append(Event("E", {}, ["t:h"]), AppendCondition(Query.of(tags=["t:h"]), after=head))
        assert conn.execute(calls).scalar_one() == before + 1
        conn.rollback()
