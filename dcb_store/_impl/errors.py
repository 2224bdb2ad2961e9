"""Mapping from SQLSTATEs (returned by the append function or raised by the driver) to errors."""

from __future__ import annotations

import re
from typing import Any, NoReturn

from sqlalchemy.exc import DBAPIError, OperationalError

from dcb_store.errors import (
    ConditionFailedError,
    ConnectionLostError,
    DatabaseError,
    DcbStoreError,
    DeadlockError,
    DuplicateEventIdError,
    InvalidInputError,
    LockTimeoutError,
    PermissionDeniedError,
    SchemaMissingError,
    SerializationConflictError,
    StatementTimeoutError,
)


def _by_sqlstate(*classes: type[DcbStoreError]) -> dict[str, type[DcbStoreError]]:
    """A registry of error classes by their own ``sqlstate`` (as psycopg.errors registers its)."""
    registry: dict[str, type[DcbStoreError]] = {}
    for cls in classes:
        if cls.sqlstate is None or cls.sqlstate in registry:
            raise TypeError(f"{cls.__name__} needs a SQLSTATE of its own")
        registry[cls.sqlstate] = cls
    return registry


# The driver errors that one SQLSTATE alone names, whatever the message and the connection's
# state; LockTimeoutError is made with the lock timeout, the others with the driver's message.
_DRIVER_ERRORS = _by_sqlstate(
    SerializationConflictError, DeadlockError, LockTimeoutError, StatementTimeoutError
)
# invalid_parameter_value: the SQL functions' own limits (dcb_store.limits), past Python's. It is
# not InvalidInputError's own SQLSTATE: Python's validation raises that error too.
_DRIVER_ERRORS["22023"] = InvalidInputError

# undefined_table, undefined_function, invalid_schema_name: the migrations have not run.
_SCHEMA_MISSING = {"42P01", "42883", "3F000"}
# what a store other than dcb lacks when it was not migrated (docs/usage.md, several stores)
_STORE_OBJECT = re.compile(
    r'^schema "|\.(append_v\d|read_v1|events|checkpoints|appends_in_flight_v\d|get_advisory_lock_)'
)
# admin_shutdown, crash_shutdown, cannot_connect_now: the server ended or refused the session.
_SESSION_ENDED = {"57P01", "57P02", "57P03"}


def is_connection_lost(exc: DBAPIError) -> bool:
    """Whether the driver error means the connection is gone (or could not be opened)."""
    sqlstate: str | None = getattr(exc.orig, "sqlstate", None)
    return bool(
        exc.connection_invalidated
        or sqlstate in _SESSION_ENDED
        or (sqlstate or "").startswith("08")
        or (sqlstate is None and isinstance(exc, OperationalError))
    )


def outcome_error(
    sqlstate: str,
    conflict: int | None,
    after: int | None,
    lock_timeout: float | None,
    detail: str | None = None,
) -> Exception:
    """The error for a non-success outcome returned by ``dcb.append_v5``."""
    if sqlstate == ConditionFailedError.sqlstate:
        return ConditionFailedError(conflict, after)
    if sqlstate == DuplicateEventIdError.sqlstate:
        return DuplicateEventIdError(conflict)
    if sqlstate == LockTimeoutError.sqlstate:
        return LockTimeoutError(lock_timeout, detail)
    if sqlstate == SerializationConflictError.sqlstate:
        return SerializationConflictError(
            "an append this transaction's snapshot cannot see wrote what the condition reads "
            f"({detail or 'stale snapshot'}); roll back and retry in a new transaction"
        )
    return DatabaseError(f"unexpected outcome {sqlstate} from dcb.append_v5", sqlstate)


def raise_driver_error(exc: DBAPIError, lock_timeout: float | None = None) -> NoReturn:
    """Re-raise a driver error as a :class:`DcbStoreError`, chained with ``from``."""
    orig: Any = exc.orig
    sqlstate: str | None = getattr(orig, "sqlstate", None)
    message = str(orig).strip() if orig is not None else str(exc)
    error_class = _DRIVER_ERRORS.get(sqlstate or "")
    if error_class is LockTimeoutError:
        raise LockTimeoutError(lock_timeout) from exc
    if error_class is not None:
        raise error_class(message) from exc
    if is_connection_lost(exc):
        raise ConnectionLostError(message, sqlstate) from exc
    if sqlstate == PermissionDeniedError.sqlstate:
        raise PermissionDeniedError(
            f"{message} (grant the role what it needs with dcb_store.roles)", sqlstate
        ) from exc
    if sqlstate in _SCHEMA_MISSING and ("dcb" in message or _STORE_OBJECT.search(message)):
        raise SchemaMissingError(
            "this database has no (current) dcb_store schema; run `dcb-store upgrade` "
            "or dcb_store.migrations.upgrade(engine) first (with --schema / schema= for a "
            f"store other than dcb) ({message})"
        ) from exc
    raise DatabaseError(message, sqlstate) from exc
