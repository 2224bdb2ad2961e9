"""Roles the store does not trust (issue #13, items 1 and 3), each logged in as itself.

A role with nothing but CONNECT can take any advisory lock: it must not blind reads with a fake
in-flight marker or keep followers awake. A writer appends only through the append function:
no direct INSERT, no skipping the in-flight marker.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from dcb_store import Event, EventStore, Query, migrations
from dcb_store.roles import grant_writer
from tests.conftest import Login

MARKER_AT_1 = "SELECT pg_advisory_lock_shared(-587202560, 1)"  # 0xDD << 56 | 1


def _global_key(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        k = conn.execute(text("SELECT dcb.lock_key_v2('g:')")).scalar_one()
    return (k >> 32) - (1 << 32) if (k >> 32) >= 1 << 31 else k >> 32, (
        (k & 0xFFFFFFFF) - (1 << 32) if (k & 0xFFFFFFFF) >= 1 << 31 else k & 0xFFFFFFFF
    )


def test_a_connect_only_role_cannot_blind_reads_or_wake_followers(
    engine: Engine, login: Login
) -> None:
    with Session(engine) as s:
        EventStore(s).append([Event("E", {}, ["course:c1"]) for _ in range(3)])
        s.commit()
    hi, lo = _global_key(engine)
    foreign = login(None).connect()
    try:
        # a fake marker at position 1, the global key held exclusively, the notify key
        foreign.execute(text(MARKER_AT_1))
        foreign.execute(text("SELECT pg_advisory_lock(:h, :l)"), {"h": hi, "l": lo})
        foreign.commit()
        with Session(engine) as s:
            result = EventStore(s).read(Query.of(tags=["course:c1"]))
            assert [e.position for e in result] == [1, 2, 3] and result.head == 3
            assert EventStore(s).read().head == 3
            # followers: a foreign marker is not an append in flight
            assert s.execute(text("SELECT dcb.appends_in_flight_v2()")).scalar_one() == 0
        foreign.execute(
            text("SELECT pg_advisory_lock(-570425344, 0)")
        )  # 0xDE << 56: the notify key
        foreign.commit()
        with Session(engine) as s:
            # a foreign holder of the notify key silences notifications: followers must poll
            assert s.execute(text("SELECT dcb.appends_in_flight_v2()")).scalar_one() == 1
    finally:
        foreign.close()


def test_a_writer_cannot_insert_directly_even_with_an_older_grant(
    fresh_db_url: str, engine: Engine, login: Login
) -> None:
    # a database at version 5, where writers were granted INSERT on the table
    migrations.downgrade(fresh_db_url, "0005_fast_paths")
    writer = login(None)
    role = writer.url.username
    with engine.begin() as conn:
        conn.execute(text(f'GRANT USAGE ON SCHEMA dcb TO "{role}"'))
        conn.execute(text(f'GRANT INSERT, SELECT ON dcb.events TO "{role}"'))
        conn.execute(text(f'GRANT USAGE ON SEQUENCE dcb.events_position_seq TO "{role}"'))
    migrations.upgrade(fresh_db_url)
    with engine.connect() as conn:  # the upgrade took the direct writes away
        for privilege in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
            assert not conn.execute(
                text("SELECT has_table_privilege(:r, 'dcb.events', :p)"),
                {"r": role, "p": privilege},
            ).scalar_one(), privilege
    with writer.connect() as conn, pytest.raises(DBAPIError) as info:
        conn.execute(
            text(
                "INSERT INTO dcb.events (position, type, data, recorded_at) "
                "VALUES (99, 'Forged', '{}', now() - interval '1 day')"
            )
        )
    assert getattr(info.value.orig, "sqlstate", None) == "42501"
    with engine.begin() as conn:
        grant_writer(conn, role)  # type: ignore[arg-type]
    with Session(writer) as s:
        assert EventStore(s).append(Event("Fine", {}, ["a:1"])) >= 1  # through append_v3
        s.commit()


def test_a_session_setting_cannot_skip_the_in_flight_marker(engine: Engine, login: Login) -> None:
    writer = login(grant_writer)
    with Session(writer) as s:
        s.execute(text("SET dcb.in_flight_marker = 'skip'"))  # session-level, before the txn
        s.commit()
        EventStore(s).append(Event("E", {}, ["course:c2"]))  # open: holds its marker
        pid = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with Session(engine) as watcher:
            kinds = {i.kind for i in EventStore(watcher).lock_stats() if i.pid == pid}
        assert "in-flight marker" in kinds, kinds
        s.rollback()


def test_the_sql_functions_refuse_requests_beyond_the_limits(engine: Engine) -> None:
    """For callers that bypass Python: too many items, types per item, events per batch."""
    import json

    too_many_items = json.dumps([{"tags": [f"t:{i}"]} for i in range(101)])
    too_many_types = json.dumps([{"types": [f"T{i}" for i in range(101)]}])
    big_batch = json.dumps([{"type": "E", "tags": [], "data": {}}] * 20_001)
    statements = [
        ("SELECT * FROM dcb.read_v1(CAST(:a AS jsonb), 0, 10, false)", too_many_items),
        ("SELECT * FROM dcb.read_v1(CAST(:a AS jsonb), 0, 10, false)", too_many_types),
        (
            'SELECT * FROM dcb.append_v3(\'[{"type": "E", "data": {}}]\', \'{}\', '
            "jsonb_build_object('items', CAST(:a AS jsonb)), NULL)",
            too_many_items,
        ),
        ("SELECT * FROM dcb.append_v3(CAST(:a AS jsonb), '{}', NULL, NULL)", big_batch),
    ]
    for sql, arg in statements:
        with engine.connect() as conn, pytest.raises(DBAPIError) as info:
            conn.execute(text(sql), {"a": arg})
        assert getattr(info.value.orig, "sqlstate", None) == "22023", sql


def test_a_writer_reached_by_set_role_is_still_trusted(engine: Engine, login: Login) -> None:
    """Found by review: trust was judged by the login role's own privileges, so a session that
    reached the writer role by SET ROLE (NOINHERIT membership) had its marker ignored, and a
    read's head passed its open event."""
    member = login(None)
    role = member.url.username
    writer_role = f"{role}_w"
    with engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{writer_role}" NOLOGIN'))
        grant_writer(conn, writer_role)  # type: ignore[arg-type]
        conn.execute(text(f'ALTER ROLE "{role}" NOINHERIT'))
        conn.execute(text(f'GRANT "{writer_role}" TO "{role}"'))
    try:
        with Session(member) as w:
            w.execute(text(f'SET ROLE "{writer_role}"'))
            low = EventStore(w).append(Event("W", {}, ["x:setrole"]))  # open
            with Session(engine) as other:
                EventStore(other).append(Event("W2", {}, ["x:setrole"]))
                other.commit()
            with Session(engine) as reader:
                result = EventStore(reader).read(Query.of(tags=["x:setrole"]))
            assert result.head is None or result.head < low, result.head
            w.rollback()
    finally:
        member.dispose()
        with engine.begin() as conn:
            conn.execute(text(f'DROP OWNED BY "{writer_role}"'))
            conn.execute(text(f'DROP ROLE "{writer_role}"'))


def test_an_append_from_an_outside_login_role_is_refused_not_hidden(
    engine: Engine, login: Login
) -> None:
    """An application's SECURITY DEFINER function owned by a writer, called by a role outside
    the store's: readers could not trust that session's marker, so the append is refused."""
    outsider = login(None)
    role = outsider.url.username
    writer_role = f"{role}_w"
    with engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{writer_role}" NOLOGIN'))
        grant_writer(conn, writer_role)  # type: ignore[arg-type]
        conn.execute(text(f'CREATE SCHEMA "{writer_role}" AUTHORIZATION "{writer_role}"'))
        conn.execute(text(f'SET ROLE "{writer_role}"'))
        conn.execute(
            text(
                f'CREATE FUNCTION "{writer_role}".record() RETURNS text LANGUAGE sql '
                "SECURITY DEFINER SET search_path = pg_catalog AS $$ SELECT outcome FROM "
                'dcb.append_v3(\'[{"type": "W", "tags": ["x:secdef"], "data": {}}]\', '
                "'{}', NULL, NULL) $$"
            )
        )
        conn.execute(text("RESET ROLE"))
        conn.execute(text(f'GRANT USAGE ON SCHEMA "{writer_role}" TO "{role}"'))
    try:
        with outsider.connect() as conn, pytest.raises(DBAPIError) as info:
            conn.execute(text(f'SELECT "{writer_role}".record()'))
        assert getattr(info.value.orig, "sqlstate", None) == "42501"
        assert "may not append" in str(info.value.orig)
    finally:
        outsider.dispose()
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{writer_role}" CASCADE'))
            conn.execute(text(f'DROP OWNED BY "{writer_role}"'))
            conn.execute(text(f'DROP ROLE "{writer_role}"'))
