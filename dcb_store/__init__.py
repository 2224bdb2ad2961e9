"""dcb_store: a Dynamic Consistency Boundary event store on PostgreSQL for SQLAlchemy apps."""

from importlib.metadata import PackageNotFoundError, version

from dcb_store.aio import AsyncEventStore
from dcb_store.breaker import CircuitBreaker
from dcb_store.conditions import AppendCondition
from dcb_store.deciding import Projection
from dcb_store.errors import (
    CircuitOpenError,
    ConcurrencyError,
    ConditionFailedError,
    ConnectionLostError,
    DatabaseError,
    DcbStoreError,
    DeadlockError,
    DuplicateEventIdError,
    InvalidInputError,
    LockTimeoutError,
    PermissionDeniedError,
    ReplicaLagError,
    SchemaMissingError,
    SerializationConflictError,
    StandbyWithoutPrimaryError,
    StatementTimeoutError,
    TransactionStateError,
    UnreadableEventError,
)
from dcb_store.events import Event, SequencedEvent
from dcb_store.following import ProjectionRunner, Subscription, subscribe
from dcb_store.locks import LockInfo
from dcb_store.protocols import AsyncEventStoreLike, EventStoreLike
from dcb_store.queries import Query, QueryItem
from dcb_store.reading import ReadResult
from dcb_store.retrying import RetryPolicy, run_in_transaction, run_in_transaction_async
from dcb_store.store import EventStore
from dcb_store.timeouts import lock_timeout

__all__ = [
    "AppendCondition",
    "AsyncEventStore",
    "AsyncEventStoreLike",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConcurrencyError",
    "ConditionFailedError",
    "ConnectionLostError",
    "DatabaseError",
    "DcbStoreError",
    "DeadlockError",
    "DuplicateEventIdError",
    "Event",
    "EventStore",
    "EventStoreLike",
    "InvalidInputError",
    "LockInfo",
    "LockTimeoutError",
    "PermissionDeniedError",
    "Projection",
    "ProjectionRunner",
    "Query",
    "QueryItem",
    "ReadResult",
    "RetryPolicy",
    "ReplicaLagError",
    "SchemaMissingError",
    "SequencedEvent",
    "SerializationConflictError",
    "StandbyWithoutPrimaryError",
    "StatementTimeoutError",
    "TransactionStateError",
    "Subscription",
    "UnreadableEventError",
    "lock_timeout",
    "run_in_transaction",
    "run_in_transaction_async",
    "subscribe",
]

try:
    __version__ = version("dcb-store")
except PackageNotFoundError:  # a checkout on sys.path that was never installed
    __version__ = "0+unknown"
