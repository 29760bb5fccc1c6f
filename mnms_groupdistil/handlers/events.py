"""Registering a handler's event methods once, however often ``attach`` is called."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ignite.engine import Engine

__all__ = ["attach_once"]


def attach_once(engine: Engine, handlers: Iterable[tuple[Any, Callable]]) -> None:
    """Add each ``(event, method)`` to ``engine`` unless it is already registered for that event.

    The one implementation of the handlers' idempotent ``attach`` (MONAI's convention: attaching
    twice adds nothing).
    """
    for event, handler in handlers:
        if not engine.has_event_handler(handler, event):
            engine.add_event_handler(event, handler)
