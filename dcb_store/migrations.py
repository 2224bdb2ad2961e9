"""Run the packaged Alembic revisions: ``upgrade(bind)`` brings a database to the current schema.

Every route runs the same code with the same checks and the same version record
(``dcb.alembic_version``): :func:`upgrade` and :func:`downgrade` (also from a host application's
own Alembic ``env.py``: one line, ``migrations.upgrade(connection)``), ``dcb-store upgrade``, and
``alembic upgrade head`` from the repository root (its ``env.py`` calls
:func:`run_environment`). The revisions run through Alembic's ``MigrationContext`` directly, so
a host's ``alembic.context`` is left alone. See :mod:`dcb_store._impl.schema_guard` for what is
checked before anything runs.

``schema=`` names the store to migrate when several share the database (default ``dcb``): the
revisions' SQL is rendered for it (:mod:`dcb_store._impl.stores`) and its version record is
``<schema>.alembic_version``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import IO, Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext, RevisionStep
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import URL, Connection, Engine, create_engine, pool
from sqlalchemy.exc import DBAPIError

from dcb_store._impl import schema_guard as guard
from dcb_store._impl.stores import DEFAULT, check_schema, render
from dcb_store._impl.urls import normalize_url
from dcb_store.errors import DatabaseError, MigrationError, MigrationRefusedError

__all__ = [
    "SCHEMA",
    "VERSION_TABLE",
    "alembic_config",
    "downgrade",
    "head",
    "include_name",
    "normalize_url",
    "run_environment",
    "script_location",
    "upgrade",
    "write_sql",
]

SCHEMA = guard.SCHEMA
VERSION_TABLE = guard.VERSION_TABLE
_Steps = Callable[[Any, MigrationContext], Iterable[Any]]


def script_location() -> str:
    """The directory of the packaged Alembic environment and revisions: ``dcb_store/alembic``."""
    path = Path(__file__).resolve().parent / "alembic"
    if not (path / "env.py").is_file():
        raise MigrationError(f"the packaged migrations are missing (looked in {path})")
    return str(path)


def alembic_config() -> Config:
    """An Alembic Config pointing at the revisions shipped inside the package."""
    cfg = Config()
    cfg.set_main_option("script_location", script_location())
    return cfg


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision shipped in this package."""
    return str(_script().get_current_head())


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """For a host's ``context.configure(include_name=...)``: leave the store's schema out.

    Needed only when the host's autogenerate looks at every schema (``include_schemas=True``).
    With several stores, leave each out: ``lambda n, t, p: t != "schema" or n not in (...)``.
    """
    return not (type_ == "schema" and name == SCHEMA)


@contextmanager
def _errors() -> Iterator[None]:
    """Alembic's and the driver's errors, as DcbStoreErrors."""
    try:
        yield
    except CommandError as exc:
        raise MigrationError(str(exc)) from exc
    except DBAPIError as exc:
        orig = exc.orig if exc.orig is not None else exc
        message = str(orig).strip().splitlines()[0] if str(orig).strip() else repr(orig)
        raise DatabaseError(message, getattr(exc.orig, "sqlstate", None)) from exc
    except Exception as exc:
        from alembic.script.revision import RevisionError

        if isinstance(exc, RevisionError):
            raise MigrationError(str(exc)) from exc
        raise


@contextmanager
def _op_proxy(mc: MigrationContext) -> Iterator[None]:
    """``alembic.op`` for the store's revisions; whatever was installed before comes back."""
    from alembic.operations import Operations

    from alembic import op

    previous = getattr(op, "_proxy", None)
    with Operations.context(mc):
        yield
    if previous is not None:
        previous._install_proxy()


def _render_for(mc: MigrationContext, schema: str) -> None:
    """Make the revisions' SQL (``op.execute`` of a string) the store ``schema``'s.

    The revisions are written for ``dcb``; for it nothing changes.
    """
    if schema == DEFAULT or getattr(mc.impl, "_dcb_schema", None) == schema:
        return
    execute = mc.impl.execute

    def rendered(sql: Any, execution_options: Any = None) -> None:
        execute(render(sql, schema) if isinstance(sql, str) else sql, execution_options)

    mc.impl.execute = rendered  # type: ignore[method-assign]
    mc.impl._dcb_schema = schema  # type: ignore[attr-defined]


def _hold_back_root(steps: _Steps, held: list[Any], force: bool, schema: str = DEFAULT) -> _Steps:
    """Keep the first revision's downgrade (it drops the schema, version record included) back.

    The caller runs it after the other steps; it refuses to drop stored events unless forced.
    """

    def filtered(heads: Any, mc: MigrationContext) -> Iterator[Any]:
        planned = list(steps(heads, mc))
        for step in planned:
            root = isinstance(step, RevisionStep) and step.revision.down_revision is None
            if root and step.is_downgrade:
                if not force:
                    _guard_events(mc, schema)  # before any step runs
                held.append(step)
        yield from (step for step in planned if step not in held)

    return filtered


def _guard_events(mc: MigrationContext, schema: str = DEFAULT) -> None:
    """Refuse (online) or make the script refuse (offline) to drop stored events."""
    if mc.as_sql:
        mc.impl.static_output(guard.offline_events_guard(schema) + ";\n")
    elif mc.connection is not None and guard.events_stored(mc.connection, schema):
        raise MigrationRefusedError(
            f"{schema}.events holds events: downgrading the store to base would drop every one of "
            "them. Refused; pass force=True (dcb-store downgrade base --force, "
            "alembic -x force=yes downgrade base) to drop them anyway"
        )


def _run(mc: MigrationContext, held: list[Any], run: Callable[[], None]) -> None:
    run()
    if held:
        with _op_proxy(mc):
            held[0].migration_fn()


def _online(conn: Connection, work: Callable[[], None], schema: str = DEFAULT) -> None:
    """Run ``work`` in ``conn``'s transaction (or one of its own, committed), checked."""
    owns = not conn.in_transaction()
    with _errors(), conn.begin() if owns else nullcontext():
        previous = guard.pin_search_path(conn)
        script = _script()
        guard.prepare(conn, {r.revision for r in script.walk_revisions()}, schema)
        work()
        guard.tidy(conn, schema)
        if not owns:
            guard.restore_search_path(conn, previous)


def _migrate(
    bind: Engine | Connection | str | URL, revision: str, up: bool, force: bool, schema: str
) -> None:
    schema = check_schema(schema)

    def steps(heads: Any, _mc: MigrationContext) -> Iterable[Any]:
        script = _script()
        if up:
            return script._upgrade_revs(revision, heads)
        return script._downgrade_revs(revision, heads)

    def work_on(conn: Connection) -> Callable[[], None]:
        def work() -> None:
            held: list[Any] = []
            mc = MigrationContext.configure(
                connection=conn,
                opts={
                    "script": _script(),
                    "fn": _hold_back_root(steps, held, force, schema),
                    "version_table": VERSION_TABLE,
                    "version_table_schema": schema,
                },
            )
            _render_for(mc, schema)

            def run() -> None:
                with _op_proxy(mc):
                    mc.run_migrations()

            _run(mc, held, run)

        return work

    if isinstance(bind, Connection):
        _online(bind, work_on(bind), schema)
        return
    with _errors():
        engine = (
            bind
            if isinstance(bind, Engine)
            else create_engine(normalize_url(bind), poolclass=pool.NullPool)
        )
    try:
        with _errors(), engine.connect() as conn:
            _online(conn, work_on(conn), schema)
    finally:
        if engine is not bind:
            engine.dispose()


def upgrade(
    bind: Engine | Connection | str | URL, revision: str = "heads", *, schema: str = DEFAULT
) -> None:
    """Apply the packaged revisions up to ``revision`` (default: all) to the store ``schema``.

    With a Connection that is not in a transaction, the migration runs in a transaction of its
    own and commits, leaving the connection as it found it (what a host's ``env.py`` needs);
    in a transaction, it joins it and the caller commits.
    """
    _migrate(bind, revision, up=True, force=False, schema=schema)


def downgrade(
    bind: Engine | Connection | str | URL,
    revision: str,
    *,
    force: bool = False,
    schema: str = DEFAULT,
) -> None:
    """Revert the store ``schema`` down to ``revision`` (``"base"`` removes the schema).

    Removing the schema while ``dcb.events`` holds events raises
    :class:`~dcb_store.errors.MigrationRefusedError` unless ``force`` is true.
    """
    _migrate(bind, revision, up=False, force=force, schema=schema)


def write_sql(
    output: IO[str],
    revision: str = "heads",
    *,
    start: str | None = None,
    schema: str = DEFAULT,
) -> None:
    """Write the SQL of an upgrade from ``start`` (default: an empty database) for a DBA.

    Nothing is written when a revision is unknown (:class:`MigrationError`).
    """
    schema = check_schema(schema)
    buffer = io.StringIO()
    with _errors():
        script = _script()
        mc = MigrationContext.configure(
            dialect_name="postgresql",
            opts={
                "script": script,
                "as_sql": True,
                "output_buffer": buffer,
                "literal_binds": True,
                "starting_rev": start,
                "fn": lambda heads, _mc: script._upgrade_revs(revision, heads),
                "version_table": VERSION_TABLE,
                "version_table_schema": schema,
            },
        )
        _render_for(mc, schema)
        with mc.begin_transaction():
            _offline_preamble(mc.impl.static_output, schema)
            with _op_proxy(mc):
                mc.run_migrations()
    output.write(buffer.getvalue())


def _offline_preamble(out: Callable[[str], None], schema: str = DEFAULT) -> None:
    out(f"SET LOCAL search_path = {guard.SAFE_SEARCH_PATH};\n")
    out(guard.offline_guard(schema) + ";\n")
    out(render(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA};\n", schema))


def _environment_url(context: Any) -> str | None:
    x = context.get_x_argument(as_dictionary=True)
    url = x.get("url") or os.environ.get("DATABASE_URL")
    url = url or context.config.get_main_option("sqlalchemy.url")
    return str(normalize_url(url)) if url else None


def run_environment(context: Any) -> None:
    """The body of the packaged ``env.py``: ``alembic`` commands on the store's revisions.

    Target: ``config.attributes["connection"]``, else ``-x url=...``, ``DATABASE_URL`` or
    ``sqlalchemy.url``. ``-x force=yes`` lets a downgrade to base drop stored events. The store:
    ``config.attributes["schema"]``, else ``-x schema=...``, else ``dcb``.
    """
    x = context.get_x_argument(as_dictionary=True)
    force = x.get("force", "") in ("1", "yes", "true")
    schema = check_schema(context.config.attributes.get("schema") or x.get("schema") or DEFAULT)
    held: list[Any] = []
    version = {"version_table": VERSION_TABLE, "version_table_schema": schema}
    if context.is_offline_mode():
        url = _environment_url(context)
        target = {"url": url} if url else {"dialect_name": "postgresql"}
        context.configure(literal_binds=True, **target, **version)
        mc = context.get_context()
        mc._migrations_fn = _hold_back_root(mc._migrations_fn, held, force, schema)
        _render_for(mc, schema)
        with context.begin_transaction():
            _offline_preamble(mc.impl.static_output, schema)
            _run(mc, held, context.run_migrations)
        return

    def work_on(conn: Connection) -> Callable[[], None]:
        def work() -> None:
            context.configure(connection=conn, **version)
            mc = context.get_context()
            mc._migrations_fn = _hold_back_root(mc._migrations_fn, held, force, schema)
            _render_for(mc, schema)
            _run(mc, held, context.run_migrations)

        return work

    conn = context.config.attributes.get("connection")
    if conn is not None:
        _online(conn, work_on(conn), schema)
        return
    url = _environment_url(context)
    if not url:
        raise MigrationError("set DATABASE_URL (or pass -x url=...) to the database to migrate")
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with _errors(), engine.connect() as conn:
            _online(conn, work_on(conn), schema)
    finally:
        engine.dispose()
