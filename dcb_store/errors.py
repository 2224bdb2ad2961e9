"""One error hierarchy, rooted at :class:`DcbStoreError`.

Every error carries data (positions, keys, SQLSTATE) rather than only a message. Errors that a
caller should answer by retrying the unit of work in a fresh transaction are
:class:`ConcurrencyError` subclasses and have ``retryable = True``.
"""

from __future__ import annotations

__all__ = [
    "CircuitOpenError",
    "ConcurrencyError",
    "ConditionFailedError",
    "ConnectionLostError",
    "DatabaseError",
    "DcbStoreError",
    "DeadlockError",
    "DuplicateEventIdError",
    "InvalidInputError",
    "LockTimeoutError",
    "MigrationError",
    "MigrationRefusedError",
    "ReplicaLagError",
    "SchemaMissingError",
    "SerializationConflictError",
    "StandbyWithoutPrimaryError",
    "StatementTimeoutError",
    "TransactionStateError",
    "UnsupportedDatabaseError",
]


class DcbStoreError(Exception):
    """Base of every error this library raises."""

    sqlstate: str | None = None
    retryable: bool = False


class InvalidInputError(DcbStoreError, ValueError):
    """Input that can never be stored (an empty batch, a bare ``lock:`` tag, NUL characters...)."""


class ConcurrencyError(DcbStoreError):
    """The append lost a race; nothing of it was stored. Retry the decision with fresh data."""

    retryable = True


class ConditionFailedError(ConcurrencyError):
    """An event matching the append condition was stored after the condition's ``after``.

    ``position`` is the lowest conflicting position and ``after`` the condition's bound.
    The caller's transaction is still usable.
    """

    sqlstate = "DCB01"

    def __init__(self, position: int | None, after: int | None) -> None:
        self.position = position
        self.after = after
        super().__init__(
            f"append condition failed: an event matching the condition is stored at position "
            f"{position}, after {after if after is not None else 'the beginning'}"
        )


class LockTimeoutError(ConcurrencyError):
    """An advisory lock was not granted within the lock timeout (seconds).

    The append took no lock and stored nothing; the caller's transaction is still usable.
    """

    sqlstate = "55P03"

    def __init__(self, timeout: float | None, held: str | None = None) -> None:
        self.timeout = timeout
        #: the keys other sessions held in a blocking mode when the wait ended (``t:<tag>``,
        #: ``y:<type>``, ``a:``, ``g:``, ``i:<event id>``, each with its mode and holder's pid),
        #: as reported by the append; None when the driver raised the timeout
        self.held = held
        message = f"advisory lock not granted within the lock timeout ({timeout} s)"
        if held:
            message += f"; waited for {held} (see lock_stats() / dcb-store locks)"
        super().__init__(message)


class SerializationConflictError(ConcurrencyError):
    """PostgreSQL reported a serialization failure (SQLSTATE 40001).

    Under REPEATABLE READ or SERIALIZABLE this means a concurrent append touched the same keys
    after this transaction's snapshot was taken. Roll back and retry in a new transaction.
    """

    sqlstate = "40001"


class DeadlockError(ConcurrencyError):
    """PostgreSQL broke a deadlock by aborting this transaction (SQLSTATE 40P01)."""

    sqlstate = "40P01"


class DuplicateEventIdError(DcbStoreError, ValueError):
    """An event id of the batch is already stored (at ``position``); nothing was stored."""

    sqlstate = "DCB04"

    def __init__(self, position: int | None) -> None:
        self.position = position
        super().__init__(f"an event id of this batch is already stored, at position {position}")


class CircuitOpenError(ConcurrencyError):
    """Appends are failing fast after repeated lock timeouts; ``retry_after`` seconds remain."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"circuit open after repeated lock timeouts; retry in {retry_after:.2f} s")


class StatementTimeoutError(DcbStoreError):
    """The statement ran into ``statement_timeout`` (SQLSTATE 57014), not a lock timeout."""

    sqlstate = "57014"


class TransactionStateError(DcbStoreError):
    """The caller's Connection cannot begin a transaction any more; nothing was sent.

    SQLAlchemy (2.0 and 2.1) marks a Connection as beginning before it calls the ``begin``
    event's listeners, and clears the mark only after the driver's BEGIN. A listener that
    raised (a cancellation while it awaited, any error) leaves the mark for good: from then on
    the Connection neither begins nor commits, so what a statement writes is rolled back when
    the connection returns to the pool, while ``commit()`` reports success. Rollback and
    invalidation do not clear it: close the Connection and take another. A store call made
    inside a ``begin`` listener looks the same, and is refused too. Not raised at AUTOCOMMIT,
    where each statement commits on its own.
    """

    def __init__(self) -> None:
        super().__init__(
            "this Connection cannot begin a transaction: a 'begin' event listener was "
            "interrupted or raised (or this statement runs inside one), and SQLAlchemy would "
            "neither begin nor commit what it writes; close the Connection and use another"
        )


class SchemaMissingError(DcbStoreError):
    """The database has no dcb_store schema, or an older one: run the migrations."""


class DatabaseError(DcbStoreError):
    """Any other error from the database driver; the original is the ``__cause__``."""

    def __init__(self, message: str, sqlstate: str | None) -> None:
        self.sqlstate = sqlstate
        super().__init__(message)


class UnsupportedDatabaseError(DcbStoreError, ValueError):
    """A database URL or bind dcb_store cannot work with: not PostgreSQL, or not a URL at all."""


class MigrationError(DcbStoreError):
    """The migrations could not run: an unknown revision, missing revision files..."""


class MigrationRefusedError(MigrationError):
    """The migrations refused to run, to protect the database.

    A ``dcb`` schema or version table another role made (or could change), or a downgrade that
    would drop stored events without ``force``. Nothing was changed.
    """


class ConnectionLostError(DatabaseError):
    """The connection to PostgreSQL was lost, or could not be opened.

    SQLSTATE class 08, 57P01-57P03 (the server terminated the session), or a driver error
    without SQLSTATE while connecting.
    Whether the transaction in flight committed is unknown when this happens at COMMIT.
    Subscriptions and ``dcb-store tail`` reconnect by themselves.
    """


class PermissionDeniedError(DatabaseError):
    """The role lacks a privilege the call needs (SQLSTATE 42501): see ``dcb_store.roles``."""

    sqlstate = "42501"


class UnreadableEventError(DcbStoreError):
    """The event stored at ``position`` cannot be turned into an :class:`Event`.

    Rows written through this library always can; a row written by other means (plain SQL,
    before the table's checks existed) may nest JSON too deep to decode, hold a number Python
    cannot convert, or carry tags or metadata that an Event cannot hold. ``reason`` says which.
    ``preceding`` holds the events the same read had built before it, in read order, so that a
    follower can apply them before stopping at this one. Nothing is skipped silently: to move
    past the row, resume deliberately after ``position``.
    """

    def __init__(self, position: int, reason: str, preceding: tuple[object, ...] = ()) -> None:
        self.position = position
        self.reason = reason
        #: the events of the read before the unreadable one (SequencedEvent objects)
        self.preceding = preceding
        super().__init__(f"the event at position {position} cannot be read: {reason}")


class StandbyWithoutPrimaryError(DcbStoreError):
    """A follower, stream or runner was pointed at a hot standby with no primary to ask.

    Safe heads come from the primary's in-flight markers (advisory locks, which a standby's
    ``pg_locks`` never shows), and a standby makes commits visible in WAL order: a follower
    reading there alone could see position 11 before 10 commits and skip 10 forever. Pass the
    primary as the engine and the standby as ``replica=`` (``dcb-store tail --replica-url``).
    ``role`` names the argument that holds the standby; ``replayed_lsn`` is its replay position.
    """

    def __init__(self, role: str, replayed_lsn: str | None = None) -> None:
        self.role = role
        self.replayed_lsn = replayed_lsn
        super().__init__(
            f"the {role} is a hot standby (pg_is_in_recovery(), replayed up to "
            f"{replayed_lsn or 'unknown'}): it cannot compute a safe head, so following it "
            "alone could skip events; pass the primary as the engine and the standby as "
            "replica=... (dcb-store tail --replica-url)"
        )


class ReplicaLagError(DcbStoreError):
    """The replica did not replay up to the primary's fence within ``timeout`` seconds.

    Nothing was read: reading before the fence could miss an event committed below the safe
    head. ``fence`` and ``replayed`` are WAL positions (LSNs, ``replayed`` None when unknown),
    ``lag_bytes`` how far behind the replica still was. A paused replay
    (``pg_wal_replay_pause()``) or a broken replication connection ends here too.
    """

    def __init__(
        self, fence: str, replayed: str | None, lag_bytes: int | None, timeout: float
    ) -> None:
        self.fence = fence
        self.replayed = replayed
        self.lag_bytes = lag_bytes
        self.timeout = timeout
        lag = "unknown" if lag_bytes is None else f"{lag_bytes:,} bytes"
        super().__init__(
            f"the replica has not replayed the primary's WAL up to {fence} after {timeout:g} s "
            f"(replayed up to {replayed or 'unknown'}, lag {lag}): is replay paused, or "
            "replication broken? (replica_timeout= sets the wait)"
        )
