"""Grants role by role, each logged in as itself (issue 13, item 6).

PUBLIC executes nothing; a reader reads and monitors; a runner also keeps checkpoints; a writer
also appends, through the append function only; the erasure switch holds for one transaction.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from dcb_store import (
    AppendCondition,
    DcbStoreError,
    Event,
    EventStore,
    ProjectionRunner,
    Query,
    subscribe,
)
from dcb_store.errors import PermissionDeniedError
from dcb_store.roles import grant_reader, grant_runner, grant_writer
from tests.conftest import Login


def _seed(engine: Engine) -> None:
    with Session(engine) as s:
        EventStore(s).append([Event("Seeded", {"n": 1}, ["k:1"]), Event("Other", tags=["k:2"])])
        s.commit()


def _count(session: Session, events: object) -> None:
    session.execute(text("SELECT 1"))


def test_no_function_of_the_schema_is_executable_by_public(engine: Engine, login: Login) -> None:
    with engine.connect() as conn:
        public = (
            conn.execute(
                text(
                    "SELECT p.oid::regprocedure::text FROM pg_proc p "
                    "WHERE p.pronamespace = 'dcb'::regnamespace AND (p.proacl IS NULL OR EXISTS "
                    "(SELECT FROM aclexplode(p.proacl) a WHERE a.grantee = 0))"
                )
            )
            .scalars()
            .all()
        )
    assert public == []
    # a role with nothing but PUBLIC's rights, even given USAGE on the schema, executes nothing
    nobody = login(lambda conn, role: conn.execute(text(f'GRANT USAGE ON SCHEMA dcb TO "{role}"')))
    with nobody.connect() as conn:
        names = (
            conn.execute(
                text(
                    "SELECT p.oid::regprocedure::text FROM pg_proc p "
                    "WHERE p.pronamespace = 'dcb'::regnamespace "
                    "AND has_function_privilege(p.oid, 'EXECUTE')"
                )
            )
            .scalars()
            .all()
        )
        assert names == []
    with Session(nobody) as s, pytest.raises(PermissionDeniedError):
        EventStore(s).read()
    with Session(nobody) as s, pytest.raises(PermissionDeniedError):
        EventStore(s).append(Event("X", tags=["lock:k:1"]))


def test_reader_reads_and_monitors_and_cannot_append_or_run(engine: Engine, login: Login) -> None:
    _seed(engine)
    reader = login(grant_reader)
    with Session(reader) as s:
        store = EventStore(s)
        assert [e.type for e in store.read()] == ["Seeded", "Other"] and store.head() == 2
        assert len(list(store.stream(batch_size=1))) == 2
        assert store.lock_count() == 0 and store.lock_stats() == []
        with pytest.raises(PermissionDeniedError) as info:
            store.append(Event("Nope", tags=["lock:k:1"]), AppendCondition(Query.all(), 2))
        assert isinstance(info.value, DcbStoreError) and info.value.sqlstate == "42501"
        # refused before any lock was taken
        with engine.connect() as admin:
            assert admin.execute(text("SELECT dcb.get_advisory_lock_count()")).scalar_one() == 0
    sub = subscribe(reader, poll_interval=0.2)
    assert [next(sub).position, next(sub).position] == [1, 2]
    sub.close()
    with pytest.raises(PermissionDeniedError):
        ProjectionRunner(reader, "r", _count).catch_up()


def test_runner_keeps_checkpoints_but_cannot_append(engine: Engine, login: Login) -> None:
    _seed(engine)
    runner_engine = login(grant_runner)
    runner = ProjectionRunner(runner_engine, "projection", _count)
    assert runner.catch_up() == 2 and runner.position() == 2
    with Session(runner_engine) as s, pytest.raises(PermissionDeniedError):
        EventStore(s).append(Event("Nope"))


def test_writer_appends_runs_projections_and_nothing_more(engine: Engine, login: Login) -> None:
    _seed(engine)
    writer = login(grant_writer)
    with Session(writer) as s:
        store = EventStore(s)
        head = store.read(Query.of(tags=["k:1"])).head
        store.append(
            Event("Written", tags=["k:1", "lock:k:1"]),
            AppendCondition(Query.of(tags=["k:1"]), head),
        )
        s.commit()
    runner = ProjectionRunner(writer, "by-writer", _count)
    assert runner.catch_up() == 3 and runner.position() == 3
    for statement in (
        "INSERT INTO dcb.events (type, data) VALUES ('Forged', '{}')",
        "UPDATE dcb.events SET data = '{}'",
        "DELETE FROM dcb.events",
        "TRUNCATE dcb.events",
        "SELECT dcb.allow_erasure_v1()",
        "DROP TABLE dcb.events",
    ):
        with writer.connect() as conn, pytest.raises(DBAPIError) as info:
            conn.execute(text(statement))
        assert info.value.orig.sqlstate == "42501", statement  # type: ignore[union-attr]


def test_grants_converge_to_exactly_one_kind(engine: Engine, login: Login) -> None:
    writer_then_reader = login(grant_writer)
    role = writer_then_reader.url.username
    with engine.begin() as conn:
        grant_reader(conn, str(role))
    with Session(writer_then_reader) as s, pytest.raises(PermissionDeniedError):
        EventStore(s).append(Event("Nope"))


def _delete_refused(eng: Engine, *, allow: bool = False) -> bool:
    with eng.connect() as conn:
        try:
            if allow:
                conn.execute(text("SELECT dcb.allow_erasure_v1()"))
            conn.execute(text("DELETE FROM dcb.events WHERE type = 'Other'"))
        except DBAPIError as exc:
            assert exc.orig.sqlstate == "DCB10"  # type: ignore[union-attr]
            return True
        finally:
            conn.rollback()
    return False


def test_the_erasure_switch_holds_for_one_transaction_only(
    engine: Engine, login: Login, fresh_db_url: str
) -> None:
    _seed(engine)
    with engine.connect() as conn:  # a session-level SET
        conn.execute(text("SET dcb.allow_erasure = on"))
        conn.commit()
        with pytest.raises(DBAPIError) as info:
            conn.execute(text("DELETE FROM dcb.events"))
        assert info.value.orig.sqlstate == "DCB10"  # type: ignore[union-attr]
        conn.rollback()
    # a connection option
    with_option = create_engine(fresh_db_url, connect_args={"options": "-c dcb.allow_erasure=on"})
    assert _delete_refused(with_option)
    with_option.dispose()

    # ALTER ROLE ... SET, for a role allowed to delete
    def deleter(conn: object, role: str) -> None:
        for statement in (
            f'GRANT USAGE ON SCHEMA dcb TO "{role}"',
            f'GRANT SELECT, DELETE ON dcb.events TO "{role}"',
            f'GRANT EXECUTE ON FUNCTION dcb.allow_erasure_v1() TO "{role}"',
            f"ALTER ROLE \"{role}\" SET dcb.allow_erasure = 'on'",
        ):
            conn.execute(text(statement))  # type: ignore[attr-defined]

    eraser = login(deleter)
    assert _delete_refused(eraser)
    # the switch: this transaction only
    assert not _delete_refused(eraser, allow=True)
    with eraser.begin() as conn:
        conn.execute(text("SELECT dcb.allow_erasure_v1()"))
        assert conn.execute(text("DELETE FROM dcb.events WHERE type = 'Other'")).rowcount == 1
    with eraser.connect() as conn:  # the same connection, the next transaction: refused again
        conn.execute(text("SELECT dcb.allow_erasure_v1()"))
        conn.commit()
        with pytest.raises(DBAPIError) as info:
            conn.execute(text("DELETE FROM dcb.events"))
        assert info.value.orig.sqlstate == "DCB10"  # type: ignore[union-attr]
