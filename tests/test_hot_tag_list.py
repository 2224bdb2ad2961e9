"""The hot-tag list shared by the store's sessions (dcb.hot_tags, revision 0008).

A session's own cache is a setting, which a rollback undoes; the shared row lets sessions whose
transactions roll back skip pg_stats. Appends refresh it; readers never write. An append never
writes it where a write could hurt its caller: under a transaction snapshot, or while another
session writes it.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, text

from dcb_store import AppendCondition, ConditionFailedError, Event, EventStore, Query

IS_HOT = text("SELECT dcb.tags_are_hot_v1(ARRAY['tenant:planted'])")
ROW = text("SELECT computed_at, tags FROM dcb.hot_tags")


def _plant(engine: Engine, age_seconds: int) -> None:
    """A shared row that names a tag pg_stats does not (computed ``age_seconds`` ago)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO dcb.hot_tags (id, computed_at, tags) "
                "VALUES (1, extract(epoch FROM now())::bigint - :age, '{tenant:planted}') "
                "ON CONFLICT (id) DO UPDATE SET computed_at = excluded.computed_at, "
                "tags = excluded.tags"
            ),
            {"age": age_seconds},
        )


def _row(engine: Engine) -> tuple[int, list[str]] | None:
    with engine.connect() as conn:
        row = conn.execute(ROW).one_or_none()
        return None if row is None else (row[0], list(row[1]))


@pytest.mark.parametrize("age", [0, 300])
def test_a_session_whose_transactions_roll_back_uses_the_shared_list(
    engine: Engine, age: int
) -> None:
    _plant(engine, age_seconds=age)
    before = _row(engine)
    with engine.connect() as conn:
        for _ in range(3):
            assert conn.execute(IS_HOT).scalar_one() is True  # the row, not pg_stats
            conn.rollback()  # undoes the session setting each time
        assert conn.execute(IS_HOT).scalar_one() is True
        conn.commit()
    assert _row(engine) == before  # readers leave it as it was


def test_a_list_older_than_ten_minutes_is_not_trusted_by_readers(engine: Engine) -> None:
    _plant(engine, age_seconds=3600)
    before = _row(engine)
    with engine.connect() as conn:
        assert conn.execute(IS_HOT).scalar_one() is False  # from pg_stats: nothing is hot
        conn.commit()
    assert _row(engine) == before  # and a reader does not write it


def _append(engine: Engine, level: str = "READ COMMITTED") -> None:
    with engine.connect().execution_options(isolation_level=level) as conn:
        EventStore(conn).append(Event("E", {}, ["x:1"]))
        conn.commit()


def test_an_append_refreshes_a_list_over_a_minute_old(engine: Engine) -> None:
    _plant(engine, age_seconds=90)
    _append(engine)
    row = _row(engine)
    assert row is not None and row[1] == []  # computed from pg_stats again
    with engine.connect() as conn:
        fresh = conn.execute(text("SELECT extract(epoch FROM now())::bigint")).scalar_one()
    assert fresh - 5 <= row[0] <= fresh


def test_an_append_keeps_a_list_under_a_minute_old(engine: Engine) -> None:
    _plant(engine, age_seconds=10)
    before = _row(engine)
    _append(engine)
    assert _row(engine) == before


@pytest.mark.parametrize("level", ["REPEATABLE READ", "SERIALIZABLE"])
def test_an_append_under_a_snapshot_does_not_write_the_list(engine: Engine, level: str) -> None:
    _plant(engine, age_seconds=3600)
    before = _row(engine)
    _append(engine, level)
    assert _row(engine) == before


def test_a_session_holding_the_writer_key_does_not_block_appends(engine: Engine) -> None:
    _plant(engine, age_seconds=3600)
    before = _row(engine)
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_xact_lock(-553648128, 2)"))
        done: list[bool] = []

        def other() -> None:
            with engine.connect() as conn:
                conn.execute(text("SET lock_timeout = '2s'"))
                EventStore(conn).append(Event("E", {}, ["x:1"]))
                conn.commit()
                done.append(True)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(10)
        assert done == [True]  # appended without waiting, the list left as it was
        holder.rollback()
    assert _row(engine) == before


def test_store_reads_and_conditions_answer_the_same_with_a_planted_list(engine: Engine) -> None:
    _plant(engine, age_seconds=0)
    with engine.connect() as conn:
        store = EventStore(conn)
        store.append(Event("E", {}, ["tenant:planted", "x:1"]))
        conn.commit()
        # the planted tag is "hot" for this minute: the primary-key walk must answer the same
        events = store.read(Query.of(tags=["tenant:planted"])).events
        assert [list(e.tags) for e in events] == [["tenant:planted", "x:1"]]
        conn.rollback()
        condition = AppendCondition(Query.of(tags=["tenant:planted"]), after=0)
        with pytest.raises(ConditionFailedError):
            store.append(Event("E", {}, ["tenant:planted"]), condition)
        assert conn.execute(text("SELECT 1")).scalar_one() == 1  # still usable
