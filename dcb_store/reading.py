"""The result of a read."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from dcb_store.events import SequencedEvent

__all__ = ["ReadResult"]


class ReadResult(Sequence[SequencedEvent]):
    """Events in position order (descending for a backwards read), and a safe ``head``.

    ``head`` is what to pass as ``AppendCondition(after=...)`` for a decision made from this
    read: no event at or below it that the read did not return can ever commit. Without a
    limit it is the store's safe head at the time of the read (``None`` for an empty store);
    with a limit (reading forwards) it is the position of the last event returned.
    """

    __slots__ = ("_events", "head")

    def __init__(self, events: list[SequencedEvent], head: int | None) -> None:
        self._events = events
        self.head = head

    def __iter__(self) -> Iterator[SequencedEvent]:
        return iter(self._events)

    def __len__(self) -> int:
        return len(self._events)

    def __getitem__(self, index: int) -> SequencedEvent:  # type: ignore[override]
        return self._events[index]

    def __repr__(self) -> str:
        return f"ReadResult({len(self._events)} events, head={self.head})"

    @property
    def events(self) -> list[SequencedEvent]:
        """The events as a list."""
        return list(self._events)
