"""``dcb_store/sql/schema.sql`` is the whole schema at head: a database built from it equals one
built by the revisions, object by object.

The pattern of procrastinate's ``tests/migration``: the schema file is the truth a reader reads,
the revisions are deltas, and this test holds them together. Two new databases on the test
server: one migrated to head by the packaged revisions, one built by executing schema.sql (one
``execute`` through psycopg) and stamping the version record as the file's header says, after
which ``migrations.upgrade`` must find nothing to do. Then every object of schema ``dcb`` is
described through the catalogs (tables and columns, constraints and whether they are validated,
indexes, sequences, functions with their bodies and settings, triggers, privileges, comments,
the version record) and the two descriptions must be equal.

A failure names each object that differs. A new revision that changes the schema fails here
until schema.sql (and its "Revision:" line) says the same: that is the point.
"""

from __future__ import annotations

import difflib
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import create_engine, make_url, text

from dcb_store import _sql, migrations

SCHEMA_FILE = "dcb_store/sql/schema.sql"

# The version record the migrations keep (dcb_store._impl.schema_guard.prepare makes the same
# table); schema.sql's header gives these statements for a database built from the file.
STAMP = (
    "CREATE TABLE dcb.alembic_version (version_num VARCHAR(32) NOT NULL, "
    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
)
STAMP_VERSION = "INSERT INTO dcb.alembic_version (version_num) VALUES ({})"


def _acl(acl: str, kind: str | None, owner: str) -> str:
    """SQL for an ACL as comparable text: PostgreSQL's default when it is NULL, the owner and
    PUBLIC by those words (not by name), predefined roles by name. Grants to any other role are
    left out: roles are per cluster, and tests grant to roles of their own."""
    acl_or_default = f"coalesce({acl}, pg_catalog.acldefault('{kind}', {owner}))" if kind else acl
    return f"""(SELECT coalesce(pg_catalog.string_agg(x.item, ', ' ORDER BY x.item), '')
       FROM (SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' WHEN a.grantee = {owner} THEN 'OWNER'
                         ELSE pg_catalog.pg_get_userbyid(a.grantee) END
                    || '=' || a.privilege_type || CASE WHEN a.is_grantable THEN '*' ELSE '' END
                    || ' by ' || CASE WHEN a.grantor = {owner} THEN 'OWNER'
                                      ELSE pg_catalog.pg_get_userbyid(a.grantor) END AS item
               FROM pg_catalog.aclexplode({acl_or_default}) a
              WHERE a.grantee = 0 OR a.grantee = {owner} OR a.grantee < 16384) x)"""


def _owner(owner: str) -> str:
    return f"""(CASE WHEN {owner} = (SELECT r.oid FROM pg_catalog.pg_roles r
                                      WHERE r.rolname = current_user)
                    THEN 'the migrating role' ELSE pg_catalog.pg_get_userbyid({owner}) END)"""


DCB = "(SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = 'dcb')"

# Each query describes one kind of object: the first column names the object, the others are
# what must be equal.
CATALOG = {
    "schema": f"""
        SELECT 'schema ' || n.nspname, {_owner("n.nspowner")} AS owner,
               {_acl("n.nspacl", "n", "n.nspowner")} AS acl,
               pg_catalog.obj_description(n.oid, 'pg_namespace') AS comment
          FROM pg_catalog.pg_namespace n WHERE n.oid = {DCB}""",
    "relations": f"""
        SELECT 'relation ' || c.relname, c.relkind, c.relpersistence, am.amname AS access_method,
               c.reloptions::text AS options, c.relreplident AS replica_identity,
               c.relrowsecurity AS row_security, c.relforcerowsecurity AS force_row_security,
               c.relispartition AS partition, {_owner("c.relowner")} AS owner,
               CASE WHEN c.relkind = 'S' THEN {_acl("c.relacl", "s", "c.relowner")}
                    WHEN c.relkind IN ('r', 'p', 'v', 'm', 'f')
                    THEN {_acl("c.relacl", "r", "c.relowner")} END AS acl,
               pg_catalog.obj_description(c.oid, 'pg_class') AS comment
          FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
         WHERE c.relnamespace = {DCB}""",
    "columns": f"""
        SELECT 'column ' || c.relname || '.' || a.attname,
               pg_catalog.row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum) AS ordinal,
               pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
               a.attnotnull AS not_null, pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS default,
               a.attidentity AS identity, a.attgenerated AS generated,
               co.collname AS collation, a.attstattarget::text AS statistics,
               a.attstorage AS storage, {_acl("a.attacl", None, "c.relowner")} AS acl,
               pg_catalog.col_description(c.oid, a.attnum) AS comment
          FROM pg_catalog.pg_attribute a
          JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
          LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          LEFT JOIN pg_catalog.pg_collation co
            ON co.oid = a.attcollation AND a.attcollation <> 100  -- 100: the default collation
         WHERE c.relnamespace = {DCB} AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
           AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraints": f"""
        SELECT 'constraint ' || coalesce(c.relname, pg_catalog.format_type(con.contypid, NULL))
               || '.' || con.conname,
               con.contype AS type, pg_catalog.pg_get_constraintdef(con.oid) AS definition,
               con.convalidated AS validated, con.condeferrable AS deferrable,
               con.condeferred AS deferred, con.connoinherit AS no_inherit,
               pg_catalog.obj_description(con.oid, 'pg_constraint') AS comment
          FROM pg_catalog.pg_constraint con
          LEFT JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
         WHERE con.connamespace = {DCB}""",
    "indexes": f"""
        SELECT 'index ' || c.relname, pg_catalog.pg_get_indexdef(i.indexrelid) AS definition,
               i.indisunique AS is_unique, i.indisprimary AS is_primary,
               i.indisexclusion AS is_exclusion, i.indimmediate AS immediate,
               i.indisclustered AS clustered, i.indisvalid AS valid,
               i.indisreplident AS replica_identity
          FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
         WHERE c.relnamespace = {DCB}""",
    "sequences": f"""
        SELECT 'sequence ' || c.relname, pg_catalog.format_type(s.seqtypid, NULL) AS type,
               s.seqstart AS start, s.seqincrement AS increment, s.seqmin AS min,
               s.seqmax AS max, s.seqcache AS cache, s.seqcycle AS cycle,
               (SELECT pg_catalog.string_agg(t.relname || '.' || a.attname || ' ('
                                             || d.deptype::text || ')', ', ')
                  FROM pg_catalog.pg_depend d
                  JOIN pg_catalog.pg_class t ON t.oid = d.refobjid
                  JOIN pg_catalog.pg_attribute a
                    ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                 WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                   AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                   AND d.objid = c.oid AND d.deptype IN ('a', 'i')) AS owned_by
          FROM pg_catalog.pg_sequence s JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid
         WHERE c.relnamespace = {DCB}""",
    "functions": f"""
        SELECT 'function ' || p.oid::pg_catalog.regprocedure::text,
               CASE WHEN p.prokind IN ('f', 'p', 'w') THEN pg_catalog.pg_get_functiondef(p.oid)
               END AS definition,
               p.prokind AS kind, l.lanname AS language, p.provolatile AS volatility,
               p.proparallel AS parallel, p.proisstrict AS strict,
               p.prosecdef AS security_definer, p.proleakproof AS leakproof,
               p.procost AS cost, p.prorows AS rows, p.proconfig::text AS config,
               pg_catalog.pg_get_function_arguments(p.oid) AS arguments,
               pg_catalog.pg_get_function_result(p.oid) AS result,
               {_owner("p.proowner")} AS owner, {_acl("p.proacl", "f", "p.proowner")} AS acl,
               pg_catalog.obj_description(p.oid, 'pg_proc') AS comment
          FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
         WHERE p.pronamespace = {DCB}""",
    "triggers": f"""
        SELECT 'trigger ' || c.relname || '.' || t.tgname,
               pg_catalog.pg_get_triggerdef(t.oid) AS definition, t.tgenabled AS enabled,
               pg_catalog.obj_description(t.oid, 'pg_trigger') AS comment
          FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace = {DCB} AND NOT t.tgisinternal""",
    "types": f"""
        SELECT 'type ' || t.typname, t.typtype AS kind, {_owner("t.typowner")} AS owner,
               pg_catalog.obj_description(t.oid, 'pg_type') AS comment
          FROM pg_catalog.pg_type t WHERE t.typnamespace = {DCB}""",
    "rules and policies": """
        SELECT 'rule ' || r.tablename || '.' || r.rulename, r.definition
          FROM pg_catalog.pg_rules r WHERE r.schemaname = 'dcb'
        UNION ALL
        SELECT 'policy ' || p.tablename || '.' || p.policyname,
               concat_ws(' | ', p.permissive, p.roles::text, p.cmd, p.qual, p.with_check)
          FROM pg_catalog.pg_policies p WHERE p.schemaname = 'dcb'""",
    "default privileges": f"""
        SELECT 'default privileges ' || d.defaclobjtype::text || ' of ' || {_owner("d.defaclrole")},
               {_acl("d.defaclacl", None, "d.defaclrole")} AS acl
          FROM pg_catalog.pg_default_acl d WHERE d.defaclnamespace = {DCB}""",
    "other objects": f"""
        SELECT 'operator ' || o.oid::pg_catalog.regoperator::text, NULL
          FROM pg_catalog.pg_operator o WHERE o.oprnamespace = {DCB}
        UNION ALL
        SELECT 'collation ' || c.collname, NULL
          FROM pg_catalog.pg_collation c WHERE c.collnamespace = {DCB}
        UNION ALL
        SELECT 'statistics ' || s.stxname, pg_catalog.pg_get_statisticsobjdef(s.oid)
          FROM pg_catalog.pg_statistic_ext s WHERE s.stxnamespace = {DCB}
        UNION ALL
        SELECT 'extension ' || e.extname, e.extversion
          FROM pg_catalog.pg_extension e WHERE e.extnamespace = {DCB}""",
}
VERSION_RECORD = "SELECT 'version record ' || v.version_num, NULL FROM dcb.alembic_version v"

Description = dict[str, dict[str, Any]]


def describe(url: str) -> Description:
    """Every object of schema dcb: its name ('function dcb.read_v1(...)') -> its facts."""
    found: Description = {}
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            for kind, query in [*CATALOG.items(), ("version record", VERSION_RECORD)]:
                result = conn.execute(text(query))
                fields = list(result.keys())[1:]
                for row in result:
                    name = row[0]
                    assert name not in found, f"two objects named {name} ({kind})"
                    found[name] = dict(zip(fields, row[1:], strict=True))
    finally:
        engine.dispose()
    return found


def differences(migrated: Description, from_file: Description) -> list[str]:
    """What differs, one entry per object: each field that differs (a diff for long texts)."""
    out: list[str] = []
    for name in sorted(migrated.keys() - from_file.keys()):
        out.append(f"{name}: made by the revisions, missing from schema.sql")
    for name in sorted(from_file.keys() - migrated.keys()):
        out.append(f"{name}: in schema.sql, not made by the revisions")
    for name in sorted(migrated.keys() & from_file.keys()):
        fields = []
        for field, want in migrated[name].items():
            got = from_file[name][field]
            if got == want:
                continue
            if isinstance(want, str) and isinstance(got, str) and "\n" in want + got:
                lines = list(
                    difflib.unified_diff(
                        want.splitlines(), got.splitlines(), "revisions", "schema.sql", n=1
                    )
                )
                more = [f"... ({len(lines) - 32} more lines)"] if len(lines) > 32 else []
                diff = "\n      ".join(line.rstrip("\n") for line in lines[:32] + more)
                fields.append(f"  {field} differs:\n      {diff}")
            else:
                fields.append(f"  {field}: {got!r} in schema.sql, {want!r} by the revisions")
        if fields:
            out.append(f"{name}:\n" + "\n".join(fields))
    return out


@contextmanager
def new_database(server_url: str) -> Iterator[str]:
    """An empty database on the test server, dropped afterwards."""
    name = f"dcb_sf_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT", pool_size=1)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def build_from_schema_file(url: str, revision: str) -> None:
    """Execute schema.sql in one go, stamp the version record, commit."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:  # one transaction, committed on leaving
        conn.execute(_sql.load("schema.sql"))  # no parameters: several statements at once
        conn.execute(STAMP)
        conn.execute(sql.SQL(STAMP_VERSION).format(sql.Literal(revision)))


def test_schema_file_names_the_head_revision() -> None:
    found = re.findall(r"^-- Revision: (\S+)$", _sql.load("schema.sql"), flags=re.M)
    head = migrations.head()
    assert found == [head], (
        f"{SCHEMA_FILE} describes revision {found} but the revisions' head is {head}: bring "
        "schema.sql to the new head (and its 'Revision:' line), in the same commit"
    )
    assert f"VALUES ('{head}')" in _sql.load("schema.sql"), "the stamp in its header too"


def test_the_schema_file_builds_what_the_revisions_build(server_url: str) -> None:
    head = migrations.head()
    with new_database(server_url) as migrated_url, new_database(server_url) as file_url:
        migrations.upgrade(migrated_url)
        build_from_schema_file(file_url, head)
        before = describe(file_url)
        migrations.upgrade(file_url)  # stamped at head: nothing to run, nothing refused
        assert describe(file_url) == before, "the stamped database was migrated further"
        migrated = describe(migrated_url)
    # the comparison sees the schema: tables, functions, the version record
    assert {"relation events", "relation alembic_version", f"version record {head}"} <= set(
        migrated
    )
    assert sum(name.startswith("function ") for name in migrated) >= 25
    found = differences(migrated, before)
    assert not found, (
        f"{SCHEMA_FILE} and the revisions build different schemas; bring schema.sql up to date "
        f"with the revisions (it describes head, {head}):\n" + "\n".join(found)
    )


@pytest.mark.parametrize(
    "sql_text",
    [
        # each alone is a difference the comparison must name
        "COMMENT ON TABLE dcb.checkpoints IS 'x'",
        "ALTER TABLE dcb.events VALIDATE CONSTRAINT events_valid",
        "GRANT EXECUTE ON FUNCTION dcb.read_v1(jsonb, bigint, integer, boolean) TO PUBLIC",
        "ALTER FUNCTION dcb.lock_key_v2(text) SET work_mem = '1MB'",
    ],
)
def test_the_comparison_names_what_differs(server_url: str, sql_text: str) -> None:
    """The comparison is not blind to what a schema file is most likely to get wrong."""
    with new_database(server_url) as url:
        build_from_schema_file(url, migrations.head())
        before = describe(url)
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text(sql_text))
        engine.dispose()
        after = describe(url)
    found = differences(before, after)
    assert len(found) == 1, found


def test_grants_to_ordinary_roles_are_left_out(server_url: str) -> None:
    """Tests grant to roles of their own: such grants are not part of the schema."""
    role = f"dcb_sf_{uuid.uuid4().hex[:10]}"
    with new_database(server_url) as url:
        build_from_schema_file(url, migrations.head())
        before = describe(url)
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(text(f'CREATE ROLE "{role}"'))
                conn.execute(text(f'GRANT USAGE ON SCHEMA dcb TO "{role}"'))
                conn.execute(text(f'GRANT SELECT ON dcb.events TO "{role}"'))
                conn.execute(text(f'GRANT EXECUTE ON FUNCTION dcb.lock_key_v2(text) TO "{role}"'))
            assert differences(before, describe(url)) == []
        finally:
            with engine.begin() as conn:
                conn.execute(text(f'DROP OWNED BY "{role}"'))
                conn.execute(text(f'DROP ROLE "{role}"'))
            engine.dispose()


def test_every_downgrade_returns_to_what_the_upgrade_built(server_url: str) -> None:
    """The same comparison for the explicit downgrades (the ``*_down.sql`` files): head, then
    down to a revision, equals an upgrade to that revision, for every revision below head."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrations.alembic_config())
    below_head = [r.revision for r in script.walk_revisions()][1:]
    found: list[str] = []
    for revision in below_head:
        with new_database(server_url) as up_url, new_database(server_url) as down_url:
            migrations.upgrade(up_url, revision)
            migrations.upgrade(down_url)
            migrations.downgrade(down_url, revision)
            found += [
                f"[{revision}] {d}" for d in differences(describe(up_url), describe(down_url))
            ]
    assert below_head and not found, "downgrading to a revision differs from upgrading to it:\n" + (
        "\n".join(found)
    )
