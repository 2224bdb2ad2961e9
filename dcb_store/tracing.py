"""OpenTelemetry spans (``pip install 'dcb-store[tracing]'``).

``install_opentelemetry()`` wraps every store operation in a span ``dcb_store.<operation>``,
with errors recorded on the span.
"""

from __future__ import annotations

from typing import Any

from dcb_store.observing import Hook, add_hook

__all__ = ["install_opentelemetry"]


def install_opentelemetry(tracer: Any = None) -> Hook:
    """Start tracing the store's operations; returns the hook (for ``observing.remove_hook``)."""
    from opentelemetry import trace

    tracer = tracer or trace.get_tracer("dcb_store")

    def hook(operation: str, attributes: dict[str, Any]) -> Any:
        return tracer.start_as_current_span(f"dcb_store.{operation}", attributes=attributes)

    add_hook(hook)
    return hook
