"""What the migrations check before they touch a database, and the version record they keep.

The store's version record is the table ``dcb.alembic_version``, inside the store's own schema.
Before any revision runs, in the migrating transaction:

- one migration at a time (a transaction-level advisory lock);
- ``search_path`` is pinned to ``pg_catalog, pg_temp`` for the migration's statements, so no
  function or operator another role planted in a writable schema can run as the migrating role;
- a ``dcb`` schema must be owned by the migrating role, grant CREATE to nobody else, and either
  hold the version record or be empty: a schema someone else made is refused;
- the version record, and a legacy one (``dcb_store_alembic_version`` in the default schema,
  written by earlier versions), are read only when the migrating role owns them and they carry
  no triggers, rules or row security; a legacy record is moved into ``dcb`` and its table
  dropped.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, text

from dcb_store._impl.stores import quoted, render, store_id
from dcb_store.errors import MigrationRefusedError

SCHEMA = "dcb"
VERSION_TABLE = "alembic_version"
LEGACY_TABLE = "dcb_store_alembic_version"
MIGRATION_LOCK = 0x0DCB_5708_E416_0001  # pg_advisory_xact_lock key: one migration at a time
SAFE_SEARCH_PATH = "pg_catalog, pg_temp"

_TABLE_FACTS = text("""
    SELECT c.oid, n.nspname, pg_catalog.pg_get_userbyid(c.relowner) AS owner, c.relkind,
           c.relrowsecurity,
           EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid) AS triggers,
           EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid) AS rules,
           (SELECT pg_catalog.format_type(a.atttypid, NULL) FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = c.oid AND a.attname = 'version_num' AND NOT a.attisdropped)
             AS column_type
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relname = :name AND (CAST(:schema AS text) IS NULL OR n.nspname = :schema)
       AND n.nspname !~ '^pg_(toast_)?temp_'
     ORDER BY n.nspname
""")

_SCHEMA_FACTS = text("""
    SELECT n.oid, pg_catalog.pg_get_userbyid(n.nspowner) AS owner,
           (SELECT pg_catalog.string_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                   ELSE pg_catalog.pg_get_userbyid(a.grantee) END, ', ')
              FROM pg_catalog.aclexplode(n.nspacl) a
             WHERE a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner) AS creators,
           EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid)
        OR EXISTS (SELECT 1 FROM pg_catalog.pg_proc p WHERE p.pronamespace = n.oid)
        OR EXISTS (SELECT 1 FROM pg_catalog.pg_type t WHERE t.typnamespace = n.oid) AS objects
      FROM pg_catalog.pg_namespace n WHERE n.nspname = :schema
""")


def _role(conn: Connection) -> str:
    return str(conn.execute(text("SELECT current_user")).scalar_one())


def _quote(conn: Connection, schema: str, table: str) -> str:
    prep = conn.dialect.identifier_preparer
    return f"{prep.quote_identifier(schema)}.{prep.quote_identifier(table)}"


def _check_table(facts: Any, role: str, table: str) -> None:
    """Refuse to read a version table the migrating role cannot vouch for."""
    name = f"{facts.nspname}.{table}"
    if facts.owner != role:
        raise MigrationRefusedError(
            f'{name} is owned by role "{facts.owner}", not by the migrating role "{role}": '
            "dcb_store will not read a version table another role made. If it is yours, migrate "
            f'as "{facts.owner}"; if you do not know where it came from, drop it.'
        )
    if facts.relkind != "r" or facts.triggers or facts.rules or facts.relrowsecurity:
        raise MigrationRefusedError(
            f"{name} is not a plain table (it has triggers, rules, row security or is a view): "
            "dcb_store will not read it. Drop what was added to it, or the table."
        )
    if facts.column_type not in ("character varying", "text"):
        raise MigrationRefusedError(f"{name} has no text column version_num: not dcb_store's")


def pin_search_path(conn: Connection) -> str:
    """Pin ``search_path`` for this transaction; return the value to restore."""
    old = str(conn.execute(text("SELECT pg_catalog.current_setting('search_path')")).scalar_one())
    conn.execute(
        text("SELECT pg_catalog.set_config('search_path', :p, true)"), {"p": SAFE_SEARCH_PATH}
    )
    return old


def restore_search_path(conn: Connection, old: str) -> None:
    """Give the caller's transaction its ``search_path`` back."""
    conn.execute(text("SELECT pg_catalog.set_config('search_path', :p, true)"), {"p": old})


def prepare(conn: Connection, known_revisions: Collection[str], store: str = SCHEMA) -> None:
    """Lock, check trust, carry a legacy record over, and create ``dcb`` if it is missing.

    Runs in the migrating transaction, after :func:`pin_search_path`. ``store``: the schema of
    the store to migrate (``dcb``, the default store, unless several share the database).
    """
    conn.execute(text("SELECT pg_catalog.pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
    role = _role(conn)
    if store != "dcb":
        _check_store_name(conn, store)
    schema = conn.execute(_SCHEMA_FACTS, {"schema": store}).one_or_none()
    if schema is not None:
        if schema.owner != role:
            raise MigrationRefusedError(
                f'schema "{store}" is owned by role "{schema.owner}", not by the migrating role '
                f'"{role}": dcb_store migrates only a schema its migrating role created. Migrate '
                f'as "{schema.owner}" if that role is yours; otherwise drop the schema.'
            )
        if schema.creators:
            raise MigrationRefusedError(
                f'schema "{store}" lets {schema.creators} CREATE objects in it: revoke that '
                f"(REVOKE CREATE ON SCHEMA {quoted(store)} FROM ...) before migrating"
            )
    record = conn.execute(_TABLE_FACTS, {"name": VERSION_TABLE, "schema": store}).one_or_none()
    if record is not None:
        _check_table(record, role, VERSION_TABLE)
        return
    # a legacy record (earlier versions knew one store only) belongs to the default store
    legacy = _legacy_revisions(conn, role, known_revisions) if store == "dcb" else []
    if schema is not None and schema.objects and not legacy:
        raise MigrationRefusedError(
            f'schema "{store}" holds objects but no dcb_store version record '
            f"({store}.{VERSION_TABLE}): it was not made by dcb_store's migrations, which "
            "will not touch it. (A database built by a host's Alembic branch of the store's "
            "revisions: see 'Moving from the branch setup' in docs/usage.md.)"
        )
    if legacy and schema is None:
        raise MigrationRefusedError(
            f"{LEGACY_TABLE} says the store is at {', '.join(legacy)} but schema "
            f'"{store}" is missing: drop {LEGACY_TABLE} if the schema was removed on purpose'
        )
    name = quoted(store) if store != "dcb" else store  # the default's statements as before
    if schema is None:
        conn.execute(text(f"CREATE SCHEMA {name}"))
    conn.execute(
        text(
            f"CREATE TABLE {name}.{VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
            f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))"
        )
    )
    for revision in legacy:
        conn.execute(
            text(f"INSERT INTO {name}.{VERSION_TABLE} (version_num) VALUES (:v)"),
            {"v": revision},
        )


# the schemas of the database's stores: those with the store's lock-key function
_STORES = text("""
    SELECT DISTINCT n.nspname FROM pg_catalog.pg_proc p
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE p.proname IN ('lock_key_v1', 'lock_key_v2') AND n.nspname <> :schema
""")


def _check_store_name(conn: Connection, store: str) -> None:
    """Refuse a store name that cannot be told apart from the database's other stores.

    That is one whose lock-space id another store has, or one PostgreSQL will not take as a
    setting prefix (a loaded extension's, such as plpgsql).
    """
    mine = store_id(store)
    for (other,) in conn.execute(_STORES, {"schema": store}):
        if other != "dcb" and store_id(other) == mine:
            raise MigrationRefusedError(
                f'stores "{store}" and "{other}" would share lock-space id {mine} '
                "(docs/usage.md, 'Several stores in one database'): pick another schema name"
            )
    # PostgreSQL refuses a reserved prefix here; the setting keeps its value (an append earlier
    # in this transaction recorded its marker there)
    conn.execute(
        text(
            "SELECT pg_catalog.set_config(:n, "
            "COALESCE(pg_catalog.current_setting(:n, true), ''), true)"
        ),
        {"n": f"{store}.in_flight_marker"},
    )


def _legacy_revisions(conn: Connection, role: str, known_revisions: Collection[str]) -> list[str]:
    """The revisions recorded by earlier versions (and drop their table), after checks."""
    found = conn.execute(_TABLE_FACTS, {"name": LEGACY_TABLE, "schema": None}).all()
    if not found:
        return []
    if len(found) > 1:
        where = ", ".join(f"{f.nspname}.{LEGACY_TABLE}" for f in found)
        raise MigrationRefusedError(
            f"several legacy version tables ({where}): keep the one of this database's store "
            "and drop the others"
        )
    (facts,) = found
    _check_table(facts, role, LEGACY_TABLE)
    table = _quote(conn, facts.nspname, LEGACY_TABLE)
    rows = [str(r) for r in conn.execute(text(f"SELECT version_num FROM {table}")).scalars()]
    unknown = [r for r in rows if r not in known_revisions]
    if unknown:
        raise MigrationRefusedError(
            f"{facts.nspname}.{LEGACY_TABLE} names revisions this dcb_store does not know "
            f"({', '.join(unknown)}): it comes from a newer dcb_store, or not from dcb_store"
        )
    conn.execute(text(f"DROP TABLE {table}"))
    return rows


def tidy(conn: Connection, store: str = SCHEMA) -> None:
    """Drop the store's schema again when it holds only an empty version record.

    (Left by a downgrade or an inspection on a database without the store.)
    """
    name = quoted(store) if store != "dcb" else store
    only_record = text(f"""
        SELECT NOT EXISTS (SELECT 1 FROM {name}.{VERSION_TABLE})
           AND (SELECT count(*) FROM pg_catalog.pg_class c
                  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = '{store}') = 2
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = '{store}')
    """)
    exists = conn.execute(
        text("SELECT pg_catalog.to_regclass(:t) IS NOT NULL"), {"t": f"{name}.{VERSION_TABLE}"}
    ).scalar_one()
    if exists and conn.execute(only_record).scalar_one():  # the table and its primary key
        conn.execute(text(f"DROP SCHEMA {name} CASCADE"))


def events_stored(conn: Connection, store: str = SCHEMA) -> bool:
    """Whether the store's ``events`` table exists and holds at least one event."""
    table = "dcb.events" if store == "dcb" else f"{quoted(store)}.events"
    exists = conn.execute(text(f"SELECT pg_catalog.to_regclass('{table}') IS NOT NULL"))
    if not exists.scalar_one():
        return False
    return bool(conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {table})")).scalar_one())


def offline_guard(store: str = SCHEMA) -> str:
    """The offline script's check that the store's schema is the migrating role's."""
    return f"""DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_namespace
              WHERE nspname = '{store}' AND nspowner <> (SELECT oid FROM pg_catalog.pg_roles
                                                         WHERE rolname = current_user)) THEN
    RAISE EXCEPTION 'schema "{store}" is not owned by the migrating role %: refusing',
      current_user;
  END IF;
END $$"""


def offline_events_guard(store: str = SCHEMA) -> str:
    """The offline script's refusal to drop the store's stored events."""
    return OFFLINE_EVENTS_GUARD if store == "dcb" else render(OFFLINE_EVENTS_GUARD, store)


OFFLINE_GUARD = offline_guard()

OFFLINE_EVENTS_GUARD = """DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM dcb.events) THEN
    RAISE EXCEPTION 'dcb.events is not empty: downgrading to base would drop every event';
  END IF;
END $$"""
