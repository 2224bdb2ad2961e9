"""Documented limits of what one append may carry."""

from __future__ import annotations

__all__ = ["MAX_BATCH_EVENTS", "MAX_TAG_LENGTH", "MAX_TAGS_PER_EVENT", "MAX_TYPE_LENGTH"]

#: Most events one ``append`` call may carry.
MAX_BATCH_EVENTS = 20_000
#: Longest event type, in characters (the events table checks it too).
MAX_TYPE_LENGTH = 255
#: Longest tag, in characters.
MAX_TAG_LENGTH = 1024
#: Most tags one event may carry.
MAX_TAGS_PER_EVENT = 100
