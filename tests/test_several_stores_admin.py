"""Several stores in one database: names, rendering, migrations, grants, the CLI, async."""

from __future__ import annotations

import asyncio
import io
import re
from importlib import resources

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from alembic import command
from dcb_store import (
    AsyncEventStore,
    Event,
    EventStore,
    InvalidInputError,
    Query,
    migrations,
)
from dcb_store._impl import statements as st
from dcb_store._impl import stores
from dcb_store._sql import load
from dcb_store.cli import main
from dcb_store.errors import MigrationRefusedError, PermissionDeniedError, SchemaMissingError
from dcb_store.monitoring import LockWatcher
from dcb_store.roles import grant_reader, grant_writer
from tests.conftest import Login
from tests.several_stores import STORES, migrate_stores

SQL_FILES = sorted(
    p.name for p in resources.files("dcb_store.sql").iterdir() if p.name.startswith("v")
)


@pytest.mark.parametrize("name", SQL_FILES)
def test_the_default_store_runs_the_sql_unchanged_and_others_their_own(name: str) -> None:
    raw = resources.files("dcb_store.sql").joinpath(name).read_text(encoding="utf-8")
    assert load(name) is raw or load(name) == raw
    assert load(name, "dcb") == raw
    billing = load(name, "billing")  # raises on a lock-space or schema form it does not know
    assert not re.search(r"(?<![\w$\"'])dcb\.|'dcb[.']|\bdcb_events\b", billing)


def test_the_default_stores_statements_are_the_modules_own() -> None:
    default = st.for_schema("dcb")
    assert default.APPEND is st.APPEND and default.READ is st.READ
    assert default.GRANT_RESET is st.GRANT_RESET
    billing = st.for_schema("billing")
    assert billing is st.for_schema("billing")  # one object per statement: the driver's cache
    assert '"billing".append_v5(' in billing.APPEND.text and "dcb." not in billing.READ.text


def test_every_statement_that_names_the_store_is_rendered_per_store() -> None:
    # a statement of the module left out of Statements would run on dcb whatever the store
    naming = {
        name
        for name, value in vars(st).items()
        if name.isupper()
        and any(
            re.search(r"\bdcb\.|SCHEMA dcb\b", piece)
            for piece in (
                [value.text]
                if hasattr(value, "text")
                else [value]
                if isinstance(value, str)
                else value
                if isinstance(value, tuple)
                else []
            )
        )
    }
    assert naming, "no statement found: the test no longer looks at the module's statements"
    missing = naming - set(st.Statements.__dataclass_fields__)
    assert not missing, missing


def test_the_stores_lock_spaces_are_disjoint() -> None:
    """The top 20 bits of every key: the default's byte, else another byte and the store id."""
    assert stores.store_id("dcb") is None and stores.hash_seed("dcb") == 1145258579
    prefixes = {}
    for schema in ("billing", "tenant_7", "shipping"):
        sid = stores.store_id(schema)
        assert sid is not None and 0 <= sid < 4096
        for top in (0xDC, 0xDD, 0xDE, 0xDF):
            prefix = stores._prefix(schema, top)
            assert prefix >> 12 == top - 4 and prefix & 0xFFF == sid
            prefixes[(schema, top)] = prefix
    assert len(set(prefixes.values())) == len(prefixes)
    assert not any(p >> 12 in (0xDC, 0xDD, 0xDE, 0xDF) for p in prefixes.values())


@pytest.mark.parametrize("bad", ["Billing", "pg_x", "a-b", 'a"b', "1st", "", "x" * 42, None])
def test_a_store_name_is_checked(bad: object, session: Session) -> None:
    with pytest.raises(InvalidInputError):
        EventStore(session, schema=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        migrations.upgrade("postgresql://nowhere/db", schema=bad)  # type: ignore[arg-type]


def test_two_names_with_one_store_id_are_refused(fresh_db_url: str) -> None:
    first: dict[int | None, str] = {}
    for i in range(100000):
        name = f"t{i}"
        sid = stores.store_id(name)
        if sid in first:
            break
        first[sid] = name
    migrations.upgrade(fresh_db_url, schema=first[sid])
    with pytest.raises(MigrationRefusedError, match="lock-space id"):
        migrations.upgrade(fresh_db_url, schema=name)


def test_downgrading_one_store_leaves_the_others(fresh_db_url: str, engine: Engine) -> None:
    migrate_stores(fresh_db_url)
    with Session(engine) as s:
        for schema in STORES:
            EventStore(s, schema=schema).append(Event("Kept"))
        s.commit()
    with pytest.raises(MigrationRefusedError, match="billing.events holds events"):
        migrations.downgrade(fresh_db_url, "base", schema="billing")
    migrations.downgrade(fresh_db_url, "0006_conditions", schema="tenant_7")
    migrations.downgrade(fresh_db_url, "base", schema="billing", force=True)
    with engine.connect() as conn:
        names = conn.execute(text("SELECT nspname FROM pg_namespace ORDER BY 1")).scalars().all()
        assert "billing" not in names and {"dcb", "tenant_7"} <= set(names)
        assert conn.execute(text("SELECT * FROM tenant_7.alembic_version")).scalar_one() == (
            "0006_conditions"
        )
        assert conn.execute(text("SELECT * FROM dcb.alembic_version")).scalar_one() == (
            migrations.head()
        )
    with Session(engine) as s:
        assert [e.type for e in EventStore(s).read()] == ["Kept"]
    migrations.upgrade(fresh_db_url, schema="tenant_7")
    with Session(engine) as s:
        assert [e.type for e in EventStore(s, schema="tenant_7").read()] == ["Kept"]


def test_alembic_commands_take_the_schema(fresh_db_url: str, engine: Engine) -> None:
    cfg = migrations.alembic_config()
    cfg.cmd_opts = None
    with engine.connect() as conn:
        cfg.attributes.update(connection=conn, schema="ledger")
        command.upgrade(cfg, "heads")
        conn.commit()
    with Session(engine) as s:
        assert EventStore(s, schema="ledger").append(Event("L")) == 1
        s.commit()
    out = io.StringIO()
    migrations.write_sql(out, schema="ledger")
    assert 'CREATE TABLE "ledger".events' in out.getvalue()
    assert "ledger.in_flight_marker" in out.getvalue() and "dcb." not in out.getvalue()


def test_grants_are_per_store(fresh_db_url: str, login: Login) -> None:
    migrate_stores(fresh_db_url)
    writer = login(lambda conn, role: grant_writer(conn, role, schema="billing"))
    with Session(writer) as s:
        assert EventStore(s, schema="billing").append(Event("B")) == 1
        s.commit()
    for schema in ("dcb", "tenant_7"):
        with Session(writer) as s, pytest.raises(PermissionDeniedError):
            EventStore(s, schema=schema).read()
        with Session(writer) as s, pytest.raises(PermissionDeniedError):
            EventStore(s, schema=schema).append(Event("X"))
    reader = login(lambda conn, role: grant_reader(conn, role, schema="tenant_7"))
    with Session(reader) as s:
        assert EventStore(s, schema="tenant_7").read().events == []
        with pytest.raises(PermissionDeniedError):
            EventStore(s, schema="tenant_7").append(Event("X"))
        s.rollback()
        with pytest.raises(PermissionDeniedError):
            EventStore(s, schema="billing").read()


def test_the_cli_takes_the_schema(
    fresh_db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", fresh_db_url)
    assert main(["tail", "--schema", "ledger", "--count", "1"]) == 1
    assert "--schema ledger" in capsys.readouterr().err
    assert main(["upgrade", "--schema", "ledger"]) == 0
    assert 'schema "ledger" is at' in capsys.readouterr().out
    assert main(["--schema", "ledger", "demo", "--students", "4", "--capacity", "2"]) == 0
    capsys.readouterr()
    assert main(["tail", "--schema", "ledger", "--type", "StudentSubscribed", "--count", "2"]) == 0
    assert capsys.readouterr().out.count("StudentSubscribed") == 2
    assert main(["locks", "--schema", "ledger"]) == 0
    assert main(["sql", "--schema", "ledger"]) == 0
    assert 'CREATE TABLE "ledger".events' in capsys.readouterr().out
    assert main(["upgrade", "--schema", "Bad-Name"]) == 1
    engine = create_engine(fresh_db_url)
    with Session(engine) as s:
        assert EventStore(s).read().events == []  # the demo ran in ledger only
        assert len(EventStore(s, schema="ledger").read(Query.of(types=["StudentSubscribed"]))) == 2
    engine.dispose()


def test_async_store_and_lock_watcher_take_the_schema(fresh_db_url: str, engine: Engine) -> None:
    migrate_stores(fresh_db_url)

    async def work() -> tuple[int, list[str], list[str]]:
        aengine = create_async_engine(fresh_db_url)
        try:
            async with AsyncSession(aengine) as s:
                position = await AsyncEventStore(s, schema="billing").append(Event("A"))
                await s.commit()
                billing = [e.type for e in (await AsyncEventStore(s, schema="billing").read())]
                dcb = [e.type for e in (await AsyncEventStore(s).read())]
                return position, billing, dcb
        finally:
            await aengine.dispose()

    assert asyncio.run(work()) == (1, ["A"], [])
    with Session(engine) as holder:
        EventStore(holder, schema="billing").append(Event("A", tags=["lock:k"]))
        assert LockWatcher(engine, schema="billing").check() >= 2  # key and marker
        assert LockWatcher(engine, schema="tenant_7").check() == 0
        assert LockWatcher(engine).check() == 0
        assert EventStore(holder, schema="billing").lock_count() >= 2
        kinds = {lock.kind for lock in EventStore(holder, schema="billing").lock_stats()}
        assert kinds == {"key", "in-flight marker"}
        holder.rollback()


def _int4_pair(k: int) -> tuple[int, int]:
    hi, lo = (k >> 32) & 0xFFFFFFFF, k & 0xFFFFFFFF
    return tuple(v - (1 << 32) if v >= 1 << 31 else v for v in (hi, lo))  # type: ignore[return-value]


def test_foreign_roles_and_settings_per_store(
    fresh_db_url: str, engine: Engine, login: Login
) -> None:
    """test_hostile_roles' checks, on a store other than dcb."""
    migrate_stores(fresh_db_url)
    with Session(engine) as s:
        EventStore(s, schema="billing").append([Event("E", {}, ["course:c1"])] * 3)
        s.commit()
        global_key = s.execute(text("SELECT billing.lock_key_v2('g:')")).scalar_one()
    sid = stores.store_id("billing")
    assert sid is not None
    marker_at_1 = (0xD9 << 56) | (sid << 44) | 1
    notify = stores._prefix("billing", 0xDE) << 12
    foreign = login(None).connect()
    try:  # a fake billing marker, billing's global key held exclusively
        for key in (marker_at_1, global_key):
            foreign.execute(
                text("SELECT pg_advisory_lock(:h, :l)"),
                dict(zip(("h", "l"), _int4_pair(key), strict=True)),
            )
        foreign.commit()
        with Session(engine) as s:
            billing = EventStore(s, schema="billing")
            assert billing.read(Query.of(tags=["course:c1"])).head == 3
            assert billing.read().head == 3
            count = s.execute(text("SELECT billing.appends_in_flight_v2()")).scalar_one()
            assert count == 0
        foreign.execute(text("SELECT pg_advisory_lock(:h, 0)"), {"h": _int4_pair(notify << 32)[0]})
        foreign.commit()
        with Session(engine) as s:  # billing's notify key silences billing only
            assert s.execute(text("SELECT billing.appends_in_flight_v2()")).scalar_one() == 1
            assert s.execute(text("SELECT tenant_7.appends_in_flight_v2()")).scalar_one() == 0
            assert s.execute(text("SELECT dcb.appends_in_flight_v2()")).scalar_one() == 0
    finally:
        foreign.close()
    writer = login(lambda conn, role: grant_writer(conn, role, schema="billing"))
    with Session(writer) as s:
        s.execute(text("SET billing.in_flight_marker = 'skip'"))  # session-level, before the txn
        s.commit()
        EventStore(s, schema="billing").append(Event("E", {}, ["course:c2"]))
        pid = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with Session(engine) as watcher:
            locks = EventStore(watcher, schema="billing").lock_stats()
            kinds = {i.kind for i in locks if i.pid == pid}
        assert "in-flight marker" in kinds, kinds
        s.rollback()


def test_a_store_that_was_not_migrated_says_so(session: Session) -> None:
    with pytest.raises(SchemaMissingError, match="schema="):
        EventStore(session, schema="not_migrated").read()


def test_a_reserved_word_can_name_a_store(fresh_db_url: str, engine: Engine) -> None:
    migrations.upgrade(fresh_db_url, schema="order")  # identifiers reach SQL quoted
    with Session(engine) as s:
        store = EventStore(s, schema="order")
        query = Query.of(tags=["o:1"])
        store.append(Event("Placed", tags=["o:1", "lock:o:1"]))
        assert store.read(query).head == 1 and EventStore(s).read(query).events == []
        s.commit()
    migrations.downgrade(fresh_db_url, "base", schema="order", force=True)
