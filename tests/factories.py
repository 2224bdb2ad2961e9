"""factory-boy factories for events (the ones the library ships)."""

from dcb_store.factories import EventFactory

__all__ = ["EventFactory"]
