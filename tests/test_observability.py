"""Prometheus metrics and OpenTelemetry spans, recorded from real appends and reads."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from dcb_store import (
    AppendCondition,
    ConditionFailedError,
    Event,
    EventStore,
    LockTimeoutError,
    Query,
)
from dcb_store.monitoring import LockWatcher
from dcb_store.observing import remove_hook

prometheus_client = pytest.importorskip("prometheus_client")


def test_prometheus_counts_outcomes_and_times_operations(engine: Engine) -> None:
    from dcb_store.metrics import install_prometheus

    registry = prometheus_client.CollectorRegistry()
    metrics = install_prometheus(registry)
    try:
        holder = Session(engine)
        EventStore(holder).append(Event("Hold", tags=["lock:k:1"]))
        with Session(engine) as s:
            store = EventStore(s)
            store.append(Event("A", tags=["a:1"]))
            with pytest.raises(ConditionFailedError):
                store.append(Event("A", tags=["a:1"]), AppendCondition(Query.of(tags=["a:1"])))
            with pytest.raises(LockTimeoutError):
                store.append(Event("B", tags=["lock:k:1"]), lock_timeout=0.1)
            store.read()
        watcher = LockWatcher(engine, on_count=metrics.held_locks.set)
        held = watcher.check()
        holder.rollback()
        holder.close()
    finally:
        metrics.uninstall()
    value = registry.get_sample_value
    assert value("dcb_store_operations_total", {"operation": "append", "outcome": "ok"}) == 2
    assert value("dcb_store_operations_total", {"operation": "append", "outcome": "conflict"}) == 1
    assert (
        value("dcb_store_operations_total", {"operation": "append", "outcome": "lock_timeout"}) == 1
    )
    assert value("dcb_store_operations_total", {"operation": "read", "outcome": "ok"}) == 1
    assert value("dcb_store_operation_seconds_count", {"operation": "append"}) == 4
    assert value("dcb_store_held_locks") == held > 0
    assert value("dcb_store_lock_wait_seconds_count") == 4  # every append reports its wait
    assert 0.1 <= value("dcb_store_lock_wait_seconds_sum") < 2  # the timed-out one waited 0.1 s


def test_opentelemetry_spans_with_errors_recorded(engine: Engine) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    from dcb_store.tracing import install_opentelemetry

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    hook = install_opentelemetry(provider.get_tracer("test"))
    try:
        with Session(engine) as s:
            store = EventStore(s)
            store.append(Event("A", tags=["a:1"]), AppendCondition(Query.of(tags=["a:1"])))
            with pytest.raises(ConditionFailedError):
                store.append(Event("A", tags=["a:1"]), AppendCondition(Query.of(tags=["a:1"])))
            store.read(limit=5)
    finally:
        remove_hook(hook)
    spans = exporter.get_finished_spans()
    assert [span.name for span in spans] == [
        "dcb_store.append",
        "dcb_store.append",
        "dcb_store.read",
    ]
    assert (
        spans[0].status.status_code != StatusCode.ERROR
        and spans[0].attributes["conditional"] is True
    )
    assert (
        spans[1].status.status_code == StatusCode.ERROR and spans[1].events[0].name == "exception"
    )
    assert spans[2].attributes["limit"] == 5
