"""Which small function handles which Stripe event type.

A handler takes the whole event (a dict: id, type, created, data.object, …),
runs inside the processing transaction, re-reads and locks what it changes, and
never commits: the dispatcher commits the handler's writes together with the
event's status, or rolls all of it back. It returns a short outcome for the log
("granted", "noop: already paid", …) or None.
"""

from collections.abc import Callable

Handler = Callable[[dict], str | None]
HANDLERS: dict[str, Handler] = {}


def handles(*event_types: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for event_type in event_types:
            if event_type in HANDLERS:
                raise RuntimeError(
                    f"{event_type} already handled by {HANDLERS[event_type].__name__}"
                )
            HANDLERS[event_type] = handler
        return handler

    return register


def handler_for(event_type: str) -> Handler | None:
    return HANDLERS.get(event_type)
